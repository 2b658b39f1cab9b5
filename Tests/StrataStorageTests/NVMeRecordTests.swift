// The NVMe record header: exact round trips, every kind of damage detected with its own reason,
// and the LZ4 codec's contract (kept only when it saves, never decodes garbage into success).

import StrataConfig
import StrataCore
import StrataTestKit
import Testing

@testable import StrataStorage

@Suite struct NVMeRecordTests {
  static func header(namespace: String = "tenant-a", codec: CompressionCodec = .none) throws -> BlockRecordHeader {
    BlockRecordHeader(
      codec: codec, namespace: try Namespace(namespace), key: nvmeKey(7), payloadBytes: 70_000,
      storedBytes: codec == .none ? 70_000 : 12_345, payloadChecksum: 0xDEAD_BEEF,
      storedChecksum: codec == .none ? 0xDEAD_BEEF : 0x1234_5678, sequence: 0x0102_0304_0506_0708,
      deviceOffset: 0x0000_0102_0304_5000)
  }

  static func encoded(_ header: BlockRecordHeader) -> [UInt8] {
    var bytes = [UInt8](repeating: 0xAA, count: BlockRecordHeader.byteCount)
    bytes.withUnsafeMutableBytes { header.encode(into: $0) }
    return bytes
  }

  static func decode(_ bytes: [UInt8]) throws(BlockRecordError) -> BlockRecordHeader {
    // Array's closure-taking methods throw untyped errors; a Result carries the typed one through.
    try bytes.withUnsafeBytes { raw in
      Result { () throws(BlockRecordError) -> BlockRecordHeader in try BlockRecordHeader.decode(raw) }
    }.get()
  }

  /// Recomputes the header checksum after a deliberate edit, so the field checks behind it are reached.
  static func resealed(_ bytes: [UInt8]) -> [UInt8] {
    var bytes = bytes
    for index in 8..<12 { bytes[index] = 0 }
    let checksum = CRC32C.checksum(bytes)
    withUnsafeBytes(of: checksum.littleEndian) { for (index, byte) in $0.enumerated() { bytes[8 + index] = byte } }
    return bytes
  }

  @Test(arguments: [CompressionCodec.none, .lz4])
  func headerRoundTrips(codec: CompressionCodec) throws {
    for name in ["a", "tenant-a", String(repeating: "z", count: Namespace.nameBytesMax)] {
      let header = try Self.header(namespace: name, codec: codec)
      let bytes = Self.encoded(header)
      #expect(try Self.decode(bytes) == header)
      #expect(Array(bytes[0..<4]) == Array("STRB".utf8))
      // Reserved bytes are written as zero whatever the buffer held before.
      #expect(bytes[152..<256].allSatisfy { $0 == 0 } && bytes[28..<32].allSatisfy { $0 == 0 })
      // A masked raw record keeps its seed (at 152) and its two checksums apart.
      if codec == .none {
        var masked = header
        masked.maskSeed = 0x0123_4567_89AB_CDEF
        masked.storedChecksum = 0x0BAD_F00D
        let maskedBytes = Self.encoded(masked)
        #expect(try Self.decode(maskedBytes) == masked)
        #expect(maskedBytes[7] == 2 && maskedBytes[152] == 0xEF && maskedBytes[160..<256].allSatisfy { $0 == 0 })
      }
      #expect(bytes[81..<88].allSatisfy { $0 == 0 } && bytes[(88 + name.utf8.count)..<152].allSatisfy { $0 == 0 })
    }
  }

