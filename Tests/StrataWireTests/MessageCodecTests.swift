// Every body codec: round trips at boundary values, the exact documented byte layout, the payload
// helpers, and every message carried whole through a frame.

import StrataCore
import StrataWire
import Testing

@Suite struct MessageCodecTests {
  func roundTrip<Body: FrameBody>(_ body: Body, limits: WireLimits = .standard) throws {
    let bytes = body.encodedBody
    #expect(bytes.count == body.encodedByteCount, "\(Body.messageName): encodedByteCount disagrees with encode")
    #expect(try Body(decoding: bytes, limits: limits) == body, "\(Body.messageName) did not round-trip")
  }

  static let longName = String(repeating: "é", count: 128)  // 256 bytes of UTF-8

  @Test func helloRoundTripsAtTheEdges() throws {
    try roundTrip(HelloRequest(capabilities: [], frameBytesMax: 64, token: [], clientName: ""))
    try roundTrip(
      HelloRequest(
        versionMin: 1, versionMax: .max, capabilities: Capabilities(rawValue: .max), frameBytesMax: .max,
        token: [UInt8](repeating: 0xFF, count: HelloRequest.tokenBytesMax), clientName: Self.longName))
    try roundTrip(HelloRequest(capabilities: [.rdma, .lz4], frameBytesMax: 1 << 30, token: [0], clientName: "🙂 w"))
    let namespace64 = try Namespace(String(repeating: "a", count: Namespace.nameBytesMax))
    try roundTrip(
      HelloResponse(
        version: .max, capabilities: Capabilities(rawValue: .max), nodeID: Self.longName, namespace: namespace64,
        frameBytesMax: .max, inflightBytesMax: .max, ringEpoch: .max))
    try roundTrip(
      HelloResponse(
        version: 1, capabilities: [], nodeID: "", namespace: .embeddedDefault, frameBytesMax: 64, inflightBytesMax: 0,
        ringEpoch: 0))
  }

  @Test func blockMessagesRoundTripAtTheEdges() throws {
    let many = (0..<4096).map { testKey(UInt64($0)) }
    try roundTrip(LookupRequest(keys: []))
    try roundTrip(LookupRequest(keys: many, leaseMilliseconds: .max))
    try roundTrip(LookupResponse(tiers: [], leadingRun: 0))
    try roundTrip(
      LookupResponse(
        tiers: Array(repeating: .nvme, count: 4095) + [.absent], leadingRun: 4095, leaseID: .max,
        leaseExpiresInMilliseconds: .max))
    try roundTrip(
      GetRequest(
        items: [
          GetRequest.Item(key: many[0], offset: .max, length: 0),
          GetRequest.Item(key: many[1], offset: 0, length: .max),
        ], leaseID: .max))
    try roundTrip(GetRequest(items: many.map { GetRequest.Item(key: $0, offset: 1, length: 2) }))
    try roundTrip(
      GetResponse(
        items: [.ok(length: 1 << 30, checksum: .max)]
          + GetItemStatus.allCases.dropFirst().map {
            GetResponse.Item(status: $0)
          }))
    try roundTrip(GetResponse(items: []))
    try roundTrip(PutRequest(items: many.map { PutRequest.Item(key: $0, length: 1, checksum: 2) }))
    try roundTrip(PutRequest(items: [PutRequest.Item(key: many[0], length: 1 << 30, checksum: .max)]))
    try roundTrip(PutRequest(items: [PutRequest.Item(key: many[0], length: 1, checksum: 2)], writeQuorum: 1))
    try roundTrip(PutRequest(items: [], writeQuorum: .max))
    try roundTrip(PutResponse(outcomes: PutOutcome.allCases))
    try roundTrip(PutResponse(outcomes: Array(repeating: .noSpace, count: 4096)))
    try roundTrip(DeleteRequest(keys: many))
    try roundTrip(DeleteResponse(removed: [true, false, true]))
    try roundTrip(VerifyRequest(keys: Array(many.prefix(VerifyRequest.keysMax))))
    try roundTrip(VerifyResponse(outcomes: VerifyOutcome.allCases))
  }

