// Large blocks written in place: a raw payload of 64 KiB or more at an aligned address reaches the
// device as gathered segments, its aligned bulk straight from the caller's memory (no staging
// copy), and the record on disk is the one docs/nvme-format.md describes (header, zeroed padding
// to the alignment, the stored bytes from there, a zeroed tail). It reads back byte-exact through
// the tier and after recovery, on a simulated device and on a real file (pwritev). A region of an
// older format version is reported as such, not as corruption.

import Foundation
import StrataConfig
import StrataCore
import Synchronization
import Testing

@testable import StrataStorage

/// Passes every write on, noting each one's segments (address and length; a plain write is one).
final class NVMeGatherLogDevice: BlockDevice {
  struct Segment: Hashable {
    var address: Int
    var bytes: Int
  }

  let inner: any BlockDevice
  private let log = Mutex<[[Segment]]>([])

  init(_ inner: any BlockDevice) { self.inner = inner }

  var capacityBytes: Int { inner.capacityBytes }
  var alignmentBytes: Int { inner.alignmentBytes }
  var writes: [[Segment]] { log.withLock { $0 } }

  func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
    try inner.read(at: offset, into: buffer)
  }

  func write(at offset: Int, from buffer: UnsafeRawBufferPointer) throws(StrataError) {
    log.withLock { $0.append([Segment(address: Int(bitPattern: buffer.baseAddress), bytes: buffer.count)]) }
    try inner.write(at: offset, from: buffer)
  }

  func write(at offset: Int, gathering segments: [UnsafeRawBufferPointer]) throws(StrataError) {
    log.withLock { $0.append(segments.map { Segment(address: Int(bitPattern: $0.baseAddress), bytes: $0.count) }) }
    try inner.write(at: offset, gathering: segments)
  }

  func sync() throws(StrataError) { try inner.sync() }
  func discard(at offset: Int, bytes: Int) { inner.discard(at: offset, bytes: bytes) }
}

@Suite struct NVMeInPlaceWriteTests {
  static let regionBytes = 8 << 20
  static let blockBytesMax = 2 << 20

  static func tier(_ device: any BlockDevice, compression: CompressionCodec = .none) throws -> NVMeTier {
    try NVMeTier(
      devices: [device], regionBytes: regionBytes, compression: compression, blockBytesMax: blockBytesMax,
      stagingBufferCount: 2)
  }

