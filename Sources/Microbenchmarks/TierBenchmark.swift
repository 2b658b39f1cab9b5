// Tier benchmarks: RAM-tier put and get against memcpy of the same bytes, NVMe-tier reads of
// demoted blocks (compared with fio by scripts/bench-tiers.sh), and warm restart of many blocks.

import Dispatch
import StrataCore
import StrataStorage

#if canImport(Glibc)
  import Glibc
#endif

/// The ids of `count` benchmark blocks.
func benchmarkIDs(_ count: Int, salt: UInt64 = 0) -> [BlockID] {
  (0..<count).map { n in
    var seed: [UInt8] = []
    withUnsafeBytes(of: (UInt64(n) ^ salt << 40).littleEndian) { seed += $0 }
    return BlockID(namespace: .embeddedDefault, key: SHA256.digest(seed))
  }
}

func fillRandom(_ buffer: UnsafeMutableRawBufferPointer, seed: UInt64) {
  var state = seed | 1
  let words = buffer.count / 8
  let base = buffer.baseAddress!
  for index in 0..<words {
    state ^= state << 13
    state ^= state >> 7
    state ^= state << 17
    base.storeBytes(of: state, toByteOffset: index * 8, as: UInt64.self)
  }
}

/// Times `operations` runs of an async body; returns operations per second.
func asyncRate(seconds: Double, _ body: () async throws -> Void) async rethrows -> Double {
  try await body()
  var count = 0
  let start = now()
  var elapsed = 0.0
  repeat {
    try await body()
    count += 1
    elapsed = now() - start
  } while elapsed < seconds
  return Double(count) / elapsed
}

func runTierBenchmark(seconds: Double, repetitions: Int, directory: String) async {
  do {
    try await lookupBenchmark(seconds: seconds, repetitions: repetitions)
    try await ramTierBenchmark(seconds: seconds, repetitions: repetitions)
    try nvmeTierBenchmark(repetitions: repetitions, directory: directory)
  } catch {
    print("tiers: benchmark failed: \(error)")
  }
}

/// NVMe tier: reads of 2 MiB blocks that were demoted to a file-backed region log (O_DIRECT), in
/// write order, by 1 and by 4 threads (each its own quarter). scripts/bench-tiers.sh runs fio on the same disk beside it.
func nvmeTierBenchmark(repetitions: Int, directory: String, fileBytes: Int = 1 << 30) throws {
  let blockBytes = 2 << 20
  mkdir(directory, 0o755)
  let path = directory + "/bench-nvme.dat"
  unlink(path)
  defer { unlink(path) }
  let device = try FileBlockDevice(path: path, capacityBytes: fileBytes)
  let tier = try NVMeTier(
    devices: [device], regionBytes: 64 << 20, compression: .none, blockBytesMax: blockBytes, stagingBufferCount: 8)
  let source = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 4096)
  defer { source.deallocate() }
  fillRandom(source, seed: 99)
  // Leave two regions free so that no write reclaims: every block written stays readable.
  let count = (fileBytes - 2 * (64 << 20)) / (blockBytes + 4096)
  let ids = benchmarkIDs(count, salt: 7)
  for (n, id) in ids.enumerated() {
    source.storeBytes(of: UInt64(n), toByteOffset: 0, as: UInt64.self)
    try tier.write(
      id, payload: UnsafeRawBufferPointer(source), checksum: CRC32C.checksum(UnsafeRawBufferPointer(source)))
  }
  print("")
  print(
    "NVMe tier: reads of \(count) demoted 2MiB blocks (\(ByteSize(bytes: UInt64(count * blockBytes)))), "
      + "O_DIRECT: \(device.isDirect ? "yes" : "no"), checksums verified; medians of \(repetitions)")
  for threads in [1, 4] {
    var rates: [Double] = []
    for _ in 0..<repetitions {
      let start = now()
      DispatchQueue.concurrentPerform(iterations: threads) { thread in
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 4096)
        defer { destination.deallocate() }
        // Each thread reads its own contiguous share in write order, as each of fio's jobs does.
        for index in (thread * count / threads)..<((thread + 1) * count / threads) {
          _ = try? tier.read(ids[index], into: destination)
        }
      }
      rates.append(Double(count * blockBytes) / (now() - start))
    }
    print("nvme-read threads=\(threads) GB/s \(gb(median(rates)))")
  }
}

