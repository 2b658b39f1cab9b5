// The fixed 64-byte frame header: what a transport reads first, before the control body and the
// payload. Layout (all little-endian) and the rules a receiver enforces: docs/protocol.md.

public import StrataCore

public struct FrameHeader: Hashable, Sendable {
  public static let byteCount = 64
  /// The bytes covered by `headerChecksum`: everything before it.
  public static let checksummedByteCount = 60
  static let reservedRange = 42..<60

  public var version: UInt16
  public var opcode: Opcode
  public var flags: FrameFlags
  /// Chosen by the client, echoed by the response; 0 only in unsolicited notices from the server.
  public var requestID: UInt64
  /// The sender's ring epoch, so a stale client learns of it on its next request.
  public var ringEpoch: UInt64
  public var bodyBytes: UInt32
  /// CRC-32C of the body's bytes (0 for an empty body).
  public var bodyChecksum: UInt32
  /// Raw bytes that follow the body: a GET response's blocks or a PUT request's blocks.
  public var payloadBytes: UInt64
  /// 0, or in error responses a `StrataError.Code` number.
  public var status: UInt16

  public init(
    opcode: Opcode, flags: FrameFlags = [], requestID: UInt64, ringEpoch: UInt64 = 0, bodyBytes: UInt32 = 0,
    bodyChecksum: UInt32 = 0, payloadBytes: UInt64 = 0, status: UInt16 = 0, version: UInt16 = WireProtocol.version
  ) {
    self.version = version
    self.opcode = opcode
    self.flags = flags
    self.requestID = requestID
    self.ringEpoch = ringEpoch
    self.bodyBytes = bodyBytes
    self.bodyChecksum = bodyChecksum
    self.payloadBytes = payloadBytes
    self.status = status
  }

  public var direction: FrameDirection { flags.contains(.response) ? .response : .request }
  public var isError: Bool { flags.contains(.error) }

  /// Whether frames of this opcode and direction may carry a payload: only PUT requests and
  /// successful GET responses move block bytes.
  public static func allowsPayload(opcode: Opcode, direction: FrameDirection, isError: Bool) -> Bool {
    switch (opcode, direction) {
    case (.put, .request): return true
    case (.get, .response): return !isError
    default: return false
    }
  }

  /// Writes the 64 header bytes, reserved bytes zeroed and the header checksum computed, to the
  /// start of `buffer`.
  public func encode(into buffer: UnsafeMutableRawBufferPointer) {
    precondition(buffer.count >= FrameHeader.byteCount, "FrameHeader.encode: buffer of \(buffer.count) bytes, need 64")
    let base = buffer.baseAddress!
    base.storeBytes(of: WireProtocol.magic.littleEndian, toByteOffset: 0, as: UInt32.self)
    base.storeBytes(of: version.littleEndian, toByteOffset: 4, as: UInt16.self)
    base.storeBytes(of: opcode.rawValue, toByteOffset: 6, as: UInt8.self)
    base.storeBytes(of: flags.rawValue, toByteOffset: 7, as: UInt8.self)
    base.storeBytes(of: requestID.littleEndian, toByteOffset: 8, as: UInt64.self)
    base.storeBytes(of: ringEpoch.littleEndian, toByteOffset: 16, as: UInt64.self)
    base.storeBytes(of: bodyBytes.littleEndian, toByteOffset: 24, as: UInt32.self)
    base.storeBytes(of: bodyChecksum.littleEndian, toByteOffset: 28, as: UInt32.self)
    base.storeBytes(of: payloadBytes.littleEndian, toByteOffset: 32, as: UInt64.self)
    base.storeBytes(of: status.littleEndian, toByteOffset: 40, as: UInt16.self)
    (base + FrameHeader.reservedRange.lowerBound).initializeMemory(
      as: UInt8.self, repeating: 0, count: FrameHeader.reservedRange.count)
    let checksum = CRC32C.checksum(UnsafeRawBufferPointer(start: base, count: FrameHeader.checksummedByteCount))
    base.storeBytes(of: checksum.littleEndian, toByteOffset: 60, as: UInt32.self)
  }

  /// The header's 64 bytes.
  public var encoded: [UInt8] {
    [UInt8](unsafeUninitializedCapacity: FrameHeader.byteCount) { buffer, count in
      encode(into: UnsafeMutableRawBufferPointer(buffer))
      count = FrameHeader.byteCount
    }
  }

