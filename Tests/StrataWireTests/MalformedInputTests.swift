// Hundreds of malformed inputs, generated from valid frames × mutations: each must be rejected by the
// FrameAssembler with a protocol error whose kind and message say what was wrong, fed whole or dripped.

import StrataCore
import StrataWire
import Testing

struct MalformedCase: Sendable, CustomTestStringConvertible {
  var name: String
  var receiving: FrameDirection
  /// The malformed frame, with any payload.
  var frame: [UInt8]
  var violation: WireViolation
  /// Words the error message must contain.
  var fragments: [String]
  var limits: WireLimits = .standard
  /// Whether a valid frame (with payload) precedes the malformed one.
  var afterValidFrame = true

  var testDescription: String { name }

  /// The bytes fed: a valid frame of the same direction first, to show rejection mid-stream.
  var stream: [UInt8] {
    guard afterValidFrame else { return frame }
    let valid = receiving == .request ? Samples.putRequest : Samples.getResponse
    return valid.bytes + frame
  }
}

func messageName(_ message: WireMessage) -> String {
  switch message {
  case .helloRequest: return "HelloRequest"
  case .helloResponse: return "HelloResponse"
  case .lookupRequest: return "LookupRequest"
  case .lookupResponse: return "LookupResponse"
  case .getRequest: return "GetRequest"
  case .getResponse: return "GetResponse"
  case .putRequest: return "PutRequest"
  case .putResponse: return "PutResponse"
  case .deleteRequest: return "DeleteRequest"
  case .deleteResponse: return "DeleteResponse"
  case .statRequest: return "StatRequest"
  case .statResponse: return "StatResponse"
  case .ringRequest, .ringResponse: return "ring"
  case .goodbyeRequest: return "GoodbyeRequest"
  case .goodbyeResponse: return "GoodbyeResponse"
  case .verifyRequest: return "VerifyRequest"
  case .verifyResponse: return "VerifyResponse"
  case .error: return "ErrorBody"
  }
}

enum MalformedCases {
  static let all: [MalformedCase] = perBaseFrame + headerFields + truncatedBodies + requestBodies + responseBodies

  static var bases: [SampleFrame] { Samples.requests + Samples.responses }

  /// Mutations applied to every valid sample frame.
  static var perBaseFrame: [MalformedCase] {
    var cases: [MalformedCase] = []
    for base in bases {
      let direction = base.message.direction
      let original = base.bytes
      let bodyCount = base.headerAndBody.count - FrameHeader.byteCount
      func add(_ what: String, _ violation: WireViolation, _ fragments: [String], _ mutate: (inout [UInt8]) -> Void) {
        var frame = original
        mutate(&frame)
        cases.append(
          MalformedCase(
            name: "\(base.name): \(what)", receiving: direction, frame: frame, violation: violation,
            fragments: fragments))
      }
      add("bad magic", .badMagic, ["magic", "STRW"]) { $0[0] = UInt8(ascii: "X") }
      add("flipped bit in the request id", .headerChecksum, ["header checksum"]) { $0[9] ^= 0x10 }
      add("flipped bit in the header checksum", .headerChecksum, ["header checksum"]) { $0[62] ^= 0x01 }
      add("version 2", .unsupportedVersion, ["version 2 is not supported"]) { patch(&$0, field: 4, UInt16(2)) }
      add("unknown opcode 10", .unknownOpcode, ["unknown opcode 10"]) { patch(&$0, field: 6, UInt8(10)) }
      add("reserved flag bit 7", .reservedFlags, ["reserved bits"]) { patch(&$0, field: 7, $0[7] | 0x80) }
      add("reserved byte 50 set", .reservedBytes, ["reserved byte 50"]) { patch(&$0, field: 50, UInt8(1)) }
      add("wrong body checksum", .bodyChecksum, ["body checksum", "does not match"]) {
        patch(&$0, field: 28, CRC32C.checksum([UInt8](original[64..<64 + bodyCount])) ^ 0x8000_0000)
      }
      if case .ringRequest = base.message {
      } else if case .ringResponse = base.message {
      } else {
        let name = messageName(base.message)
        add("one trailing body byte", .trailingBytes, ["\(name): 1 trailing bytes"]) { frame in
          var body = [UInt8](original[64..<64 + bodyCount])
          // Bodies ending in an optional field: complete it, then one more byte.
          switch base.message {
          case .helloRequest: body += [0, 0, 0, 0]  // peerNamespace, empty
          case .lookupRequest: body += [1]  // flags: sizes
          case .lookupResponse(let response):  // sizes, one per tier
            withUnsafeBytes(of: UInt32(response.tiers.count).littleEndian) { body += $0 }
            for tier in response.tiers {
              withUnsafeBytes(of: UInt64(tier == .absent ? 0 : 9).littleEndian) { body += $0 }
            }
          case .helloResponse: body += [2, 0, 0, 0, 0x2F, 0x73]  // sameHostSocket "/s"
          case .getRequest(let get):  // regionRanges, one per item
            withUnsafeBytes(of: UInt32(get.items.count).littleEndian) { body += $0 }
            body += [UInt8](repeating: 0, count: 16 * get.items.count)
          case .putRequest(let put):  // writeQuorum, regionRanges (one per item), then flags
            if put.writeQuorum == 0 { body += [2] }
            withUnsafeBytes(of: UInt32(put.items.count).littleEndian) { body += $0 }
            body += [UInt8](repeating: 0, count: 16 * put.items.count)
            body += [1]  // flags: checksums by the node
          default: break
          }
          body.append(0)
          frame.replaceSubrange(64..<64 + bodyCount, with: body)
          patch(&frame, field: 24, UInt32(body.count), reseal: false)
          patch(&frame, field: 28, CRC32C.checksum(body))
        }
      }
      if base.requestID != 0, !base.message.isErrorResponse, base.message.payloadBytes == 0 {
        add("sent the wrong way", .unexpectedDirection, ["receives only"]) { patch(&$0, field: 7, $0[7] ^ 0x01) }
      }
    }
    return cases
  }

