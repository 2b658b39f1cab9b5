// Optional trailing fields (HELLO's peerNamespace, LOOKUP's sizes flag and sizes): present only
// when set, round-tripping byte for byte, and the frames without them unchanged.

import StrataCore
import StrataWire
import Testing

@Suite struct OptionalFieldTests {
  func roundTrip(_ message: WireMessage) throws -> WireMessage {
    let frame = message.frameBytes(requestID: 7, ringEpoch: 0)
    return try frame.withUnsafeBytes { raw in
      let header = try FrameHeader(decoding: UnsafeRawBufferPointer(rebasing: raw[0..<64]), limits: .standard)
      return try WireMessage(header: header, body: UnsafeRawBufferPointer(rebasing: raw[64...]), limits: .standard)
    }
  }

  @Test func lookupSizesRoundTripAndAreAbsentUnlessAsked() throws {
    let keys = [SHA256.digest([1]), SHA256.digest([2])]
    let plain = LookupRequest(keys: keys, leaseMilliseconds: 5)
    let asking = LookupRequest(keys: keys, leaseMilliseconds: 5, wantsSizes: true)
    #expect(asking.encodedBody.count == plain.encodedBody.count + 1)
    guard case .lookupRequest(let decoded) = try roundTrip(.lookupRequest(asking)) else {
      throw StrataError(.protocolError, "")
    }
    #expect(decoded.wantsSizes && decoded.keys == keys)
    let answer = LookupResponse(tiers: [.ram, .absent], leadingRun: 1, sizes: [4096, 0])
    guard case .lookupResponse(let back) = try roundTrip(.lookupResponse(answer)) else {
      throw StrataError(.protocolError, "")
    }
    #expect(back.sizes == [4096, 0])
    guard case .lookupResponse(let none) = try roundTrip(.lookupResponse(LookupResponse(tiers: [.ram], leadingRun: 1)))
    else { throw StrataError(.protocolError, "") }
    #expect(none.sizes == nil)
    // A size that contradicts its tier is refused.
    #expect(throws: StrataError.self) {
      _ = try roundTrip(.lookupResponse(LookupResponse(tiers: [.ram, .absent], leadingRun: 1, sizes: [0, 7])))
    }
  }

  @Test func helloPeerNamespaceRoundTrips() throws {
    let hello = HelloRequest(
      capabilities: [.tcp, .peer], frameBytesMax: 1 << 20, token: [1, 2], clientName: "n", peerNamespace: "tenant-a")
    guard case .helloRequest(let back) = try roundTrip(.helloRequest(hello)) else {
      throw StrataError(.protocolError, "")
    }
    #expect(back.peerNamespace == "tenant-a")
    let plain = HelloRequest(capabilities: [.tcp], frameBytesMax: 1 << 20, token: [1, 2], clientName: "n")
    #expect(plain.encodedBody.count + 4 + 8 == hello.encodedBody.count)
  }
}