/// Warm restart of `blocks` small records: write them, then time the recovery scan and report
/// the index memory per block. The writes run `repetitions` times each way, interleaved (each on a
/// fresh file): one `write` per block, and `batchBlocks` blocks per `write(_:)` call (runs of
/// records in one device write of at most `NVMeTier.batchWriteBytesMax`); the restart reads the
/// last file written.
func restartBenchmark(blocks: Int, directory: String, repetitions: Int, batchBlocks: Int) throws {
  let payloadBytes = 1024
  let regionBytes = 64 << 20
  let recordBytes = 4096
  let perRegion = regionBytes / recordBytes
  let fileBytes = ((blocks + perRegion - 1) / perRegion + 2) * regionBytes
  mkdir(directory, 0o755)
  let path = directory + "/bench-restart.dat"
  defer { unlink(path) }
  let ids = benchmarkIDs(blocks, salt: 11)
  // One payload per block of a batch: a batch's payloads must all be valid during its call.
  let payloads = UnsafeMutableRawBufferPointer.allocate(byteCount: batchBlocks * payloadBytes, alignment: 64)
  defer { payloads.deallocate() }
  payloads.initializeMemory(as: UInt8.self, repeating: 0)

  /// Writes every block to a fresh tier on a fresh file; returns the seconds taken and the device writes.
  func writeAll(batched: Bool) throws -> (seconds: Double, deviceWrites: Int) {
    unlink(path)
    let device = try FileBlockDevice(path: path, capacityBytes: fileBytes)
    let tier = try NVMeTier(devices: [device], regionBytes: regionBytes, compression: .none, blockBytesMax: 64 << 10)
    let perCall = batched ? batchBlocks : 1
    let start = now()
    var first = 0
    while first < blocks {
      let count = min(perCall, blocks - first)
      var batch: [NVMeBlockWrite] = []
      batch.reserveCapacity(count)
      for slot in 0..<count {
        let payload = UnsafeMutableRawBufferPointer(
          rebasing: payloads[(slot * payloadBytes)..<((slot + 1) * payloadBytes)])
        payload.storeBytes(of: UInt64(first + slot), toByteOffset: 0, as: UInt64.self)
        batch.append(
          NVMeBlockWrite(
            id: ids[first + slot], payload: UnsafeRawBufferPointer(payload),
            checksum: CRC32C.checksum(UnsafeRawBufferPointer(payload))))
      }
      if batched {
        for outcome in tier.write(batch) { _ = try outcome.get() }
      } else {
        try tier.write(batch[0].id, payload: batch[0].payload, checksum: batch[0].checksum)
      }
      first += count
    }
    try tier.sync()
    return (now() - start, tier.statistics.recordWrites)
  }

  var single: [Double] = []
  var batched: [Double] = []
  var writes = (single: 0, batched: 0)
  for round in 0..<repetitions {
    // Alternate which goes first, so neither always runs on a warmer (or busier) machine.
    for batchedTurn in (round % 2 == 0 ? [false, true] : [true, false]) {
      let (seconds, deviceWrites) = try writeAll(batched: batchedTurn)
      if batchedTurn {
        batched.append(seconds)
        writes.batched = deviceWrites
      } else {
        single.append(seconds)
        writes.single = deviceWrites
      }
    }
  }
  let (recovered, report) = try NVMeTier.recover(
    devices: [try FileBlockDevice(path: path, capacityBytes: fileBytes)], regionBytes: regionBytes,
    compression: .none, blockBytesMax: 64 << 10)
  let statistics = recovered.statistics
  print("")
  print(
    "Warm restart: \(blocks) blocks of \(payloadBytes) B (records of \(recordBytes) B, \(ByteSize(bytes: UInt64(fileBytes))) file); "
      + "writes: medians of \(repetitions), interleaved"
  )
  for (label, seconds, deviceWrites) in [
    ("one block per write call", single, writes.single),
    ("\(batchBlocks) blocks per write call", batched, writes.batched),
  ] {
    let median = median(seconds)
    print(
      "write seconds \(formatted(median, 2)) (\(formatted(Double(blocks) / median, 0)) blocks/s), "
        + "\(deviceWrites) device writes: \(label); rounds \(seconds.map { formatted($0, 2) }.joined(separator: " "))")
  }
  print(
    "restart seconds \(formatted(report.durationSeconds, 2)), blocks recovered \(report.blocksRecovered), "
      + "corrupt \(report.corruptDropped), index bytes per block \(formatted(statistics.indexBytesPerBlock, 1))")
}

