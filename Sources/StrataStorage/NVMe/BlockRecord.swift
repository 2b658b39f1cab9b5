// The self-describing on-disk record of the NVMe tier: a fixed 256-byte checksummed header in a
// unit of its own (the device's alignment), then the stored (possibly compressed) bytes, which
// therefore start aligned. The index is rebuilt from these headers after a restart.

public import StrataConfig
public import StrataCore

// Header layout, all integers little-endian (the table is repeated in docs/nvme-format.md):
//
//   offset size  field
//        0    4  magic, the bytes "STRB"
//        4    2  format version (2)
//        6    1  codec: 0 none, 1 lz4
//        7    1  flags: bit 0 tombstone (the block was removed; no payload), bit 1 masked (below),
//                other bits zero
//        8    4  header checksum: CRC-32C of the 256 header bytes with these 4 bytes zeroed
//       12    4  payload length: bytes before the codec
//       16    4  stored length: bytes after the header on disk
//       20    4  payload checksum: CRC-32C of the uncompressed payload
//       24    4  stored checksum: CRC-32C of the stored bytes
//       28    4  reserved, zero
//       32    8  sequence number: per tier, increasing; the highest copy of a block wins
//       40    8  device offset: where on its device the record was written
//       48   32  block key
//       80    1  namespace length (1...64)
//       81    7  reserved, zero
//       88   64  namespace, ASCII, zero-padded
//      152    8  mask seed: nonzero exactly when masked
//      160   96  reserved, zero
//
// A record starts at an aligned offset and occupies its header, its stored bytes and zeroed
// padding up to the device's alignment, so one aligned read returns all of it. The stored bytes
// start right after the header (byte 256), except in a record storing 64 KiB or more
// (`alignedBodyBytesMin`): there the header is padded with zeros to the alignment and the stored
// bytes start at the next aligned offset (`bodyOffset`), so a large block is written straight
// from where it lies in RAM, without a staging copy. Version 1 put every record's stored bytes at
// byte 256; this build does not read it (recovery counts and reuses such regions, see
// `RecoveryReport.olderFormatRegions`). The device offset binds a record to its
// place: a misdirected write, or a record-shaped run of bytes inside another record's payload,
// is refused where it is found.
//
// Masked records: a payload is a tenant's bytes, and recovery looks for headers at aligned offsets
// past a damaged header (`NVMeTier.walk`). A record whose stored bytes hold the magic at an offset
// that lands aligned on the device is therefore written raw and masked: its stored bytes are the
// payload XORed with a key stream drawn from a random seed (`RecordMask`), so no bytes the tenant
// chose appear at an aligned offset. The stored checksum is of the masked bytes, the payload
// checksum of the payload.

/// Why a header was refused; each reason distinct, because "end of the log" (bad magic) and
/// "torn or decayed" (magic right, checksum wrong) mean different things to recovery.
public enum BlockRecordError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The first four bytes are not "STRB": no record starts here.
  case badMagic(found: UInt32)
  /// A record of a format this build does not read.
  case unsupportedVersion(UInt16)
  /// The header's bytes changed after it was written (torn write, media decay).
  case headerChecksumMismatch(stored: UInt32, computed: UInt32)
  /// The checksum holds but a field is impossible (unknown codec or flag, bad namespace, lengths).
  case invalidField(String)
  /// A sound header that names another block than the one asked for.
  case identityMismatch

  public var description: String {
    switch self {
    case .badMagic(let found): "bad magic 0x\(String(found, radix: 16))"
    case .unsupportedVersion(let version): "unsupported format version \(version)"
    case .headerChecksumMismatch(let stored, let computed):
      "header checksum mismatch (stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16)))"
    case .invalidField(let what): "invalid header field: \(what)"
    case .identityMismatch: "header names another block"
    }
  }
}

/// The header of one record. `encode` and `decode` are exact inverses for every valid header.
public struct BlockRecordHeader: Hashable, Sendable {
  public static let byteCount = 256
  /// "STRB" read as a big-endian number.
  public static let magic: UInt32 = 0x5354_5242
  public static let formatVersion: UInt16 = 2

  enum Offset {
    static let magic = 0
    static let version = 4
    static let codec = 6
    static let flags = 7
    static let headerChecksum = 8
    static let payloadBytes = 12
    static let storedBytes = 16
    static let payloadChecksum = 20
    static let storedChecksum = 24
    static let sequence = 32
    static let deviceOffset = 40
    static let key = 48
    static let namespaceLength = 80
    static let namespace = 88
    static let maskSeed = 152
  }