  /// Header fields out of range, one at a time, on small frames built field by field.
  static var headerFields: [MalformedCase] {
    let statRequest = rawFrame(opcode: 6, body: [])
    func request(
      _ name: String, _ violation: WireViolation, _ fragments: [String], limits: WireLimits = .standard,
      afterValidFrame: Bool = true, _ frame: [UInt8]
    ) -> MalformedCase {
      MalformedCase(
        name: "header: \(name)", receiving: .request, frame: frame, violation: violation, fragments: fragments,
        limits: limits, afterValidFrame: afterValidFrame)
    }
    func response(_ name: String, _ violation: WireViolation, _ fragments: [String], _ frame: [UInt8]) -> MalformedCase
    {
      MalformedCase(
        name: "header: \(name)", receiving: .response, frame: frame, violation: violation, fragments: fragments)
    }
    func patched<T: FixedWidthInteger>(_ frame: [UInt8], _ field: Int, _ value: T, reseal: Bool = true) -> [UInt8] {
      var copy = frame
      patch(&copy, field: field, value, reseal: reseal)
      return copy
    }
    var cases: [MalformedCase] = []
    for (name, magic) in [
      ("magic of an HTTP request", Array("GET ".utf8)), ("magic of a TLS ClientHello", [0x16, 0x03, 0x01, 0x02]),
      ("magic all zero", [0, 0, 0, 0]), ("magic byte-swapped (WRTS)", Array("WRTS".utf8)),
    ] {
      var frame = statRequest
      frame.replaceSubrange(0..<4, with: magic)
      cases.append(request(name, .badMagic, ["magic bytes", "not a Strata data-plane peer"], frame))
    }
    for version: UInt16 in [0, 2, .max] {
      cases.append(
        request(
          "version \(version)", .unsupportedVersion, ["version \(version) is not supported"],
          patched(statRequest, 4, version)))
    }
    for opcode: UInt8 in [0, 10, 255] {
      cases.append(
        request("opcode \(opcode)", .unknownOpcode, ["unknown opcode \(opcode)"], patched(statRequest, 6, opcode)))
    }
    for bit in 2..<8 {
      cases.append(
        request("reserved flag bit \(bit)", .reservedFlags, ["reserved bits"], patched(statRequest, 7, UInt8(1 << bit)))
      )
    }
    for byte in [42, 51, 59] {
      cases.append(
        request(
          "reserved byte \(byte)", .reservedBytes, ["reserved byte \(byte)"], patched(statRequest, byte, UInt8(0x80))))
    }
    for (field, offset) in [
      ("version", 4), ("opcode", 6), ("flags", 7), ("ring epoch", 16), ("body length", 24), ("body checksum", 28),
      ("payload length", 33), ("status", 40), ("reserved bytes", 45), ("header checksum", 61),
    ] {
      var frame = statRequest
      frame[offset] ^= 0x04
      cases.append(request("flipped bit in the \(field)", .headerChecksum, ["header checksum", "bytes 0..<60"], frame))
    }
    cases += [
      request(
        "body length 16MiB + 1", .bodyTooLarge, ["body of 16777217 bytes exceeds the limit of 16777216"],
        patched(statRequest, 24, UInt32(16 << 20) + 1)),
      request(
        "body length 2^32 - 1", .bodyTooLarge, ["body of 4294967295 bytes"], patched(statRequest, 24, UInt32.max)),
      request(
        "body above a negotiated 8-byte limit", .bodyTooLarge, ["exceeds the limit of 8"],
        limits: WireLimits(bodyBytesMax: 8), afterValidFrame: false, rawFrame(opcode: 7, body: Array(0..<9))),
      request(
        "payload length 1GiB + 1", .payloadTooLarge, ["payload of 1073741825 bytes exceeds"],
        patched(rawFrame(opcode: 4, body: [0, 0, 0, 0]), 32, UInt64(1 << 30) + 1)),
      request(
        "payload length 2^64 - 1", .payloadTooLarge, ["payload of 18446744073709551615 bytes"],
        patched(rawFrame(opcode: 4, body: [0, 0, 0, 0]), 32, UInt64.max)),
      request(
        "payload on a lookup request", .invalidHeaderField, ["payload of 10 bytes", "carries none"],
        rawFrame(opcode: 2, body: RawBody().u32(0).u32(0).bytes, payloadBytes: 10)),
      request(
        "payload on a get request", .invalidHeaderField, ["carries none"],
        rawFrame(opcode: 3, body: RawBody().u64(0).u32(0).bytes, payloadBytes: 1)),
      request(
        "request id 0 on a request", .invalidHeaderField, ["request id 0"], rawFrame(opcode: 6, requestID: 0, body: [])),
      request("status on a request", .invalidHeaderField, ["status 5"], rawFrame(opcode: 6, body: [], status: 5)),
      request(
        "error flag without the response flag", .invalidHeaderField, ["error flag is set without the response flag"],
        rawFrame(opcode: 6, flags: 2, body: [], status: 8)),
      request(
        "a response sent to a server", .unexpectedDirection, ["where this side receives only requests"],
        rawFrame(opcode: 6, flags: 1, body: RawBody().string("{}").bytes)),
      response(
        "a request sent to a client", .unexpectedDirection, ["where this side receives only responses"], statRequest),
      response(
        "error response with status 0", .invalidHeaderField, ["status 0"],
        rawFrame(opcode: 3, flags: 3, body: RawBody().u16(8).string("x").bytes)),
      response(
        "status on a successful response", .invalidHeaderField, ["status 8 on a frame without the error flag"],
        rawFrame(opcode: 6, flags: 1, body: RawBody().string("{}").bytes, status: 8)),
      response(
        "request id 0 on a lookup response", .invalidHeaderField, ["request id 0 is reserved"],
        rawFrame(opcode: 2, flags: 1, requestID: 0, body: RawBody().u32(0).u64(0).u32(0).u32(0).bytes)),
      response(
        "request id 0 on an error goodbye", .invalidHeaderField, ["request id 0 is reserved"],
        rawFrame(opcode: 8, flags: 3, requestID: 0, body: RawBody().u16(8).string("x").bytes, status: 8)),
      response(
        "payload on an error get response", .invalidHeaderField, ["carries none"],
        rawFrame(opcode: 3, flags: 3, body: RawBody().u16(3).string("gone").bytes, payloadBytes: 4, status: 3)),
      response(
        "payload on a put response", .invalidHeaderField, ["carries none"],
        rawFrame(opcode: 4, flags: 1, body: RawBody().u32(0).bytes, payloadBytes: 4)),
    ]
    return cases
  }

