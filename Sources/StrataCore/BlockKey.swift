// BlockKey: the 32-byte content address of a KV-cache block (see docs/keys.md).

/// The 32-byte name of a block. Equal keys name equal content, so blocks are immutable.
/// Stored inline as four words: no heap allocation, cheap hashing and comparison.
public struct BlockKey: Hashable, Comparable, Sendable, CustomStringConvertible {
  public static let byteCount = 32

  /// The key's bytes as four big-endian words, so that word order is byte order.
  @usableFromInline internal var w0, w1, w2, w3: UInt64

  /// The key whose bytes are `bytes`; `bytes` must hold exactly 32 bytes.
  public init?<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
    guard bytes.count == BlockKey.byteCount else { return nil }
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    withUnsafeMutableBytes(of: &words) { raw in
      for (offset, byte) in bytes.enumerated() { raw[offset] = byte }
    }
    w0 = UInt64(bigEndian: words.0)
    w1 = UInt64(bigEndian: words.1)
    w2 = UInt64(bigEndian: words.2)
    w3 = UInt64(bigEndian: words.3)
  }

  /// The key read from 32 bytes at `pointer`.
  public init(copying pointer: UnsafeRawPointer) {
    w0 = UInt64(bigEndian: pointer.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
    w1 = UInt64(bigEndian: pointer.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    w2 = UInt64(bigEndian: pointer.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
    w3 = UInt64(bigEndian: pointer.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
  }

  /// The key written as 64 hex digits, or nil if `hex` is anything else.
  public init?(hex: some StringProtocol) {
    guard hex.utf8.count == 64, let bytes = Hex.decode(hex) else { return nil }
    self.init(bytes: bytes)
  }

  /// Writes the key's 32 bytes to `pointer`.
  public func store(to pointer: UnsafeMutableRawPointer) {
    pointer.storeBytes(of: w0.bigEndian, toByteOffset: 0, as: UInt64.self)
    pointer.storeBytes(of: w1.bigEndian, toByteOffset: 8, as: UInt64.self)
    pointer.storeBytes(of: w2.bigEndian, toByteOffset: 16, as: UInt64.self)
    pointer.storeBytes(of: w3.bigEndian, toByteOffset: 24, as: UInt64.self)
  }

  /// The key's 32 bytes.
  public var bytes: [UInt8] {
    [UInt8](unsafeUninitializedCapacity: BlockKey.byteCount) { buffer, count in
      store(to: UnsafeMutableRawPointer(buffer.baseAddress!))
      count = BlockKey.byteCount
    }
  }

  /// Lower-case hex, 64 digits.
  public var hex: String { Hex.encode(bytes) }

  public var description: String { hex }

  /// The first 8 bytes as a number: uniformly spread, used for placement and sharding.
  public var prefix64: UInt64 { w0 }

  public static func < (lhs: BlockKey, rhs: BlockKey) -> Bool {
    (lhs.w0, lhs.w1, lhs.w2, lhs.w3) < (rhs.w0, rhs.w1, rhs.w2, rhs.w3)
  }
}
