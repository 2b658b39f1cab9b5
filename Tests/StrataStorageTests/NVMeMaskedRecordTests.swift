// Masked records: a payload that holds the header magic where the device is aligned is written
// masked, so that recovery never takes a tenant's bytes for a record of another tenant, neither
// past a damaged header nor in the stale tail of a reused region. Round trips (small and large,
// raw and lz4 tiers, moved by a reclaim, recovered) and both attacks, with and without the mask.

import StrataConfig
import StrataCore
import Synchronization
import Testing

@testable import StrataStorage

@Suite struct NVMeMaskedRecordTests {
  static let regionBytes = 256 << 10
  static let blockBytesMax = 128 << 10
  static let victim = nvmeID(99, namespace: "victim")
  static let poison = [UInt8](repeating: 0xEE, count: 1000)

  static func tier(_ device: SimulatedBlockDevice, compression: CompressionCodec = .none) throws -> NVMeTier {
    try NVMeTier(
      devices: [device], regionBytes: regionBytes, compression: compression, blockBytesMax: blockBytesMax)
  }

  static func recover(_ device: SimulatedBlockDevice) throws -> (NVMeTier, RecoveryReport) {
    try NVMeTier.recover(
      devices: [device.crashed()], regionBytes: regionBytes, compression: .none, blockBytesMax: blockBytesMax)
  }

  /// A tenant's payload carrying, at `index`, a whole record of its own making: a sound header
  /// naming the victim's block at device offset `deviceOffset`, with a high sequence, and its bytes.
  static func forging(payloadBytes: Int, at index: Int, deviceOffset: Int) -> [UInt8] {
    var payload = testPayload(7, bytes: payloadBytes)
    let forged = nvmeRecordBytes(victim, payload: poison, sequence: 1 << 62, deviceOffset: deviceOffset)
    payload.replaceSubrange(index..<(index + forged.count), with: forged)
    return payload
  }

  /// A tenant's payload of `payloadBytes` starting at device offset `start` (aligned), holding a
  /// forged record for the victim in every alignment block, each naming the offset it lies at,
  /// with increasing sequences: wherever a walk meets the payload, it meets a sound chain.
  static func spraying(payloadBytes: Int, start: Int) -> [UInt8] {
    var payload = testPayload(8, bytes: payloadBytes)
    for block in 0..<(payloadBytes / 4096) {
      let forged = nvmeRecordBytes(
        victim, payload: poison, sequence: 1 << 62 + UInt64(block), deviceOffset: start + block * 4096)
      payload.replaceSubrange((block * 4096)..<((block + 1) * 4096), with: forged)
    }
    return payload
  }

  /// A new use of region 0 over the old one: one record from offset 0 with a higher sequence,
  /// ending (16 KiB) inside the old use's second record, where the stale tail begins.
  static func reuseRegionZero(_ device: SimulatedBlockDevice) {
    nvmeWriteAligned(
      device, at: 0,
      nvmeRecordBytes(nvmeID(2), payload: testPayload(2, bytes: 12 << 10), sequence: 1 << 61, deviceOffset: 0))
  }

