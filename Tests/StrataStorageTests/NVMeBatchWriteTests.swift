// Batch writes to the NVMe tier: a batch's small records go to the device in few writes (counted
// at the device), laid out exactly as single writes would lay them, byte-exact with and without
// lz4, never indexed before their write returned, and found again by recovery; a failed write
// fails its own run's blocks and no other, and a torn one keeps the records before the tear.

import Dispatch
import StrataConfig
import StrataCore
import Synchronization
import Testing

@testable import StrataStorage

/// A simulated device that logs every write (offset and length), can fail the n-th write from
/// now, and, once it watches a tier, notes each block whose record it is handed while that tier
/// already indexes it (a block must be indexed only after the write of its record returned).
final class NVMeWriteLogDevice: BlockDevice {
  struct Write: Hashable {
    var offset: Int
    var bytes: Int
  }

  private struct State {
    var writes: [Write] = []
    var failAfter: Int?
    var failedWrite: [BlockID] = []
    weak var watched: NVMeTier?
    var indexedBeforeWritten: [BlockID] = []
  }

  let inner: SimulatedBlockDevice
  private let state = Mutex(State())

  init(_ inner: SimulatedBlockDevice) { self.inner = inner }

  var capacityBytes: Int { inner.capacityBytes }
  var alignmentBytes: Int { inner.alignmentBytes }

  var writes: [Write] { state.withLock { $0.writes } }
  /// The blocks whose records the failed write carried.
  var failedWrite: [BlockID] { state.withLock { $0.failedWrite } }

  func clearLog() { state.withLock { $0.writes.removeAll() } }

  /// The write after `writes` more succeeded fails with EIO and changes nothing.
  func failWrite(after writes: Int) { state.withLock { $0.failAfter = writes } }

  func watch(_ tier: NVMeTier) { state.withLock { $0.watched = tier } }

  /// Blocks the watched tier indexed before the write of their record reached this device.
  var indexedBeforeWritten: [BlockID] { state.withLock { $0.indexedBeforeWritten } }

  func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
    try inner.read(at: offset, into: buffer)
  }

  func write(at offset: Int, from buffer: UnsafeRawBufferPointer) throws(StrataError) {
    let ids = nvmeRecordIDs(in: buffer, alignmentBytes: alignmentBytes)
    let (fail, watched) = state.withLock { state -> (Bool, NVMeTier?) in
      state.writes.append(Write(offset: offset, bytes: buffer.count))
      guard let left = state.failAfter else { return (false, state.watched) }
      state.failAfter = left == 0 ? nil : left - 1
      if left == 0 { state.failedWrite = ids }
      return (left == 0, state.watched)
    }
    // Outside this device's lock: the tier takes its own.
    if let watched {
      let early = ids.filter { watched.contains($0) }
      if !early.isEmpty { state.withLock { $0.indexedBeforeWritten += early } }
    }
    if fail {
      throw StrataError(.ioError, "test device: write of \(buffer.count) bytes at offset \(offset) failed: EIO")
    }
    try inner.write(at: offset, from: buffer)
  }

  func sync() throws(StrataError) { try inner.sync() }
  func discard(at offset: Int, bytes: Int) { inner.discard(at: offset, bytes: bytes) }
}

