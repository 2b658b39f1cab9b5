// Recovery reads each region through a window of many records at once. These tests lay records out by
// hand where window boundaries fall (records straddling one, larger than the window, torn at its edge,
// a region full to its last byte, tombstones, corrupt bytes, read errors) and check that the windowed
// walk finds exactly what a walk reading one record at a time finds.

import StrataCore
import StrataTestKit
import Synchronization
import Testing

@testable import StrataStorage

/// A simulated device that logs every read (where, and into which buffer), so a test can see where
/// the window boundaries fell, or that a block took one read.
final class NVMeReadLogDevice: BlockDevice {
  struct Read: Hashable {
    var offset: Int
    var bytes: Int
    var address: Int
  }

  let inner: SimulatedBlockDevice
  private let log = Mutex<[Read]>([])

  init(_ inner: SimulatedBlockDevice) { self.inner = inner }

  var capacityBytes: Int { inner.capacityBytes }
  var alignmentBytes: Int { inner.alignmentBytes }
  var reads: [Range<Int>] { log.withLock { $0.map { $0.offset..<($0.offset + $0.bytes) } } }

  /// The reads since the last call.
  func takeReads() -> [Read] {
    log.withLock { reads in
      defer { reads = [] }
      return reads
    }
  }

  func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
    log.withLock {
      $0.append(Read(offset: offset, bytes: buffer.count, address: Int(bitPattern: buffer.baseAddress)))
    }
    try inner.read(at: offset, into: buffer)
  }

  func write(at offset: Int, from buffer: UnsafeRawBufferPointer) throws(StrataError) {
    try inner.write(at: offset, from: buffer)
  }

  func sync() throws(StrataError) { try inner.sync() }
  func discard(at offset: Int, bytes: Int) { inner.discard(at: offset, bytes: bytes) }
}

/// The bytes of one raw record as the tier writes it: header, payload, zero padding.
func nvmeRecordBytes(
  _ id: BlockID, payload: [UInt8], sequence: UInt64, deviceOffset: Int, tombstone: Bool = false
) -> [UInt8] {
  let checksum = payload.withUnsafeBytes { CRC32C.checksum($0) }
  var header = BlockRecordHeader(
    codec: .none, namespace: id.namespace, key: id.key, payloadBytes: payload.count, storedBytes: payload.count,
    payloadChecksum: checksum, storedChecksum: checksum, sequence: sequence, deviceOffset: deviceOffset)
  header.isTombstone = tombstone
  var bytes = [UInt8](
    repeating: 0, count: BlockRecordHeader.recordBytes(storedBytes: payload.count, alignmentBytes: 4096))
  bytes.withUnsafeMutableBytes { header.encode(into: $0) }
  let body = BlockRecordHeader.bodyOffset(storedBytes: payload.count, alignmentBytes: 4096)
  bytes.replaceSubrange(body..<(body + payload.count), with: payload)
  return bytes
}

/// Writes `bytes` at `offset` from an aligned buffer; with `keepingBytes`, only that prefix lands
/// (a write torn by a crash) and the rest of the range keeps what it held.
func nvmeWriteAligned(_ device: SimulatedBlockDevice, at offset: Int, _ bytes: [UInt8], keepingBytes: Int? = nil) {
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 4096)
  defer { buffer.deallocate() }
  bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
  if let keepingBytes { device.tearNextWrite(keepingBytes: keepingBytes) }
  try! device.write(at: offset, from: UnsafeRawBufferPointer(buffer))
}

/// Lays records out in one region by hand, in sequence order from the region's start, as a tier
/// would (a torn record included: the tier believed it written and went on after it).
struct NVMeHandLaidRegion {
  struct Laid {
    var number: Int
    var payload: [UInt8]
    /// Where the record lies in its region.
    var extent: Range<Int>
    var isTombstone: Bool
  }

  let device: SimulatedBlockDevice
  /// Device offset of the region's first byte.
  let start: Int
  var offset = 0
  var sequence: UInt64
  var laid: [Laid] = []

  init(_ device: SimulatedBlockDevice, region: Int, regionBytes: Int, firstSequence: UInt64 = 1_000) {
    self.device = device
    start = region * regionBytes
    sequence = firstSequence
  }