  @Test func layoutMatchesTheDocumentedOffsets() throws {
    let bytes = Self.encoded(try Self.header(codec: .lz4))
    func little<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
      bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }
    #expect(little(4, UInt16.self) == 2)
    #expect(bytes[6] == 1 && bytes[7] == 0)
    #expect(little(12, UInt32.self) == 70_000 && little(16, UInt32.self) == 12_345)
    #expect(little(20, UInt32.self) == 0xDEAD_BEEF && little(24, UInt32.self) == 0x1234_5678)
    #expect(little(32, UInt64.self) == 0x0102_0304_0506_0708)
    #expect(little(40, UInt64.self) == 0x0000_0102_0304_5000)
    #expect(Array(bytes[48..<80]) == nvmeKey(7).bytes)
    #expect(bytes[80] == 8 && Array(bytes[88..<96]) == Array("tenant-a".utf8) && bytes[96] == 0)
    // The checksum field holds CRC-32C of the header with the field zeroed.
    var zeroed = bytes
    for index in 8..<12 { zeroed[index] = 0 }
    #expect(little(8, UInt32.self) == CRC32C.checksum(zeroed))
  }

  @Test func everySingleBitFlipIsDetected() throws {
    let bytes = Self.encoded(try Self.header())
    for index in 0..<BlockRecordHeader.byteCount {
      for bit in 0..<8 {
        var damaged = bytes
        damaged[index] ^= 1 << bit
        #expect(throws: BlockRecordError.self, "byte \(index) bit \(bit)") { try Self.decode(damaged) }
      }
    }
  }

  @Test func eachDamageHasItsOwnReason() throws {
    let bytes = Self.encoded(try Self.header())

    var badMagic = bytes
    badMagic[0] = UInt8(ascii: "X")
    #expect(throws: BlockRecordError.badMagic(found: 0x5854_5242)) { try Self.decode(badMagic) }

    var newerVersion = bytes
    newerVersion[4] = 3
    #expect(throws: BlockRecordError.unsupportedVersion(3)) { try Self.decode(Self.resealed(newerVersion)) }
    var olderVersion = bytes
    olderVersion[4] = 1
    #expect(throws: BlockRecordError.unsupportedVersion(1)) { try Self.decode(Self.resealed(olderVersion)) }

    var decayedKey = bytes
    decayedKey[50] ^= 0x10
    do {
      _ = try Self.decode(decayedKey)
      Issue.record("a decayed key byte was accepted")
    } catch {
      guard case .headerChecksumMismatch = error else {
        Issue.record("expected a header checksum mismatch, got \(error)")
        return
      }
    }

    var zeroed = bytes
    for index in 0..<zeroed.count { zeroed[index] = 0 }
    #expect(throws: BlockRecordError.badMagic(found: 0)) { try Self.decode(zeroed) }
  }

  @Test func soundChecksumButImpossibleFieldsAreRefused() throws {
    let bytes = Self.encoded(try Self.header())
    var edits: [(String, (inout [UInt8]) -> Void)] = []
    edits.append(("unknown codec", { $0[6] = 9 }))
    edits.append(("unknown flag", { $0[7] = 0x80 }))
    edits.append(("empty namespace", { $0[80] = 0 }))
    edits.append(("namespace too long", { $0[80] = 65 }))
    edits.append(("namespace with a capital", { $0[88] = UInt8(ascii: "T") }))
    edits.append(("sequence with its top bit set", { $0[39] |= 0x80 }))
    edits.append(("negative device offset", { $0[47] |= 0x80 }))
    edits.append(("raw record with stored length differing", { $0[16] ^= 1 }))
    edits.append(("raw record with checksums differing", { $0[24] ^= 1 }))
    edits.append(("lz4 record not shorter than its payload", { $0[6] = 1 }))
    edits.append(("masked flag without a seed", { $0[7] = 2 }))
    edits.append(("mask seed without the flag", { $0[153] = 1 }))
    edits.append(
      (
        "masked tombstone",
        {
          $0[7] = 3
          $0[153] = 1
        }
      ))
    for (what, edit) in edits {
      var damaged = bytes
      edit(&damaged)
      do {
        _ = try Self.decode(Self.resealed(damaged))
        Issue.record("\(what): accepted")
      } catch {
        guard case .invalidField = error else {
          Issue.record("\(what): expected invalidField, got \(error)")
          continue
        }
      }
    }
  }

  @Test func decodingForAnotherBlockIsAnIdentityMismatch() throws {
    let header = try Self.header()
    let bytes = Self.encoded(header)
    try bytes.withUnsafeBytes { raw in
      let same = try BlockRecordHeader.decode(raw, expecting: header.namespace, key: header.key)
      #expect(same == header)
      #expect(throws: BlockRecordError.identityMismatch) {
        try BlockRecordHeader.decode(raw, expecting: header.namespace, key: nvmeKey(8))
      }
      #expect(throws: BlockRecordError.identityMismatch) {
        try BlockRecordHeader.decode(raw, expecting: try Namespace("tenant-b"), key: header.key)
      }
      #expect(throws: BlockRecordError.identityMismatch) {
        try BlockRecordHeader.decode(raw, expecting: try Namespace("tenant-ab"), key: header.key)
      }
    }
  }

  @Test func recordsRoundUpToTheAlignmentAndLargeOnesStartTheirBytesAligned() {
    #expect(BlockRecordHeader.recordBytes(storedBytes: 0, alignmentBytes: 4096) == 4096)
    #expect(BlockRecordHeader.recordBytes(storedBytes: 4096 - 256, alignmentBytes: 4096) == 4096)
    #expect(BlockRecordHeader.recordBytes(storedBytes: 4096 - 255, alignmentBytes: 4096) == 8192)
    #expect(BlockRecordHeader.recordBytes(storedBytes: 300, alignmentBytes: 512) == 1024)
    // From 64 KiB on, the header takes an aligned unit of its own.
    let large = BlockRecordHeader.alignedBodyBytesMin
    #expect(BlockRecordHeader.bodyOffset(storedBytes: large - 1, alignmentBytes: 4096) == 256)
    #expect(BlockRecordHeader.bodyOffset(storedBytes: large, alignmentBytes: 4096) == 4096)
    #expect(BlockRecordHeader.bodyOffset(storedBytes: large, alignmentBytes: 512) == 512)
    #expect(BlockRecordHeader.recordBytes(storedBytes: large - 1, alignmentBytes: 4096) == large + 4096)
    #expect(BlockRecordHeader.recordBytes(storedBytes: large, alignmentBytes: 4096) == large + 4096)
    #expect(BlockRecordHeader.recordBytes(storedBytes: large + 1, alignmentBytes: 4096) == large + 8192)
    #expect(BlockRecordHeader.recordBytes(storedBytes: 2 << 20, alignmentBytes: 4096) == (2 << 20) + 4096)
  }

  @Test func lz4KeepsOnlyWorthwhileCompression() {
    var random = NVMeSplitMix64(seed: 11)
    let compressible = nvmePayload(bytes: 64 << 10, compressible: true, random: &random)
    let incompressible = nvmePayload(bytes: 64 << 10, compressible: false, random: &random)
    var output = [UInt8](repeating: 0, count: 64 << 10)
    var restored = [UInt8](repeating: 0, count: 64 << 10)
    let limit = LZ4Codec.keptBytesMax(payloadBytes: 64 << 10)
    #expect(limit == (64 << 10) - (4 << 10))

    let compressed = compressible.withUnsafeBytes { source in
      output.withUnsafeMutableBytes {
        LZ4Codec.compress(source, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<limit]))
      }
    }
    let compressedBytes = try! #require(compressed)
    #expect(compressedBytes < limit)
    let produced = output.withUnsafeBytes { source in
      restored.withUnsafeMutableBytes {
        LZ4Codec.decompress(UnsafeRawBufferPointer(rebasing: source[0..<compressedBytes]), into: $0)
      }
    }
    #expect(produced == 64 << 10 && restored == compressible)

    let refused = incompressible.withUnsafeBytes { source in
      output.withUnsafeMutableBytes {
        LZ4Codec.compress(source, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<limit]))
      }
    }
    #expect(refused == nil)
    #expect(LZ4Codec.keptBytesMax(payloadBytes: 10) == 9)

    // Output that would not fit the destination fails instead of being cut short.
    let tooSmall = output.withUnsafeBytes { source in
      restored.withUnsafeMutableBytes {
        LZ4Codec.decompress(
          UnsafeRawBufferPointer(rebasing: source[0..<compressedBytes]),
          into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<1000]))
      }
    }
    #expect(tooSmall == nil)
  }
}
