// The shared machinery of the hand-written body codecs: a strict reader that names the message and
// field in every error, and little-endian appenders for encoding into a reserved [UInt8].

public import StrataCore

/// A control body that can be written to and read from bytes.
public protocol FrameBody: Hashable, Sendable {
  /// The name errors use ("GetRequest").
  static var messageName: StaticString { get }
  /// The exact number of bytes `encode(into:)` appends, so encoders reserve once.
  var encodedByteCount: Int { get }
  /// Appends the body's bytes. Encoders write what they are given; the receiver's decoder judges.
  func encode(into out: inout [UInt8])
  /// Decodes a whole body: truncated, trailing or out-of-range bytes throw `.protocolError`.
  init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError)
}

/// A body that is the whole of one kind of request or response.
public protocol MessageBody: FrameBody {
  static var opcode: Opcode { get }
  static var direction: FrameDirection { get }
  /// The payload bytes that follow this body (0 for every message but PUT requests and GET responses).
  var payloadBytes: UInt64 { get }
  /// This body as the one message enum, which holds the single frame encoder.
  var wireMessage: WireMessage { get }
}

extension MessageBody {
  public var payloadBytes: UInt64 { 0 }
}

extension FrameBody {
  /// The body's bytes.
  public var encodedBody: [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(encodedByteCount)
    encode(into: &out)
    return out
  }

  public init(decoding body: [UInt8], limits: WireLimits = .standard) throws(StrataError) {
    let result = body.withUnsafeBytes { raw in
      Result { () throws(StrataError) in try Self(decoding: raw, limits: limits) }
    }
    self = try result.get()
  }
}

/// Byte sizes of the encoded scalars, so size sums read as the layout.
enum WireSize {
  static let u8 = 1
  static let u16 = 2
  static let u32 = 4
  static let u64 = 8
  static let key = BlockKey.byteCount
  /// A u32 length followed by the bytes.
  static func lengthPrefixed(_ count: Int) -> Int { u32 + count }
}

/// Reads a body front to back. Every failure names `Message.field` (with the list index inside
/// lists) and is a `.protocolError` whose cause is a `WireViolation`.
struct WireReader {
  private let bytes: UnsafeRawBufferPointer
  private(set) var offset = 0
  private let message: StaticString
  /// The list and index being read, so errors say `items[3].offset`.
  var item: (list: StaticString, index: Int)?

  init(_ bytes: UnsafeRawBufferPointer, message: StaticString) {
    self.bytes = bytes
    self.message = message
  }

  var remaining: Int { bytes.count - offset }

  func error(_ violation: WireViolation, _ field: StaticString, _ detail: String) -> StrataError {
    let path = item.map { "\($0.list)[\($0.index)].\(field)" } ?? "\(field)"
    return .wire(violation, "\(message).\(path): \(detail)")
  }

  mutating func read<T: FixedWidthInteger>(_ type: T.Type, _ field: StaticString) throws(StrataError) -> T {
    let size = MemoryLayout<T>.size
    guard remaining >= size else {
      throw error(
        .truncated, field, "truncated: needs \(size) bytes at body offset \(offset), the body has \(bytes.count)")
    }
    let value = T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    offset += size
    return value
  }

  mutating func key(_ field: StaticString) throws(StrataError) -> BlockKey {
    guard remaining >= BlockKey.byteCount else {
      throw error(
        .truncated, field, "truncated: needs 32 bytes at body offset \(offset), the body has \(bytes.count)")
    }
    let key = BlockKey(copying: bytes.baseAddress! + offset)
    offset += BlockKey.byteCount
    return key
  }

  /// Reads a byte that must be one of `T`'s raw values; the error names them all, e.g. "7 is not a
  /// tier (0 absent, 1 ram, 2 nvme)".
  mutating func read<T: RawRepresentable & CaseIterable>(
    _ type: T.Type, _ field: StaticString, noun: String
  ) throws(StrataError) -> T where T.RawValue == UInt8 {
    let raw = try read(UInt8.self, field)
    guard let value = T(rawValue: raw) else {
      let known = T.allCases.map { "\($0.rawValue) \($0)" }.joined(separator: ", ")
      throw error(.invalidValue, field, "\(raw) is not \(noun) (\(known))")
    }
    return value
  }

  /// Reads a u32 count and that many bytes, each one of `T`'s raw values (`read(_:_:noun:)`): a
  /// list of tiers, outcomes or statuses.
  mutating func codes<T: RawRepresentable & CaseIterable>(
    _ field: StaticString, each itemField: StaticString, max: Int, noun: String
  ) throws(StrataError) -> [T] where T.RawValue == UInt8 {
    try list(field, max: max, itemBytes: WireSize.u8) { reader throws(StrataError) in
      try reader.read(T.self, itemField, noun: noun)
    }
  }

