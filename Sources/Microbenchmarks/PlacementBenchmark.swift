// Placement: ring construction and lookup cost, load spread (exact shares and sampled keys) and
// key movement on join and leave, for rings of 3 to 1,000 members. Results: docs/placement.md.

import StrataCore
import StrataPlacement

#if canImport(Glibc)
  import Glibc
#endif

/// `count` equal members, optionally spread over `zones`.
private func benchMembers(_ count: Int, zones: [String] = [""], offset: Int = 0) -> [Member] {
  (offset..<offset + count).map { index in
    Member(
      id: "node-\(index)", address: "10.\(index >> 8 & 255).\(index & 255).1:7400", zone: zones[index % zones.count])
  }
}

/// 1,024 keys from a seeded generator (chunk `chunk` of an endless sequence).
private func keyChunk(_ chunk: Int) -> [BlockKey] {
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024 * BlockKey.byteCount, alignment: 8)
  defer { buffer.deallocate() }
  fillRandom(buffer, seed: 0x9E37_79B9 &+ UInt64(chunk) &* 0x1_0000_0001)
  return (0..<1024).map { BlockKey(copying: buffer.baseAddress! + $0 * BlockKey.byteCount) }
}

/// CPU seconds this thread has used: on a shared machine, wall time also counts other programs.
private func threadCPUSeconds() -> Double {
  var time = timespec()
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
  return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// Calls per CPU-second of `body`, which makes `calls` calls, run for about `seconds` of CPU.
private func cpuRate(calls: Int, seconds: Double, _ body: () -> Void) -> Double {
  body()
  var iterations = 0
  let start = threadCPUSeconds()
  var elapsed = 0.0
  repeat {
    body()
    iterations += 1
    elapsed = threadCPUSeconds() - start
  } while elapsed < seconds
  return Double(calls * iterations) / elapsed
}

/// Max over mean and min over mean of `values`.
private func spread(_ values: [Double]) -> (max: Double, min: Double) {
  let mean = values.reduce(0, +) / Double(values.count)
  return ((values.max() ?? 0) / mean, (values.min() ?? 0) / mean)
}

func runPlacementBenchmark(repetitions: Int, sampledKeys: Int) {
  print("")
  print("Ring construction and lookup (\(Ring.defaultVirtualNodes) virtual nodes per member, R = 2; thread CPU time)")
  print(
    "\(pad("members", 8)) \(pad("points", 9)) \(pad("table MiB", 10)) \(pad("build ms", 9)) "
      + "\(pad("owners() ns", 12)) \(pad("primary() ns", 13)) 1,024 owners() µs")
  let keys = keyChunk(0)
  for count in [3, 10, 100, 1000] {
    let members = benchMembers(count)
    var builds: [Double] = []
    var ring = Ring(members: members, epoch: 1, replicationFactor: 2)
    for _ in 0..<repetitions {
      let start = threadCPUSeconds()
      ring = Ring(members: members, epoch: 1, replicationFactor: 2)
      builds.append(threadCPUSeconds() - start)
    }
    var sink = 0
    var ownerRates: [Double] = []
    var primaryRates: [Double] = []
    for _ in 0..<repetitions {
      ownerRates.append(
        cpuRate(calls: keys.count, seconds: 0.2) { for key in keys { sink &+= ring.owners(of: key).count } })
      primaryRates.append(
        cpuRate(calls: keys.count, seconds: 0.2) {
          for key in keys { sink &+= ring.primary(of: key)?.id.utf8.count ?? 0 }
        })
    }
    let ownerNs = 1e9 / median(ownerRates)
    print(
      "\(pad("\(count)", 8)) \(pad("\(ring.pointCount)", 9)) \(pad(formatted(Double(ring.tableBytes) / 1_048_576, 2), 10)) "
        + "\(pad(formatted(median(builds) * 1000, 2), 9)) \(pad(formatted(ownerNs, 0), 12)) "
        + "\(pad(formatted(1e9 / median(primaryRates), 0), 13)) \(formatted(ownerNs * 1024 / 1000, 1))"
        + (sink == -1 ? " " : ""))
  }

  print("")
  print("Load spread: exact key-space shares (max/mean, min/mean) and \(sampledKeys) sampled keys (max/mean)")
  print(
    "\(pad("case", 26)) \(pad("primary max", 12)) \(pad("primary min", 12)) \(pad("owner max", 10)) "
      + "\(pad("owner min", 10)) sampled primary max")
  var cases: [(String, [Member])] = []
  for count in [10, 100, 1000] { cases.append(("\(count) equal", benchMembers(count))) }
  var weighted = benchMembers(100)
  for index in weighted.indices { weighted[index].capacityBytes = index % 4 == 0 ? 2 << 40 : 1 << 40 }
  cases.append(("100, a quarter 2× capacity", weighted))
  cases.append(("100 equal, 3 zones", benchMembers(100, zones: ["a", "b", "c"])))
  for (name, members) in cases {
    let ring = Ring(members: members, epoch: 1, replicationFactor: 2)
    // Shares per unit of capacity, so a weighted member is judged against its own fair share.
    let weights = Ring.fairShares(of: members)
    let primary = ring.primaryShares()
    let owner = ring.ownerShares()
    let primarySpread = spread(members.indices.map { (primary[members[$0].id] ?? 0) / weights[$0] })
    let ownerSpread = spread(members.indices.map { (owner[members[$0].id] ?? 0) / weights[$0] })
    var counts: [String: Int] = [:]
    for chunk in 1...max(1, sampledKeys / 1024) {
      for key in keyChunk(chunk) { counts[ring.primary(of: key)?.id ?? "", default: 0] += 1 }
    }
    let sampled = spread(members.indices.map { Double(counts[members[$0].id] ?? 0) / weights[$0] })
    print(
      "\(pad(name, 26)) \(pad(formatted(primarySpread.max, 3), 12)) \(pad(formatted(primarySpread.min, 3), 12)) "
        + "\(pad(formatted(ownerSpread.max, 3), 10)) \(pad(formatted(ownerSpread.min, 3), 10)) "
        + formatted(sampled.max, 3))
  }

  print("")
  print("Movement on join and leave (R = 2): share of keys whose primary / owner set changes, and its")
  print("ratio to the ideal (1/N for primaries, R/N for owner sets; N = members after a join, before a leave)")
  print(
    "\(pad("case", 24)) \(pad("primary", 9)) \(pad("× ideal", 8)) \(pad("owner set", 10)) \(pad("× ideal", 8)) CPU ms")
  for (count, zones) in [(10, [""]), (100, [""]), (1000, [""]), (100, ["a", "b", "c"])] {
    let members = benchMembers(count + 1, zones: zones)
    let small = Ring(members: Array(members.prefix(count)), epoch: 1, replicationFactor: 2)
    let large = Ring(members: members, epoch: 2, replicationFactor: 2)
    let without = Ring(members: members.filter { $0.id != members[count / 2].id }, epoch: 3, replicationFactor: 2)
    let zoneLabel = zones.count > 1 ? ", \(zones.count) zones" : ""
    for (name, from, to) in [
      ("join \(count)→\(count + 1)\(zoneLabel)", small, large),
      ("leave \(count + 1)→\(count)\(zoneLabel)", large, without),
    ] {
      let start = threadCPUSeconds()
      let movement = from.movement(to: to)
      let elapsed = threadCPUSeconds() - start
      let ideal = 1 / Double(count + 1)
      print(
        "\(pad(name, 24)) \(pad(formatted(movement.primaryShare, 4), 9)) "
          + "\(pad(formatted(movement.primaryShare / ideal, 3), 8)) \(pad(formatted(movement.ownerSetShare, 4), 10)) "
          + "\(pad(formatted(movement.ownerSetShare / (2 * ideal), 3), 8)) \(formatted(elapsed * 1000, 0))")
    }
  }
}