  /// Every valid body cut short at the start, after one byte, in the middle and one byte before its end.
  static var truncatedBodies: [MalformedCase] {
    var cases: [MalformedCase] = []
    for base in bases {
      let bytes = base.headerAndBody
      let body = [UInt8](bytes[FrameHeader.byteCount...])
      guard !body.isEmpty else { continue }
      if case .ringRequest = base.message { continue }
      if case .ringResponse = base.message { continue }
      let name = messageName(base.message)
      for length in Set([0, 1, body.count / 2, body.count - 1]).sorted() {
        var frame = [UInt8](bytes[..<FrameHeader.byteCount]) + body[..<length]
        patch(&frame, field: 24, UInt32(length), reseal: false)
        patch(&frame, field: 28, CRC32C.checksum(Array(body[..<length])))
        cases.append(
          MalformedCase(
            name: "\(base.name): body truncated to \(length) of \(body.count) bytes", receiving: base.message.direction,
            frame: frame, violation: .truncated, fragments: ["\(name).", "truncated"]))
      }
    }
    return cases
  }

  static let validToken = Array("token".utf8)

  static func helloRequest(
    versionMin: UInt16 = 1, versionMax: UInt16 = 1, frameBytesMax: UInt64 = 1 << 20, token: [UInt8] = validToken,
    clientName: [UInt8] = Array("worker".utf8)
  ) -> [UInt8] {
    let body = RawBody().u16(versionMin).u16(versionMax).u64(1).u64(frameBytesMax).lengthPrefixed(token)
      .lengthPrefixed(clientName).bytes
    return rawFrame(opcode: 1, body: body)
  }