  /// `payload` copied to `offset` bytes past a 4 KiB-aligned address; deallocate `memory` after.
  static func placed(_ payload: [UInt8], offset: Int = 0) -> (
    memory: UnsafeMutableRawBufferPointer, bytes: UnsafeRawBufferPointer
  ) {
    let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: payload.count + offset, alignment: 4096)
    let bytes = UnsafeMutableRawBufferPointer(rebasing: memory[offset...])
    payload.withUnsafeBytes { bytes.copyMemory(from: $0) }
    return (memory, UnsafeRawBufferPointer(bytes))
  }

  /// The record of `id` read raw from `device`, checked against the layout the format states.
  static func checkLayout(of id: BlockID, _ payload: [UInt8], in tier: NVMeTier, on device: SimulatedBlockDevice) {
    guard let location = tier.recordLocation(of: id) else {
      Issue.record("\(id) is not in the tier")
      return
    }
    let disk = device.snapshot()
    let record = Array(disk[location.offset..<(location.offset + location.recordBytes)])
    let body = BlockRecordHeader.bodyOffset(storedBytes: payload.count, alignmentBytes: 4096)
    #expect(location.recordBytes == BlockRecordHeader.recordBytes(storedBytes: payload.count, alignmentBytes: 4096))
    let header = record.withUnsafeBytes { try? BlockRecordHeader.decode($0) }
    #expect(header?.payloadBytes == payload.count)
    #expect(record[BlockRecordHeader.byteCount..<body].allSatisfy { $0 == 0 }, "header padding is not zero")
    #expect(Array(record[body..<(body + payload.count)]) == payload, "stored bytes are not at offset \(body)")
    #expect(record[(body + payload.count)...].allSatisfy { $0 == 0 }, "tail padding is not zero")
  }

  static func read(_ id: BlockID, bytes: Int, from tier: NVMeTier) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: bytes)
    let length = try out.withUnsafeMutableBytes { buffer throws(StrataError) in try tier.read(id, into: buffer) }
    return Array(out[0..<length])
  }

  @Test(arguments: [64 << 10, 100_000, 2 << 20])
  func aLargeRawBlockGoesToTheDeviceFromWhereItLies(bytes: Int) throws {
    let simulated = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    let device = NVMeGatherLogDevice(simulated)
    let tier = try Self.tier(device)
    let payload = testPayload(bytes, bytes: bytes)
    let (memory, placed) = Self.placed(payload)
    defer { memory.deallocate() }
    let id = nvmeID(bytes)
    let writesBefore = device.writes.count
    try tier.write(id, payload: placed, checksum: CRC32C.checksum(placed))

    let writes = Array(device.writes[writesBefore...])
    #expect(writes.count == 1)
    let bulk = bytes / 4096 * 4096
    let segments = writes.first ?? []
    // Header unit, the aligned bulk where the caller holds it, the tail (when there is one).
    #expect(segments.count == (bulk == bytes ? 2 : 3), "\(segments)")
    #expect(segments.dropFirst().first == .init(address: Int(bitPattern: placed.baseAddress), bytes: bulk))
    #expect(segments.first?.bytes == 4096)
    #expect(
      segments.reduce(0) { $0 + $1.bytes } == BlockRecordHeader.recordBytes(storedBytes: bytes, alignmentBytes: 4096))

    Self.checkLayout(of: id, payload, in: tier, on: simulated)
    #expect(try Self.read(id, bytes: bytes, from: tier) == payload)
    let (recovered, report) = try NVMeTier.recover(
      devices: [SimulatedBlockDevice(restoring: simulated.snapshot())], regionBytes: Self.regionBytes,
      compression: .none, blockBytesMax: Self.blockBytesMax, stagingBufferCount: 2)
    #expect(report.blocksRecovered == 1 && report.corruptDropped == 0)
    #expect(try Self.read(id, bytes: bytes, from: recovered) == payload)
  }

  @Test func unalignedOrSmallBlocksAreStagedWholeInTheSameLayout() throws {
    let simulated = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    let device = NVMeGatherLogDevice(simulated)
    let tier = try Self.tier(device)
    // 100,000 bytes 16 bytes past an aligned address; 10,000 aligned (a small record).
    for (number, bytes, offset) in [(1, 100_000, 16), (2, 10_000, 0)] {
      let payload = testPayload(number, bytes: bytes)
      let (memory, placed) = Self.placed(payload, offset: offset)
      defer { memory.deallocate() }
      let writesBefore = device.writes.count
      try tier.write(nvmeID(number), payload: placed, checksum: CRC32C.checksum(placed))
      let segments = device.writes[writesBefore...].flatMap { $0 }
      #expect(segments.count == 1, "block \(number): \(segments)")
      #expect(segments.allSatisfy { $0.address != Int(bitPattern: placed.baseAddress) })
      Self.checkLayout(of: nvmeID(number), payload, in: tier, on: simulated)
      #expect(try Self.read(nvmeID(number), bytes: bytes, from: tier) == payload)
    }
  }

  /// One batch mixing small, large and unaligned-tail blocks, on a real file (pwritev, O_DIRECT),
  /// raw and with lz4 (compressed records smaller than 64 KiB move their bytes to the header's end).
  @Test(arguments: [CompressionCodec.none, .lz4])
  func aBatchOnARealFileRoundTripsAndRecovers(compression: CompressionCodec) throws {
    let scratch = try NVMeScratchDirectory()
    let path = scratch.path + "/nvme.dat"
    let sizes = [5000, 2 << 20, 100_000, 64 << 10, 300_000, 70_000]
    var random = NVMeSplitMix64(seed: 77)
    let payloads = sizes.enumerated().map { index, bytes in
      nvmePayload(bytes: bytes, compressible: index % 2 == 1, random: &random)
    }
    do {
      let tier = try Self.tier(
        try FileBlockDevice(path: path, capacityBytes: 4 * Self.regionBytes), compression: compression)
      let placed = payloads.map { Self.placed($0) }
      defer { for (memory, _) in placed { memory.deallocate() } }
      let outcomes = tier.write(
        placed.enumerated().map { number, entry in
          NVMeBlockWrite(id: nvmeID(number), payload: entry.bytes, checksum: CRC32C.checksum(entry.bytes))
        })
      #expect(outcomes.map { try? $0.get() } == Array(repeating: .written, count: sizes.count))
      for (number, payload) in payloads.enumerated() {
        #expect(try Self.read(nvmeID(number), bytes: payload.count, from: tier) == payload, "block \(number)")
      }
    }
    let (recovered, report) = try NVMeTier.recover(
      devices: [try FileBlockDevice(path: path, capacityBytes: 4 * Self.regionBytes)], regionBytes: Self.regionBytes,
      compression: compression, blockBytesMax: Self.blockBytesMax, stagingBufferCount: 2)
    #expect(report.blocksRecovered == sizes.count && report.corruptDropped == 0 && report.olderFormatRegions == 0)
    for (number, payload) in payloads.enumerated() {
      #expect(try Self.read(nvmeID(number), bytes: payload.count, from: recovered) == payload, "block \(number)")
    }
  }

  @Test func aRegionOfAnOlderFormatIsReportedAndReusedNotCountedCorrupt() throws {
    let regionBytes = NVMeTierTests.regionBytes
    let device = SimulatedBlockDevice(capacityBytes: 4 * regionBytes)
    // Region 0 opens with a record of format version 1; region 1 holds a current record followed
    // by one of version 1 (a stale tail: no report).
    var older = nvmeRecordBytes(nvmeID(1), payload: testPayload(1, bytes: 3000), sequence: 5, deviceOffset: 0)
    older[BlockRecordHeader.Offset.version] = 1
    nvmeWriteAligned(device, at: 0, older)
    let current = nvmeRecordBytes(
      nvmeID(2), payload: testPayload(2, bytes: 3000), sequence: 6, deviceOffset: regionBytes)
    nvmeWriteAligned(device, at: regionBytes, current)
    var stale = nvmeRecordBytes(
      nvmeID(3), payload: testPayload(3, bytes: 3000), sequence: 7, deviceOffset: regionBytes + current.count)
    stale[BlockRecordHeader.Offset.version] = 1
    nvmeWriteAligned(device, at: regionBytes + current.count, stale)

    let (tier, report) = try NVMeTierTests.recover([device])
    #expect(report.olderFormatRegions == 1)
    #expect(report.corruptDropped == 0)
    #expect(report.blocksRecovered == 1 && tier.contains(nvmeID(2)) && !tier.contains(nvmeID(1)))
    // Without the version change the same bytes are adopted: the count is the version's doing.
    older[BlockRecordHeader.Offset.version] = UInt8(BlockRecordHeader.formatVersion)
    nvmeWriteAligned(device, at: 0, older)
    let (_, again) = try NVMeTierTests.recover([device])
    #expect(again.olderFormatRegions == 0 && again.blocksRecovered == 2)
  }
}