  public var codec: CompressionCodec
  public var namespace: Namespace
  public var key: BlockKey
  public var payloadBytes: Int
  public var storedBytes: Int
  public var payloadChecksum: UInt32
  public var storedChecksum: UInt32
  public var sequence: UInt64
  /// Byte offset of the record on its device.
  public var deviceOffset: Int
  /// A tombstone says the block was removed at `sequence`: recovery must not bring back any older
  /// copy. It has no payload.
  public var isTombstone = false
  /// Nonzero: the stored bytes are the payload masked with `RecordMask`'s key stream of this seed
  /// (raw records only).
  public var maskSeed: UInt64 = 0

  static let tombstoneFlag: UInt8 = 0x01
  static let maskedFlag: UInt8 = 0x02

  public init(
    codec: CompressionCodec, namespace: Namespace, key: BlockKey, payloadBytes: Int, storedBytes: Int,
    payloadChecksum: UInt32, storedChecksum: UInt32, sequence: UInt64, deviceOffset: Int
  ) {
    self.codec = codec
    self.namespace = namespace
    self.key = key
    self.payloadBytes = payloadBytes
    self.storedBytes = storedBytes
    self.payloadChecksum = payloadChecksum
    self.storedChecksum = storedChecksum
    self.sequence = sequence
    self.deviceOffset = deviceOffset
  }

  /// Bytes the whole record occupies on a device of `alignmentBytes`.
  public func recordBytes(alignmentBytes: Int) -> Int {
    BlockRecordHeader.recordBytes(storedBytes: storedBytes, alignmentBytes: alignmentBytes)
  }

  public static func recordBytes(storedBytes: Int, alignmentBytes: Int) -> Int {
    roundUp(
      bodyOffset(storedBytes: storedBytes, alignmentBytes: alignmentBytes) + storedBytes, toMultipleOf: alignmentBytes)
  }

  /// Records storing this many bytes or more start their stored bytes at an aligned offset.
  public static let alignedBodyBytesMin = 64 << 10

  /// Where a record's stored bytes start: right after the header, or, in a large record, at the
  /// header's 256 bytes rounded up to the alignment.
  public static func bodyOffset(storedBytes: Int, alignmentBytes: Int) -> Int {
    storedBytes >= alignedBodyBytesMin ? roundUp(byteCount, toMultipleOf: alignmentBytes) : byteCount
  }

  /// Where this record's stored bytes start on a device of `alignmentBytes`.
  public func bodyOffset(alignmentBytes: Int) -> Int {
    BlockRecordHeader.bodyOffset(storedBytes: storedBytes, alignmentBytes: alignmentBytes)
  }