  static func putItems(_ lengths: [UInt64]) -> [UInt8] {
    var body = RawBody().u32(UInt32(lengths.count))
    for (index, length) in lengths.enumerated() { body = body.key(testKey(UInt64(index))).u64(length).u32(0) }
    return body.bytes
  }

  static var requestBodies: [MalformedCase] {
    func request(
      _ name: String, _ violation: WireViolation, _ fragments: [String], limits: WireLimits = .standard,
      _ frame: [UInt8]
    ) -> MalformedCase {
      MalformedCase(
        name: name, receiving: .request, frame: frame, violation: violation, fragments: fragments, limits: limits)
    }
    let key = testKey(1)
    return [
      request("HelloRequest: versionMin 0", .invalidValue, ["HelloRequest.versionMin"], helloRequest(versionMin: 0)),
      request(
        "HelloRequest: versionMax below versionMin", .invalidValue, ["HelloRequest.versionMax", "below versionMin 3"],
        helloRequest(versionMin: 3, versionMax: 2)),
      request(
        "HelloRequest: frameBytesMax smaller than a header", .invalidValue, ["HelloRequest.frameBytesMax", "63"],
        helloRequest(frameBytesMax: 63)),
      request(
        "HelloRequest: token of 4097 bytes", .fieldTooLong, ["HelloRequest.token", "4097 bytes, at most 4096"],
        helloRequest(token: [UInt8](repeating: 7, count: 4097))),
      request(
        "HelloRequest: token length 2^32 - 1", .fieldTooLong, ["HelloRequest.token", "4294967295 bytes"],
        rawFrame(opcode: 1, body: RawBody().u16(1).u16(1).u64(0).u64(64).u32(.max).bytes)),
      request(
        "HelloRequest: token length beyond the body", .truncated, ["HelloRequest.token", "100 bytes declared"],
        rawFrame(opcode: 1, body: RawBody().u16(1).u16(1).u64(0).u64(64).u32(100).appending([1, 2, 3]).bytes)),
      request(
        "HelloRequest: client name of 257 bytes", .fieldTooLong, ["HelloRequest.clientName", "257 bytes"],
        helloRequest(clientName: [UInt8](repeating: 0x61, count: 257))),
      request(
        "HelloRequest: client name not UTF-8 (0xFF)", .invalidUTF8, ["HelloRequest.clientName", "not valid UTF-8"],
        helloRequest(clientName: [0x61, 0xFF])),
      request(
        "HelloRequest: client name with an overlong encoding", .invalidUTF8, ["HelloRequest.clientName"],
        helloRequest(clientName: [0xC0, 0xAF])),
      request(
        "HelloRequest: client name with a lone surrogate", .invalidUTF8, ["HelloRequest.clientName"],
        helloRequest(clientName: [0xED, 0xA0, 0x80])),
      request(
        "HelloRequest: client name ending inside a character", .invalidUTF8, ["HelloRequest.clientName"],
        helloRequest(clientName: [0x61, 0xE2, 0x82])),
      request(
        "LookupRequest: 4097 keys", .countTooLarge, ["LookupRequest.keys", "4097 items, at most 4096"],
        rawFrame(opcode: 2, body: RawBody().u32(0).u32(4097).bytes)),
      request(
        "LookupRequest: key count 2^32 - 1", .countTooLarge, ["LookupRequest.keys", "4294967295 items"],
        rawFrame(opcode: 2, body: RawBody().u32(0).u32(.max).bytes)),
      request(
        "LookupRequest: 4 keys above a negotiated 3", .countTooLarge, ["LookupRequest.keys", "4 items, at most 3"],
        limits: WireLimits(itemsPerBatchMax: 3),
        rawFrame(opcode: 2, body: RawBody().u32(0).u32(4).key(key).key(key).key(key).key(key).bytes)),
      request(
        "LookupRequest: count 3 with 2 keys", .truncated, ["LookupRequest.keys", "3 items of 32 bytes need 96"],
        rawFrame(opcode: 2, body: RawBody().u32(0).u32(3).key(key).key(key).bytes)),
      request(
        "LookupRequest: half a key after the last (read as flags 0)", .invalidValue,
        ["LookupRequest.flags", "only bit 0"],
        rawFrame(opcode: 2, body: RawBody().u32(0).u32(1).key(key).appending([UInt8](repeating: 0, count: 16)).bytes)),
      request(
        "LookupRequest: bytes after the flags", .trailingBytes, ["LookupRequest: 15 trailing bytes"],
        rawFrame(
          opcode: 2, body: RawBody().u32(0).u32(1).key(key).appending([1] + [UInt8](repeating: 0, count: 15)).bytes)),
      request(
        "GetRequest: offset + length overflows", .lengthOverflow, ["GetRequest.items[1].length", "overflows 64 bits"],
        rawFrame(
          opcode: 3, body: RawBody().u64(0).u32(2).key(key).u64(0).u64(0).key(key).u64(.max).u64(1).bytes)),
      request(
        "GetRequest: 4097 items", .countTooLarge, ["GetRequest.items", "4097 items"],
        rawFrame(opcode: 3, body: RawBody().u64(0).u32(4097).bytes)),
      request(
        "GetRequest: item cut inside its length", .truncated, ["GetRequest.items", "need 48"],
        rawFrame(opcode: 3, body: RawBody().u64(0).u32(1).key(key).u64(0).u32(0).bytes)),
      request(
        "PutRequest: lengths overflow 64 bits", .lengthOverflow, ["PutRequest.items[1].length", "overflow 64 bits"],
        limits: WireLimits(payloadBytesMax: .max),
        rawFrame(opcode: 4, body: putItems([1 << 63, 1 << 63]), payloadBytes: 0)),
      request(
        "PutRequest: one block above the payload limit", .payloadTooLarge,
        ["PutRequest.items[0].length", "above the limit 1073741824"],
        rawFrame(opcode: 4, body: putItems([(1 << 30) + 1]), payloadBytes: 0)),
      request(
        "PutRequest: blocks adding up past the payload limit", .payloadTooLarge, ["PutRequest.items[2].length"],
        rawFrame(opcode: 4, body: putItems([1 << 29, 1 << 29, 1]), payloadBytes: 0)),
      request(
        "PutRequest: payload one byte longer than the items", .payloadMismatch,
        ["announces 101 payload bytes", "add up to 100"],
        rawFrame(opcode: 4, body: putItems([60, 40]), payloadBytes: 101)),
      request(
        "PutRequest: payload one byte shorter than the items", .payloadMismatch, ["announces 99 payload bytes"],
        rawFrame(opcode: 4, body: putItems([60, 40]), payloadBytes: 99)),
      request(
        "PutRequest: items but no payload", .payloadMismatch, ["announces 0 payload bytes"],
        rawFrame(opcode: 4, body: putItems([5]))),
      request(
        "PutRequest: 4097 items", .countTooLarge, ["PutRequest.items", "4097 items"],
        rawFrame(opcode: 4, body: RawBody().u32(4097).bytes)),
      request(
        "DeleteRequest: 4097 keys", .countTooLarge, ["DeleteRequest.keys", "4097 items"],
        rawFrame(opcode: 5, body: RawBody().u32(4097).bytes)),
      request(
        "DeleteRequest: one byte after the keys", .trailingBytes, ["DeleteRequest: 1 trailing bytes"],
        rawFrame(opcode: 5, body: RawBody().u32(1).key(key).u8(0).bytes)),
      request(
        "VerifyRequest: 65 keys", .countTooLarge, ["VerifyRequest.keys", "65 items"],
        rawFrame(opcode: 9, body: RawBody().u32(65).bytes)),
      request(
        "StatRequest: a body byte", .trailingBytes, ["StatRequest: 1 trailing bytes"], rawFrame(opcode: 6, body: [0])),
      request(
        "GoodbyeRequest: a body byte", .trailingBytes, ["GoodbyeRequest: 1 trailing bytes"],
        rawFrame(opcode: 8, body: [1])),
    ]
  }

