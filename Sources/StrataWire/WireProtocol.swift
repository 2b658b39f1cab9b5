// The vocabulary of the data-plane wire protocol: constants, opcodes, flags, limits and the kinds of
// violation a decoder reports. Byte-level specification: docs/protocol.md.

public import StrataCore

public enum WireProtocol {
  /// The frame magic as a little-endian u32: the bytes on the wire are 'S','T','R','W', so a hex dump
  /// reads "STRW" and a stray HTTP or TLS client fails on the first four bytes.
  public static let magic: UInt32 = 0x5752_5453
  /// The version this build speaks and writes into every header after HELLO.
  public static let version: UInt16 = 1
  /// The header versions this build accepts.
  public static let supportedVersions: ClosedRange<UInt16> = 1...1
}

/// What a frame asks for (requests) or answers (responses). A receiver rejects numbers it does not
/// know, so a new opcode needs a new protocol version or a capability both ends grant in HELLO
/// (VERIFY: `Capabilities.verify`).
public enum Opcode: UInt8, Hashable, Sendable, CaseIterable {
  case hello = 1
  case lookup = 2
  case get = 3
  case put = 4
  case delete = 5
  case stat = 6
  /// Reserved for the cluster module (ring and membership exchange); its body is opaque here.
  case ring = 7
  case goodbye = 8
  /// Checks blocks against their stored checksums, removing those that fail (`Capabilities.verify`).
  case verify = 9
}

extension Opcode: CustomStringConvertible {
  /// The case's name, from a constant: a metric label built per request must not go through
  /// reflection (interpolating an enum without a description does).
  public var description: String {
    switch self {
    case .hello: "hello"
    case .lookup: "lookup"
    case .get: "get"
    case .put: "put"
    case .delete: "delete"
    case .stat: "stat"
    case .ring: "ring"
    case .goodbye: "goodbye"
    case .verify: "verify"
    }
  }
}

/// Header flags. Bits 2 to 7 are reserved and must be zero.
public struct FrameFlags: OptionSet, Hashable, Sendable {
  public let rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }

  /// The frame answers a request (or, with request id 0, is an unsolicited notice).
  public static let response = FrameFlags(rawValue: 1 << 0)
  /// The response carries an `ErrorBody` and a nonzero status instead of the opcode's response body.
  public static let error = FrameFlags(rawValue: 1 << 1)
  /// Every bit this version defines.
  public static let known: FrameFlags = [.response, .error]
}

/// Which way a frame travels: clients send requests, servers send responses. A connection carries
/// requests one way and responses the other, so each receiving side expects one direction only.
public enum FrameDirection: Hashable, Sendable {
  case request
  case response
}

/// Bounds that a receiver enforces before it buffers anything, so a peer cannot make it allocate
/// more than these. Bodies are buffered; payloads are never buffered by the wire layer.
public struct WireLimits: Hashable, Sendable {
  /// The largest control body accepted (at most `UInt32.max`, the header field's range).
  public let bodyBytesMax: Int
  /// The largest payload accepted in one frame.
  public let payloadBytesMax: UInt64
  /// The most keys or items in one batch message.
  public let itemsPerBatchMax: Int

  public init(bodyBytesMax: Int = 16 << 20, payloadBytesMax: UInt64 = 1 << 30, itemsPerBatchMax: Int = 4096) {
    precondition(
      (0...Int(UInt32.max)).contains(bodyBytesMax), "WireLimits: bodyBytesMax \(bodyBytesMax) is outside 0...2^32-1")
    precondition(itemsPerBatchMax >= 0, "WireLimits: itemsPerBatchMax \(itemsPerBatchMax) is negative")
    self.bodyBytesMax = bodyBytesMax
    self.payloadBytesMax = payloadBytesMax
    self.itemsPerBatchMax = itemsPerBatchMax
  }

  public static let standard = WireLimits()
}

/// What exactly was wrong with rejected bytes. Every error the wire decoders throw is a `StrataError`
/// (code `.protocolError`, or `.unsupported` for a version) whose `cause` is one of these, so a
/// transport can count and log violations by kind and tests can tell them apart without parsing text.
public enum WireViolation: Error, Hashable, Sendable, CaseIterable {
  case badMagic
  case unsupportedVersion
  case headerChecksum
  case reservedFlags
  case reservedBytes
  case unknownOpcode
  case bodyTooLarge
  case payloadTooLarge
  /// A header field whose value breaks the header rules (status, request id, flag combination,
  /// a payload on a frame kind that has none).
  case invalidHeaderField
  /// A request where the receiver expects responses, or the reverse.
  case unexpectedDirection
  case bodyChecksum
  /// The body ends inside a field.
  case truncated
  /// Bytes remain after the last field of a body.
  case trailingBytes
  /// A list holds more items than `WireLimits.itemsPerBatchMax`.
  case countTooLarge
  /// A string or byte field is longer than its message allows.
  case fieldTooLong
  case invalidUTF8
  /// A field holds a number or name outside its defined values.
  case invalidValue
  /// Lengths or offsets whose sum does not fit 64 bits.
  case lengthOverflow
  /// The header's payload length disagrees with the lengths the body lists.
  case payloadMismatch
  /// The assembler was fed again after it had rejected its input.
  case failedEarlier
}

extension StrataError {
  /// The wire violation behind this error, if a wire decoder threw it.
  public var wireViolation: WireViolation? { cause as? WireViolation }

  static func wire(_ violation: WireViolation, _ message: String) -> StrataError {
    StrataError(violation == .unsupportedVersion ? .unsupported : .protocolError, message, cause: violation)
  }
}
