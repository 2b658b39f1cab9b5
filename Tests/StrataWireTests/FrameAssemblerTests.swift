// The FrameAssembler fed every way a transport might feed it: whole, one byte at a time, in random
// chunks, and as exact reads with the payload received "directly"; all must see the same frames.

import StrataCore
import StrataTestKit
import StrataWire
import Testing

@Suite struct FrameAssemblerTests {
  /// Many random frames of one direction (with bodies and payloads), plus every sample, and what a
  /// receiver must see of them.
  static func stream(_ direction: FrameDirection, seed: UInt64, count: Int) -> ([UInt8], [ReceivedFrame]) {
    var generator = RandomFrames(seed: seed)
    var frames = (0..<count).map { _ in generator.frame(direction) }
    frames += direction == .request ? Samples.requests : Samples.responses
    var bytes: [UInt8] = []
    var expected: [ReceivedFrame] = []
    for frame in frames {
      let encoded = frame.headerAndBody
      bytes += encoded + frame.payload
      let header = encoded.withUnsafeBytes { try! FrameHeader(decoding: $0, limits: .standard) }
      expected.append(ReceivedFrame(header: header, message: frame.message, payload: frame.payload))
    }
    return (bytes, expected)
  }

  static let styles: [FeedStyle] = [
    .whole, .dripped, .chunks(seed: 1, maxBytes: 7), .chunks(seed: 2, maxBytes: 64), .chunks(seed: 3, maxBytes: 65),
    .chunks(seed: 4, maxBytes: 1000), .chunks(seed: 5, maxBytes: 20_000), .exactReads(seed: 6), .exactReads(seed: 7),
  ]

  @Test(arguments: [FrameDirection.request, .response], [UInt64(1), 2, 3])
  func everyFeedingStyleSeesTheSameFrames(direction: FrameDirection, seed: UInt64) throws {
    let (bytes, expected) = Self.stream(direction, seed: seed, count: 150)
    #expect(expected.contains { !$0.payload.isEmpty }, "the stream must carry payloads")
    for style in Self.styles {
      let received = try receiveAll(bytes, receiving: direction, style: style)
      #expect(received.count == expected.count, "\(style), seed \(seed)")
      for (index, (got, want)) in zip(received, expected).enumerated() where got != want {
        Issue.record("frame \(index) differs when fed \(style), seed \(seed): got \(got.header), want \(want.header)")
        break
      }
    }
  }

  /// `FrameAssembler.frames(in:)` (how tests and the simulator read a node's answers) sees the
  /// same frames, and stops at a frame cut short or at one of the wrong direction.
  @Test(arguments: [FrameDirection.request, .response])
  func framesInABufferAreTheStreamsFrames(direction: FrameDirection) throws {
    let (bytes, expected) = Self.stream(direction, seed: 9, count: 60)
    let found = FrameAssembler.frames(in: bytes, receiving: direction)
    #expect(found.map { ReceivedFrame(header: $0.0, message: $0.1, payload: $0.2) } == expected)
    // Cut inside the last frame's header, body or payload: the frames before it.
    let last = expected.last!.header
    let lastStart = bytes.count - FrameHeader.byteCount - Int(last.bodyBytes) - Int(last.payloadBytes)
    for cut in [lastStart + 1, min(lastStart + 70, bytes.count - 1), bytes.count - 1] {
      #expect(FrameAssembler.frames(in: Array(bytes[..<cut]), receiving: direction).count == expected.count - 1)
    }
    #expect(FrameAssembler.frames(in: bytes, receiving: direction == .request ? .response : .request).isEmpty)
  }

  @Test func payloadSlicesPointIntoTheFedBuffer() throws {
    // Coalesced payload bytes are handed back in place, not copied: the slice lies inside the input.
    let frame = Samples.putRequest
    let bytes = frame.bytes
    var assembler = FrameAssembler(receiving: .request)
    try bytes.withUnsafeBytes { raw in
      let first = try assembler.feed(raw)
      guard case .frame(let header, _) = first.event else {
        Issue.record("expected a frame first, got \(String(describing: first.event))")
        return
      }
      #expect(first.consumedBytes == bytes.count - frame.payload.count)
      #expect(assembler.phase == .payload(remainingBytes: header.payloadBytes))
      let second = try assembler.feed(UnsafeRawBufferPointer(rebasing: raw[first.consumedBytes...]))
      guard case .payloadBytes(let slice, let remaining) = second.event else {
        Issue.record("expected payload bytes, got \(String(describing: second.event))")
        return
      }
      #expect(remaining == 0)
      #expect(slice.baseAddress == raw.baseAddress! + first.consumedBytes)
      #expect(Array(slice) == frame.payload)
      #expect(assembler.phase == .header(missingBytes: 64))
    }
  }