  static func helloResponse(
    nodeID: [UInt8] = Array("node-1".utf8), namespace: [UInt8] = Array("tenant-a".utf8),
    version: UInt16 = 1, frameBytesMax: UInt64 = 1 << 20
  ) -> [UInt8] {
    let body = RawBody().u16(version).u64(0).lengthPrefixed(nodeID).lengthPrefixed(namespace).u64(frameBytesMax)
      .u64(1 << 20).u64(3).bytes
    return rawFrame(opcode: 1, flags: 1, body: body)
  }

  static func lookupResponse(leadingRun: UInt32, leaseID: UInt64 = 0, expires: UInt32 = 0, tiers: [UInt8]) -> [UInt8] {
    let body = RawBody().u32(leadingRun).u64(leaseID).u32(expires).u32(UInt32(tiers.count)).appending(tiers).bytes
    return rawFrame(opcode: 2, flags: 1, body: body)
  }

  static func getResponse(_ items: [(UInt8, UInt64, UInt32)], payloadBytes: UInt64) -> [UInt8] {
    var body = RawBody().u32(UInt32(items.count))
    for (status, length, checksum) in items { body = body.u8(status).u64(length).u32(checksum) }
    return rawFrame(opcode: 3, flags: 1, body: body.bytes, payloadBytes: payloadBytes)
  }