  @Test func sessionMessagesRoundTrip() throws {
    try roundTrip(StatRequest())
    try roundTrip(StatResponse(json: ""))
    try roundTrip(StatResponse(json: String(repeating: #"{"k":"€"}"#, count: 100_000)))
    try roundTrip(GoodbyeRequest())
    try roundTrip(GoodbyeResponse())
    try roundTrip(ErrorBody(code: .max, message: ""))
    try roundTrip(ErrorBody(code: 1, message: String(repeating: "x", count: ErrorBody.messageBytesMax)))
  }

  @Test func decodersHonourTheNegotiatedItemLimit() throws {
    let limits = WireLimits(itemsPerBatchMax: 2)
    try roundTrip(DeleteRequest(keys: [testKey(1), testKey(2)]), limits: limits)
    let error = #expect(throws: StrataError.self) {
      try DeleteRequest(decoding: DeleteRequest(keys: (0..<3).map(testKey)).encodedBody, limits: limits)
    }
    #expect(error?.wireViolation == .countTooLarge)
  }

  @Test func longErrorMessagesAreCutAtACharacterBoundary() throws {
    // "€" is 3 bytes: 4096 is not a multiple of 3, so a byte cut would split a character.
    let body = ErrorBody(code: 8, message: String(repeating: "€", count: 2000))
    let decoded = try ErrorBody(decoding: body.encodedBody)
    #expect(decoded.message == String(repeating: "€", count: 1365))
    #expect(body.encodedByteCount == body.encodedBody.count)
  }

  @Test func errorBodiesBecomeStrataErrors() {
    let known = ErrorBody(StrataError(.staleEpoch, "epoch 3 < 5")).strataError
    #expect(known.code == .staleEpoch && known.message == "epoch 3 < 5")
    let unknown = ErrorBody(code: 999, message: "from the future").strataError
    #expect(unknown.code == .internalError)
    #expect(unknown.message.contains("999") && unknown.message.contains("from the future"))
  }

  @Test func payloadRangesFollowItemOrder() {
    let response = GetResponse(items: [
      .ok(length: 10, checksum: 1), GetResponse.Item(status: .missing), .ok(length: 0, checksum: 0),
      .ok(length: 5, checksum: 2), GetResponse.Item(status: .corrupt),
    ])
    #expect(response.payloadBytes == 15)
    #expect(response.payloadRanges == [0..<10, 10..<10, 10..<10, 10..<15, 15..<15])
    let put = PutRequest(items: [
      PutRequest.Item(key: testKey(1), length: 3, checksum: 0),
      PutRequest.Item(key: testKey(2), length: 4, checksum: 0),
    ])
    #expect(put.payloadBytes == 7)
    #expect(put.payloadRanges == [0..<3, 3..<7])
  }

  /// Each body, written field by field from docs/protocol.md, equals what the codec writes.
  @Test func bodiesHaveTheDocumentedLayout() throws {
    let key = testKey(1)
    let hello = HelloRequest(
      versionMin: 1, versionMax: 2, capabilities: [.tcp, .leases], frameBytesMax: 4096, token: [9, 9],
      clientName: "w")
    #expect(hello.encodedBody == RawBody().u16(1).u16(2).u64(9).u64(4096).lengthPrefixed([9, 9]).string("w").bytes)
    let welcome = HelloResponse(
      version: 1, capabilities: [.rdma], nodeID: "n1", namespace: Samples.namespace, frameBytesMax: 100,
      inflightBytesMax: 200, ringEpoch: 300)
    #expect(
      welcome.encodedBody
        == RawBody().u16(1).u64(2).string("n1").string("tenant-a").u64(100).u64(200).u64(300).bytes)
    #expect(
      LookupRequest(keys: [key], leaseMilliseconds: 5).encodedBody == RawBody().u32(5).u32(1).key(key).bytes)
    #expect(
      LookupResponse(tiers: [.ram, .nvme, .absent], leadingRun: 2, leaseID: 7, leaseExpiresInMilliseconds: 9)
        .encodedBody == RawBody().u32(2).u64(7).u32(9).u32(3).u8(1).u8(2).u8(0).bytes)
    #expect(
      GetRequest(items: [GetRequest.Item(key: key, offset: 4, length: 8)], leaseID: 3).encodedBody
        == RawBody().u64(3).u32(1).key(key).u64(4).u64(8).bytes)
    #expect(
      GetResponse(items: [.ok(length: 8, checksum: 0xABCD), GetResponse.Item(status: .rangeOutOfBounds)]).encodedBody
        == RawBody().u32(2).u8(0).u64(8).u32(0xABCD).u8(2).u64(0).u32(0).bytes)
    #expect(
      PutRequest(items: [PutRequest.Item(key: key, length: 8, checksum: 6)]).encodedBody
        == RawBody().u32(1).key(key).u64(8).u32(6).bytes)
    // writeQuorum: an optional trailing u8, present only when nonzero; a present 0 is refused
    // (it would be a second encoding of the same request).
    #expect(
      PutRequest(items: [PutRequest.Item(key: key, length: 8, checksum: 6)], writeQuorum: 2).encodedBody
        == RawBody().u32(1).key(key).u64(8).u32(6).u8(2).bytes)
    let presentZero = RawBody().u32(1).key(key).u64(8).u32(6).u8(0).bytes
    let refused = #expect(throws: StrataError.self) { try PutRequest(decoding: presentZero, limits: .standard) }
    #expect(refused?.message.contains("PutRequest.writeQuorum") == true, "\(String(describing: refused))")
    #expect(
      PutResponse(outcomes: [.checksumMismatch, .tooLarge]).encodedBody == RawBody().u32(2).u8(2).u8(3).bytes)
    #expect(DeleteRequest(keys: [key]).encodedBody == RawBody().u32(1).key(key).bytes)
    #expect(DeleteResponse(removed: [false, true]).encodedBody == RawBody().u32(2).u8(0).u8(1).bytes)
    #expect(VerifyRequest(keys: [key]).encodedBody == RawBody().u32(1).key(key).bytes)
    #expect(VerifyResponse(outcomes: [.absent, .corrupt]).encodedBody == RawBody().u32(2).u8(2).u8(1).bytes)
    let unknownOutcome = #expect(throws: StrataError.self) {
      try VerifyResponse(decoding: RawBody().u32(1).u8(3).bytes, limits: .standard)
    }
    #expect(
      unknownOutcome?.message.contains("VerifyResponse.outcomes") == true, "\(String(describing: unknownOutcome))")
    #expect(StatRequest().encodedBody == [])
    #expect(StatResponse(json: "{}").encodedBody == RawBody().string("{}").bytes)
    #expect(ErrorBody(code: 13, message: "stale").encodedBody == RawBody().u16(13).string("stale").bytes)
  }

  @Test func everySampleTravelsThroughAFrame() throws {
    for sample in Samples.requests + Samples.responses {
      let direction = sample.message.direction
      let received = try receiveAll(sample.bytes, receiving: direction, style: .whole)
      guard received.count == 1, let frame = received.first else {
        Issue.record("\(sample.name): \(received.count) frames")
        continue
      }
      #expect(frame.message == sample.message, "\(sample.name)")
      #expect(frame.payload == sample.payload, "\(sample.name)")
      #expect(frame.header.opcode == sample.message.opcode)
      #expect(frame.header.direction == direction)
      #expect(frame.header.requestID == sample.requestID && frame.header.ringEpoch == sample.ringEpoch)
      #expect(frame.header.payloadBytes == UInt64(sample.payload.count))
      if case .error(_, let body) = sample.message {
        #expect(frame.header.isError && frame.header.status == body.code)
      } else {
        #expect(!frame.header.isError && frame.header.status == 0)
      }
    }
  }
}
