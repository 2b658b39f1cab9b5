// A catalogue of malformed inputs for the node's data plane: valid frames broken in every way a
// buggy or hostile peer could, each named. Frames whose header is rebuilt carry a correct header
// checksum, so the node must find the fault in the fields themselves.

import StrataCore
import StrataWire

struct MalformedFrame {
  var name: String
  var bytes: [UInt8]
  /// Send a valid HELLO (and read its answer) before the malformed bytes.
  var afterHello: Bool
  /// Close the sending side after the bytes (a truncated frame).
  var thenHalfClose: Bool = false
}

enum MalformedFrames {
  static let hello = HelloRequest(capabilities: [.tcp], frameBytesMax: 1 << 30, token: [], clientName: "fuzz")

  static func lookupFrame() -> [UInt8] {
    LookupRequest(keys: [SHA256.digest([1]), SHA256.digest([2])]).frameBytes(requestID: 7, ringEpoch: 0)
  }

  static func putFrame() -> [UInt8] {
    let payload = [UInt8](repeating: 0xAB, count: 1000)
    return PutRequest(items: [.init(key: SHA256.digest([3]), length: 1000, checksum: CRC32C.checksum(payload))])
      .frameBytes(requestID: 8, ringEpoch: 0) + payload
  }

  /// Recomputes the header checksum (bytes 60..<64) over bytes 0..<60.
  static func resigned(_ frame: [UInt8]) -> [UInt8] {
    var frame = frame
    let checksum = frame.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
    withUnsafeBytes(of: checksum.littleEndian) { for (index, byte) in $0.enumerated() { frame[60 + index] = byte } }
    return frame
  }