  static func errorResponse(code: UInt16, status: UInt16, message: [UInt8]) -> [UInt8] {
    rawFrame(opcode: 3, flags: 3, body: RawBody().u16(code).lengthPrefixed(message).bytes, status: status)
  }

  static var responseBodies: [MalformedCase] {
    func response(
      _ name: String, _ violation: WireViolation, _ fragments: [String], limits: WireLimits = .standard,
      _ frame: [UInt8]
    ) -> MalformedCase {
      MalformedCase(
        name: name, receiving: .response, frame: frame, violation: violation, fragments: fragments, limits: limits)
    }
    return [
      response("HelloResponse: version 0", .invalidValue, ["HelloResponse.version"], helloResponse(version: 0)),
      response(
        "HelloResponse: namespace with capitals", .invalidValue, ["HelloResponse.namespace", "'Tenant'"],
        helloResponse(namespace: Array("Tenant".utf8))),
      response(
        "HelloResponse: empty namespace", .invalidValue, ["HelloResponse.namespace"], helloResponse(namespace: [])),
      response(
        "HelloResponse: namespace of 65 bytes", .fieldTooLong, ["HelloResponse.namespace", "65 bytes, at most 64"],
        helloResponse(namespace: [UInt8](repeating: 0x61, count: 65))),
      response(
        "HelloResponse: node id of 257 bytes", .fieldTooLong, ["HelloResponse.nodeID", "257 bytes"],
        helloResponse(nodeID: [UInt8](repeating: 0x61, count: 257))),
      response(
        "HelloResponse: node id not UTF-8", .invalidUTF8, ["HelloResponse.nodeID"], helloResponse(nodeID: [0x80])),
      response(
        "HelloResponse: frameBytesMax 0", .invalidValue, ["HelloResponse.frameBytesMax"],
        helloResponse(frameBytesMax: 0)),
      response(
        "LookupResponse: tier 3", .invalidValue, ["LookupResponse.tiers[2].tier", "3 is not a tier"],
        lookupResponse(leadingRun: 0, tiers: [1, 2, 3])),
      response(
        "LookupResponse: leading run longer than the keys", .invalidValue, ["LookupResponse.leadingRun", "exceeds"],
        lookupResponse(leadingRun: 4, tiers: [1, 1, 1])),
      response(
        "LookupResponse: leading run over an absent key", .invalidValue, ["LookupResponse.leadingRun", "key 1"],
        lookupResponse(leadingRun: 3, tiers: [1, 0, 2])),
      response(
        "LookupResponse: lease expiry without a lease", .invalidValue,
        ["LookupResponse.leaseExpiresInMilliseconds", "without a lease"],
        lookupResponse(leadingRun: 0, expires: 100, tiers: [0])),
      response(
        "LookupResponse: 4097 tiers", .countTooLarge, ["LookupResponse.tiers", "4097 items"],
        rawFrame(opcode: 2, flags: 1, body: RawBody().u32(0).u64(0).u32(0).u32(4097).bytes)),
      response(
        "GetResponse: item status 4", .invalidValue, ["GetResponse.items[0].status", "4 is not an item status"],
        getResponse([(4, 0, 0)], payloadBytes: 0)),
      response(
        "GetResponse: missing item with a length", .invalidValue, ["GetResponse.items[1].length", "missing item"],
        getResponse([(0, 2, 0), (1, 5, 0)], payloadBytes: 7)),
      response(
        "GetResponse: corrupt item with a checksum", .invalidValue, ["GetResponse.items[0].length", "corrupt item"],
        getResponse([(3, 0, 9)], payloadBytes: 0)),
      response(
        "GetResponse: lengths overflow 64 bits", .lengthOverflow, ["GetResponse.items[1].length"],
        limits: WireLimits(payloadBytesMax: .max), getResponse([(0, .max, 0), (0, 1, 0)], payloadBytes: 0)),
      response(
        "GetResponse: one item above the payload limit", .payloadTooLarge, ["GetResponse.items[0].length"],
        getResponse([(0, (1 << 30) + 1, 0)], payloadBytes: 0)),
      response(
        "GetResponse: payload shorter than the items", .payloadMismatch, ["announces 5 payload bytes", "add up to 6"],
        getResponse([(0, 2, 0), (1, 0, 0), (0, 4, 0)], payloadBytes: 5)),
      response(
        "GetResponse: payload without ok items", .payloadMismatch, ["announces 3 payload bytes", "add up to 0"],
        getResponse([(1, 0, 0)], payloadBytes: 3)),
      response(
        "GetResponse: 4097 items", .countTooLarge, ["GetResponse.items", "4097 items"],
        rawFrame(opcode: 3, flags: 1, body: RawBody().u32(4097).bytes)),
      response(
        "PutResponse: outcome 5", .invalidValue, ["PutResponse.outcomes[1].outcome", "5 is not an outcome"],
        rawFrame(opcode: 4, flags: 1, body: RawBody().u32(2).u8(0).u8(5).bytes)),
      response(
        "PutResponse: 4097 outcomes", .countTooLarge, ["PutResponse.outcomes", "4097 items"],
        rawFrame(opcode: 4, flags: 1, body: RawBody().u32(4097).bytes)),
      response(
        "DeleteResponse: removed flag 2", .invalidValue, ["DeleteResponse.removed[0].flag", "not a boolean"],
        rawFrame(opcode: 5, flags: 1, body: RawBody().u32(1).u8(2).bytes)),
      response(
        "StatResponse: json not UTF-8", .invalidUTF8, ["StatResponse.json"],
        rawFrame(opcode: 6, flags: 1, body: RawBody().lengthPrefixed([0x7B, 0xFE, 0x7D]).bytes)),
      response(
        "StatResponse: json longer than the body", .truncated, ["StatResponse.json", "10 bytes declared"],
        rawFrame(opcode: 6, flags: 1, body: RawBody().u32(10).appending(Array("{}".utf8)).bytes)),
      response(
        "GoodbyeResponse: a body byte", .trailingBytes, ["GoodbyeResponse: 1 trailing bytes"],
        rawFrame(opcode: 8, flags: 1, body: [0])),
      response(
        "ErrorBody: code 0", .invalidValue, ["ErrorBody.code", "0 means success"],
        errorResponse(code: 0, status: 8, message: Array("x".utf8))),
      response(
        "ErrorBody: code disagrees with the header status", .invalidValue, ["ErrorBody.code", "disagrees"],
        errorResponse(code: 6, status: 8, message: Array("x".utf8))),
      response(
        "ErrorBody: message of 4097 bytes", .fieldTooLong, ["ErrorBody.message", "4097 bytes, at most 4096"],
        errorResponse(code: 8, status: 8, message: [UInt8](repeating: 0x61, count: 4097))),
      response(
        "ErrorBody: message not UTF-8", .invalidUTF8, ["ErrorBody.message"],
        errorResponse(code: 8, status: 8, message: [0xF8, 0x88, 0x80, 0x80, 0x80])),
    ]
  }
}