  /// Writes the 256 header bytes, reserved bytes zeroed and the header checksum filled in.
  public func encode(into buffer: UnsafeMutableRawBufferPointer) {
    precondition(buffer.count >= Self.byteCount, "BlockRecordHeader.encode: buffer of \(buffer.count) bytes")
    precondition(
      (0...Int(UInt32.max)).contains(payloadBytes) && (0...Int(UInt32.max)).contains(storedBytes)
        && deviceOffset >= 0,
      "BlockRecordHeader.encode: lengths \(payloadBytes)/\(storedBytes) or offset \(deviceOffset) out of range")
    let header = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Self.byteCount])
    header.initializeMemory(as: UInt8.self, repeating: 0)
    header.storeBytes(of: Self.magic.bigEndian, toByteOffset: Offset.magic, as: UInt32.self)
    header.storeBytes(of: Self.formatVersion.littleEndian, toByteOffset: Offset.version, as: UInt16.self)
    header[Offset.codec] = codec.recordByte
    header[Offset.flags] = (isTombstone ? Self.tombstoneFlag : 0) | (maskSeed != 0 ? Self.maskedFlag : 0)
    header.storeBytes(of: UInt32(payloadBytes).littleEndian, toByteOffset: Offset.payloadBytes, as: UInt32.self)
    header.storeBytes(of: UInt32(storedBytes).littleEndian, toByteOffset: Offset.storedBytes, as: UInt32.self)
    header.storeBytes(of: payloadChecksum.littleEndian, toByteOffset: Offset.payloadChecksum, as: UInt32.self)
    header.storeBytes(of: storedChecksum.littleEndian, toByteOffset: Offset.storedChecksum, as: UInt32.self)
    header.storeBytes(of: sequence.littleEndian, toByteOffset: Offset.sequence, as: UInt64.self)
    header.storeBytes(of: UInt64(deviceOffset).littleEndian, toByteOffset: Offset.deviceOffset, as: UInt64.self)
    header.storeBytes(of: maskSeed.littleEndian, toByteOffset: Offset.maskSeed, as: UInt64.self)
    key.store(to: header.baseAddress! + Offset.key)
    var length = 0
    for byte in namespace.name.utf8 {
      header[Offset.namespace + length] = byte
      length += 1
    }
    header[Offset.namespaceLength] = UInt8(length)
    let checksum = CRC32C.checksum(UnsafeRawBufferPointer(header))
    header.storeBytes(of: checksum.littleEndian, toByteOffset: Offset.headerChecksum, as: UInt32.self)
  }

  /// Reads and validates a header: magic, version, header checksum, then every field.
  public static func decode(_ buffer: UnsafeRawBufferPointer) throws(BlockRecordError) -> BlockRecordHeader {
    let fields = try decodeFixedFields(buffer)
    let length = Int(buffer[Offset.namespaceLength])
    guard (1...Namespace.nameBytesMax).contains(length) else {
      throw .invalidField("namespace length \(length)")
    }
    let name = String(
      decoding: UnsafeRawBufferPointer(rebasing: buffer[Offset.namespace..<(Offset.namespace + length)]),
      as: UTF8.self)
    let namespace: Namespace
    do { namespace = try Namespace(name) } catch { throw .invalidField("namespace '\(name)'") }
    return fields.header(namespace: namespace)
  }

  /// Like `decode`, but for a header expected to name (`namespace`, `key`): compares the namespace
  /// bytes in place instead of building a string, so the read path allocates nothing.
  static func decode(
    _ buffer: UnsafeRawBufferPointer, expecting namespace: Namespace, key: BlockKey
  ) throws(BlockRecordError) -> BlockRecordHeader {
    let fields = try decodeFixedFields(buffer)
    let length = Int(buffer[Offset.namespaceLength])
    guard length <= Namespace.nameBytesMax else { throw .invalidField("namespace length \(length)") }
    let stored = UnsafeRawBufferPointer(rebasing: buffer[Offset.namespace..<(Offset.namespace + length)])
    guard fields.key == key, namespace.name.utf8.elementsEqual(stored) else { throw .identityMismatch }
    return fields.header(namespace: namespace)
  }

  private struct FixedFields {
    var codec: CompressionCodec
    var key: BlockKey
    var payloadBytes: Int
    var storedBytes: Int
    var payloadChecksum: UInt32
    var storedChecksum: UInt32
    var sequence: UInt64
    var deviceOffset: Int
    var isTombstone: Bool
    var maskSeed: UInt64

    func header(namespace: Namespace) -> BlockRecordHeader {
      var header = BlockRecordHeader(
        codec: codec, namespace: namespace, key: key, payloadBytes: payloadBytes, storedBytes: storedBytes,
        payloadChecksum: payloadChecksum, storedChecksum: storedChecksum, sequence: sequence,
        deviceOffset: deviceOffset)
      header.isTombstone = isTombstone
      header.maskSeed = maskSeed
      return header
    }
  }

  private static func decodeFixedFields(_ buffer: UnsafeRawBufferPointer) throws(BlockRecordError) -> FixedFields {
    precondition(buffer.count >= byteCount, "BlockRecordHeader.decode: buffer of \(buffer.count) bytes")
    let magic = UInt32(bigEndian: buffer.loadUnaligned(fromByteOffset: Offset.magic, as: UInt32.self))
    guard magic == Self.magic else { throw .badMagic(found: magic) }
    let version = UInt16(littleEndian: buffer.loadUnaligned(fromByteOffset: Offset.version, as: UInt16.self))
    guard version == formatVersion else { throw .unsupportedVersion(version) }
    let stored = UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: Offset.headerChecksum, as: UInt32.self))
    // The checksum runs over the header with its own field read as zero: the bytes before the
    // field, four zero bytes, then the bytes after it.
    let zero: UInt32 = 0
    var computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[0..<Offset.headerChecksum]))
    computed = withUnsafeBytes(of: zero) { CRC32C.checksum($0, continuing: computed) }
    computed = CRC32C.checksum(
      UnsafeRawBufferPointer(rebasing: buffer[(Offset.headerChecksum + 4)..<byteCount]), continuing: computed)
    guard stored == computed else { throw .headerChecksumMismatch(stored: stored, computed: computed) }

    guard let codec = CompressionCodec(recordByte: buffer[Offset.codec]) else {
      throw .invalidField("codec \(buffer[Offset.codec])")
    }
    let flags = buffer[Offset.flags]
    guard flags & ~(tombstoneFlag | maskedFlag) == 0 else { throw .invalidField("flags 0x\(String(flags, radix: 16))") }
    let maskSeed = UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: Offset.maskSeed, as: UInt64.self))
    guard (flags & maskedFlag != 0) == (maskSeed != 0) else {
      throw .invalidField("mask seed 0x\(String(maskSeed, radix: 16)) with flags 0x\(String(flags, radix: 16))")
    }
    let fields = FixedFields(
      codec: codec,
      key: BlockKey(copying: buffer.baseAddress! + Offset.key),
      payloadBytes: Int(
        UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: Offset.payloadBytes, as: UInt32.self))),
      storedBytes: Int(UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: Offset.storedBytes, as: UInt32.self))),
      payloadChecksum: UInt32(
        littleEndian: buffer.loadUnaligned(fromByteOffset: Offset.payloadChecksum, as: UInt32.self)),
      storedChecksum: UInt32(
        littleEndian: buffer.loadUnaligned(fromByteOffset: Offset.storedChecksum, as: UInt32.self)),
      sequence: UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: Offset.sequence, as: UInt64.self)),
      deviceOffset: Int(
        truncatingIfNeeded: UInt64(
          littleEndian: buffer.loadUnaligned(fromByteOffset: Offset.deviceOffset, as: UInt64.self))),
      isTombstone: flags & tombstoneFlag != 0, maskSeed: maskSeed)
    guard
      !fields.isTombstone || (fields.payloadBytes == 0 && fields.storedBytes == 0 && codec == .none && maskSeed == 0)
    else {
      throw .invalidField("tombstone with \(fields.payloadBytes) payload bytes")
    }
    // Sequences start at the wall clock in nanoseconds (about 2^61 today); a top bit set is not a
    // sequence any tier wrote, and accepting it would push the counter towards overflow.
    guard fields.sequence < 1 << 63, fields.deviceOffset >= 0 else {
      throw .invalidField("sequence \(fields.sequence) or device offset \(fields.deviceOffset) out of range")
    }
    switch codec {
    case .none:
      // Raw bytes: stored and payload are the same bytes, so their lengths and checksums agree
      // (masked ones differ in their checksums only).
      guard fields.storedBytes == fields.payloadBytes, maskSeed != 0 || fields.storedChecksum == fields.payloadChecksum
      else {
        throw .invalidField(
          "raw record with stored \(fields.storedBytes)/payload \(fields.payloadBytes) bytes disagreeing")
      }
    case .lz4:
      guard fields.storedBytes > 0, fields.storedBytes < fields.payloadBytes, maskSeed == 0 else {
        throw .invalidField("lz4 record storing \(fields.storedBytes) bytes for \(fields.payloadBytes)")
      }
    }
    return fields
  }
}

