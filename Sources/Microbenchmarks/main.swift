// strata-microbench: in-process benchmarks of the data-path primitives, each side by side with
// memcpy of the same bytes in the same run. Usage and recorded results: docs/performance.md.
//   swift run -c release strata-microbench [checksum|hash|lz4|tiers|nvme-read|lookup|restart|placement|all] [--seconds S] [--repeat N] [--dir DIR] [--blocks N] [--batch N] [--keys N]

import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

var seconds = 0.5
var repetitions = 3
var which = "all"
var directory = "./strata-bench"
var restartBlocks = 1_000_000
var batchBlocks = 256
var placementKeys = 4_000_000
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
  switch argument {
  case "--seconds": seconds = Double(arguments.next() ?? "") ?? seconds
  case "--repeat": repetitions = Int(arguments.next() ?? "") ?? repetitions
  case "--dir": directory = arguments.next() ?? directory
  case "--blocks": restartBlocks = Int(arguments.next() ?? "") ?? restartBlocks
  case "--batch": batchBlocks = max(1, Int(arguments.next() ?? "") ?? batchBlocks)
  case "--keys": placementKeys = Int(arguments.next() ?? "") ?? placementKeys
  case "checksum", "hash", "lz4", "tiers", "nvme-read", "lookup", "restart", "placement", "all": which = argument
  default:
    print(
      "usage: strata-microbench [checksum|hash|lz4|tiers|nvme-read|lookup|restart|placement|all] [--seconds S] [--repeat N] [--dir DIR] [--blocks N] [--batch N] [--keys N]"
    )
    exit(64)
  }
}

print("strata-microbench: medians of \(repetitions) runs of \(seconds) s each")

if which == "checksum" || which == "all" {
  print("")
  let methods = CRC32C.Method.allCases.filter { $0 != .portable && $0.isAvailable }
  print(
    "CRC-32C against memcpy of the same buffer; chosen at load: \(CRC32C.method) (of "
      + "\(CRC32C.Method.allCases.filter(\.isAvailable).map { "\($0)" }.joined(separator: ", ")))")
  print(
    "\(pad("size", 10)) \(pad("memcpy GB/s", 12)) \(pad("crc32c GB/s", 12)) \(pad("ratio", 7)) "
      + methods.map { pad("\($0) GB/s", 17) }.joined() + "\(pad("table-loop GB/s", 16)) "
      + "copy+crc32c GB/s (the same-host path's copy), ratio to memcpy")
  for size in [4096, 256 << 10, 2 << 20, 32 << 20] {
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
    let target = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
    defer {
      source.deallocate()
      target.deallocate()
    }
    for index in 0..<size { source[index] = UInt8(truncatingIfNeeded: index &* 2_654_435_761 >> 13) }
    var sink: UInt32 = 0
    var copies: [Double] = []
    var checksums: [Double] = []
    var byMethod: [CRC32C.Method: [Double]] = [:]
    var portables: [Double] = []
    var checkedCopies: [Double] = []
    for _ in 0..<repetitions {
      copies.append(
        throughput(bytes: size, seconds: seconds) { memcpy(target.baseAddress!, source.baseAddress!, size) })
      checksums.append(
        throughput(bytes: size, seconds: seconds) { sink ^= CRC32C.checksum(UnsafeRawBufferPointer(source)) })
      for method in methods {
        byMethod[method, default: []].append(
          throughput(bytes: size, seconds: seconds) {
            sink ^= CRC32C.checksum(UnsafeRawBufferPointer(source), using: method)
          })
      }
      portables.append(
        throughput(bytes: size, seconds: seconds / 4) {
          sink ^= CRC32C.portableChecksum(UnsafeRawBufferPointer(source))
        })
      checkedCopies.append(
        throughput(bytes: size, seconds: seconds) { sink ^= CRC32C.copy(UnsafeRawBufferPointer(source), to: target) })
    }
    let label = ByteSize(bytes: UInt64(size)).description
    print(
      "\(pad(label, 10)) \(pad(gb(median(copies)), 12)) \(pad(gb(median(checksums)), 12)) "
        + "\(pad(formatted(median(checksums) / median(copies), 2) + "x", 7)) "
        + methods.map { pad(gb(median(byMethod[$0] ?? [])), 17) }.joined() + "\(pad(gb(median(portables)), 16)) "
        + "\(gb(median(checkedCopies))) \(formatted(median(checkedCopies) / median(copies), 2))x"
        + (sink == 0xFFFF_FFFF ? " " : ""))
  }
}

if which == "hash" || which == "all" {
  print("")
  print("Chained prefix keys (SHA-256 via OpenSSL EVP) for a 32,768-token prompt")
  print("\(pad("tokens/block", 13)) \(pad("keys/s", 12)) \(pad("token GB/s", 11)) µs per 32k-token prompt")
  let layoutBase = "model=bench,dtype=bf16,layers=0-32,block="
  let tokens = (0..<32768).map { UInt32(truncatingIfNeeded: $0 &* 7919) }
  for tokensPerBlock in [16, 64, 256] {
    let hasher = try! PrefixHasher(layout: try! LayoutTag(parsing: layoutBase + "\(tokensPerBlock)"))
    var rates: [Double] = []
    var count = 0
    for _ in 0..<repetitions {
      rates.append(
        throughput(bytes: tokens.count * 4, seconds: seconds) { count &+= try! hasher.keys(tokens: tokens).count })
    }
    let bytesPerSecond = median(rates)
    let promptsPerSecond = bytesPerSecond / Double(tokens.count * 4)
    let keysPerSecond = promptsPerSecond * Double(tokens.count / tokensPerBlock)
    print(
      "\(pad("\(tokensPerBlock)", 13)) \(pad(formatted(keysPerSecond, 0), 12)) \(pad(gb(bytesPerSecond), 11)) "
        + formatted(1e6 / promptsPerSecond, 1))
  }
}

if which == "lz4" || which == "all" {
  runLZ4Benchmark(seconds: seconds, repetitions: repetitions)
}

if which == "lookup" {
  do {
    try await lookupBenchmark(seconds: seconds, repetitions: repetitions)
  } catch {
    print("lookup: benchmark failed: \(error)")
  }
}

if which == "tiers" || which == "all" {
  await runTierBenchmark(seconds: seconds, repetitions: repetitions, directory: directory)
}

if which == "nvme-read" {
  // The NVMe tier's reads alone (the last part of `tiers`): scripts/bench-dataplane.sh runs them
  // beside fio for issue 15's NVMe target.
  do {
    try nvmeTierBenchmark(repetitions: repetitions, directory: directory)
  } catch {
    print("nvme-read: benchmark failed: \(error)")
  }
}

if which == "placement" || which == "all" {
  runPlacementBenchmark(repetitions: repetitions, sampledKeys: placementKeys)
}

if which == "restart" {
  do {
    try restartBenchmark(
      blocks: restartBlocks, directory: directory, repetitions: repetitions, batchBlocks: batchBlocks)
  } catch {
    print("restart: benchmark failed: \(error)")
  }
}