extension WireMessage {
  var isErrorResponse: Bool {
    if case .error = self { return true }
    return false
  }
}

@Suite struct MalformedInputTests {
  @Test func thereAreAtLeastAHundredDistinctCases() {
    let names = MalformedCases.all.map(\.name)
    #expect(names.count >= 100)
    #expect(Set(names).count == names.count, "case names must be distinct")
    // Every kind of violation a peer can cause is exercised (failedEarlier is the assembler's own).
    let kinds = Set(MalformedCases.all.map(\.violation))
    #expect(kinds == Set(WireViolation.allCases).subtracting([.failedEarlier]))
  }

  @Test(arguments: MalformedCases.all)
  func rejectedWithAReason(_ malformed: MalformedCase) throws {
    // Fed whole, with the assembler held here so we can probe it after the failure.
    var assembler = FrameAssembler(limits: malformed.limits, receiving: malformed.receiving)
    var frames = 0
    let stream = malformed.stream
    let wholeError = stream.withUnsafeBytes { raw -> StrataError? in
      var rest = raw
      do throws(StrataError) {
        while !rest.isEmpty {
          let step = try assembler.feed(rest)
          rest = UnsafeRawBufferPointer(rebasing: rest[step.consumedBytes...])
          if case .frame = step.event { frames += 1 }
        }
        return nil
      } catch {
        return error
      }
    }
    let error = try #require(wholeError, "accepted: \(malformed.name)")
    #expect(error.wireViolation == malformed.violation, "\(error)")
    #expect(error.code == (malformed.violation == .unsupportedVersion ? .unsupported : .protocolError))
    for fragment in malformed.fragments {
      #expect(error.message.contains(fragment), "message '\(error.message)' lacks '\(fragment)'")
    }
    #expect(frames == (malformed.afterValidFrame ? 1 : 0), "the valid frame before the malformed one is delivered")
    #expect(assembler.phase == .failed)
    #expect(assembler.failure?.message == error.message)
    let again = [UInt8](Samples.putRequest.bytes)
    #expect(throws: StrataError.self) {
      _ = try again.withUnsafeBytes { try assembler.feed($0) }
    }