/// RAM tier: put (copy into the arena + CRC-32C) and get (lease, copy out, release) of blocks
/// rotating over 256 MiB, against memcpy of the same blocks into the same destination.
/// The tier manager's answer to a LOOKUP of 1,024 keys, all in RAM: what the node does per
/// LOOKUP request besides decoding it and sending the answer.
func lookupBenchmark(seconds: Double, repetitions: Int) async throws {
  let tiers = try TierManager(
    configuration: TierConfiguration(
      ramBytes: 64 << 20, blockBytesMax: 4096, lockMemory: false, hugePages: false, admission: .never),
    nvme: nil)
  let ids = benchmarkIDs(1024)
  let block = [UInt8](repeating: 7, count: 4096)
  for id in ids { _ = try await tiers.put(id, bytes: block) }
  var rates: [Double] = []
  for _ in 0..<repetitions {
    rates.append(await asyncRate(seconds: seconds) { precondition(tiers.lookup(ids).count == 1024) })
  }
  print("")
  print(
    "tier manager LOOKUP of 1,024 keys (RAM): \(formatted(1e6 / median(rates), 1)) us per call (median of \(repetitions))"
  )
}

func ramTierBenchmark(seconds: Double, repetitions: Int) async throws {
  print("")
  print("RAM tier against memcpy (blocks rotate over 256 MiB of the arena; medians of \(repetitions))")
  print(
    "\(pad("block", 7)) \(pad("memcpy GB/s", 12)) \(pad("get GB/s", 9)) \(pad("get/memcpy", 11)) "
      + "\(pad("get ns/block overhead", 22)) \(pad("put GB/s", 9)) put/memcpy")
  for blockBytes in [256 << 10, 2 << 20, 32 << 20] {
    let count = (256 << 20) / blockBytes
    let tiers = try TierManager(
      configuration: TierConfiguration(
        ramBytes: 320 << 20, blockBytesMax: 32 << 20, lockMemory: false, hugePages: true, admission: .never),
      nvme: nil)
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 4096)
    let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 4096)
    defer {
      source.deallocate()
      destination.deallocate()
    }
    fillRandom(source, seed: UInt64(blockBytes))
    memset(destination.baseAddress!, 0, blockBytes)
    let ids = benchmarkIDs(count)
    for (n, id) in ids.enumerated() {
      source.storeBytes(of: UInt64(n), toByteOffset: 0, as: UInt64.self)
      let reservation = try await tiers.reserve(id, bytes: blockBytes)!
      reservation.buffer.copyMemory(from: UnsafeRawBufferPointer(source))
      try tiers.commit(reservation, expectedChecksum: nil)
    }
    // The arena addresses of the stored blocks: memcpy reads the very bytes a get reads.
    let lease = try await tiers.lease(ids)
    let sources = lease.blocks.map { $0!.bytes }
    var copies: [Double] = []
    var gets: [Double] = []
    var puts: [Double] = []
    for repetition in 0..<repetitions {
      var next = 0
      // Alternate which goes first, so neither always runs on a warmer machine.
      for turn in (repetition % 2 == 0 ? [0, 1] : [1, 0]) {
        next = 0
        if turn == 0 {
          copies.append(
            Double(blockBytes)
              * (await asyncRate(seconds: seconds) {
                destination.baseAddress!.copyMemory(from: sources[next].baseAddress!, byteCount: blockBytes)
                next = (next + 1) % count
              }))
        } else {
          gets.append(
            Double(blockBytes)
              * (try await asyncRate(seconds: seconds) {
                _ = try await tiers.read(ids[next], into: destination)
                next = (next + 1) % count
              }))
        }
      }
      // Puts of new blocks into a full tier: each evicts one (admission never: dropped).
      var fresh = 0
      let putIDs = benchmarkIDs(4096, salt: UInt64(blockBytes))
      puts.append(
        Double(blockBytes)
          * (try await asyncRate(seconds: seconds) {
            guard let reservation = try await tiers.reserve(putIDs[fresh % putIDs.count], bytes: blockBytes) else {
              fresh += 1
              return
            }
            reservation.buffer.copyMemory(from: UnsafeRawBufferPointer(source))
            try tiers.commit(reservation, expectedChecksum: nil)
            fresh += 1
          }))
    }
    tiers.release(lease)
    let copy = median(copies)
    let get = median(gets)
    let put = median(puts)
    let overheadNanoseconds = (Double(blockBytes) / get - Double(blockBytes) / copy) * 1e9
    print(
      "\(pad(ByteSize(bytes: UInt64(blockBytes)).description, 7)) \(pad(gb(copy), 12)) \(pad(gb(get), 9)) "
        + "\(pad(formatted(get / copy, 2) + "x", 11)) \(pad(formatted(overheadNanoseconds, 0), 22)) "
        + "\(pad(gb(put), 9)) \(formatted(put / copy, 2))x")
  }
}