/// The blocks whose records lie back to back from the start of `bytes` (tombstones and
/// invalidated region starts name none).
func nvmeRecordIDs(in bytes: UnsafeRawBufferPointer, alignmentBytes: Int) -> [BlockID] {
  var ids: [BlockID] = []
  var offset = 0
  while offset + BlockRecordHeader.byteCount <= bytes.count,
    let header = try? BlockRecordHeader.decode(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
  {
    if !header.isTombstone { ids.append(BlockID(namespace: header.namespace, key: header.key)) }
    offset += header.recordBytes(alignmentBytes: alignmentBytes)
  }
  return ids
}

/// Writes `numbers`' blocks (`nvmeBlockPayload`) in one batch call; returns the outcomes.
func nvmeWriteBatch(
  _ tier: NVMeTier, _ numbers: [Int], payload: (Int) -> [UInt8] = nvmeBlockPayload
) -> [Result<NVMeWriteOutcome, StrataError>] {
  let payloads = numbers.map(payload)
  // One allocation holding every payload, so that all stay valid during the call.
  let offsets = payloads.reduce(into: [0]) { $0.append($0.last! + $1.count) }
  let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, offsets.last!), alignment: 16)
  defer { storage.deallocate() }
  var blocks: [NVMeBlockWrite] = []
  for (index, number) in numbers.enumerated() {
    let slice = UnsafeMutableRawBufferPointer(rebasing: storage[offsets[index]..<offsets[index + 1]])
    payloads[index].withUnsafeBytes { slice.copyMemory(from: $0) }
    let bytes = UnsafeRawBufferPointer(slice)
    blocks.append(NVMeBlockWrite(id: nvmeID(number), payload: bytes, checksum: CRC32C.checksum(bytes)))
  }
  return tier.write(blocks)
}

@Suite struct NVMeBatchWriteTests {
  /// 64 KiB regions (16 records of 4 KiB) and blocks up to 32 KiB, as in NVMeTierTests.
  static func tier(_ device: any BlockDevice, compression: CompressionCodec = .none) throws -> NVMeTier {
    try NVMeTierTests.tier([device], compression: compression)
  }

  /// A logging device of `regions` regions, and a tier over it that the device watches.
  static func watchedTier(regions: Int = 8, compression: CompressionCodec = .none) throws -> (
    NVMeWriteLogDevice, NVMeTier
  ) {
    let device = NVMeWriteLogDevice(NVMeTierTests.simulated(regions: regions))
    let tier = try Self.tier(device, compression: compression)
    device.watch(tier)
    return (device, tier)
  }

