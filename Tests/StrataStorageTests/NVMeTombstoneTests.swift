// Removal is durable: a tombstone keeps recovery from bringing back a removed block, also over
// several restarts, while a block written again after its removal comes back.

import StrataCore
import Testing

@testable import StrataStorage

@Suite struct NVMeTombstoneTests {
  static let regionBytes = 64 << 10

  func restart(_ device: SimulatedBlockDevice) throws -> (SimulatedBlockDevice, NVMeTier) {
    let restored = SimulatedBlockDevice(restoring: device.snapshot())
    let (tier, _) = try NVMeTier.recover(
      devices: [restored], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: 32 << 10)
    return (restored, tier)
  }

  @Test func removedBlocksStayRemovedAcrossRestarts() throws {
    var device = SimulatedBlockDevice(capacityBytes: 1 << 20)
    var tier = try NVMeTier(
      devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: 32 << 10)
    for n in 0..<6 { try nvmeWrite(tier, nvmeID(n), nvmeBlockPayload(n)) }
    #expect(tier.remove(nvmeID(2)))
    #expect(!tier.remove(nvmeID(2)))  // twice: nothing more to remove
    #expect(tier.statistics.tombstonesWritten == 1)
    // Fill a few more regions so that the tombstone sits in a region of its own.
    for n in 10..<20 { try nvmeWrite(tier, nvmeID(n), nvmeBlockPayload(n)) }
    for _ in 0..<3 {
      (device, tier) = try restart(device)
      #expect(!tier.contains(nvmeID(2)), "a removed block came back after a restart")
      for n in [0, 1, 3, 4, 5] { #expect(try nvmeRead(tier, nvmeID(n)) == nvmeBlockPayload(n)) }
    }
  }

  @Test func aBlockWrittenAgainAfterRemovalComesBack() throws {
    let device = SimulatedBlockDevice(capacityBytes: 1 << 20)
    let tier = try NVMeTier(
      devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: 32 << 10)
    try nvmeWrite(tier, nvmeID(1), nvmeBlockPayload(1))
    #expect(tier.remove(nvmeID(1)))
    try nvmeWrite(tier, nvmeID(1), nvmeBlockPayload(1))
    let (_, restarted) = try restart(device)
    #expect(try nvmeRead(restarted, nvmeID(1)) == nvmeBlockPayload(1))
  }

  @Test func tombstoneHeadersRoundTripAndRejectPayloads() throws {
    var header = BlockRecordHeader(
      codec: .none, namespace: try Namespace("t"), key: nvmeKey(1), payloadBytes: 0, storedBytes: 0,
      payloadChecksum: 0, storedChecksum: 0, sequence: 9, deviceOffset: 4096)
    header.isTombstone = true
    var bytes = [UInt8](repeating: 0, count: BlockRecordHeader.byteCount)
    bytes.withUnsafeMutableBytes { header.encode(into: $0) }
    #expect(try bytes.withUnsafeBytes { try BlockRecordHeader.decode($0) } == header)
    // A tombstone that claims a payload is refused.
    header.payloadBytes = 10
    header.storedBytes = 10
    bytes.withUnsafeMutableBytes { header.encode(into: $0) }
    #expect(throws: BlockRecordError.self) { try bytes.withUnsafeBytes { try BlockRecordHeader.decode($0) } }
  }
}