  /// Appends block `number` with a payload of `payloadBytes` (a tombstone of it with `tombstone`).
  @discardableResult
  mutating func append(
    _ number: Int, payloadBytes: Int = 0, tombstone: Bool = false, keepingBytes: Int? = nil
  ) -> Laid {
    var random = NVMeSplitMix64(seed: UInt64(number) &* 31 &+ UInt64(payloadBytes))
    let payload = tombstone ? [] : nvmePayload(bytes: payloadBytes, compressible: false, random: &random)
    sequence += 1
    let bytes = nvmeRecordBytes(
      nvmeID(number), payload: payload, sequence: sequence, deviceOffset: start + offset, tombstone: tombstone)
    nvmeWriteAligned(device, at: start + offset, bytes, keepingBytes: keepingBytes)
    let record = Laid(
      number: number, payload: payload, extent: offset..<(offset + bytes.count), isTombstone: tombstone)
    laid.append(record)
    offset += bytes.count
    return record
  }
}

@Suite struct NVMeRecoveryScanTests {
  static let regionBytes = 64 << 10
  static let blockBytesMax = 32 << 10
  static let block = 4096

  static func recover(_ devices: [any BlockDevice], window: Int, readers: Int = 1) throws -> (
    NVMeTier, RecoveryReport
  ) {
    try NVMeTier.recover(
      devices: devices, regionBytes: regionBytes, compression: .none, blockBytesMax: blockBytesMax,
      stagingBufferCount: 4, scan: NVMeTier.ScanConfiguration(windowBytes: window, readersPerDevice: readers))
  }

  /// The scan of every region, as recovery makes it, without adopting it.
  static func scan(_ devices: [any BlockDevice], window: Int, readers: Int = 1) throws -> [RegionScan] {
    let tier = try NVMeTier(
      unformatted: devices, regionBytes: regionBytes, compression: .none, blockBytesMax: blockBytesMax,
      stagingBufferCount: 4)
    return try tier.scanAllRegions(NVMeTier.ScanConfiguration(windowBytes: window, readersPerDevice: readers))
  }

  /// Everything a scan found, as text, so two scans compare field by field.
  static func describe(_ scans: [RegionScan]) -> [String] {
    scans.map { scan in
      let records = scan.records.map {
        "\($0.namespace.name)/\($0.key) seq \($0.sequence) at \($0.offsetInRegion) "
          + "\($0.payloadBytes)/\($0.storedBytes) \($0.codec) tombstone \($0.isTombstone)"
      }
      return "end \(scan.endOffset) corrupt \(scan.corrupt) io \(scan.ioErrors) highest \(scan.highestSequence) "
        + records.joined(separator: "; ")
    }
  }