extension CompressionCodec {
  /// The codec's number in a record header; never reused.
  var recordByte: UInt8 {
    switch self {
    case .none: 0
    case .lz4: 1
    }
  }

  init?(recordByte: UInt8) {
    switch recordByte {
    case 0: self = .none
    case 1: self = .lz4
    default: return nil
    }
  }
}

/// The mask of a record whose payload holds the header magic where recovery could take it for a
/// header (see the masked records above).
enum RecordMask {
  /// Whether `stored`, the stored bytes of a record starting `bodyOffset` bytes after an aligned
  /// offset, holds the header magic at an offset that lands aligned on the device.
  static func holdsMagicAtAlignedOffsets(
    _ stored: UnsafeRawBufferPointer, bodyOffset: Int, alignmentBytes: Int
  ) -> Bool {
    let magic = BlockRecordHeader.magic.bigEndian
    var offset = (alignmentBytes - bodyOffset % alignmentBytes) % alignmentBytes
    while offset + 4 <= stored.count {
      if stored.loadUnaligned(fromByteOffset: offset, as: UInt32.self) == magic { return true }
      offset += alignmentBytes
    }
    return false
  }

  /// XORs `bytes` with the key stream of `seed` (SplitMix64, eight bytes per step); applying it
  /// twice restores them.
  static func apply(seed: UInt64, to bytes: UnsafeMutableRawBufferPointer) {
    var state = seed
    func next() -> UInt64 {
      state &+= 0x9E37_79B9_7F4A_7C15
      var z = state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
    var offset = 0
    while offset + 8 <= bytes.count {
      // The stream's bytes in little-endian order, whatever the machine's.
      let word = bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) ^ next().littleEndian
      bytes.storeBytes(of: word, toByteOffset: offset, as: UInt64.self)
      offset += 8
    }
    if offset < bytes.count {
      var stream = next()
      while offset < bytes.count {
        bytes[offset] ^= UInt8(truncatingIfNeeded: stream)
        stream >>= 8
        offset += 1
      }
    }
  }

  /// Seeds a masking tries before it keeps one whose masked bytes still hold the magic aligned (a
  /// chance of about one in 2^32 per aligned offset, which no payload can raise: the seed is secret).
  static let seedTriesMax = 8

  /// A seed for a new masked record: random, never zero (zero means not masked).
  static func newSeed() -> UInt64 {
    var generator = SystemRandomNumberGenerator()
    while true {
      let seed = generator.next()
      if seed != 0 { return seed }
    }
  }
}
