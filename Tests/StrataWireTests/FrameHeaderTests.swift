// The 64-byte frame header: its byte layout, round trips at the edges of every field, and the
// distinct error each kind of bad header gets.

import StrataCore
import StrataWire
import Testing

@Suite struct FrameHeaderTests {
  func decode(_ bytes: [UInt8], limits: WireLimits = .standard) throws(StrataError) -> FrameHeader {
    let result = bytes.withUnsafeBytes { raw in
      Result { () throws(StrataError) in try FrameHeader(decoding: raw, limits: limits) }
    }
    return try result.get()
  }

  @Test func layoutIsTheDocumentedOne() {
    let header = FrameHeader(
      opcode: .get, flags: .response, requestID: 0x0102_0304_0506_0708, ringEpoch: 0x1112_1314_1516_1718,
      bodyBytes: 0x2122_2324, bodyChecksum: 0x3132_3334, payloadBytes: 0x4142_4344_4546_4748)
    let bytes = header.encoded
    #expect(bytes.count == 64)
    #expect(Array(bytes[0..<4]) == Array("STRW".utf8))
    #expect(Array(bytes[4..<6]) == [1, 0])
    #expect(bytes[6] == 3 && bytes[7] == 1)
    #expect(Array(bytes[8..<16]) == [8, 7, 6, 5, 4, 3, 2, 1])
    #expect(Array(bytes[16..<24]) == [0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11])
    #expect(Array(bytes[24..<28]) == [0x24, 0x23, 0x22, 0x21])
    #expect(Array(bytes[28..<32]) == [0x34, 0x33, 0x32, 0x31])
    #expect(Array(bytes[32..<40]) == [0x48, 0x47, 0x46, 0x45, 0x44, 0x43, 0x42, 0x41])
    #expect(Array(bytes[40..<42]) == [0, 0])
    #expect(bytes[42..<60].allSatisfy { $0 == 0 })
    let checksum = CRC32C.checksum(Array(bytes[0..<60]))
    #expect(Array(bytes[60..<64]) == [0, 8, 16, 24].map { UInt8(truncatingIfNeeded: checksum >> $0) })
    // The same header, written field by field from the specification.
    #expect(
      bytes
        == Array(
          rawFrame(
            opcode: 3, flags: 1, requestID: 0x0102_0304_0506_0708, ringEpoch: 0x1112_1314_1516_1718, body: []
          )[0..<24]) + RawBody().u32(0x2122_2324).u32(0x3132_3334).u64(0x4142_4344_4546_4748).u16(0).bytes
        + [UInt8](repeating: 0, count: 18) + RawBody().u32(checksum).bytes)
  }

  static let edgeHeaders: [FrameHeader] = [
    FrameHeader(opcode: .hello, requestID: 1),
    FrameHeader(
      opcode: .put, requestID: .max, ringEpoch: .max, bodyBytes: 16 << 20, bodyChecksum: .max,
      payloadBytes: 1 << 30),
    FrameHeader(opcode: .get, flags: .response, requestID: .max, ringEpoch: 0, bodyBytes: 0, payloadBytes: 1 << 30),
    FrameHeader(opcode: .stat, flags: [.response, .error], requestID: 9, status: .max),
    FrameHeader(opcode: .ring, flags: [.response, .error], requestID: 9, status: 1),
    FrameHeader(opcode: .goodbye, flags: .response, requestID: 0),
    FrameHeader(opcode: .delete, requestID: 1 << 63, ringEpoch: 1 << 63, bodyBytes: 1, bodyChecksum: 1),
  ]

  @Test(arguments: edgeHeaders)
  func roundTripsAtTheEdges(_ header: FrameHeader) throws {
    #expect(try decode(header.encoded) == header)
  }

  @Test func limitsAreInclusive() throws {
    let limits = WireLimits(bodyBytesMax: 1000, payloadBytesMax: 5000)
    let atLimit = FrameHeader(opcode: .put, requestID: 1, bodyBytes: 1000, payloadBytes: 5000)
    #expect(try decode(atLimit.encoded, limits: limits) == atLimit)
    var body = atLimit
    body.bodyBytes = 1001
    #expect(throws: StrataError.self) { try decode(body.encoded, limits: limits) }
    var payload = atLimit
    payload.payloadBytes = 5001
    let error = #expect(throws: StrataError.self) { try decode(payload.encoded, limits: limits) }
    #expect(error?.wireViolation == .payloadTooLarge)
  }

  @Test func everySingleBitFlipIsRejected() {
    let good = FrameHeader(
      opcode: .put, requestID: 42, ringEpoch: 7, bodyBytes: 48, bodyChecksum: 0xDEAD_BEEF,
      payloadBytes: 4096
    ).encoded
    for bit in 0..<(64 * 8) {
      var bytes = good
      bytes[bit / 8] ^= 1 << (bit % 8)
      let result = bytes.withUnsafeBytes { raw in
        Result { () throws(StrataError) in try FrameHeader(decoding: raw, limits: .standard) }
      }
      guard case .failure(let error) = result else {
        Issue.record("bit \(bit) flipped and the header was accepted")
        continue
      }
      #expect(error.wireViolation == (bit < 32 ? .badMagic : .headerChecksum), "bit \(bit): \(error)")
    }
  }

  @Test func eachKindOfBadHeaderHasItsOwnViolation() {
    func rejected(_ mutate: (inout [UInt8]) -> Void) -> StrataError? {
      var bytes = FrameHeader(opcode: .lookup, requestID: 5).encoded
      mutate(&bytes)
      do {
        _ = try decode(bytes)
        return nil
      } catch {
        return error
      }
    }
    #expect(rejected { $0[3] = 0 }?.wireViolation == .badMagic)
    #expect(rejected { $0[20] ^= 1 }?.wireViolation == .headerChecksum)
    let version = rejected { patch(&$0, field: 4, UInt16(2)) }
    #expect(version?.wireViolation == .unsupportedVersion)
    #expect(version?.code == .unsupported)
    #expect(rejected { patch(&$0, field: 7, UInt8(0x04)) }?.wireViolation == .reservedFlags)
    #expect(rejected { patch(&$0, field: 59, UInt8(1)) }?.wireViolation == .reservedBytes)
    #expect(rejected { patch(&$0, field: 6, UInt8(200)) }?.wireViolation == .unknownOpcode)
    #expect(rejected { patch(&$0, field: 24, UInt32.max) }?.wireViolation == .bodyTooLarge)
    #expect(rejected { patch(&$0, field: 32, UInt64.max) }?.wireViolation == .payloadTooLarge)
    #expect(rejected { patch(&$0, field: 40, UInt16(3)) }?.wireViolation == .invalidHeaderField)
    #expect(rejected { _ in } == nil)
  }

  @Test func bodyChecksumIsVerified() throws {
    let body: [UInt8] = [1, 2, 3]
    var header = FrameHeader(opcode: .ring, requestID: 1, bodyBytes: 3, bodyChecksum: CRC32C.checksum(body))
    try body.withUnsafeBytes { raw in try header.verifyBody(raw) }
    header.bodyChecksum ^= 1
    let error = #expect(throws: StrataError.self) {
      try body.withUnsafeBytes { raw in try header.verifyBody(raw) }
    }
    #expect(error?.wireViolation == .bodyChecksum)
    #expect(
      error?.message.contains("ring request 1") == true, "the message names the frame: \(String(describing: error))")
  }
}
