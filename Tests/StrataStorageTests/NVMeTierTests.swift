// The NVMe tier end to end on simulated and real (O_DIRECT file) devices: round trips, region
// eviction with hot reinsertion, warm restart after crashes, injected faults, and a seeded model check.

import Dispatch
import Foundation
import StrataConfig
import StrataCore
import StrataTestKit
import Synchronization
import Testing

@testable import StrataStorage

// MARK: Helpers shared by the NVMe suites

/// SplitMix64: a tiny, seedable generator, so a failing run replays from its seed.
struct NVMeSplitMix64 {
  var state: UInt64
  init(seed: UInt64) { state = seed }

  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  mutating func next(below bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

func nvmeKey(_ number: Int) -> BlockKey {
  var random = NVMeSplitMix64(seed: UInt64(number) &+ 0xC0FFEE)
  var bytes: [UInt8] = []
  for _ in 0..<4 { withUnsafeBytes(of: random.next()) { bytes += $0 } }
  return BlockKey(bytes: bytes)!
}

func nvmeID(_ number: Int, namespace: String = "tenant-a") -> BlockID {
  BlockID(namespace: try! Namespace(namespace), key: nvmeKey(number))
}

/// Compressible bytes look like token text (a small alphabet in short runs); the others are noise.
func nvmePayload(bytes: Int, compressible: Bool, random: inout NVMeSplitMix64) -> [UInt8] {
  var payload = [UInt8](repeating: 0, count: bytes)
  var index = 0
  while index < bytes {
    let word = random.next()
    if compressible {
      let run = min(bytes - index, 1 + Int(word % 12))
      for offset in 0..<run { payload[index + offset] = UInt8(ascii: "a") + UInt8((word >> 8) % 6) }
      index += run
    } else {
      withUnsafeBytes(of: word) {
        for byte in $0 where index < bytes {
          payload[index] = byte
          index += 1
        }
      }
    }
  }
  return payload
}

/// The one payload block `number` ever has: blocks are immutable, so a rewrite carries the same bytes.
func nvmeBlockPayload(_ number: Int) -> [UInt8] {
  var random = NVMeSplitMix64(seed: UInt64(number) &* 7919)
  let bytes = [0, 1, 100, 4000, 5000, 12_000, 20_000, 30_000][random.next(below: 8)]
  return nvmePayload(bytes: bytes, compressible: random.next() % 2 == 0, random: &random)
}

func nvmeWrite(_ tier: NVMeTier, _ id: BlockID, _ payload: [UInt8]) throws {
  try payload.withUnsafeBytes { try tier.write(id, payload: $0, checksum: CRC32C.checksum($0)) }
}

func nvmeRead(_ tier: NVMeTier, _ id: BlockID) throws -> [UInt8] {
  var destination = [UInt8](repeating: 0, count: tier.payloadBytes(of: id) ?? 0)
  let count = try destination.withUnsafeMutableBytes { try tier.read(id, into: $0) }
  return Array(destination[0..<count])
}

func expectStrataError(
  _ code: StrataError.Code, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation
) {
  do {
    try body()
    Issue.record("expected \(code), got success", sourceLocation: sourceLocation)
  } catch let error as StrataError {
    #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
  } catch {
    Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
  }
}

/// A scratch directory under /tmp (ext4 here, so O_DIRECT works), removed when the test ends.
final class NVMeScratchDirectory {
  let path: String
  init() throws {
    path = NSTemporaryDirectory() + "strata-nvme-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }
  deinit { try? FileManager.default.removeItem(atPath: path) }
}

// MARK: Tier tests

@Suite struct NVMeTierTests {
  static let regionBytes = 64 << 10
  static let blockBytesMax = 32 << 10

  static func simulated(regions: Int = 8, alignmentBytes: Int = 4096) -> SimulatedBlockDevice {
    SimulatedBlockDevice(capacityBytes: regions * regionBytes, alignmentBytes: alignmentBytes)
  }

  static func tier(_ devices: [any BlockDevice], compression: CompressionCodec = .none, stagingBufferCount: Int = 4)
    throws -> NVMeTier
  {
    try NVMeTier(
      devices: devices, regionBytes: regionBytes, compression: compression, blockBytesMax: blockBytesMax,
      stagingBufferCount: stagingBufferCount)
  }

  static func recover(_ devices: [any BlockDevice], compression: CompressionCodec = .none) throws -> (
    NVMeTier, RecoveryReport
  ) {
    try NVMeTier.recover(
      devices: devices, regionBytes: regionBytes, compression: compression, blockBytesMax: blockBytesMax,
      stagingBufferCount: 4)
  }

  // MARK: Round trips

  @Test(arguments: [CompressionCodec.none, .lz4])
  func roundTripsOnASimulatedDevice(compression: CompressionCodec) throws {
    let tier = try Self.tier([Self.simulated()], compression: compression)
    var random = NVMeSplitMix64(seed: 1)
    var written: [(BlockID, [UInt8], Bool)] = []
    for (number, bytes) in [0, 1, 3839, 3840, 3841, 10_000, Self.blockBytesMax].enumerated() {
      for compressible in [true, false] {
        let id = nvmeID(number * 2 + (compressible ? 1 : 0))
        let payload = nvmePayload(bytes: bytes, compressible: compressible, random: &random)
        try nvmeWrite(tier, id, payload)
        written.append((id, payload, compressible))
      }
    }
    for (id, payload, compressible) in written {
      #expect(try nvmeRead(tier, id) == payload)
      let location = try #require(tier.recordLocation(of: id))
      let expectCompressed = compression == .lz4 && compressible && payload.count >= 100
      #expect(
        location.codec == (expectCompressed ? .lz4 : .none), "\(payload.count) bytes, compressible \(compressible)")
      if location.codec == .lz4 { #expect(location.storedBytes <= payload.count - payload.count / 16) }
      #expect(location.offset % 4096 == 0 && location.recordBytes % 4096 == 0)
    }
    #expect(tier.blockCount == written.count)
  }

  @Test(arguments: [CompressionCodec.none, .lz4])
  func roundTripsOnAFileAndSurvivesARestart(compression: CompressionCodec) throws {
    let directory = try NVMeScratchDirectory()
    let path = directory.path + "/nvme0.strata"
    var random = NVMeSplitMix64(seed: 2)
    var written: [BlockID: [UInt8]] = [:]
    do {
      let device = try FileBlockDevice(path: path, capacityBytes: 8 * Self.regionBytes)
      #expect(device.isDirect, "/tmp should accept O_DIRECT")
      let tier = try Self.tier([device], compression: compression)
      for number in 0..<12 {
        let payload = nvmePayload(bytes: 1000 + number * 2000, compressible: number % 2 == 0, random: &random)
        try nvmeWrite(tier, nvmeID(number), payload)
        written[nvmeID(number)] = payload
      }
      for (id, payload) in written { #expect(try nvmeRead(tier, id) == payload) }
      try tier.sync()
    }
    // The tier and the device are gone (descriptor closed); a new process would start like this.
    let reopened = try FileBlockDevice(path: path, capacityBytes: 8 * Self.regionBytes)
    let (tier, report) = try Self.recover([reopened], compression: compression)
    #expect(report.blocksRecovered == written.count && report.corruptDropped == 0)
    for (id, payload) in written { #expect(try nvmeRead(tier, id) == payload) }
  }

  @Test func presentBlocksAreNotWrittenAgain() throws {
    let device = Self.simulated()
    let tier = try Self.tier([device])
    let payload = [UInt8](repeating: 7, count: 5000)
    try nvmeWrite(tier, nvmeID(1), payload)
    let writes = device.writeCount
    let used = tier.usedBytes
    try nvmeWrite(tier, nvmeID(1), payload)
    #expect(device.writeCount == writes && tier.usedBytes == used && tier.blockCount == 1)
    // The same key in another namespace is another block.
    try nvmeWrite(tier, nvmeID(1, namespace: "tenant-b"), payload)
    #expect(tier.blockCount == 2)
  }

  @Test func refusesBadRequests() throws {
    let tier = try Self.tier([Self.simulated()])
    let payload = [UInt8](repeating: 1, count: 100)
    expectStrataError(.checksumMismatch) {
      try payload.withUnsafeBytes { try tier.write(nvmeID(1), payload: $0, checksum: CRC32C.checksum($0) ^ 1) }
    }
    #expect(!tier.contains(nvmeID(1)))
    expectStrataError(.invalidArgument) {
      try nvmeWrite(tier, nvmeID(2), [UInt8](repeating: 0, count: Self.blockBytesMax + 1))
    }
    expectStrataError(.notFound) {
      var destination = [UInt8](repeating: 0, count: 10)
      _ = try destination.withUnsafeMutableBytes { try tier.read(nvmeID(3), into: $0) }
    }
    try nvmeWrite(tier, nvmeID(4), payload)
    expectStrataError(.invalidArgument) {
      var destination = [UInt8](repeating: 0, count: 99)
      _ = try destination.withUnsafeMutableBytes { try tier.read(nvmeID(4), into: $0) }
    }
    #expect(tier.remove(nvmeID(4)) && !tier.remove(nvmeID(4)) && !tier.contains(nvmeID(4)))
    expectStrataError(.notFound) { _ = try nvmeRead(tier, nvmeID(4)) }
  }

  @Test func refusesImpossibleLayouts() {
    expectStrataError(.invalidConfiguration) {
      _ = try NVMeTier(
        devices: [Self.simulated()], regionBytes: Self.regionBytes + 512, compression: .none, blockBytesMax: 1024)
    }
    expectStrataError(.invalidConfiguration) {
      _ = try NVMeTier(
        devices: [Self.simulated(regions: 1)], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: 1024)
    }
    expectStrataError(.invalidConfiguration) {
      _ = try NVMeTier(
        devices: [Self.simulated()], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.regionBytes)
    }
    expectStrataError(.invalidConfiguration) {
      _ = try NVMeTier(devices: [], regionBytes: Self.regionBytes, compression: .none)
    }
  }

  // MARK: Eviction

  @Test func evictsTheOldestRegionWholeAndReinsertsHotBlocks() throws {
    let tier = try Self.tier([Self.simulated(regions: 4)])
    let evictions = Mutex<[[BlockID]]>([])
    tier.onEvict = { ids in evictions.withLock { $0.append(ids) } }
    tier.isHot = { $0 == nvmeID(5) }
    // 12 KiB payloads make 16 KiB records: four to a 64 KiB region.
    let payload = { (number: Int) in [UInt8](repeating: UInt8(number), count: 12 << 10) }
    for number in 0..<12 { try nvmeWrite(tier, nvmeID(number), payload(number)) }
    #expect(evictions.withLock { $0.isEmpty } && tier.blockCount == 12)

    // Opening the last free region (block 12) reclaims the oldest, region 0 with blocks 0-3.
    try nvmeWrite(tier, nvmeID(12), payload(12))
    #expect(evictions.withLock { $0 } == [(0..<4).map { nvmeID($0) }])
    for number in 0..<4 { #expect(!tier.contains(nvmeID(number))) }
    for number in 4...12 { #expect(tier.contains(nvmeID(number))) }

    for number in 13..<16 { try nvmeWrite(tier, nvmeID(number), payload(number)) }
    #expect(evictions.withLock { $0.count } == 1)
    // Block 16 opens region 0 again, which reclaims region 1 (blocks 4-7); block 5 is hot.
    try nvmeWrite(tier, nvmeID(16), payload(16))
    #expect(evictions.withLock { $0.last } == [nvmeID(4), nvmeID(6), nvmeID(7)])
    #expect(try nvmeRead(tier, nvmeID(5)) == payload(5))
    let statistics = tier.statistics
    #expect(statistics.reinsertedBlocks == 1 && statistics.evictedRegions == 2 && statistics.evictedBlocks == 7)
    #expect(tier.blockCount == 10 && statistics.usedBytes == 10 * (16 << 10))
    // The reinserted copy lives in the region just opened, behind block 16.
    #expect(tier.recordLocation(of: nvmeID(5))?.offset == 16 << 10)
    #expect(tier.recordLocation(of: nvmeID(16))?.offset == 0)
  }

  /// A tier at most three quarters full of live blocks, with a region's worth of records of blocks
  /// removed since, keeps its cold blocks when the log comes round to their regions: they are
  /// rewritten ahead, not evicted (even from a region that is all live: the last free region is
  /// left to the reclaim), and read back whole, here and after a crash. One cold block, and
  /// eighteen filling 9/16 of the tier (which a rule up to half evicted). (A log without dead
  /// records evicts cold blocks, oldest region first:
  /// `evictsTheOldestRegionWholeAndReinsertsHotBlocks`.)
  @Test(arguments: [1, 18])
  func aTierAtMostThreeQuartersLiveKeepsItsColdBlocksWhenTheLogWraps(coldBlocks: Int) throws {
    let device = Self.simulated(regions: 8)
    let tier = try Self.tier([device])
    let evictions = Mutex<[BlockID]>([])
    tier.onEvict = { ids in evictions.withLock { $0 += ids } }
    let payload = { (number: Int) in [UInt8](repeating: UInt8(number), count: 12 << 10) }
    for number in 0..<coldBlocks { try nvmeWrite(tier, nvmeID(number), payload(number)) }
    // Each round leaves a dead 16 KiB record and a tombstone: 40 rounds wrap the 512 KiB log.
    for number in 100..<140 {
      try nvmeWrite(tier, nvmeID(number), payload(number))
      #expect(tier.remove(nvmeID(number)))
    }
    let statistics = tier.statistics
    #expect(statistics.evictedRegions >= 1, "the log should have wrapped")
    #expect(evictions.withLock { $0 }.isEmpty && statistics.reinsertedBlocks >= coldBlocks)
    let (recovered, _) = try Self.recover([device.crashed()])
    #expect(recovered.blockCount == coldBlocks)
    for number in 0..<coldBlocks {
      #expect(try nvmeRead(tier, nvmeID(number)) == payload(number))
      #expect(try nvmeRead(recovered, nvmeID(number)) == payload(number))
    }
    let region = 64 << 10
    #expect(
      RegionLog.keepsColdBlocks(
        liveBytes: 384 << 10, writtenBytes: 448 << 10, capacityBytes: 512 << 10, regionBytes: region))
    #expect(
      !RegionLog.keepsColdBlocks(
        liveBytes: (384 << 10) + 1, writtenBytes: 448 << 10, capacityBytes: 512 << 10, regionBytes: region))
    #expect(
      !RegionLog.keepsColdBlocks(
        liveBytes: 64 << 10, writtenBytes: (128 << 10) - 1, capacityBytes: 512 << 10, regionBytes: region))
  }

  /// A reclaim that rewrites a cold block ahead reads it, and so checks it: a record whose bytes
  /// decayed is dropped and told to `onDamaged` (a cluster node reads it back from its other
  /// owners), not counted as evicted for room. Evicted unread, an owner stayed a copy short
  /// (simulator seed 991601).
  @Test func aReclaimThatFindsADamagedRecordTellsOnDamaged() throws {
    let device = Self.simulated(regions: 8)
    let tier = try Self.tier([device])
    let evictions = Mutex<[BlockID]>([])
    let damaged = Mutex<[BlockID]>([])
    tier.onEvict = { ids in evictions.withLock { $0 += ids } }
    tier.onDamaged = { ids in damaged.withLock { $0 += ids } }
    let payload = { (number: Int) in [UInt8](repeating: UInt8(number), count: 12 << 10) }
    for number in 0..<18 { try nvmeWrite(tier, nvmeID(number), payload(number)) }
    let location = try #require(tier.recordLocation(of: nvmeID(3)))
    device.flipBit(atByte: location.offset + 1000, bit: 2)
    for number in 100..<140 {
      try nvmeWrite(tier, nvmeID(number), payload(number))
      #expect(tier.remove(nvmeID(number)))
    }
    #expect(damaged.withLock { $0 } == [nvmeID(3)])
    #expect(evictions.withLock { $0 }.isEmpty && tier.statistics.evictedBlocks == 0)
    #expect(!tier.contains(nvmeID(3)) && tier.statistics.corruptBlocksDetected == 1)
    for number in 0..<18 where number != 3 { #expect(try nvmeRead(tier, nvmeID(number)) == payload(number)) }
  }

  // MARK: Warm restart

  @Test(arguments: [CompressionCodec.none, .lz4])
  func recoversEveryBlockAfterACrash(compression: CompressionCodec) throws {
    let devices = [Self.simulated(regions: 6), Self.simulated(regions: 6, alignmentBytes: 512)]
    let tier = try Self.tier(devices, compression: compression)
    var evicted: Set<BlockID> = []
    let evictedBox = Mutex<[BlockID]>([])
    tier.onEvict = { ids in evictedBox.withLock { $0 += ids } }
    // Enough to wrap around the log at least once, so recovery meets reused regions' stale tails.
    for number in 0..<150 { try nvmeWrite(tier, nvmeID(number), nvmeBlockPayload(number)) }
    evicted = Set(evictedBox.withLock { $0 })
    #expect(!evicted.isEmpty, "the test should wrap the log")
    let present = (0..<150).filter { tier.contains(nvmeID($0)) }
    #expect(present.count + evicted.count == 150)

    let (recovered, report) = try Self.recover(devices.map { $0.crashed() }, compression: compression)
    #expect(report.blocksRecovered == present.count && report.corruptDropped == 0 && report.regionsScanned == 12)
    #expect(recovered.blockCount == present.count && recovered.usedBytes == tier.usedBytes)
    for number in present { #expect(try nvmeRead(recovered, nvmeID(number)) == nvmeBlockPayload(number)) }
    for id in evicted { #expect(!recovered.contains(id), "evicted \(id) came back") }

    // A second life writes on, rewrites a block it removed (the newest, so its old record is not
    // evicted meanwhile), and crashes again.
    let again = present.last!
    #expect(recovered.remove(nvmeID(again)))
    try nvmeWrite(recovered, nvmeID(again), nvmeBlockPayload(again))
    for number in 150..<154 { try nvmeWrite(recovered, nvmeID(number), nvmeBlockPayload(number)) }
    let presentNow = (0..<154).filter { recovered.contains(nvmeID($0)) }
    let (third, thirdReport) = try Self.recover(
      (recovered.devices as! [SimulatedBlockDevice]).map { $0.crashed() }, compression: compression)
    #expect(third.blockCount == presentNow.count && thirdReport.corruptDropped == 0)
    #expect(thirdReport.duplicatesDropped >= 1, "the rewritten block has two records; the newer must win")
    for number in presentNow { #expect(try nvmeRead(third, nvmeID(number)) == nvmeBlockPayload(number)) }
    #expect(third.recordLocation(of: nvmeID(again)) == recovered.recordLocation(of: nvmeID(again)))
  }

  @Test(arguments: [100, 5000])
  func aTornLastRecordIsDroppedAndTheRestRecovered(keptBytes: Int) throws {
    let device = Self.simulated()
    let tier = try Self.tier([device])
    for number in 0..<5 { try nvmeWrite(tier, nvmeID(number), [UInt8](repeating: UInt8(number), count: 10_000)) }
    // Power fails while the sixth record is being written: only its first bytes reach the medium.
    device.tearNextWrite(keepingBytes: keptBytes)
    try nvmeWrite(tier, nvmeID(5), [UInt8](repeating: 5, count: 10_000))

    let (recovered, report) = try Self.recover([device.crashed()])
    #expect(report.blocksRecovered == 5 && report.corruptDropped == 1)
    #expect(!recovered.contains(nvmeID(5)))
    for number in 0..<5 {
      #expect(try nvmeRead(recovered, nvmeID(number)) == [UInt8](repeating: UInt8(number), count: 10_000))
    }
    // The recovered tier writes on, after the torn record, and the next restart sees both.
    try nvmeWrite(recovered, nvmeID(6), [UInt8](repeating: 6, count: 10_000))
    let (next, nextReport) = try Self.recover([(recovered.devices[0] as! SimulatedBlockDevice).crashed()])
    #expect(nextReport.blocksRecovered == 6 && next.contains(nvmeID(6)))
  }

  // MARK: Faults

  /// The simulated device knows which bits it flipped and a write or discard has not replaced
  /// (the simulator asks whether a record holds one without reading it, which would drop it), a
  /// crash keeps them, and flipping a bit back undoes it.
  @Test func theSimulatedDeviceKnowsWhichFlippedBitsStillReadBackFlipped() throws {
    let device = SimulatedBlockDevice(capacityBytes: 64 << 10)
    device.flipBit(atByte: 5000, bit: 1)
    device.flipBit(atByte: 20_000, bit: 7)
    #expect(device.holdsFlippedBits(in: 4096..<8192) && device.holdsFlippedBits(in: 19_000..<21_000))
    #expect(!device.holdsFlippedBits(in: 0..<4096) && !device.holdsFlippedBits(in: 5001..<20_000))
    let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { zeros.deallocate() }
    zeros.initializeMemory(as: UInt8.self, repeating: 0)
    try device.write(at: 4096, from: UnsafeRawBufferPointer(zeros))
    #expect(!device.holdsFlippedBits(in: 4096..<8192))
    let restarted = device.crashed()
    #expect(restarted.holdsFlippedBits(in: 16_384..<20_480 + 1))
    restarted.flipBit(atByte: 20_000, bit: 7)
    #expect(!restarted.holdsFlippedBits(in: 0..<(64 << 10)))
    device.discard(at: 16_384, bytes: 8192)
    #expect(!device.holdsFlippedBits(in: 0..<(64 << 10)))
  }

  @Test(arguments: [(CompressionCodec.none, 300), (.lz4, 300), (.none, 40)])
  func aFlippedBitIsDetectedAndTheBlockDropped(compression: CompressionCodec, byteInRecord: Int) throws {
    let device = Self.simulated()
    let tier = try Self.tier([device], compression: compression)
    var random = NVMeSplitMix64(seed: 3)
    let payload = nvmePayload(bytes: 20_000, compressible: true, random: &random)
    // Block 2 goes first: a decayed header ends recovery's walk of its region, so only records
    // before it are certain to come back.
    try nvmeWrite(tier, nvmeID(2), payload)
    try nvmeWrite(tier, nvmeID(1), payload)
    let location = try #require(tier.recordLocation(of: nvmeID(1)))
    #expect(location.codec == compression)
    device.flipBit(atByte: location.offset + byteInRecord, bit: 3)

    var destination = [UInt8](repeating: 0xFF, count: payload.count)
    expectStrataError(.checksumMismatch) {
      _ = try destination.withUnsafeMutableBytes { try tier.read(nvmeID(1), into: $0) }
    }
    #expect(destination.allSatisfy { $0 == 0 }, "no byte of a corrupt block may reach the caller")
    #expect(!tier.contains(nvmeID(1)) && tier.statistics.corruptBlocksDetected == 1)
    expectStrataError(.notFound) { _ = try nvmeRead(tier, nvmeID(1)) }
    #expect(try nvmeRead(tier, nvmeID(2)) == payload)
    // Recovery checks the stored bytes too, so the decayed record stays out after a restart.
    let (recovered, report) = try Self.recover([device.crashed()], compression: compression)
    #expect(!recovered.contains(nvmeID(1)) && recovered.contains(nvmeID(2)) && report.corruptDropped == 1)
  }

  @Test func failedWritesAreNotAdmittedAndTheTierKeepsWorking() throws {
    let device = Self.simulated()
    let tier = try Self.tier([device])
    let payload = { (number: Int) in [UInt8](repeating: UInt8(number), count: 9000) }
    try nvmeWrite(tier, nvmeID(0), payload(0))
    device.failNextWrites(2)
    expectStrataError(.ioError) { try nvmeWrite(tier, nvmeID(1), payload(1)) }
    expectStrataError(.ioError) { try nvmeWrite(tier, nvmeID(2), payload(2)) }
    #expect(!tier.contains(nvmeID(1)) && !tier.contains(nvmeID(2)))
    for number in 1..<8 { try nvmeWrite(tier, nvmeID(number), payload(number)) }
    for number in 0..<8 { #expect(try nvmeRead(tier, nvmeID(number)) == payload(number)) }
    #expect(tier.statistics.ioErrors == 2)
    // Blocks written after the failure sit beyond its hole and still come back after a restart.
    let (recovered, report) = try Self.recover([device.crashed()])
    #expect(report.blocksRecovered == 8)
    for number in 0..<8 { #expect(try nvmeRead(recovered, nvmeID(number)) == payload(number)) }
  }

  /// A failed write gives its space back: the next record is written where it would have been, in
  /// the same region, and comes back after a restart. A failed run of records gives back the whole
  /// run. (Each failed write used to seal the open region, so a disk failing one write in many
  /// lost up to a region, 64 MiB by default, with each: simulator seed 421485, whose 2 MiB disk
  /// then evicted live blocks an owner needed.)
  @Test func aFailedWriteCostsNoSpace() throws {
    let device = Self.simulated()
    let tier = try Self.tier([device])
    let payload = { (number: Int) in [UInt8](repeating: UInt8(number), count: 9000) }
    try nvmeWrite(tier, nvmeID(0), payload(0))
    let free = tier.statistics.freeRegionCount
    let first = try #require(tier.recordLocation(of: nvmeID(0)))
    device.failNextWrites(1)
    expectStrataError(.ioError) { try nvmeWrite(tier, nvmeID(1), payload(1)) }
    try nvmeWrite(tier, nvmeID(2), payload(2))
    let second = try #require(tier.recordLocation(of: nvmeID(2)))
    #expect(second.offset == first.offset + first.recordBytes, "written over the failed write's space")
    device.failNextWrites(1)
    let failedRun = nvmeWriteBatch(tier, [3, 4, 5], payload: payload)
    #expect(failedRun.allSatisfy { if case .failure = $0 { true } else { false } })
    try nvmeWrite(tier, nvmeID(6), payload(6))
    #expect(tier.recordLocation(of: nvmeID(6))?.offset == second.offset + second.recordBytes, "and over the run's")
    #expect(tier.statistics.freeRegionCount == free)
    let (recovered, report) = try Self.recover([device.crashed()])
    #expect(report.blocksRecovered == 3 && report.corruptDropped == 0, "\(report)")
    for number in [0, 2, 6] { #expect(try nvmeRead(recovered, nvmeID(number)) == payload(number)) }
  }

  /// A disk failing every write under a full tier: a failed write gives its space back (the test
  /// above) unless a later reservation holds the space after it, when the open region is sealed;
  /// reclaiming a region of live blocks for each failure would empty the tier in as many writes as
  /// it has regions. At most one region of live blocks goes; after that failed writes reuse the
  /// regions they left empty, or are refused, and once the disk works again writes succeed as before.
  @Test func aDiskFailingWritesEvictsAtMostOneRegionOfLiveBlocks() throws {
    let device = Self.simulated()  // 8 regions of 16 records of 4 KiB
    let tier = try Self.tier([device])
    let payload = { (number: Int) in [UInt8](repeating: UInt8(truncatingIfNeeded: number), count: 3000) }
    for number in 0..<200 { try nvmeWrite(tier, nvmeID(number), payload(number)) }
    let before = tier.statistics
    #expect(before.freeRegionCount <= 1 && before.evictedBlocks > 0, "the tier is full: \(before)")
    device.failNextWrites(1_000)
    var failed = 0
    for number in 200..<240 {
      do {
        try nvmeWrite(tier, nvmeID(number), payload(number))
      } catch {
        let code = (error as? StrataError)?.code
        #expect(code == .ioError || code == .resourceExhausted, "\(error)")
        failed += 1
      }
    }
    #expect(failed == 40)
    let evicted = tier.statistics.evictedBlocks - before.evictedBlocks
    #expect(evicted <= 16, "\(evicted) live blocks evicted while the disk failed every write")
    let kept = (0..<200).filter { tier.contains(nvmeID($0)) }
    #expect(kept.count >= before.blockCount - 16)

    device.failNextWrites(0)
    for number in 300..<340 { try nvmeWrite(tier, nvmeID(number), payload(number)) }
    for number in kept + Array(300..<340) where tier.contains(nvmeID(number)) {
      #expect(try nvmeRead(tier, nvmeID(number)) == payload(number), "block \(number)")
    }
    #expect((300..<340).allSatisfy { tier.contains(nvmeID($0)) })
    let (recovered, _) = try Self.recover([device.crashed()])
    for number in 300..<340 { #expect(try nvmeRead(recovered, nvmeID(number)) == payload(number)) }
  }

  @Test func aFailedReadDropsTheBlock() throws {
    let device = Self.simulated()
    let tier = try Self.tier([device])
    try nvmeWrite(tier, nvmeID(1), [UInt8](repeating: 1, count: 5000))
    try nvmeWrite(tier, nvmeID(2), [UInt8](repeating: 2, count: 5000))
    let location = try #require(tier.recordLocation(of: nvmeID(1)))
    device.failReads(in: location.offset..<(location.offset + 1))
    expectStrataError(.ioError) { _ = try nvmeRead(tier, nvmeID(1)) }
    #expect(!tier.contains(nvmeID(1)) && tier.statistics.ioErrors == 1)
    #expect(try nvmeRead(tier, nvmeID(2)) == [UInt8](repeating: 2, count: 5000))
  }

  @Test func aRegionLeftWithAHoleIsStillReclaimedWhole() throws {
    // A failed write leaves a hole the reclaim's header walk cannot cross; the blocks behind it
    // must still leave the index when their region is evicted.
    let device = Self.simulated(regions: 3)
    let tier = try Self.tier([device])
    let evicted = Mutex<[BlockID]>([])
    tier.onEvict = { ids in evicted.withLock { $0 += ids } }
    let payload = { (number: Int) in [UInt8](repeating: UInt8(number), count: 12 << 10) }
    try nvmeWrite(tier, nvmeID(0), payload(0))
    device.tearNextWrite(keepingBytes: 0)  // reports success but writes nothing: a hole
    try nvmeWrite(tier, nvmeID(1), payload(1))
    try nvmeWrite(tier, nvmeID(2), payload(2))
    for number in 3..<12 { try nvmeWrite(tier, nvmeID(number), payload(number)) }
    let statistics = tier.statistics
    #expect(statistics.reclaimFullScans >= 1)
    for id in evicted.withLock({ $0 }) { #expect(!tier.contains(id)) }
    #expect(statistics.usedBytes == tier.blockCount * (16 << 10) && statistics.usedBytes <= statistics.capacityBytes)
  }

  // MARK: Real files

  @Test func fileDeviceErrorsNameTheirCause() throws {
    let directory = try NVMeScratchDirectory()
    do {
      _ = try FileBlockDevice(path: directory.path + "/missing/nvme0", capacityBytes: 1 << 20)
      Issue.record("opened a file in a missing directory")
    } catch {
      #expect(error.code == .ioError && error.message.contains("does not exist") && error.message.contains("missing"))
    }
    let path = directory.path + "/huge"
    var volume = statvfs()
    #expect(statvfs(directory.path, &volume) == 0)
    let available = Int(volume.f_bavail) * Int(volume.f_frsize)
    let tooLarge = (available + (1 << 40)) / 4096 * 4096
    do {
      _ = try FileBlockDevice(path: path, capacityBytes: tooLarge)
      Issue.record("reserved more than the disk holds")
    } catch {
      #expect(error.code == .ioError && error.message.contains("disk full") && error.message.contains(path))
      #expect(error.message.contains("\(tooLarge)"))
    }
    #expect(!FileManager.default.fileExists(atPath: path), "a refused device leaves no file behind")
    do {
      _ = try FileBlockDevice(path: directory.path + "/odd", capacityBytes: 4096 + 100)
      Issue.record("accepted an unaligned capacity")
    } catch {
      #expect(error.code == .invalidArgument)
    }
  }

  @Test func fileDeviceMovesBytesExactly() throws {
    let directory = try NVMeScratchDirectory()
    let device = try FileBlockDevice(path: directory.path + "/raw", capacityBytes: 1 << 20)
    let alignment = device.alignmentBytes
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 3 * alignment, alignment: alignment)
    defer { buffer.deallocate() }
    for index in 0..<buffer.count { buffer[index] = UInt8(truncatingIfNeeded: index &* 31) }
    try device.write(at: 5 * alignment, from: UnsafeRawBufferPointer(buffer))
    let copy = Array(buffer)
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    try device.read(at: 5 * alignment, into: buffer)
    #expect(Array(buffer) == copy)
    try device.sync()
    device.discard(at: 5 * alignment, bytes: alignment)
    try device.read(at: 5 * alignment, into: buffer)
    #expect(buffer[0..<alignment].allSatisfy { $0 == 0 } && Array(buffer[alignment...]) == Array(copy[alignment...]))
  }

  // MARK: Model check

  @Test(arguments: [UInt64(1), 2, 3])
  func randomOperationsMatchAModel(seed: UInt64) throws {
    var random = NVMeSplitMix64(seed: seed)
    let devices = [Self.simulated(regions: 5), Self.simulated(regions: 4)]
    let tier = try Self.tier(devices, compression: .lz4)
    let evicted = Mutex<[BlockID]>([])
    tier.onEvict = { ids in evicted.withLock { $0 += ids } }
    tier.isHot = { id in id.key.prefix64 % 4 == 0 }
    var model: [BlockID: Int] = [:]
    var everWritten: [BlockID: Int] = [:]
    for step in 0..<2500 {
      let number = random.next(below: 150)
      let id = nvmeID(number, namespace: number % 3 == 0 ? "tenant-b" : "tenant-a")
      switch random.next(below: 10) {
      case 0..<5:
        try nvmeWrite(tier, id, nvmeBlockPayload(number))
        model[id] = number
        everWritten[id] = number
      case 5..<8:
        if let expected = model[id] {
          #expect(try nvmeRead(tier, id) == nvmeBlockPayload(expected), "seed \(seed) step \(step)")
        } else {
          expectStrataError(.notFound) { _ = try nvmeRead(tier, id) }
        }
      default:
        #expect(tier.remove(id) == (model.removeValue(forKey: id) != nil), "seed \(seed) step \(step)")
      }
      for gone in evicted.withLock({ ids in
        defer { ids.removeAll() }
        return ids
      }) {
        #expect(model.removeValue(forKey: gone) != nil, "evicted \(gone), which the model did not hold")
      }
      let statistics = tier.statistics
      #expect(
        statistics.usedBytes <= statistics.capacityBytes && statistics.blockCount == model.count,
        "seed \(seed) step \(step)")
      if statistics.blockCount != model.count { return }
    }
    #expect(
      tier.statistics.evictedRegions > 3 && tier.statistics.reinsertedBlocks > 0, "the run should exercise eviction")
    for (id, number) in model { #expect(try nvmeRead(tier, id) == nvmeBlockPayload(number)) }

    // After a crash every block held comes back intact; a removed one may come back too (its record
    // outlives `remove`), but only ever with its own bytes.
    let (recovered, report) = try Self.recover(devices.map { $0.crashed() }, compression: .lz4)
    #expect(report.corruptDropped == 0)
    for (id, number) in model { #expect(try nvmeRead(recovered, id) == nvmeBlockPayload(number)) }
    for (id, number) in everWritten where recovered.contains(id) {
      #expect(try nvmeRead(recovered, id) == nvmeBlockPayload(number))
    }
  }

  @Test func concurrentCallersNeverSeeWrongBytes() throws {
    let tier = try Self.tier(
      [Self.simulated(regions: 6), Self.simulated(regions: 6)], compression: .lz4, stagingBufferCount: 8)
    tier.isHot = { id in id.key.prefix64 % 3 == 0 }
    let failures = Mutex<[String]>([])
    let refused = Atomic<Int>(0)
    DispatchQueue.concurrentPerform(iterations: 8) { thread in
      var random = NVMeSplitMix64(seed: UInt64(thread) + 100)
      for _ in 0..<400 {
        let number = random.next(below: 48)
        let id = nvmeID(number)
        do {
          switch random.next(below: 10) {
          case 0..<4:
            try nvmeWrite(tier, id, nvmeBlockPayload(number))
          case 4..<9:
            var destination = [UInt8](repeating: 0, count: 30_000)
            let count = try destination.withUnsafeMutableBytes { try tier.read(id, into: $0) }
            if Array(destination[0..<count]) != nvmeBlockPayload(number) {
              failures.withLock { $0.append("wrong bytes for block \(number)") }
            }
          default:
            tier.remove(id)
          }
        } catch let error as StrataError where error.code == .notFound {
        } catch let error as StrataError where error.code == .resourceExhausted {
          refused.add(1, ordering: .relaxed)
        } catch {
          failures.withLock { $0.append("\(error)") }
        }
      }
    }
    #expect(failures.withLock { $0 } == [])
    let statistics = tier.statistics
    #expect(statistics.corruptBlocksDetected == 0 && statistics.ioErrors == 0)
    #expect(statistics.evictedRegions > 10 && statistics.reinsertedBlocks > 0, "reclaims should race the readers")
    #expect(statistics.admissionsRefused == refused.load(ordering: .relaxed))
    #expect(statistics.usedBytes <= statistics.capacityBytes)
    for number in 0..<48 where tier.contains(nvmeID(number)) {
      #expect(try nvmeRead(tier, nvmeID(number)) == nvmeBlockPayload(number))
    }
  }

  /// A read that looked up a block's location, then lost the race with the eviction and reuse of
  /// its region, must answer as if the block were absent (or find its reinserted copy), never call
  /// the new bytes corruption.
  @Test(arguments: [false, true])
  func aReadOvertakenByEvictionIsNotCorruption(hot: Bool) throws {
    let device = GatedDevice(SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes))
    let tier = try Self.tier([device])
    let target = nvmeID(0)
    tier.isHot = { id in hot && id == target }
    let payload = { (number: Int) in [UInt8](repeating: UInt8(number + 1), count: 12 << 10) }
    try nvmeWrite(tier, target, payload(0))
    let offset = try #require(tier.recordLocation(of: target)).offset

    device.holdNextRead(at: offset)
    let outcome = Mutex<Result<[UInt8], StrataError>?>(nil)
    let finished = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
      var destination = [UInt8](repeating: 0, count: 12 << 10)
      do {
        let count = try destination.withUnsafeMutableBytes { try tier.read(target, into: $0) }
        outcome.withLock { $0 = .success(Array(destination[0..<count])) }
      } catch let error as StrataError {
        outcome.withLock { $0 = .failure(error) }
      } catch {}
      finished.signal()
    }
    try #require(device.awaitArrival(), "the read never reached the device")
    // While the read is held: the log wraps, region 0 is reclaimed and its first bytes rewritten.
    for number in 1..<17 { try nvmeWrite(tier, nvmeID(number), payload(number)) }
    #expect(
      (1..<17).contains { tier.recordLocation(of: nvmeID($0))?.offset == offset }, "the target's place should be reused"
    )
    device.proceed.signal()
    #expect(finished.wait(timeout: .now() + .seconds(GatedDevice.holdSeconds)) == .success)

    switch outcome.withLock({ $0 }) {
    case .success(let bytes):
      #expect(hot && bytes == payload(0), "only a reinserted block may be read, and only with its own bytes")
    case .failure(let error):
      #expect(!hot && error.code == .notFound, "\(error)")
    case nil:
      Issue.record("the read did not finish")
    }
    #expect(tier.statistics.corruptBlocksDetected == 0)
    #expect(tier.contains(target) == hot)
  }

  /// A writer that finds no free region while another thread's reclaim is pending (that thread
  /// reclaims after its own write) waits for the reclaim instead of refusing its block: a refused
  /// write-behind or demotion leaves an acknowledged block with no copy on disk.
  @Test func aWriterWaitsForAnotherThreadsReclaimInsteadOfRefusing() throws {
    // 32 KiB blocks: a record (header unit + payload) takes over half a region, so one per region.
    let device = GatedDevice(SimulatedBlockDevice(capacityBytes: 3 * Self.regionBytes))
    let tier = try Self.tier([device])
    let payload = { @Sendable (number: Int) in [UInt8](repeating: UInt8(number), count: Self.blockBytesMax) }
    try nvmeWrite(tier, nvmeID(1), payload(1))  // region 0
    try nvmeWrite(tier, nvmeID(2), payload(2))  // region 1
    // Block 3 takes the last free region, so its writer must reclaim region 0 after its write;
    // that write is held.
    device.holdWrite(after: 1)
    let finished = DispatchSemaphore(value: 0)
    let outcomes = Mutex<[Int: String]>([:])
    for number in [3, 4] {
      if number == 4 { try #require(device.awaitArrival(), "block 3's write never reached the device") }
      DispatchQueue.global().async {
        do {
          try nvmeWrite(tier, nvmeID(number), payload(number))
          outcomes.withLock { $0[number] = "written" }
        } catch {
          outcomes.withLock { $0[number] = "\(error)" }
        }
        finished.signal()
      }
    }
    // Block 4 finds no free region while region 0 waits to be reclaimed: it must wait, not fail.
    let deadline = Deadline.after(milliseconds: 10_000)
    while tier.regionFreed.blockedCount == 0, outcomes.withLock({ $0[4] == nil }),
      !deadline.hasPassed(now: MonotonicTime.nowNanoseconds)
    {
      sched_yield()
    }
    #expect(outcomes.withLock { $0[4] } == nil, "block 4 should wait for the reclaim, not finish while it is pending")
    #expect(tier.regionFreed.blockedCount == 1 && tier.statistics.reclaimWaits == 1)
    device.proceed.signal()
    for _ in 0..<2 { #expect(finished.wait(timeout: .now() + .seconds(GatedDevice.holdSeconds)) == .success) }
    #expect(outcomes.withLock { $0 } == [3: "written", 4: "written"])
    // Block 4 took region 0, the last free one again, and reclaimed region 1 after its write.
    #expect(tier.statistics.admissionsRefused == 0 && tier.statistics.evictedRegions == 2)
    #expect(!tier.contains(nvmeID(1)) && !tier.contains(nvmeID(2)), "no block is hot: reclaimed regions' blocks go")
    for number in 3...4 { #expect(try nvmeRead(tier, nvmeID(number)) == payload(number)) }
  }

  // MARK: Index footprint

  @Test func indexEntriesStaySmall() throws {
    #expect(MemoryLayout<IndexKey>.stride == 40 && MemoryLayout<RecordLocation>.stride == 20)
    let device = SimulatedBlockDevice(capacityBytes: 50 << 20)
    let tier = try NVMeTier(devices: [device], regionBytes: 1 << 20, compression: .none, blockBytesMax: 64 << 10)
    let empty: [UInt8] = []
    for number in 0..<12_000 { try nvmeWrite(tier, nvmeID(number, namespace: number % 2 == 0 ? "a" : "b"), empty) }
    let statistics = tier.statistics
    #expect(statistics.blockCount == 12_000)
    print(
      "NVMe index: \(statistics.indexBytes) bytes for \(statistics.blockCount) blocks = \(statistics.indexBytesPerBlock) bytes per block"
    )
    #expect(statistics.indexBytesPerBlock <= 128)
  }
}

/// Wraps a simulated device so a test can hold one read at a chosen offset, or the n-th next write,
/// until it says go: the held call signals `arrived` and waits for `proceed`. The interleaving is
/// forced with semaphores, not hoped for with sleeps. Every wait on either side ends after
/// `holdSeconds`, so a test that fails before it lets a held call go ends, and never hangs.
final class GatedDevice: BlockDevice {
  static let holdSeconds = 60
  let inner: SimulatedBlockDevice
  let arrived = DispatchSemaphore(value: 0)
  let proceed = DispatchSemaphore(value: 0)
  private let heldRead = Mutex<Int?>(nil)
  private let writesBeforeHold = Mutex<Int?>(nil)

  init(_ inner: SimulatedBlockDevice) { self.inner = inner }

  var capacityBytes: Int { inner.capacityBytes }
  var alignmentBytes: Int { inner.alignmentBytes }

  /// The next read at `offset` is held.
  func holdNextRead(at offset: Int) { heldRead.withLock { $0 = offset } }

  /// The `writes`-th next write is held.
  func holdWrite(after writes: Int) { writesBeforeHold.withLock { $0 = writes } }

  func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
    let hold = heldRead.withLock { held in
      guard held == offset else { return false }
      held = nil
      return true
    }
    if hold { wait() }
    try inner.read(at: offset, into: buffer)
  }

  func write(at offset: Int, from buffer: UnsafeRawBufferPointer) throws(StrataError) {
    let hold = writesBeforeHold.withLock { left -> Bool in
      guard let remaining = left else { return false }
      left = remaining > 1 ? remaining - 1 : nil
      return remaining == 1
    }
    if hold { wait() }
    try inner.write(at: offset, from: buffer)
  }

  /// Waits for the held call to arrive: false if none did within `holdSeconds`.
  func awaitArrival() -> Bool { arrived.wait(timeout: .now() + .seconds(Self.holdSeconds)) == .success }

  private func wait() {
    arrived.signal()
    _ = proceed.wait(timeout: .now() + .seconds(Self.holdSeconds))
  }

  func sync() throws(StrataError) { try inner.sync() }
  func discard(at offset: Int, bytes: Int) { inner.discard(at: offset, bytes: bytes) }
}