  /// Decodes and checks the first 64 bytes of `bytes`. Checks run in a fixed order: magic (is this our
  /// protocol at all), header checksum (is it intact), then each field against the rules and `limits`.
  public init(decoding bytes: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    precondition(bytes.count >= FrameHeader.byteCount, "FrameHeader(decoding:) needs 64 bytes, got \(bytes.count)")
    func load<T: FixedWidthInteger>(_ offset: Int, as type: T.Type) -> T {
      T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }
    let magic = load(0, as: UInt32.self)
    guard magic == WireProtocol.magic else {
      throw .wire(
        .badMagic,
        "frame header: magic bytes \(hexBytes(bytes, 0..<4)), expected 53 54 52 57 (\"STRW\"): not a Strata data-plane peer"
      )
    }
    let storedChecksum = load(60, as: UInt32.self)
    let computedChecksum = CRC32C.checksum(
      UnsafeRawBufferPointer(rebasing: bytes[0..<FrameHeader.checksummedByteCount]))
    guard storedChecksum == computedChecksum else {
      throw .wire(
        .headerChecksum,
        "frame header: header checksum \(Hex.word32(storedChecksum)) does not match CRC32C \(Hex.word32(computedChecksum)) of bytes 0..<60"
      )
    }
    version = load(4, as: UInt16.self)
    guard WireProtocol.supportedVersions.contains(version) else {
      throw .wire(
        .unsupportedVersion,
        "frame header: version \(version) is not supported (this build speaks \(WireProtocol.supportedVersions))")
    }
    let rawFlags = load(7, as: UInt8.self)
    flags = FrameFlags(rawValue: rawFlags)
    guard flags.isSubset(of: .known) else {
      throw .wire(
        .reservedFlags,
        "frame header: flags 0b\(String(rawFlags, radix: 2)) set reserved bits (only bit 0 response, bit 1 error exist)"
      )
    }
    if let index = FrameHeader.reservedRange.first(where: { bytes[$0] != 0 }) {
      throw .wire(
        .reservedBytes, "frame header: reserved byte \(index) is 0x\(String(bytes[index], radix: 16)), must be 0")
    }
    let rawOpcode = load(6, as: UInt8.self)
    guard let opcode = Opcode(rawValue: rawOpcode) else {
      throw .wire(.unknownOpcode, "frame header: unknown opcode \(rawOpcode) (known: 1 hello ... 8 goodbye)")
    }
    self.opcode = opcode
    requestID = load(8, as: UInt64.self)
    ringEpoch = load(16, as: UInt64.self)
    bodyBytes = load(24, as: UInt32.self)
    bodyChecksum = load(28, as: UInt32.self)
    payloadBytes = load(32, as: UInt64.self)
    status = load(40, as: UInt16.self)
    try checkFields(limits: limits)
  }

  /// Where this frame is in words, for messages: "get response 17".
  var context: String {
    "frame header (\(opcode) \(direction == .request ? "request" : isError ? "error response" : "response") \(requestID))"
  }

  private func checkFields(limits: WireLimits) throws(StrataError) {
    guard UInt64(bodyBytes) <= UInt64(limits.bodyBytesMax) else {
      throw .wire(.bodyTooLarge, "\(context): body of \(bodyBytes) bytes exceeds the limit of \(limits.bodyBytesMax)")
    }
    guard payloadBytes <= limits.payloadBytesMax else {
      throw .wire(
        .payloadTooLarge, "\(context): payload of \(payloadBytes) bytes exceeds the limit of \(limits.payloadBytesMax)")
    }
    if isError {
      guard direction == .response else {
        throw .wire(.invalidHeaderField, "\(context): the error flag is set without the response flag")
      }
      guard status != 0 else {
        throw .wire(.invalidHeaderField, "\(context): error response with status 0 (must name an error code)")
      }
    } else {
      guard status == 0 else {
        throw .wire(.invalidHeaderField, "\(context): status \(status) on a frame without the error flag (must be 0)")
      }
    }
    if requestID == 0 {
      guard direction == .response, opcode == .goodbye, !isError else {
        throw .wire(
          .invalidHeaderField, "\(context): request id 0 is reserved for the server's unsolicited goodbye notice")
      }
    }
    guard payloadBytes == 0 || FrameHeader.allowsPayload(opcode: opcode, direction: direction, isError: isError) else {
      throw .wire(
        .invalidHeaderField,
        "\(context): payload of \(payloadBytes) bytes on a frame kind that carries none (only put requests and get responses do)"
      )
    }
  }

  /// Checks `body` (exactly `bodyBytes` bytes) against `bodyChecksum`.
  public func verifyBody(_ body: UnsafeRawBufferPointer) throws(StrataError) {
    precondition(body.count == Int(bodyBytes), "verifyBody: \(body.count) bytes for a body of \(bodyBytes)")
    let computed = CRC32C.checksum(body)
    guard computed == bodyChecksum else {
      throw .wire(
        .bodyChecksum,
        "\(context): body checksum \(Hex.word32(bodyChecksum)) does not match CRC32C \(Hex.word32(computed)) of its \(bodyBytes) bytes"
      )
    }
  }
}

private func hexBytes(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> String {
  range.map { Hex.encode(CollectionOfOne(bytes[$0])) }.joined(separator: " ")
}