  /// Sets the body checksum (bytes 28..<32) to match the body, then re-signs the header.
  static func rebodied(_ frame: [UInt8], bodyBytes: Int) -> [UInt8] {
    var frame = frame
    let checksum = frame.withUnsafeBytes {
      CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[64..<(64 + bodyBytes)]))
    }
    withUnsafeBytes(of: checksum.littleEndian) { for (index, byte) in $0.enumerated() { frame[28 + index] = byte } }
    return resigned(frame)
  }

  static func setting<T: FixedWidthInteger>(_ frame: [UInt8], at offset: Int, _ value: T) -> [UInt8] {
    var frame = frame
    withUnsafeBytes(of: value.littleEndian) { for (index, byte) in $0.enumerated() { frame[offset + index] = byte } }
    return resigned(frame)
  }

  static func all() -> [MalformedFrame] {
    var cases: [MalformedFrame] = []
    let helloFrame = hello.frameBytes(requestID: 1, ringEpoch: 0)
    let lookup = lookupFrame()
    let put = putFrame()

    // Every header byte flipped: the header checksum catches each (64 kinds).
    for offset in 0..<64 {
      var frame = lookup
      frame[offset] ^= 0x10
      cases.append(.init(name: "lookup header byte \(offset) flipped", bytes: frame, afterHello: true))
    }
    // Bodies that do not match their checksum.
    for (name, frame, afterHello) in [("hello", helloFrame, false), ("lookup", lookup, true), ("put", put, true)] {
      var broken = frame
      broken[FrameHeader.byteCount + 2] ^= 0x01
      cases.append(.init(name: "\(name) body byte flipped", bytes: broken, afterHello: afterHello))
    }
    // Truncated frames, then the sender closes.
    for cut in [1, 32, 63, 64 + 10] {
      cases.append(
        .init(
          name: "lookup cut after \(cut) bytes", bytes: Array(lookup[0..<cut]), afterHello: true, thenHalfClose: true))
    }
    cases.append(
      .init(name: "put cut inside its payload", bytes: Array(put.dropLast(500)), afterHello: true, thenHalfClose: true))
    // Not our protocol at all.
    var random = UInt64(42)
    let noise = (0..<64).map { _ -> UInt8 in
      random = random &* 6_364_136_223_846_793_005 &+ 1
      return UInt8(truncatingIfNeeded: random >> 33)
    }
    cases.append(.init(name: "random bytes", bytes: noise, afterHello: false))
    cases.append(.init(name: "all zeros", bytes: [UInt8](repeating: 0, count: 64), afterHello: false))
    cases.append(.init(name: "all ones", bytes: [UInt8](repeating: 0xFF, count: 64), afterHello: false))
    cases.append(
      .init(
        name: "HTTP request",
        bytes: Array("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8) + [UInt8](repeating: 0, count: 30),
        afterHello: false))
    cases.append(
      .init(
        name: "TLS client hello",
        bytes: [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] + [UInt8](repeating: 7, count: 53),
        afterHello: false))
    cases.append(.init(name: "random bytes after hello", bytes: noise, afterHello: true))
    // Well-signed headers with impossible fields.
    cases.append(.init(name: "unknown opcode 9", bytes: setting(lookup, at: 6, UInt8(9)), afterHello: true))
    cases.append(.init(name: "unknown opcode 200", bytes: setting(lookup, at: 6, UInt8(200)), afterHello: true))
    cases.append(.init(name: "unknown flag bit", bytes: setting(lookup, at: 7, UInt8(0x80)), afterHello: true))
    cases.append(
      .init(name: "response flag on a request", bytes: setting(lookup, at: 7, UInt8(0x01)), afterHello: true))
    cases.append(.init(name: "error flag on a request", bytes: setting(lookup, at: 7, UInt8(0x03)), afterHello: true))
    cases.append(.init(name: "version 2", bytes: setting(lookup, at: 4, UInt16(2)), afterHello: true))
    cases.append(.init(name: "version 0", bytes: setting(lookup, at: 4, UInt16(0)), afterHello: true))
    cases.append(.init(name: "request id 0", bytes: setting(lookup, at: 8, UInt64(0)), afterHello: true))
    cases.append(.init(name: "status on a request", bytes: setting(lookup, at: 40, UInt16(5)), afterHello: true))
    for offset in stride(from: 42, to: 60, by: 6) {
      cases.append(
        .init(name: "reserved byte \(offset) set", bytes: setting(lookup, at: offset, UInt8(1)), afterHello: true))
    }
    cases.append(
      .init(name: "body of 1 GiB announced", bytes: setting(lookup, at: 24, UInt32(1 << 30)), afterHello: true))
    cases.append(.init(name: "payload on a lookup", bytes: setting(lookup, at: 32, UInt64(16)), afterHello: true))
    cases.append(
      .init(name: "payload of 2^62 on a put", bytes: setting(put, at: 32, UInt64(1) << 62), afterHello: true))
    cases.append(
      .init(
        name: "put payload longer than its items", bytes: setting(put, at: 32, UInt64(1001)) + [0], afterHello: true))
    cases.append(
      .init(name: "put payload shorter than its items", bytes: setting(put, at: 32, UInt64(999)), afterHello: true))
    // Bodies that are well signed but do not decode.
    let lookupBody = Int(lookup.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 24, as: UInt32.self) })
    func lookupWithCount(_ count: UInt32) -> [UInt8] {
      var frame = lookup
      // LookupRequest: u32 lease milliseconds, then u32 key count, then the keys.
      withUnsafeBytes(of: count.littleEndian) { for (index, byte) in $0.enumerated() { frame[68 + index] = byte } }
      return rebodied(frame, bodyBytes: lookupBody)
    }
    cases.append(.init(name: "lookup count above its keys", bytes: lookupWithCount(5), afterHello: true))
    cases.append(.init(name: "lookup count below its keys", bytes: lookupWithCount(1), afterHello: true))
    cases.append(.init(name: "lookup count above the batch limit", bytes: lookupWithCount(1_000_000), afterHello: true))
    var trailing = lookup + [0, 0, 0, 0]
    trailing = setting(trailing, at: 24, UInt32(lookupBody + 4))
    cases.append(
      .init(
        name: "lookup body with trailing bytes", bytes: rebodied(trailing, bodyBytes: lookupBody + 4), afterHello: true)
    )
    var short = Array(lookup[0..<(64 + lookupBody - 5)])
    short = setting(short, at: 24, UInt32(lookupBody - 5))
    cases.append(
      .init(
        name: "lookup body truncated inside a key", bytes: rebodied(short, bodyBytes: lookupBody - 5), afterHello: true)
    )
    let empty = setting(Array(lookup[0..<64]), at: 24, UInt32(0))
    cases.append(.init(name: "lookup with an empty body", bytes: rebodied(empty, bodyBytes: 0), afterHello: true))
    // Order of the conversation.
    cases.append(.init(name: "lookup before hello", bytes: lookup, afterHello: false))
    cases.append(.init(name: "put before hello", bytes: put, afterHello: false))
    let response = LookupResponse(tiers: [.ram], leadingRun: 1).frameBytes(requestID: 9, ringEpoch: 0)
    cases.append(.init(name: "a response sent to the node", bytes: response, afterHello: true))
    let helloBody = Int(helloFrame.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 24, as: UInt32.self) })
    var helloShort = Array(helloFrame[0..<(64 + helloBody - 3)])
    helloShort = setting(helloShort, at: 24, UInt32(helloBody - 3))
    cases.append(
      .init(name: "hello body truncated", bytes: rebodied(helloShort, bodyBytes: helloBody - 3), afterHello: false))
    // More header flips on the put frame, at fields that matter most.
    for offset in [6, 7, 24, 28, 32, 36, 60, 63] {
      var frame = put
      frame[offset] ^= 0x01
      cases.append(.init(name: "put header byte \(offset) flipped", bytes: frame, afterHello: true))
    }
    return cases
  }
}