  @Test func aTransportReadsExactlyHeaderThenBodyThenPayload() throws {
    let frame = Samples.getResponse
    let bytes = frame.bytes
    var assembler = FrameAssembler(receiving: .response)
    #expect(assembler.phase == .header(missingBytes: 64))
    try bytes.withUnsafeBytes { raw in
      let header = try assembler.feed(UnsafeRawBufferPointer(rebasing: raw[0..<64]))
      #expect(header.consumedBytes == 64 && header.event == nil)
      guard case .body(let bodyBytes) = assembler.phase else {
        Issue.record("phase \(assembler.phase) after a header")
        return
      }
      let body = try assembler.feed(UnsafeRawBufferPointer(rebasing: raw[64..<64 + bodyBytes]))
      guard case .frame(_, .getResponse(let response)) = body.event else {
        Issue.record("expected the GET response, got \(String(describing: body.event))")
        return
      }
      // The receiver points each item's range at its destination before the payload arrives.
      let ranges = response.payloadRanges
      #expect(assembler.phase == .payload(remainingBytes: response.payloadBytes))
      var destination = [UInt8](repeating: 0, count: Int(response.payloadBytes))
      let payloadStart = 64 + bodyBytes
      for range in ranges where !range.isEmpty {
        destination.replaceSubrange(
          Int(range.lowerBound)..<Int(range.upperBound),
          with: raw[payloadStart + Int(range.lowerBound)..<payloadStart + Int(range.upperBound)])
        assembler.consumePayload(UInt64(range.count))
      }
      #expect(destination == frame.payload)
      for (item, range) in zip(response.items, ranges) where item.status == .ok {
        #expect(CRC32C.checksum(Array(destination[Int(range.lowerBound)..<Int(range.upperBound)])) == item.checksum)
      }
      #expect(assembler.phase == .header(missingBytes: 64))
    }
  }

  @Test func aOneGiBPayloadIsNeverBuffered() throws {
    // The largest payload the default limits allow, consumed without materializing it.
    let put = PutRequest(items: [PutRequest.Item(key: testKey(1), length: 1 << 30, checksum: 0)])
    let bytes = put.frameBytes(requestID: .max, ringEpoch: .max)
    var assembler = FrameAssembler(receiving: .request)
    let step = try bytes.withUnsafeBytes { try assembler.feed($0) }
    guard case .frame(let header, .putRequest(let decoded)) = step.event else {
      Issue.record("expected the PUT, got \(String(describing: step.event))")
      return
    }
    #expect(decoded == put)
    #expect(header.requestID == .max && header.ringEpoch == .max && header.payloadBytes == 1 << 30)
    #expect(assembler.consumePayload((1 << 30) - 1) == 1)
    #expect(assembler.consumePayload(1) == 0)
    #expect(assembler.phase == .header(missingBytes: 64))
  }

  @Test func bodyOfExactlyTheLimitIsAcceptedAndOneMoreIsNot() throws {
    let limits = WireLimits(bodyBytesMax: 100)
    let fits = WireMessage.ringRequest(body: Array(repeating: 1, count: 100)).frameBytes(requestID: 1, ringEpoch: 0)
    #expect(try receiveAll(fits, receiving: .request, limits: limits, style: .whole).count == 1)
    let tooBig = WireMessage.ringRequest(body: Array(repeating: 1, count: 101)).frameBytes(requestID: 1, ringEpoch: 0)
    let error = #expect(throws: StrataError.self) {
      try receiveAll(tooBig, receiving: .request, limits: limits, style: .dripped)
    }
    #expect(error?.wireViolation == .bodyTooLarge)
  }

  @Test func randomCorruptionNeverCrashesAndAlwaysExplains() throws {
    // A small in-process fuzz: valid streams with bytes flipped, inserted, dropped or fields
    // rewritten (checksums resealed half the time, so the field checks are reached too).
    var random = SplitMix64(seed: 0x5752)
    var accepted = 0
    var rejected: [WireViolation: Int] = [:]
    for round in 0..<1500 {
      let direction: FrameDirection = round % 2 == 0 ? .request : .response
      let (clean, _) = Self.stream(direction, seed: random.next(), count: 3)
      var bytes = clean
      for _ in 0..<(1 + Int(random.next() % 3)) {
        let position = Int(random.next() % UInt64(bytes.count))
        switch random.next() % 4 {
        case 0: bytes[position] ^= UInt8(truncatingIfNeeded: 1 << (random.next() % 8))
        case 1: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: position)
        case 2: bytes.remove(at: position)
        default: bytes[position] = UInt8(truncatingIfNeeded: random.next())
        }
      }
      if random.next() % 2 == 0, bytes.count >= 64 {
        resealHeader(&bytes)
        let bodyBytes = Int(bytes[24]) | Int(bytes[25]) << 8 | Int(bytes[26]) << 16 | Int(bytes[27]) << 24
        if 64 + bodyBytes <= bytes.count {
          patch(&bytes, field: 28, CRC32C.checksum(Array(bytes[64..<64 + bodyBytes])))
        }
      }
      do {
        _ = try receiveAll(bytes, receiving: direction, style: .chunks(seed: UInt64(round), maxBytes: 300))
        accepted += 1
      } catch let error as StrataError {
        let violation = try #require(error.wireViolation, "an error without a violation kind: \(error)")
        #expect([.protocolError, .unsupported].contains(error.code))
        #expect(!error.message.isEmpty)
        rejected[violation, default: 0] += 1
      } catch let error as ReceiveError {
        // A stream cut inside a frame is the harness's "incomplete", not a decoder failure.
        #expect(error.description.contains("ended inside a frame"), "\(error)")
      }
    }
    #expect(rejected.values.reduce(0, +) > 1000, "most corruptions are caught: \(rejected), accepted \(accepted)")
    #expect(rejected[.headerChecksum, default: 0] > 0 && rejected[.bodyChecksum, default: 0] > 0)
  }
}
