// strata-sim: runs seeds of the deterministic cluster simulation (docs/simulation.md).
//
//   strata-sim --seed 42 [--trace]            one seed; --trace prints every trace line
//   strata-sim --first 0 --count 200          seeds 0..<200, a summary line per failure
//   strata-sim ... --mutation skip-replication   with a deliberately injected bug (or no-read-back, stop-without-flush)
//   strata-sim ... --ram-pressure             about three seeds in ten draw a RAM tier of a few dozen blocks
//   strata-sim --findings                     the seeds that found bugs (FindingSeeds), as found:
//                                             the older without graceful stops (one: --seed S --no-stops),
//                                             those of FindingSeeds.allWithStops and
//                                             FindingSeeds.reclaim with them, and those of
//                                             FindingSeeds.underRAMPressure with both
//
// Exit status: 0 when every seed ran clean, 1 when one failed (its report is printed), 2 on a
// usage error.

import StrataSimulation

#if canImport(Glibc)
  import Glibc
#endif

func usage(_ message: String) -> Never {
  print("strata-sim: \(message)")
  print(
    "usage: strata-sim (--seed N [--trace] | --first N --count M | --findings) [--no-stops] [--ram-pressure] [--mutation skip-replication|no-read-back|stop-without-flush] [--quiet]"
  )
  exit(2)
}

var arguments = Array(CommandLine.arguments.dropFirst())
var seed: UInt64?
var first: UInt64 = 0
var count: UInt64?
var showTrace = false
var quiet = false
var mutation: SimulationMutation?
var findings = false
var gracefulStops = true
var ramPressure = false
while !arguments.isEmpty {
  let flag = arguments.removeFirst()
  func value() -> String {
    guard !arguments.isEmpty else { usage("\(flag) needs a value") }
    return arguments.removeFirst()
  }
  func number() -> UInt64 {
    let text = value()
    guard let parsed = UInt64(text) else { usage("\(flag) takes a number, not '\(text)'") }
    return parsed
  }
  switch flag {
  case "--seed": seed = number()
  case "--first": first = number()
  case "--count": count = number()
  case "--trace": showTrace = true
  case "--quiet": quiet = true
  case "--findings": findings = true
  case "--no-stops": gracefulStops = false
  case "--ram-pressure": ramPressure = true
  case "--mutation":
    let name = value()
    guard let known = SimulationMutation(rawValue: name) else {
      usage(
        "unknown mutation '\(name)' (known: \(SimulationMutation.allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    mutation = known
  default: usage("unknown argument '\(flag)'")
  }
}

if let seed {
  let result = Simulator.run(
    SimulationOptions(
      seed: seed, mutation: mutation, keepTrace: showTrace, gracefulStops: gracefulStops, ramPressure: ramPressure))
  if showTrace { for line in result.trace { print(line) } }
  print(result.report)
  exit(result.failure == nil ? 0 : 1)
}
/// Each seed to run, whether graceful stops are drawn in it, and whether RAM pressure may be.
let seeds: [(seed: UInt64, stops: Bool, pressure: Bool)]
let label: String
if findings {
  seeds =
    FindingSeeds.all.map { ($0, false, false) }
    + (FindingSeeds.allWithStops + FindingSeeds.reclaim).map { ($0, true, false) }
    + FindingSeeds.underRAMPressure.map { ($0, true, true) }
  label = "finding seeds"
} else {
  guard let count, count > 0 else { usage("give --seed, --first and --count, or --findings") }
  seeds = (first..<(first + count)).map { ($0, gracefulStops, ramPressure) }
  label = "seeds \(first)..<\(first + count)"
}
var failed = 0
var acknowledged = 0
var timedCalls = 0
var answersLost = 0
var pressed = 0
var evicted = 0
for (seed, stops, pressure) in seeds {
  let result = Simulator.run(
    SimulationOptions(seed: seed, mutation: mutation, gracefulStops: stops, ramPressure: pressure))
  if result.underRAMPressure { pressed += 1 }
  evicted += result.evictedBlocks
  acknowledged += result.acknowledgedBlocks
  timedCalls += result.timedPeerCalls
  answersLost += result.answersLost
  if result.failure != nil {
    failed += 1
    print(result.report)
  } else if !quiet {
    print("seed \(seed): clean, hash \(String(result.traceHash, radix: 16))")
  }
}
print(
  "\(label): \(seeds.count - failed) clean, \(failed) failed, \(acknowledged) blocks acknowledged, "
    + "\(timedCalls) background peer calls in simulated time (\(answersLost) answers lost in flight); "
    + "\(pressed) seeds under RAM pressure, \(evicted) blocks evicted from RAM")
exit(failed == 0 ? 0 : 1)