  static func expectRecovered(
    _ tier: NVMeTier, _ records: [NVMeHandLaidRegion.Laid], sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    for record in records {
      #expect(
        try nvmeRead(tier, nvmeID(record.number)) == record.payload, "block \(record.number)",
        sourceLocation: sourceLocation)
    }
  }

  /// Whether some read began strictly inside `extent` (of region 0): the record was split over two reads.
  static func splitByARead(_ extent: Range<Int>, _ reads: [Range<Int>]) -> Bool {
    reads.contains { $0.lowerBound > extent.lowerBound && $0.lowerBound < extent.upperBound }
  }

  // MARK: Window boundaries

  @Test(arguments: [16 << 10, 20 << 10, 28 << 10])
  func recordsStraddlingAWindowBoundaryAreRecovered(window: Int) throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    var region = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes)
    // Records of three blocks: most windows end inside one.
    for number in 0..<5 { region.append(number, payloadBytes: 10_000) }
    let logged = NVMeReadLogDevice(device)
    let (tier, report) = try Self.recover([logged], window: window)
    #expect(
      region.laid.contains { Self.splitByARead($0.extent, logged.reads) },
      "no record straddled a window boundary: \(logged.reads)")
    #expect(report.blocksRecovered == 5 && report.corruptDropped == 0 && report.ioErrors == 0)
    try Self.expectRecovered(tier, region.laid)
  }

  @Test(arguments: [false, true])
  func aRecordLargerThanTheWindowIsReadWhole(decayedTail: Bool) throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    var region = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes)
    region.append(0, payloadBytes: 1000)
    let large = region.append(1, payloadBytes: 30_000)  // 8 blocks, twice the window
    region.append(2, payloadBytes: 1000)
    region.append(3, payloadBytes: 20_000)  // 5 blocks
    region.append(4, payloadBytes: 1000)  // the region's last block
    #expect(large.extent.count == 32 << 10)
    if decayedTail {
      // The last stored byte: only a read of the whole record sees it.
      device.flipBit(atByte: BlockRecordHeader.byteCount + 30_000 - 1 + large.extent.lowerBound, bit: 5)
    }
    let (tier, report) = try Self.recover([device], window: 16 << 10)
    #expect(report.corruptDropped == (decayedTail ? 1 : 0) && report.ioErrors == 0)
    // A decayed stored byte drops that record only; the walk goes on past it.
    try Self.expectRecovered(tier, region.laid.filter { !decayedTail || $0.number != 1 })
    #expect(tier.contains(nvmeID(1)) == !decayedTail)
  }

  @Test func aTornRecordEndingAtAWindowBoundaryIsDroppedAndTheWalkGoesOn() throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    var region = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes)
    region.append(0, payloadBytes: 10_000)
    region.append(1, payloadBytes: 10_000)
    // Only the first block of the third record reaches the medium, and the window ends right there.
    let torn = region.append(2, payloadBytes: 10_000, keepingBytes: Self.block)
    region.append(3, payloadBytes: 10_000)
    let logged = NVMeReadLogDevice(device)
    let (tier, report) = try Self.recover([logged], window: 16 << 10)
    let tornAt = torn.extent.lowerBound + Self.block
    #expect(logged.reads.contains { $0.lowerBound == tornAt }, "the tear is not at a window boundary: \(logged.reads)")
    // Its header is sound, so the walk knows its length and goes on to the next record.
    #expect(report.corruptDropped == 1 && report.blocksRecovered == 3 && !tier.contains(nvmeID(2)))
    try Self.expectRecovered(tier, region.laid.filter { $0.number != 2 })
  }

  @Test func aTornHeaderAtAWindowBoundaryCostsOnlyItsOwnRecord() throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    var region = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes)
    region.append(0, payloadBytes: 5000)
    region.append(1, payloadBytes: 5000)
    // Only its first 30 bytes land: the sequence and all after it read as zeroes.
    let torn = region.append(2, payloadBytes: 5000, keepingBytes: 30)
    region.append(3, payloadBytes: 5000)
    var other = NVMeHandLaidRegion(device, region: 2, regionBytes: Self.regionBytes, firstSequence: 5_000)
    other.append(10, payloadBytes: 5000)
    let logged = NVMeReadLogDevice(device)
    let (tier, report) = try Self.recover([logged], window: 16 << 10)
    #expect(
      logged.reads.contains { $0.lowerBound == torn.extent.lowerBound },
      "the torn header does not start a window: \(logged.reads)")
    // The walk finds the record after the torn header (sound, where it says, a later sequence).
    #expect(report.corruptDropped == 1 && report.blocksRecovered == 4)
    #expect(!tier.contains(nvmeID(2)))
    try Self.expectRecovered(tier, region.laid.filter { $0.number != 2 } + other.laid)
  }

  @Test(arguments: [4096, 12 << 10, 24 << 10, 40 << 10, NVMeTier.ScanConfiguration().windowBytes])
  func aRegionFullToItsLastByteIsRecovered(window: Int) throws {
    // Two regions; the second, the device's last, is full, so reading past it would trap.
    let device = SimulatedBlockDevice(capacityBytes: 2 * Self.regionBytes)
    var first = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes)
    first.append(0, payloadBytes: 700)
    var last = NVMeHandLaidRegion(device, region: 1, regionBytes: Self.regionBytes, firstSequence: 2_000)
    for number in 1...5 { last.append(number, payloadBytes: 10_000) }  // 5 records of 12 KiB
    last.append(6, payloadBytes: 3000)  // and the last 4 KiB
    #expect(last.offset == Self.regionBytes)
    let logged = NVMeReadLogDevice(device)
    let scans = try Self.scan([logged], window: window)
    #expect(scans[1].endOffset == Self.regionBytes && scans[1].records.count == 6 && scans[1].corrupt == 0)
    for read in logged.reads {
      #expect(read.lowerBound / Self.regionBytes == (read.upperBound - 1) / Self.regionBytes, "\(read) crosses regions")
    }
    let (tier, report) = try Self.recover([device], window: window)
    #expect(report.blocksRecovered == 7 && report.corruptDropped == 0)
    try Self.expectRecovered(tier, first.laid + last.laid)
  }

  // MARK: Tombstones, decay and read errors

  @Test(arguments: [4096, 16 << 10, 64 << 10])
  func tombstonesInAWindowKeepTheirBlocksRemoved(window: Int) throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    var older = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes)
    for number in 0..<4 { older.append(number, payloadBytes: 3000) }
    older.append(0, tombstone: true)  // in the same window as the record it removes
    var newer = NVMeHandLaidRegion(device, region: 1, regionBytes: Self.regionBytes, firstSequence: 2_000)
    newer.append(1, tombstone: true)
    newer.append(4, payloadBytes: 10_000)
    newer.append(2, tombstone: true)
    newer.append(2, payloadBytes: 3000)  // written again after its removal
    let scans = try Self.scan([device], window: window)
    #expect(scans[0].records.map(\.isTombstone) == [false, false, false, false, true])
    #expect(scans[1].records.map(\.isTombstone) == [true, false, true, false])
    let (tier, report) = try Self.recover([device], window: window)
    #expect(report.corruptDropped == 0)
    #expect(!tier.contains(nvmeID(0)) && !tier.contains(nvmeID(1)))
    try Self.expectRecovered(tier, [older.laid[3], newer.laid[1], newer.laid[3]])
  }

  @Test(arguments: [16 << 10, 64 << 10])
  func tombstonesWrittenByTheTierSurviveAWindowedRestart(window: Int) throws {
    let device = SimulatedBlockDevice(capacityBytes: 16 * Self.regionBytes)
    let tier = try NVMeTier(
      devices: [device], regionBytes: Self.regionBytes, compression: .lz4, blockBytesMax: Self.blockBytesMax)
    for number in 0..<24 { try nvmeWrite(tier, nvmeID(number), nvmeBlockPayload(number)) }
    let removed = Set(stride(from: 0, to: 24, by: 3))
    for number in removed { #expect(tier.remove(nvmeID(number))) }
    let (recovered, _) = try Self.recover([device.crashed()], window: window)
    for number in 0..<24 {
      if removed.contains(number) {
        #expect(!recovered.contains(nvmeID(number)), "removed block \(number) came back")
      } else {
        #expect(try nvmeRead(recovered, nvmeID(number)) == nvmeBlockPayload(number))
      }
    }
  }

  @Test(arguments: [(16 << 10, 2), (64 << 10, 4)])
  func aDecayedStoredByteInTheMiddleOfAWindowDropsOnlyThatRecord(window: Int, decayedNumber: Int) throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    var region = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes)
    for number in 0..<10 { region.append(number, payloadBytes: 2000) }  // one block each
    let decayed = region.laid[decayedNumber].extent
    device.flipBit(atByte: decayed.lowerBound + BlockRecordHeader.byteCount + 1000, bit: 2)
    let logged = NVMeReadLogDevice(device)
    let (tier, report) = try Self.recover([logged], window: window)
    #expect(
      logged.reads.contains { $0.lowerBound < decayed.lowerBound && $0.upperBound > decayed.upperBound },
      "the record is not inside a window: \(logged.reads)")
    // The existing rule: its header is sound, so the record is counted and skipped and the walk
    // goes on; the records after it in the region come back.
    #expect(report.corruptDropped == 1 && report.blocksRecovered == 9 && !tier.contains(nvmeID(decayedNumber)))
    try Self.expectRecovered(tier, region.laid.filter { $0.number != decayedNumber })
  }

  /// One bit of one header costs that record alone: the walk goes on at the next sound header
  /// (before, it ended there, and the region's later records were lost with it), whether the bit
  /// is in its device offset (byte 40), its magic (byte 0: it read as the region's end) or its
  /// format version (byte 4: it read as a stale tail of an older format). Records of several
  /// blocks each, so the next header is some aligned blocks away.
  @Test(arguments: [
    (4096, 2000, 40), (64 << 10, 2000, 40), (16 << 10, 10_000, 40), (16 << 10, 2000, 0), (4096, 10_000, 4),
  ])
  func aDecayedHeaderCostsOnlyItsOwnRecord(window: Int, payloadBytes: Int, byte: Int) throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    var region = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes)
    for number in 0..<(payloadBytes > 4000 ? 5 : 10) { region.append(number, payloadBytes: payloadBytes) }
    device.flipBit(atByte: region.laid[2].extent.lowerBound + byte, bit: 1)
    let (tier, report) = try Self.recover([device], window: window)
    #expect(report.corruptDropped == 1 && report.blocksRecovered == region.laid.count - 1, "\(report)")
    try Self.expectRecovered(tier, region.laid.filter { $0.number != 2 })
  }

  /// After a damaged header the walk takes only a record of this use of the region: the stale
  /// tail of its previous use (lower sequences) stays out, and a damaged first header, with no
  /// sound record before it to compare with, ends the walk as a missing one does.
  @Test func aDamagedHeaderBeforeAStaleTailOrFirstInItsRegionEndsTheWalk() throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    var previous = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes, firstSequence: 1_000)
    for number in 0..<6 { previous.append(number, payloadBytes: 2000) }
    var current = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes, firstSequence: 5_000)
    for number in 10..<13 { current.append(number, payloadBytes: 2000) }
    device.flipBit(atByte: current.laid[2].extent.lowerBound + 40, bit: 1)
    var first = NVMeHandLaidRegion(device, region: 1, regionBytes: Self.regionBytes, firstSequence: 9_000)
    for number in 20..<23 { first.append(number, payloadBytes: 2000) }
    device.flipBit(atByte: first.start + first.laid[0].extent.lowerBound + 40, bit: 1)
    let (tier, report) = try Self.recover([device], window: 16 << 10)
    #expect(report.corruptDropped == 2 && report.blocksRecovered == 2, "\(report)")
    try Self.expectRecovered(tier, Array(current.laid[0..<2]))
    for number in [3, 4, 5, 21, 22] { #expect(!tier.contains(nvmeID(number)), "block \(number) came back") }
  }

  @Test(arguments: [4096, 16 << 10, 64 << 10])
  func aReadErrorCostsTheRestOfItsRegionFromTheRecordItHits(window: Int) throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    var region = NVMeHandLaidRegion(device, region: 0, regionBytes: Self.regionBytes)
    for number in 0..<10 { region.append(number, payloadBytes: 2000) }
    var other = NVMeHandLaidRegion(device, region: 1, regionBytes: Self.regionBytes, firstSequence: 2_000)
    for number in 10..<14 { other.append(number, payloadBytes: 2000) }
    // A bad sector under record 6: a window that covers it fails, yet records 0 to 5 come back.
    let bad = region.laid[6].extent.lowerBound
    device.failReads(in: bad..<(bad + 512))
    let (tier, report) = try Self.recover([device], window: window)
    #expect(report.ioErrors == 1 && report.corruptDropped == 0 && report.blocksRecovered == 10)
    try Self.expectRecovered(tier, Array(region.laid[0..<6]) + other.laid)
  }

  // MARK: Reads and equivalence

  @Test func smallRecordsCostAFewLargeReads() throws {
    let regionBytes = 1 << 20
    let device = SimulatedBlockDevice(capacityBytes: 4 * regionBytes)
    var region = NVMeHandLaidRegion(device, region: 0, regionBytes: regionBytes)
    for number in 0..<(regionBytes / Self.block) { region.append(number, payloadBytes: 1000) }
    let logged = NVMeReadLogDevice(device)
    let (tier, report) = try NVMeTier.recover(
      devices: [logged], regionBytes: regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax)
    #expect(report.blocksRecovered == 256 && tier.blockCount == 256)
    let regionReads = logged.reads.filter { $0.lowerBound < regionBytes }
    // One block, then reads 8 times larger up to the window (here the whole region).
    #expect(regionReads.count <= 5, "\(regionReads)")
    // A free region costs one block, as it did when every header was read on its own.
    #expect(logged.reads.filter { $0.lowerBound >= regionBytes }.allSatisfy { $0.count == Self.block })
  }

  /// Random regions of sound, decayed, torn, misplaced, stale, oversized and unreadable records on
  /// two devices: every window size and reader count finds what a window of one block finds (the
  /// walk of one header read at a time).
  @Test(arguments: [UInt64(1), 2, 3, 4, 5, 6, 7, 8])
  func everyWindowFindsWhatReadingOneRecordAtATimeFinds(seed: UInt64) throws {
    var random = NVMeSplitMix64(seed: seed)
    let regionsPerDevice = 4
    var devices: [SimulatedBlockDevice] = []
    var number = 0
    for _ in 0..<2 {
      let device = SimulatedBlockDevice(capacityBytes: regionsPerDevice * Self.regionBytes)
      for regionNumber in 0..<regionsPerDevice where random.next(below: 5) != 0 {
        var region = NVMeHandLaidRegion(
          device, region: regionNumber, regionBytes: Self.regionBytes, firstSequence: (random.next() >> 8) + 100)
        Self.layRandomRecords(&region, number: &number, random: &random)
      }
      devices.append(device)
    }
    let expected = Self.describe(try Self.scan(devices, window: Self.block))
    for window in [8 << 10, 12 << 10, 16 << 10, 36 << 10, 64 << 10] {
      for readers in [1, 3] {
        let found = Self.describe(try Self.scan(devices, window: window, readers: readers))
        for (region, (scan, reference)) in zip(found, expected).enumerated() {
          #expect(scan == reference, "window \(window), \(readers) readers, region \(region)")
        }
      }
    }
  }

  static func layRandomRecords(
    _ region: inout NVMeHandLaidRegion, number: inout Int, random: inout NVMeSplitMix64
  ) {
    let sizes = [0, 1, 100, 3840, 3841, 5000, 12_000, 16_000, 20_000, 30_000, blockBytesMax]
    while true {
      number += 1
      let kind = random.next(below: 24)
      var payloadBytes = sizes[random.next(below: sizes.count)]
      if kind == 0 { payloadBytes = 41_000 }  // larger than a staging buffer: counted and skipped
      let recordBytes = BlockRecordHeader.recordBytes(storedBytes: payloadBytes, alignmentBytes: block)
      guard region.offset + recordBytes <= regionBytes else {
        // Fill the region to its last byte now and then.
        while random.next(below: 2) == 0, region.offset < regionBytes {
          number += 1
          region.append(number, payloadBytes: 3000)
        }
        return
      }
      let start = region.start + region.offset
      switch kind {
      case 1:
        region.append(number, tombstone: true)
      case 2 where payloadBytes > 0:
        region.append(number, payloadBytes: payloadBytes)
        region.device.flipBit(
          atByte: start + BlockRecordHeader.byteCount + random.next(below: payloadBytes))
      case 3:
        region.append(number, payloadBytes: payloadBytes)
        region.device.flipBit(atByte: start + random.next(below: BlockRecordHeader.byteCount))
      case 4:
        region.append(number, payloadBytes: payloadBytes, keepingBytes: random.next(below: recordBytes))
      case 5:
        // Misplaced: a sound record claiming another offset.
        region.sequence += 1
        let bytes = nvmeRecordBytes(
          nvmeID(number), payload: [UInt8](repeating: 7, count: payloadBytes), sequence: region.sequence,
          deviceOffset: start + block)
        nvmeWriteAligned(region.device, at: start, bytes)
        region.offset += bytes.count
      case 6:
        // Stale: a lower sequence, as in the tail of a reused region.
        region.sequence -= 2
        region.append(number, payloadBytes: payloadBytes)
        region.sequence += 10
      case 7:
        region.append(number, payloadBytes: payloadBytes)
        let bad = start + random.next(below: recordBytes / 512) * 512
        region.device.failReads(in: bad..<(bad + 512))
      default:
        region.append(number, payloadBytes: payloadBytes)
      }
    }
  }
}