  /// Reads a u32 item count (see `count`) and that many items, each read by `item`; errors inside
  /// an item name it as `field[index]`.
  mutating func list<T>(
    _ field: StaticString, max: Int, itemBytes: Int, _ item: (inout WireReader) throws(StrataError) -> T
  ) throws(StrataError) -> [T] {
    try list(field, count: try count(field, max: max, itemBytes: itemBytes), item)
  }

  /// Reads `count` items (a count already read and checked), each read by `item`.
  mutating func list<T>(
    _ field: StaticString, count: Int, _ item: (inout WireReader) throws(StrataError) -> T
  ) throws(StrataError) -> [T] {
    var items: [T] = []
    items.reserveCapacity(count)
    for index in 0..<count {
      self.item = (field, index)
      items.append(try item(&self))
    }
    self.item = nil
    return items
  }

  /// Reads a u32 item count and checks it against `max` and against the bytes left, so a lying
  /// count fails before anything is allocated for it.
  mutating func count(_ field: StaticString, max: Int, itemBytes: Int) throws(StrataError) -> Int {
    let count = try read(UInt32.self, field)
    guard UInt64(count) <= UInt64(max) else {
      throw error(.countTooLarge, field, "\(count) items, at most \(max) per batch")
    }
    let needed = Int(count) * itemBytes
    guard needed <= remaining else {
      throw error(
        .truncated, field, "truncated: \(count) items of \(itemBytes) bytes need \(needed), only \(remaining) remain")
    }
    return Int(count)
  }

  /// Reads a u32 length and that many bytes (at most `max`); the result points into the body.
  mutating func lengthPrefixed(_ field: StaticString, max: Int) throws(StrataError) -> UnsafeRawBufferPointer {
    let length = try read(UInt32.self, field)
    guard UInt64(length) <= UInt64(max) else {
      throw error(.fieldTooLong, field, "\(length) bytes, at most \(max)")
    }
    guard Int(length) <= remaining else {
      throw error(.truncated, field, "truncated: \(length) bytes declared, only \(remaining) remain")
    }
    let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + Int(length)])
    offset += Int(length)
    return slice
  }

  mutating func byteArray(_ field: StaticString, max: Int) throws(StrataError) -> [UInt8] {
    [UInt8](try lengthPrefixed(field, max: max))
  }

  mutating func string(_ field: StaticString, max: Int) throws(StrataError) -> String {
    let start = offset
    let raw = try lengthPrefixed(field, max: max)
    guard let text = String(validating: raw, as: UTF8.self) else {
      throw error(.invalidUTF8, field, "the \(raw.count) bytes at body offset \(start + 4) are not valid UTF-8")
    }
    return text
  }

  /// Throws unless every byte was read.
  func finish() throws(StrataError) {
    guard remaining == 0 else {
      throw StrataError.wire(
        .trailingBytes,
        "\(message): \(remaining) trailing bytes after the last field (the fields end at \(offset), the body has \(bytes.count))"
      )
    }
  }
}

extension [UInt8] {
  mutating func append<T: FixedWidthInteger>(littleEndian value: T) {
    Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
  }

  mutating func append(key: BlockKey) {
    withUnsafeTemporaryAllocation(byteCount: BlockKey.byteCount, alignment: 8) { bytes in
      key.store(to: bytes.baseAddress!)
      append(contentsOf: UnsafeRawBufferPointer(bytes))
    }
  }

  /// A u32 count of items; counts are bounded by batch limits far below 2^32.
  mutating func append(count: Int) {
    precondition(count <= Int(UInt32.max), "wire encode: \(count) items do not fit a u32 count")
    append(littleEndian: UInt32(count))
  }

  /// A u32 count, then each code's byte (`WireReader.codes`).
  mutating func append<T: RawRepresentable>(codes: [T]) where T.RawValue == UInt8 {
    append(count: codes.count)
    for code in codes { append(code.rawValue) }
  }

  /// A u32 count, then the keys.
  mutating func append(keys: [BlockKey]) {
    append(count: keys.count)
    for key in keys { append(key: key) }
  }

  mutating func append(lengthPrefixed bytes: some Collection<UInt8>) {
    append(count: bytes.count)
    append(contentsOf: bytes)
  }

  mutating func append(string: String) {
    append(lengthPrefixed: string.utf8)
  }
}
