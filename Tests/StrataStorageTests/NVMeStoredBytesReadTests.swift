// Large blocks read by their stored bytes alone: a raw record of 64 KiB or more is one aligned
// read of exactly its stored bytes (a 2 MiB block, one 2 MiB read: no header block in front),
// straight into an aligned destination, verified against the stored checksum the index keeps, on
// a fresh tier and after recovery. Damage is still found; masked and compressed records are still
// read whole; and a read that loses the race with the reuse of its region never returns the new
// bytes, even bytes forged to carry the old block's checksum.

import Dispatch
import StrataConfig
import StrataCore
import Synchronization
import Testing

@testable import StrataStorage

@Suite struct NVMeStoredBytesReadTests {
  static let regionBytes = 4 << 20
  static let blockBytesMax = 2 << 20

  static func tier(_ device: any BlockDevice, compression: CompressionCodec = .none) throws -> NVMeTier {
    try NVMeTier(
      devices: [device], regionBytes: regionBytes, compression: compression, blockBytesMax: blockBytesMax,
      stagingBufferCount: 2)
  }

  /// Reads `id` into a fresh buffer `misalignment` bytes past a 4 KiB-aligned address.
  static func read(_ tier: NVMeTier, _ id: BlockID, misalignment: Int = 0) throws -> (bytes: [UInt8], address: Int) {
    let bytes = tier.payloadBytes(of: id) ?? 0
    let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes + misalignment, alignment: 4096)
    defer { memory.deallocate() }
    let destination = UnsafeMutableRawBufferPointer(rebasing: memory[misalignment...])
    let count = try tier.read(id, into: destination)
    return (Array(destination[0..<count]), Int(bitPattern: destination.baseAddress))
  }

  @Test func aLargeRawBlockIsOneReadOfExactlyItsStoredBytes() throws {
    let device = NVMeReadLogDevice(SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes))
    let tier = try Self.tier(device)
    let large = testPayload(1, bytes: 2 << 20)
    let odd = testPayload(2, bytes: (1 << 20) + 1000)
    let small = testPayload(3, bytes: 3000)
    for (number, payload) in [(1, large), (2, odd), (3, small)] { try nvmeWrite(tier, testBlockID(number), payload) }
    let locations = try (1...3).map { try #require(tier.recordLocation(of: testBlockID($0))) }
    _ = device.takeReads()

    let recovered = try NVMeTier.recover(
      devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax,
      stagingBufferCount: 2
    ).0
    for tier in [tier, recovered] {
      _ = device.takeReads()
      // Aligned destination: one read of the stored bytes, past the header block, into it.
      let direct = try Self.read(tier, testBlockID(1))
      #expect(direct.bytes == large)
      #expect(
        device.takeReads() == [
          NVMeReadLogDevice.Read(offset: locations[0].offset + 4096, bytes: 2 << 20, address: direct.address)
        ])
      // Not a multiple of the alignment: the read covers the stored bytes rounded up, into staging.
      let rounded = try Self.read(tier, testBlockID(2))
      #expect(rounded.bytes == odd)
      let roundedReads = device.takeReads()
      #expect(roundedReads.map { $0.offset } == [locations[1].offset + 4096])
      #expect(roundedReads.map { $0.bytes } == [(1 << 20) + 4096] && roundedReads.first?.address != rounded.address)
      // A misaligned destination: the same one read, into staging, then copied.
      let staged = try Self.read(tier, testBlockID(1), misalignment: 16)
      #expect(staged.bytes == large)
      let stagedReads = device.takeReads()
      #expect(
        stagedReads.map { $0.offset } == [locations[0].offset + 4096] && stagedReads.map { $0.bytes } == [2 << 20])
      #expect(stagedReads.first?.address != staged.address)
      // A small record: its header and bytes share one read of the whole record.
      #expect(try Self.read(tier, testBlockID(3)).bytes == small)
      #expect(device.takeReads().map { [$0.offset, $0.bytes] } == [[locations[2].offset, locations[2].recordBytes]])
    }
  }

  @Test(arguments: [0, 16])
  func aFlippedBitInALargeBlockIsFoundAndTheBlockDropped(misalignment: Int) throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    let tier = try Self.tier(device)
    try nvmeWrite(tier, testBlockID(1), testPayload(1, bytes: 2 << 20))
    let location = try #require(tier.recordLocation(of: testBlockID(1)))
    device.flipBit(atByte: location.offset + 4096 + 123_456, bit: 3)

    let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: (2 << 20) + misalignment, alignment: 4096)
    defer { memory.deallocate() }
    let destination = UnsafeMutableRawBufferPointer(rebasing: memory[misalignment...])
    expectStrataError(.checksumMismatch) { _ = try tier.read(testBlockID(1), into: destination) }
    #expect(destination.allSatisfy { $0 == 0 }, "corrupt bytes never reach the caller")
    #expect(!tier.contains(testBlockID(1)) && tier.statistics.corruptBlocksDetected == 1)
  }

  /// Masked records (their bytes hold the header magic where the device is aligned) and
  /// compressed ones are read whole: their header holds what decoding them needs.
  @Test func maskedAndCompressedRecordsAreReadWhole() throws {
    var masked = testPayload(4, bytes: 1 << 20)
    let magic = withUnsafeBytes(of: BlockRecordHeader.magic.bigEndian) { Array($0) }
    masked.replaceSubrange(8192..<(8192 + magic.count), with: magic)
    let compressible = [UInt8]((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 / 4096) })
    for (compression, payload) in [(CompressionCodec.none, masked), (.lz4, compressible)] {
      let device = NVMeReadLogDevice(SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes))
      let tier = try Self.tier(device, compression: compression)
      try nvmeWrite(tier, testBlockID(1), payload)
      let location = try #require(tier.recordLocation(of: testBlockID(1)))
      #expect(compression == .lz4 ? location.codec == .lz4 : tier.statistics.maskedRecordsWritten == 1)
      _ = device.takeReads()
      #expect(try Self.read(tier, testBlockID(1)).bytes == payload)
      #expect(device.takeReads().map { [$0.offset, $0.bytes] } == [[location.offset, location.recordBytes]])
    }
  }

  /// The read is held at the device while the log wraps and the block's region is reused by a
  /// block of another tenant whose bytes are forged to the first block's CRC-32C, at the same
  /// place: the checksum alone would pass them. The region's generation, moved on, turns the read
  /// into a miss.
  @Test func aReadRacingTheReuseOfItsRegionNeverReturnsTheNewBytes() throws {
    let device = GatedDevice(SimulatedBlockDevice(capacityBytes: 3 * Self.regionBytes))
    let tier = try Self.tier(device)
    let target = testBlockID(0, namespace: "victim")
    let payload = testPayload(0, bytes: 2 << 20)
    try nvmeWrite(tier, target, payload)
    let offset = try #require(tier.recordLocation(of: target)).offset
    let forged = Self.forged(
      testPayload(99, bytes: 2 << 20), toChecksum: payload.withUnsafeBytes { CRC32C.checksum($0) })
    #expect(
      forged != payload
        && forged.withUnsafeBytes { CRC32C.checksum($0) } == payload.withUnsafeBytes { CRC32C.checksum($0) })

    device.holdNextRead(at: offset + 4096)
    let outcome = Mutex<Result<[UInt8], StrataError>?>(nil)
    let finished = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
      let result: Result<[UInt8], StrataError>
      do {
        result = .success(try Self.read(tier, target).bytes)
      } catch let error as StrataError {
        result = .failure(error)
      } catch {
        result = .failure(StrataError(.ioError, "\(error)"))
      }
      outcome.withLock { $0 = result }
      finished.signal()
    }
    try #require(device.awaitArrival(), "the read never reached the device")
    // Each region holds one 2 MiB record: the third region's write reclaims the first, and the
    // next write (the forged block) lands where the target was.
    for number in 1...2 { try nvmeWrite(tier, testBlockID(number), testPayload(number, bytes: 2 << 20)) }
    let attacker = testBlockID(3, namespace: "attacker")
    try nvmeWrite(tier, attacker, forged)
    try #require(tier.recordLocation(of: attacker)?.offset == offset, "the forged block should take the target's place")
    device.proceed.signal()
    #expect(finished.wait(timeout: .now() + .seconds(GatedDevice.holdSeconds)) == .success)
    switch outcome.withLock({ $0 }) {
    case .success(let bytes):
      Issue.record("the read returned \(bytes == forged ? "the attacker's bytes" : "bytes") from the reused region")
    case .failure(let error):
      #expect(error.code == .notFound, "\(error)")
    case nil:
      Issue.record("the read did not finish")
    }
    #expect(tier.statistics.corruptBlocksDetected == 0 && !tier.contains(target))
  }

  /// `bytes` with bits of its last 8 bytes changed so that its CRC-32C is `target`. The checksum
  /// is affine in the message bits: each bit's effect is a 32-bit vector, and 64 of them span the
  /// space, so Gaussian elimination finds the bits to flip.
  static func forged(_ bytes: [UInt8], toChecksum target: UInt32) -> [UInt8] {
    let base = bytes.withUnsafeBytes { CRC32C.checksum($0) }
    let first = bytes.count - 8
    var basis: [Int: (effect: UInt32, bits: UInt64)] = [:]
    for bit in 0..<64 {
      var flipped = bytes
      flipped[first + bit / 8] ^= 1 << (bit % 8)
      var row = (effect: flipped.withUnsafeBytes { CRC32C.checksum($0) } ^ base, bits: UInt64(1) << bit)
      for pivot in (0..<32).reversed() where row.effect >> pivot & 1 == 1 {
        guard let reducer = basis[pivot] else {
          basis[pivot] = row
          break
        }
        row = (row.effect ^ reducer.effect, row.bits ^ reducer.bits)
      }
    }
    var wanted = base ^ target
    var bits: UInt64 = 0
    for pivot in (0..<32).reversed() where wanted >> pivot & 1 == 1 {
      let row = basis[pivot]!
      wanted ^= row.effect
      bits ^= row.bits
    }
    var result = bytes
    for bit in 0..<64 where bits >> bit & 1 == 1 { result[first + bit / 8] ^= 1 << (bit % 8) }
    return result
  }
}