  /// The stale-tail attack needs no damage: block 1's payload is sprayed with forged records, the
  /// region is reused by shorter records, and recovery reads on into the stale tail. The tier's
  /// own write masked the spray, so the walk ends where the new use's records end.
  @Test func aStaleTailNeverYieldsARecordATenantWrote() throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    let tier = try Self.tier(device)
    try nvmeWrite(tier, nvmeID(0), testPayload(0, bytes: 3000))
    let first = try #require(tier.recordLocation(of: nvmeID(0)))
    #expect(first.offset == 0 && first.recordBytes == 4096)
    // Block 1's record at 4096, its 64 KiB payload from 8192.
    try nvmeWrite(tier, nvmeID(1), Self.spraying(payloadBytes: 64 << 10, start: 8192))
    #expect(try #require(tier.recordLocation(of: nvmeID(1))).offset == 4096)
    Self.reuseRegionZero(device)
    let (recovered, report) = try Self.recover(device)
    #expect(!recovered.contains(Self.victim), "a record of the tenant's making was adopted: \(report)")
    #expect(recovered.contains(nvmeID(2)) && report.blocksRecovered == 1, "\(report)")
  }

  /// The same region laid out with block 1 unmasked: recovery adopts the sprayed records.
  @Test func withoutTheMaskAStaleTailYieldsTheTenantsRecords() throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    nvmeWriteAligned(
      device, at: 0, nvmeRecordBytes(nvmeID(0), payload: testPayload(0, bytes: 3000), sequence: 100, deviceOffset: 0))
    nvmeWriteAligned(
      device, at: 4096,
      nvmeRecordBytes(
        nvmeID(1), payload: Self.spraying(payloadBytes: 64 << 10, start: 8192), sequence: 101, deviceOffset: 4096))
    Self.reuseRegionZero(device)
    let (recovered, _) = try Self.recover(device)
    #expect(recovered.contains(Self.victim))
    #expect(try nvmeRead(recovered, Self.victim) == Self.poison)
  }

  /// Whether the device holds the magic at an aligned offset inside `range` (record headers lie
  /// outside it).
  static func magicAligned(_ device: SimulatedBlockDevice, in range: Range<Int>) -> Bool {
    let bytes = device.snapshot()
    return bytes[range].withUnsafeBytes {
      RecordMask.holdsMagicAtAlignedOffsets($0, bodyOffset: range.lowerBound % 4096, alignmentBytes: 4096)
    }
  }

  /// The attack: block 1 is laid after block 0 as the tier places records, its payload holding a
  /// record for the victim at the offset it will land on; then block 1's header decays. With the
  /// mask, recovery drops block 1 and adopts nothing of the tenant's making.
  @Test func aForgedHeaderInAPayloadIsNeverAdopted() throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    let tier = try Self.tier(device)
    try nvmeWrite(tier, nvmeID(0), testPayload(0, bytes: 3000))
    let first = try #require(tier.recordLocation(of: nvmeID(0)))
    // A 64 KiB payload starts one alignment block after its header; its byte 4096 lands aligned.
    let recordOffset = first.offset + first.recordBytes
    let payload = Self.forging(payloadBytes: 64 << 10, at: 4096, deviceOffset: recordOffset + 4096 + 4096)
    try nvmeWrite(tier, nvmeID(1), payload)
    let second = try #require(tier.recordLocation(of: nvmeID(1)))
    #expect(second.offset == recordOffset && second.codec == .none)
    #expect(try nvmeRead(tier, nvmeID(1)) == payload)
    #expect(!Self.magicAligned(device, in: (second.offset + 4096)..<(second.offset + second.recordBytes)))

    device.flipBit(atByte: second.offset + 40, bit: 1)
    let (recovered, report) = try Self.recover(device)
    #expect(!recovered.contains(Self.victim), "the tenant's forged record was adopted")
    #expect(recovered.contains(nvmeID(0)) && !recovered.contains(nvmeID(1)), "\(report)")
  }

  /// The same bytes laid unmasked, as the tier wrote them before the mask: recovery adopts the
  /// forged record, so the test above would see it.
  @Test func withoutTheMaskTheForgedHeaderIsAdopted() throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    let benign = nvmeRecordBytes(nvmeID(0), payload: testPayload(0, bytes: 3000), sequence: 100, deviceOffset: 0)
    nvmeWriteAligned(device, at: 0, benign)
    let recordOffset = benign.count
    let payload = Self.forging(payloadBytes: 64 << 10, at: 4096, deviceOffset: recordOffset + 4096 + 4096)
    var record = nvmeRecordBytes(nvmeID(1), payload: payload, sequence: 101, deviceOffset: recordOffset)
    record[40] ^= 2
    nvmeWriteAligned(device, at: recordOffset, record)
    let (recovered, _) = try Self.recover(device)
    #expect(recovered.contains(Self.victim))
    #expect(try nvmeRead(recovered, Self.victim) == Self.poison)
  }

  /// Masked records of every shape read back whole: small (stored bytes right after the header, so
  /// payload byte 3840 lands aligned) and large, in raw and lz4 tiers, after a restart and after a
  /// reclaim moves them. Payloads without the magic stay unmasked.
  @Test(arguments: [CompressionCodec.none, .lz4])
  func maskedRecordsReadBackWhole(compression: CompressionCodec) throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    let tier = try Self.tier(device, compression: compression)
    let magic = withUnsafeBytes(of: BlockRecordHeader.magic.bigEndian) { Array($0) }
    var payloads: [[UInt8]] = []
    for (number, (bytes, index)) in [(5000, 3840), (100 << 10, 8192), (100 << 10, 8193), (4000, 0)].enumerated() {
      // Incompressible, so that an lz4 tier stores them raw too.
      var payload = testPayload(number, bytes: bytes)
      payload.replaceSubrange(index..<(index + 4), with: magic)
      payloads.append(payload)
      try nvmeWrite(tier, nvmeID(number), payload)
    }
    let masked = (0..<4).map { number in
      let location = tier.recordLocation(of: nvmeID(number))!
      let range = location.offset..<(location.offset + location.recordBytes)
      return device.snapshot()[range].withUnsafeBytes {
        $0.loadUnaligned(fromByteOffset: 7, as: UInt8.self) & BlockRecordHeader.maskedFlag != 0
      }
    }
    // Offsets 3840 of a small record and 8192 of a large one land aligned; 8193 and 0 (small) do not.
    #expect(masked == [true, true, false, false])
    #expect(tier.statistics.maskedRecordsWritten == 2)
    for number in 0..<4 { #expect((try? nvmeRead(tier, nvmeID(number))) == payloads[number], "written \(number)") }

    let (recovered, report) = try Self.recover(device)
    #expect(report.blocksRecovered == 4 && report.corruptDropped == 0, "\(report)")
    for number in 0..<4 {
      #expect((try? nvmeRead(recovered, nvmeID(number))) == payloads[number], "recovered \(number)")
    }

    // Fill the tier until region 0 is reclaimed: its hot records, the masked ones, are moved.
    let hot = Set((0..<2).map { nvmeID($0) })
    recovered.isHot = { hot.contains($0) }
    let filler = [UInt8](repeating: 0x11, count: 100 << 10)
    var number = 10
    while recovered.statistics.reinsertedBlocks < 2 && number < 40 {
      try nvmeWrite(recovered, nvmeID(number), filler)
      number += 1
    }
    #expect(recovered.statistics.reinsertedBlocks == 2 && !recovered.contains(nvmeID(2)))
    for number in 0..<2 {
      #expect((try? nvmeRead(recovered, nvmeID(number))) == payloads[number], "moved \(number)")
    }
  }

  @Test func theMaskIsItsOwnInverseAndDependsOnTheSeed() {
    let original = testPayload(3, bytes: 1021)
    var bytes = original
    bytes.withUnsafeMutableBytes { RecordMask.apply(seed: 42, to: $0) }
    #expect(bytes != original)
    var other = original
    other.withUnsafeMutableBytes { RecordMask.apply(seed: 43, to: $0) }
    #expect(other != bytes)
    bytes.withUnsafeMutableBytes { RecordMask.apply(seed: 42, to: $0) }
    #expect(bytes == original)
  }
}