  @Test(arguments: [CompressionCodec.none, .lz4])
  func aBatchRoundTripsByteExactInFewWrites(compression: CompressionCodec) throws {
    let (device, tier) = try Self.watchedTier(regions: 16, compression: compression)
    device.clearLog()
    // Small blocks: 1 KiB payloads make records of 4 KiB, 16 to a region.
    let small = { (number: Int) in testPayload(number, bytes: 1000) }
    let outcomes = nvmeWriteBatch(tier, Array(0..<40), payload: small)
    #expect(outcomes.map { try? $0.get() } == Array(repeating: .written, count: 40))
    // 40 records in 64 KiB regions: three runs, one device write each (not 40).
    #expect(device.writes.count == 3, "\(device.writes)")
    #expect(device.writes.allSatisfy { $0.bytes <= NVMeTierTests.regionBytes && $0.bytes % 4096 == 0 })
    #expect(tier.statistics.recordWrites == 3 && tier.statistics.recordsWritten == 40)
    for number in 0..<40 { #expect(try nvmeRead(tier, nvmeID(number)) == small(number), "block \(number)") }

    // Blocks of every size the tier takes, half of them compressible: lz4 per record.
    let mixed = Array(100..<140)
    let before = device.writes.count
    #expect(nvmeWriteBatch(tier, mixed).allSatisfy { (try? $0.get()) == .written })
    #expect(device.writes.count - before < mixed.count / 2, "\(device.writes.count - before) writes")
    var compressed = 0
    for number in mixed {
      #expect(try nvmeRead(tier, nvmeID(number)) == nvmeBlockPayload(number), "block \(number)")
      if tier.recordLocation(of: nvmeID(number))?.codec == .lz4 { compressed += 1 }
    }
    #expect(compression == .lz4 ? compressed > 5 : compressed == 0, "\(compressed) lz4 records")

    #expect(device.indexedBeforeWritten == [])
    // Recovery after a crash reads the runs as the records they hold.
    let live = Array(0..<40) + mixed
    #expect(live.allSatisfy { tier.contains(nvmeID($0)) } && tier.statistics.evictedBlocks == 0)
    let (recovered, report) = try NVMeTierTests.recover([device.inner.crashed()], compression: compression)
    #expect(report.corruptDropped == 0 && report.blocksRecovered == live.count)
    for number in live {
      #expect(try nvmeRead(recovered, nvmeID(number)) == (number < 40 ? small(number) : nvmeBlockPayload(number)))
    }
  }

  /// Records of many sizes, after a few single writes so runs meet region ends part way: each
  /// record lands where a single write would have put it (the on-disk layout is unchanged).
  @Test func aBatchSpanningRegionsIsLaidOutAsSingleWritesWouldLayIt() throws {
    let numbers = Array(0..<30)
    let singles = try Self.tier(NVMeTierTests.simulated(regions: 16))
    let batched = try Self.tier(NVMeTierTests.simulated(regions: 16))
    for number in 1000..<1003 {
      try nvmeWrite(singles, nvmeID(number), nvmeBlockPayload(number))
      try nvmeWrite(batched, nvmeID(number), nvmeBlockPayload(number))
    }
    for number in numbers { try nvmeWrite(singles, nvmeID(number), nvmeBlockPayload(number)) }
    #expect(nvmeWriteBatch(batched, numbers).allSatisfy { (try? $0.get()) == .written })
    var regions = Set<Int>()
    for number in numbers {
      let location = try #require(batched.recordLocation(of: nvmeID(number)))
      #expect(location == singles.recordLocation(of: nvmeID(number)), "block \(number)")
      regions.insert(location.offset / NVMeTierTests.regionBytes)
      #expect(try nvmeRead(batched, nvmeID(number)) == nvmeBlockPayload(number))
    }
    #expect(regions.count >= 3, "the batch should span region boundaries")
    #expect(batched.statistics.evictedBlocks == 0 && batched.statistics.recordWrites < numbers.count)
    let (recovered, report) = try NVMeTierTests.recover([(batched.devices[0] as! SimulatedBlockDevice).crashed()])
    #expect(report.blocksRecovered == numbers.count + 3 && report.corruptDropped == 0)
    for number in numbers { #expect(try nvmeRead(recovered, nvmeID(number)) == nvmeBlockPayload(number)) }
  }

  /// A run ends at `batchWriteBytesMax`; a record larger than that is written alone.
  @Test func runsStayWithinTheWriteBound() throws {
    let bound = NVMeTier.batchWriteBytesMax
    let device = NVMeWriteLogDevice(SimulatedBlockDevice(capacityBytes: 6 * (4 << 20)))
    let tier = try NVMeTier(
      devices: [device], regionBytes: 4 << 20, compression: .none, blockBytesMax: 2 << 20, stagingBufferCount: 2)
    device.clearLog()
    let large = bound + bound / 2
    let payload = { (number: Int) in testPayload(number, bytes: number == 300 ? large : 3000) }
    let numbers = Array(0..<300) + [300] + Array(301..<401)
    #expect(nvmeWriteBatch(tier, numbers, payload: payload).allSatisfy { (try? $0.get()) == .written })
    let largeRecord = BlockRecordHeader.recordBytes(storedBytes: large, alignmentBytes: 4096)
    #expect(
      device.writes.map(\.bytes) == [bound, 44 * 4096, largeRecord, 100 * 4096],
      "\(device.writes.map(\.bytes))")
    for number in numbers { #expect(try nvmeRead(tier, nvmeID(number)) == payload(number), "block \(number)") }
    #expect(tier.statistics.stagingOverflowAllocations == 0)
  }

  /// Each block gets what a single write would have given it.
  @Test func eachBlockGetsItsOwnOutcome() throws {
    let device = NVMeWriteLogDevice(NVMeTierTests.simulated())
    let tier = try Self.tier(device)
    try nvmeWrite(tier, nvmeID(1), nvmeBlockPayload(1))
    let oversized = [UInt8](repeating: 1, count: NVMeTierTests.blockBytesMax + 1)
    let payloads = [nvmeBlockPayload(0), nvmeBlockPayload(1), nvmeBlockPayload(2), nvmeBlockPayload(0), oversized]
    let ids = [nvmeID(0), nvmeID(1), nvmeID(2), nvmeID(0), nvmeID(3)]
    let allocations = payloads.map { UnsafeMutableRawBufferPointer.allocate(byteCount: $0.count + 1, alignment: 16) }
    defer { for allocation in allocations { allocation.deallocate() } }
    let copies = zip(payloads, allocations).map { payload, allocation in
      let copy = UnsafeMutableRawBufferPointer(rebasing: allocation[0..<payload.count])
      payload.withUnsafeBytes { copy.copyMemory(from: $0) }
      return UnsafeRawBufferPointer(copy)
    }
    var blocks = zip(ids, copies).map { id, bytes in
      NVMeBlockWrite(id: id, payload: bytes, checksum: CRC32C.checksum(bytes))
    }
    // The payload of block 2 under another id, with a checksum that does not match it.
    blocks.append(NVMeBlockWrite(id: nvmeID(4), payload: copies[2], checksum: CRC32C.checksum(copies[2]) ^ 1))
    let outcomes = tier.write(blocks)
    #expect((try? outcomes[0].get()) == .written && (try? outcomes[2].get()) == .written)
    #expect((try? outcomes[1].get()) == .present, "present before the batch")
    #expect((try? outcomes[3].get()) == .present, "a repeat within the batch: the first copy stands")
    for (index, code) in [(4, StrataError.Code.invalidArgument), (5, .checksumMismatch)] {
      guard case .failure(let error) = outcomes[index] else {
        Issue.record("block \(index) was not refused")
        continue
      }
      #expect(error.code == code, "\(error)")
    }
    #expect(!tier.contains(nvmeID(3)) && !tier.contains(nvmeID(4)) && tier.blockCount == 3)
    #expect(tier.statistics.recordsWritten == 3)
    #expect(try nvmeRead(tier, nvmeID(0)) == nvmeBlockPayload(0))
  }

  /// A device write failing in the middle of a batch: every block of that run gets the error and
  /// stays out of the index; the runs before and after it are written and indexed, and recovery
  /// finds exactly those.
  @Test func aFailedWriteFailsItsWholeRunAndNothingElse() throws {
    let (device, tier) = try Self.watchedTier()
    let payload = { (number: Int) in testPayload(number, bytes: 3000 + number) }
    // Five records first, so the batch's runs meet region ends part way (leftovers start the next).
    for number in 100..<105 { try nvmeWrite(tier, nvmeID(number), payload(number)) }
    device.failWrite(after: 1)
    let numbers = Array(0..<40)
    let outcomes = nvmeWriteBatch(tier, numbers, payload: payload)
    let failed = Set(device.failedWrite)
    #expect(failed.count > 1, "the failed write should carry a run of records: \(failed)")
    for (number, outcome) in zip(numbers, outcomes) {
      if failed.contains(nvmeID(number)) {
        guard case .failure(let error) = outcome else {
          Issue.record("block \(number) of the failed run was reported written")
          continue
        }
        #expect(error.code == .ioError && error.message.contains("\(nvmeID(number))"), "\(error)")
        #expect(!tier.contains(nvmeID(number)))
      } else {
        #expect((try? outcome.get()) == .written, "block \(number): \(outcome)")
        #expect(try nvmeRead(tier, nvmeID(number)) == payload(number))
      }
    }
    #expect(tier.statistics.ioErrors == failed.count)
    #expect(device.indexedBeforeWritten == [])
    let written = numbers.filter { !failed.contains(nvmeID($0)) }
    #expect(written.count > 0 && written.count + failed.count == numbers.count)

    // Recovery finds every block that was reported written, and none of the failed run.
    let (recovered, report) = try NVMeTierTests.recover([device.inner.crashed()])
    #expect(report.corruptDropped == 0 && report.blocksRecovered == written.count + 5)
    for number in written { #expect(try nvmeRead(recovered, nvmeID(number)) == payload(number)) }
    for id in failed { #expect(!recovered.contains(id)) }

    // The tier goes on: the failed blocks are written by the next batch.
    let again = numbers.filter { failed.contains(nvmeID($0)) }
    #expect(nvmeWriteBatch(tier, again, payload: payload).allSatisfy { (try? $0.get()) == .written })
    for number in numbers { #expect(try nvmeRead(tier, nvmeID(number)) == payload(number)) }
  }

  /// Power lost in the middle of a run's write: recovery keeps the records wholly before the tear.
  @Test func aTornRunKeepsTheRecordsBeforeTheTear() throws {
    let device = NVMeTierTests.simulated()
    let tier = try Self.tier(device)
    let payload = { (number: Int) in testPayload(number, bytes: 3000) }
    device.tearNextWrite(keepingBytes: 5 * 4096 + 100)
    #expect(nvmeWriteBatch(tier, Array(0..<10), payload: payload).allSatisfy { (try? $0.get()) == .written })
    let (recovered, report) = try NVMeTierTests.recover([device.crashed()])
    #expect(report.blocksRecovered == 5 && report.corruptDropped == 1, "\(report)")
    for number in 0..<5 { #expect(try nvmeRead(recovered, nvmeID(number)) == payload(number)) }
    for number in 5..<10 { #expect(!recovered.contains(nvmeID(number))) }
  }

  /// Batches from several threads at once, with eviction and hot reinsertion racing them: every
  /// block read comes back with its own bytes.
  @Test func concurrentBatchesNeverMixBytes() throws {
    let tier = try NVMeTierTests.tier(
      [NVMeTierTests.simulated(regions: 6), NVMeTierTests.simulated(regions: 6)], compression: .lz4,
      stagingBufferCount: 4)
    tier.isHot = { id in id.key.prefix64 % 3 == 0 }
    let failures = Mutex<[String]>([])
    DispatchQueue.concurrentPerform(iterations: 4) { thread in
      var random = NVMeSplitMix64(seed: UInt64(thread) + 500)
      for _ in 0..<60 {
        let numbers = (0..<(1 + random.next(below: 12))).map { _ in random.next(below: 160) }
        for outcome in nvmeWriteBatch(tier, numbers) {
          if case .failure(let error) = outcome, error.code != .resourceExhausted {
            failures.withLock { $0.append("\(error)") }
          }
        }
        let number = random.next(below: 160)
        // Room for any block: sized by `payloadBytes(of:)`, a block absent then (0 bytes) could be
        // written by another thread before the read finds it.
        var destination = [UInt8](repeating: 0, count: NVMeTierTests.blockBytesMax)
        do {
          let count = try destination.withUnsafeMutableBytes { try tier.read(nvmeID(number), into: $0) }
          if Array(destination[0..<count]) != nvmeBlockPayload(number) {
            failures.withLock { $0.append("wrong bytes for block \(number)") }
          }
        } catch let error as StrataError where error.code == .notFound {
        } catch {
          failures.withLock { $0.append("\(error)") }
        }
      }
    }
    #expect(failures.withLock { $0 } == [])
    let statistics = tier.statistics
    #expect(statistics.evictedRegions > 3 && statistics.reinsertedBlocks > 0, "\(statistics)")
    #expect(statistics.corruptBlocksDetected == 0 && statistics.ioErrors == 0)
    #expect(statistics.recordWrites < statistics.recordsWritten)
    for number in 0..<160 where tier.contains(nvmeID(number)) {
      #expect(try nvmeRead(tier, nvmeID(number)) == nvmeBlockPayload(number))
    }
  }
}
