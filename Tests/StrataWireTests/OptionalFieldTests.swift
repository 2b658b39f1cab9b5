// Optional trailing fields (HELLO's peerNamespace, LOOKUP's sizes flag and sizes, the same-host
// path's socket and region ranges): present only when set, round-tripping byte for byte, and the
// frames without them unchanged.

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

  @Test func helloWithAPresentButEmptyPeerNamespaceIsRefused() throws {
    // Found by the wire fuzzer: an empty peerNamespace written out (a 0 length) decoded to the
    // same value as one left out, so two encodings meant one HELLO.
    let hello = HelloRequest(capabilities: [.tcp], frameBytesMax: 1 << 20, token: [1], clientName: "c")
    let body = hello.encodedBody + [0, 0, 0, 0]  // a u32 length of 0
    do {
      _ = try body.withUnsafeBytes { try HelloRequest(decoding: $0, limits: .standard) }
      Issue.record("an empty peerNamespace written out was accepted")
    } catch {
      #expect((error as? StrataError)?.wireViolation == .invalidValue)
    }
  }

  @Test func sameHostFieldsRoundTripAndAreAbsentUnlessSet() throws {
    let response = HelloResponse(
      capabilities: [.tcp], nodeID: "n", namespace: .embeddedDefault, frameBytesMax: 1 << 20, inflightBytesMax: 1,
      ringEpoch: 0, sameHostSocket: "/run/strata.sock")
    guard case .helloResponse(let back) = try roundTrip(.helloResponse(response)) else {
      throw StrataError(.protocolError, "")
    }
    #expect(back.sameHostSocket == "/run/strata.sock")
    var plain = response
    plain.sameHostSocket = ""
    #expect(plain.encodedBody.count + 4 + 16 == response.encodedBody.count)

    let keys = [SHA256.digest([1]), SHA256.digest([2])]
    let ranges = [RegionRange(offset: 0, length: 4096), RegionRange(offset: 1 << 30, length: 7)]
    let get = GetRequest(items: keys.map { GetRequest.Item(key: $0) }, leaseID: 3, regionRanges: ranges)
    guard case .getRequest(let gotGet) = try roundTrip(.getRequest(get)) else { throw StrataError(.protocolError, "") }
    #expect(gotGet == get)
    #expect(GetRequest(items: get.items, leaseID: 3).encodedBody.count + 4 + 32 == get.encodedBody.count)
    // A PUT with ranges carries writeQuorum even when 0; one with neither stays as before.
    let items = keys.map { PutRequest.Item(key: $0, length: 7, checksum: 1) }
    for quorum in [UInt8(0), 2] {
      let put = PutRequest(items: items, writeQuorum: quorum, regionRanges: ranges)
      guard case .putRequest(let gotPut) = try roundTrip(.putRequest(put)) else {
        throw StrataError(.protocolError, "")
      }
      #expect(gotPut == put)
      #expect(PutRequest(items: items).encodedBody.count + 1 + 4 + 32 == put.encodedBody.count)
    }
    // Checksums left to the node: one more byte after the ranges, absent otherwise.
    let byNode = PutRequest(items: items, regionRanges: ranges, checksumsByNode: true)
    guard case .putRequest(let gotByNode) = try roundTrip(.putRequest(byNode)) else {
      throw StrataError(.protocolError, "")
    }
    #expect(gotByNode == byNode && gotByNode.checksumsByNode)
    #expect(byNode.encodedBody == PutRequest(items: items, regionRanges: ranges).encodedBody + [0x01])
  }

  @Test func aPutFlagsByteIsOneDefinedBitOrAbsent() throws {
    let items = [PutRequest.Item(key: SHA256.digest([1]), length: 7, checksum: 0)]
    let plain = PutRequest(items: items, regionRanges: [RegionRange(offset: 0, length: 7)]).encodedBody
    for flags: UInt8 in [0x00, 0x02, 0x81] {
      let refused = #expect(throws: StrataError.self) {
        try PutRequest(decoding: plain + [flags], limits: .standard)
      }
      #expect(refused?.message.contains("flags") == true, "flags 0x\(String(flags, radix: 16))")
    }
    #expect(throws: StrataError.self) { try PutRequest(decoding: plain + [0x01, 0x00], limits: .standard) }
    #expect(try PutRequest(decoding: plain + [0x01], limits: .standard).checksumsByNode)
  }

  @Test func malformedSameHostFieldsAreRefused() throws {
    let key = SHA256.digest([1])
    // A count of ranges that is not the count of items.
    var get = GetRequest(items: [GetRequest.Item(key: key)], regionRanges: [RegionRange(offset: 0, length: 1)])
    var body = get.encodedBody
    body[body.count - 20] = 2  // the ranges' count: 2 for 1 item (and too few bytes)
    #expect(throws: StrataError.self) { try GetRequest(decoding: body, limits: .standard) }
    // An offset + length past 64 bits.
    get.regionRanges = [RegionRange(offset: .max, length: 1)]
    let overflow = #expect(throws: StrataError.self) { try GetRequest(decoding: get.encodedBody, limits: .standard) }
    #expect(overflow?.message.contains("overflows") == true)
    let put = PutRequest(
      items: [PutRequest.Item(key: key, length: 8, checksum: 1)], regionRanges: [RegionRange(offset: 8, length: .max)])
    #expect(throws: StrataError.self) { try PutRequest(decoding: put.encodedBody, limits: .standard) }
    // An empty socket path is sent by leaving the field out.
    var hello = HelloResponse(
      capabilities: [.tcp], nodeID: "n", namespace: .embeddedDefault, frameBytesMax: 1 << 20, inflightBytesMax: 1,
      ringEpoch: 0)
    hello.sameHostSocket = ""
    body = hello.encodedBody + [0, 0, 0, 0]
    #expect(throws: StrataError.self) { try HelloResponse(decoding: body, limits: .standard) }
    // The region offer and answer: 16 bytes, their magic, zero flags and reserved bytes.
    let offer = RegionOffer(bytes: 1 << 20)
    #expect(try offer.encoded.withUnsafeBytes { try RegionOffer(decoding: $0) } == offer)
    let answer = RegionAnswer(code: 1, bytes: 0)
    #expect(try answer.encoded.withUnsafeBytes { try RegionAnswer(decoding: $0) } == answer)
    for index in [0, 4, 15] {
      var bad = offer.encoded
      if index == 15 { bad.removeLast() } else { bad[index] ^= 1 }
      #expect(throws: StrataError.self) { try bad.withUnsafeBytes { try RegionOffer(decoding: $0) } }
    }
    var badAnswer = answer.encoded
    badAnswer[6] = 1
    #expect(throws: StrataError.self) { try badAnswer.withUnsafeBytes { try RegionAnswer(decoding: $0) } }
  }
}