    // Dripped one byte at a time, it fails the same way.
    var received: [ReceivedFrame] = []
    do {
      try receive(
        stream, receiving: malformed.receiving, limits: malformed.limits, style: .dripped, received: &received)
      Issue.record("accepted when dripped: \(malformed.name)")
    } catch let dripped as StrataError {
      #expect(dripped.message == error.message)
      #expect(dripped.wireViolation == malformed.violation)
    }
    #expect(received.count == frames)
  }

  @Test func feedingAFailedAssemblerSaysWhy() throws {
    var assembler = FrameAssembler(receiving: .request)
    var bad = Samples.requests[0].bytes
    bad[0] = 0
    let first = bad.withUnsafeBytes { raw in Result { () throws(StrataError) in try assembler.feed(raw) } }
    guard case .failure(let error) = first else {
      Issue.record("bad magic accepted")
      return
    }
    #expect(error.wireViolation == .badMagic)
    let good = Samples.requests[0].bytes
    let second = good.withUnsafeBytes { raw in Result { () throws(StrataError) in try assembler.feed(raw) } }
    guard case .failure(let later) = second else {
      Issue.record("a failed assembler accepted input")
      return
    }
    #expect(later.wireViolation == .failedEarlier)
    #expect(later.message.contains("magic"), "the later error repeats the first reason: \(later.message)")
    #expect(assembler.failure?.wireViolation == .badMagic, "the first failure is kept")
  }
}
