// Helpers shared by the wire tests: a seeded generator, sample and random messages with payloads,
// a spec-level body builder, and a receiver that runs a FrameAssembler under several feeding styles.

import Foundation
import StrataCore
import StrataTestKit
import StrataWire

enum WireTestPaths {
  /// The package root, found from this file's location (Tests/StrataWireTests/...).
  static let packageRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  static let corpus = packageRoot.appendingPathComponent("Tests/Fixtures/wire-corpus")
}

func testKey(_ seed: UInt64) -> BlockKey {
  var random = SplitMix64(seed: seed)
  return BlockKey(bytes: (0..<32).map { _ in UInt8(truncatingIfNeeded: random.next()) })!
}

func randomBytes(_ count: Int, _ random: inout SplitMix64) -> [UInt8] {
  var bytes = [UInt8](repeating: 0, count: count)
  var index = 0
  while index < count {
    let word = random.next()
    for shift in stride(from: 0, to: 64, by: 8) where index < count {
      bytes[index] = UInt8(truncatingIfNeeded: word >> UInt64(shift))
      index += 1
    }
  }
  return bytes
}

/// A message, the payload that travels after it, and the frame's ids.
struct SampleFrame {
  var name: String
  var message: WireMessage
  var payload: [UInt8] = []
  var requestID: UInt64 = 7
  var ringEpoch: UInt64 = 3

  /// Header, body and payload as they go on the wire.
  var bytes: [UInt8] { message.frameBytes(requestID: requestID, ringEpoch: ringEpoch) + payload }
  var headerAndBody: [UInt8] { message.frameBytes(requestID: requestID, ringEpoch: ringEpoch) }
}

enum Samples {
  static let namespace = try! Namespace("tenant-a")

  /// Blocks whose bytes travel as payloads: three blocks of different sizes (one empty).
  static let blocks: [[UInt8]] = {
    var random = SplitMix64(seed: 11)
    return [randomBytes(300, &random), [], randomBytes(77, &random)]
  }()

  static var putRequest: SampleFrame {
    let items = blocks.enumerated().map { index, block in
      PutRequest.Item(key: testKey(UInt64(index)), length: UInt64(block.count), checksum: CRC32C.checksum(block))
    }
    return SampleFrame(
      name: "putRequest", message: .putRequest(PutRequest(items: items)), payload: blocks.flatMap { $0 })
  }

  static var getResponse: SampleFrame {
    let delivered = Array(blocks[0][10..<110])
    let items: [GetResponse.Item] = [
      .ok(length: UInt64(delivered.count), checksum: CRC32C.checksum(delivered)),
      GetResponse.Item(status: .missing),
      .ok(length: UInt64(blocks[2].count), checksum: CRC32C.checksum(blocks[2])),
      GetResponse.Item(status: .rangeOutOfBounds),
      GetResponse.Item(status: .corrupt),
    ]
    return SampleFrame(
      name: "getResponse", message: .getResponse(GetResponse(items: items)), payload: delivered + blocks[2])
  }

  /// One valid frame of every request kind.
  static var requests: [SampleFrame] {
    [
      SampleFrame(
        name: "helloRequest",
        message: .helloRequest(
          HelloRequest(
            versionMin: 1, versionMax: 1, capabilities: [.tcp, .leases], frameBytesMax: 1 << 30,
            token: Array("secret-token".utf8), clientName: "vllm-worker-3"))),
      SampleFrame(
        name: "lookupRequest",
        message: .lookupRequest(LookupRequest(keys: (0..<3).map(testKey), leaseMilliseconds: 30_000))),
      SampleFrame(
        name: "getRequest",
        message: .getRequest(
          GetRequest(
            items: [
              GetRequest.Item(key: testKey(0), offset: 10, length: 100), GetRequest.Item(key: testKey(9)),
              GetRequest.Item(key: testKey(2)),
            ], leaseID: 99))),
      putRequest,
      SampleFrame(name: "deleteRequest", message: .deleteRequest(DeleteRequest(keys: [testKey(4), testKey(5)]))),
      SampleFrame(name: "statRequest", message: .statRequest(StatRequest())),
      SampleFrame(name: "ringRequest", message: .ringRequest(body: [1, 2, 3, 4])),
      SampleFrame(name: "goodbyeRequest", message: .goodbyeRequest(GoodbyeRequest())),
      SampleFrame(name: "verifyRequest", message: .verifyRequest(VerifyRequest(keys: [testKey(6)]))),
    ]
  }

  /// One valid frame of every response kind, an error response and the unsolicited goodbye.
  static var responses: [SampleFrame] {
    [
      SampleFrame(
        name: "helloResponse",
        message: .helloResponse(
          HelloResponse(
            capabilities: [.tcp], nodeID: "node-1", namespace: namespace, frameBytesMax: 1 << 30,
            inflightBytesMax: 256 << 20, ringEpoch: 3))),
      SampleFrame(
        name: "lookupResponse",
        message: .lookupResponse(
          LookupResponse(tiers: [.ram, .nvme, .absent], leadingRun: 2, leaseID: 5, leaseExpiresInMilliseconds: 30_000))),
      getResponse,
      SampleFrame(
        name: "putResponse", message: .putResponse(PutResponse(outcomes: [.stored, .alreadyPresent, .noSpace]))),
      SampleFrame(name: "deleteResponse", message: .deleteResponse(DeleteResponse(removed: [true, false]))),
      SampleFrame(name: "statResponse", message: .statResponse(StatResponse(json: #"{"blocks":12,"name":"node-1"}"#))),
      SampleFrame(name: "ringResponse", message: .ringResponse(body: [9, 8, 7])),
      SampleFrame(name: "goodbyeResponse", message: .goodbyeResponse(GoodbyeResponse())),
      SampleFrame(name: "verifyResponse", message: .verifyResponse(VerifyResponse(outcomes: [.corrupt, .intact]))),
      SampleFrame(
        name: "errorResponse",
        message: .error(.get, ErrorBody(code: StrataError.Code.resourceExhausted.number, message: "too many leases"))),
      SampleFrame(name: "goodbyeNotice", message: .goodbyeResponse(GoodbyeResponse()), requestID: 0),
    ]
  }
}

/// Random valid frames of one direction, with random sizes, ids and payloads.
struct RandomFrames {
  var random: SplitMix64

  init(seed: UInt64) { random = SplitMix64(seed: seed) }

  mutating func count(_ upper: Int) -> Int { Int(random.next() % UInt64(upper + 1)) }
  mutating func keys(_ upper: Int) -> [BlockKey] { (0..<count(upper)).map { _ in testKey(random.next()) } }
  mutating func text(_ upper: Int) -> String {
    let alphabet = Array("abcxyz-_.0123é€🙂")
    return String((0..<count(upper)).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] })
  }

  mutating func frame(_ direction: FrameDirection) -> SampleFrame {
    let requestID = random.next() | 1
    let ringEpoch = random.next() % 4 == 0 ? UInt64.max : random.next() % 100
    var frame: SampleFrame
    switch (direction, random.next() % 8) {
    case (.request, 0):
      frame = SampleFrame(
        name: "hello",
        message: .helloRequest(
          HelloRequest(
            versionMin: 1, versionMax: UInt16(1 + count(3)), capabilities: Capabilities(rawValue: random.next()),
            frameBytesMax: 64 + random.next() % (1 << 40), token: randomBytes(count(4096), &random),
            clientName: text(60))))
    case (.request, 1):
      frame = SampleFrame(
        name: "lookup", message: .lookupRequest(LookupRequest(keys: keys(40), leaseMilliseconds: UInt32(count(60_000))))
      )
    case (.request, 2):
      let items = (0..<count(30)).map { _ in
        GetRequest.Item(key: testKey(random.next()), offset: random.next() % 1000, length: random.next() % 1000)
      }
      frame = SampleFrame(name: "get", message: .getRequest(GetRequest(items: items, leaseID: random.next() % 3)))
    case (.request, 3), (.request, 4):
      let blocks = (0..<count(6)).map { _ in randomBytes(count(5000), &random) }
      let items = blocks.map {
        PutRequest.Item(key: testKey(random.next()), length: UInt64($0.count), checksum: CRC32C.checksum($0))
      }
      frame = SampleFrame(name: "put", message: .putRequest(PutRequest(items: items)), payload: blocks.flatMap { $0 })
    case (.request, 5): frame = SampleFrame(name: "delete", message: .deleteRequest(DeleteRequest(keys: keys(50))))
    case (.request, 6): frame = SampleFrame(name: "stat", message: .statRequest(StatRequest()))
    case (.request, _): frame = SampleFrame(name: "ring", message: .ringRequest(body: randomBytes(count(200), &random)))
    case (.response, 0):
      let tiers = (0..<count(40)).map { _ in BlockTier.allCases[Int(random.next() % 3)] }
      let run = tiers.firstIndex(of: .absent) ?? tiers.count
      let leaseID = random.next() % 2 == 0 ? 0 : random.next()
      frame = SampleFrame(
        name: "lookup",
        message: .lookupResponse(
          LookupResponse(
            tiers: tiers, leadingRun: UInt32(count(run)), leaseID: leaseID,
            leaseExpiresInMilliseconds: leaseID == 0 ? 0 : UInt32(count(60_000)))))
    case (.response, 1), (.response, 2):
      var items: [GetResponse.Item] = []
      var payload: [UInt8] = []
      for _ in 0..<count(8) {
        if random.next() % 4 == 0 {
          items.append(GetResponse.Item(status: GetItemStatus.allCases[1 + Int(random.next() % 3)]))
        } else {
          let bytes = randomBytes(count(5000), &random)
          items.append(.ok(length: UInt64(bytes.count), checksum: CRC32C.checksum(bytes)))
          payload += bytes
        }
      }
      frame = SampleFrame(name: "get", message: .getResponse(GetResponse(items: items)), payload: payload)
    case (.response, 3):
      let outcomes = (0..<count(40)).map { _ in PutOutcome.allCases[Int(random.next() % 5)] }
      frame = SampleFrame(name: "put", message: .putResponse(PutResponse(outcomes: outcomes)))
    case (.response, 4):
      let removed = (0..<count(40)).map { _ in random.next() % 2 == 0 }
      frame = SampleFrame(name: "delete", message: .deleteResponse(DeleteResponse(removed: removed)))
    case (.response, 5): frame = SampleFrame(name: "stat", message: .statResponse(StatResponse(json: text(300))))
    case (.response, 6):
      let code = StrataError.Code.all[Int(random.next() % UInt64(StrataError.Code.all.count))]
      frame = SampleFrame(
        name: "error",
        message: .error(Opcode.allCases[Int(random.next() % 8)], ErrorBody(code: code.number, message: text(100))))
    case (.response, _):
      frame = SampleFrame(
        name: "hello",
        message: .helloResponse(
          HelloResponse(
            version: 1, capabilities: Capabilities(rawValue: random.next()), nodeID: text(100),
            namespace: Samples.namespace, frameBytesMax: UInt64.max, inflightBytesMax: random.next(),
            ringEpoch: random.next())))
    }
    frame.requestID = requestID
    frame.ringEpoch = ringEpoch
    return frame
  }
}

/// What a receiver saw of one frame: its header, its message and its payload bytes.
struct ReceivedFrame: Equatable {
  var header: FrameHeader
  var message: WireMessage
  var payload: [UInt8]
}

/// How the receiver hands bytes to the assembler.
enum FeedStyle: CustomStringConvertible {
  /// Everything in one call (coalesced).
  case whole
  /// One byte per call.
  case dripped
  /// Random chunk sizes from 1 to `maxBytes`, seeded.
  case chunks(seed: UInt64, maxBytes: Int)
  /// As a transport that reads exactly what `phase` asks for: 64 header bytes, exactly the body,
  /// then payload received "directly" (copied here) in random pieces and reported by `consumePayload`.
  case exactReads(seed: UInt64)

  var description: String {
    switch self {
    case .whole: return "whole"
    case .dripped: return "dripped"
    case .chunks(let seed, let maxBytes): return "chunks(seed \(seed), up to \(maxBytes))"
    case .exactReads(let seed): return "exactReads(seed \(seed))"
    }
  }
}

struct ReceiveError: Error, CustomStringConvertible {
  var description: String
}

/// Runs a stream through a FrameAssembler fed in `style`, checking the Step contract as it goes
/// (in the manner of swift-nio's ByteToMessageDecoderVerifier). Rethrows the assembler's error
/// after the frames received before it, via `received`.
func receive(
  _ stream: [UInt8], receiving: FrameDirection, limits: WireLimits = .standard, style: FeedStyle,
  received: inout [ReceivedFrame]
) throws {
  var assembler = FrameAssembler(limits: limits, receiving: receiving)

  func handle(_ event: FrameAssembler.Event) throws {
    switch event {
    case .frame(let header, let message):
      received.append(ReceivedFrame(header: header, message: message, payload: []))
      let expected: FrameAssembler.Phase =
        header.payloadBytes == 0
        ? .header(missingBytes: FrameHeader.byteCount) : .payload(remainingBytes: header.payloadBytes)
      guard assembler.phase == expected else {
        throw ReceiveError(description: "after a frame with payload \(header.payloadBytes): phase \(assembler.phase)")
      }
    case .payloadBytes(let bytes, let remaining):
      guard let last = received.last, !bytes.isEmpty else {
        throw ReceiveError(description: "payload bytes without a frame, or an empty slice")
      }
      received[received.count - 1].payload += bytes
      let delivered = UInt64(received[received.count - 1].payload.count)
      guard delivered + remaining == last.header.payloadBytes else {
        throw ReceiveError(description: "payload \(delivered) + remaining \(remaining) != \(last.header.payloadBytes)")
      }
    }
  }

  func feedAll(_ chunk: UnsafeRawBufferPointer) throws {
    var rest = chunk
    while !rest.isEmpty {
      let step = try assembler.feed(rest)
      guard step.consumedBytes <= rest.count, step.event != nil || step.consumedBytes == rest.count else {
        throw ReceiveError(description: "step consumed \(step.consumedBytes) of \(rest.count) without an event")
      }
      rest = UnsafeRawBufferPointer(rebasing: rest[step.consumedBytes...])
      if let event = step.event { try handle(event) }
    }
  }

  try stream.withUnsafeBytes { raw in
    switch style {
    case .whole:
      try feedAll(raw)
    case .dripped:
      for index in 0..<raw.count { try feedAll(UnsafeRawBufferPointer(rebasing: raw[index..<index + 1])) }
    case .chunks(let seed, let maxBytes):
      var random = SplitMix64(seed: seed)
      var offset = 0
      while offset < raw.count {
        let size = min(1 + Int(random.next() % UInt64(maxBytes)), raw.count - offset)
        try feedAll(UnsafeRawBufferPointer(rebasing: raw[offset..<offset + size]))
        offset += size
      }
    case .exactReads(let seed):
      var random = SplitMix64(seed: seed)
      var offset = 0
      while offset < raw.count {
        switch assembler.phase {
        case .header(let missing), .body(let missing):
          let size = min(missing, raw.count - offset)
          let step = try assembler.feed(UnsafeRawBufferPointer(rebasing: raw[offset..<offset + size]))
          guard step.consumedBytes == size else {
            throw ReceiveError(description: "an exact read of \(size) bytes left \(size - step.consumedBytes) unused")
          }
          offset += size
          if let event = step.event { try handle(event) }
        case .payload(let remaining):
          let size = min(Int(min(remaining, 1 + random.next() % 3000)), raw.count - offset)
          received[received.count - 1].payload += raw[offset..<offset + size]
          assembler.consumePayload(UInt64(size))
          offset += size
        case .failed:
          throw ReceiveError(description: "phase failed without a throw")
        }
      }
    }
  }
  guard case .header(missingBytes: FrameHeader.byteCount) = assembler.phase else {
    throw ReceiveError(description: "the stream ended inside a frame: phase \(assembler.phase)")
  }
}

/// `receive` for streams that must be accepted.
func receiveAll(
  _ stream: [UInt8], receiving: FrameDirection, limits: WireLimits = .standard, style: FeedStyle
) throws -> [ReceivedFrame] {
  var received: [ReceivedFrame] = []
  try receive(stream, receiving: receiving, limits: limits, style: style, received: &received)
  return received
}

/// Writes a body field by field as docs/protocol.md describes it, independently of the codecs,
/// so tests can build bodies the encoders would never produce.
struct RawBody {
  var bytes: [UInt8] = []

  func u8(_ value: UInt8) -> RawBody { appending([value]) }
  func u16(_ value: UInt16) -> RawBody { appending(withUnsafeBytes(of: value.littleEndian) { Array($0) }) }
  func u32(_ value: UInt32) -> RawBody { appending(withUnsafeBytes(of: value.littleEndian) { Array($0) }) }
  func u64(_ value: UInt64) -> RawBody { appending(withUnsafeBytes(of: value.littleEndian) { Array($0) }) }
  func key(_ key: BlockKey) -> RawBody { appending(key.bytes) }
  func lengthPrefixed(_ value: [UInt8]) -> RawBody { u32(UInt32(value.count)).appending(value) }
  func string(_ value: String) -> RawBody { lengthPrefixed(Array(value.utf8)) }
  func appending(_ more: [UInt8]) -> RawBody { RawBody(bytes: bytes + more) }
}

/// A frame built field by field: any header values, any body, checksums computed unless told not to.
func rawFrame(
  opcode: UInt8, flags: UInt8 = 0, requestID: UInt64 = 7, ringEpoch: UInt64 = 3, body: [UInt8],
  payloadBytes: UInt64 = 0, status: UInt16 = 0, version: UInt16 = 1
) -> [UInt8] {
  var header = RawBody()
    .appending([0x53, 0x54, 0x52, 0x57]).u16(version).u8(opcode).u8(flags).u64(requestID).u64(ringEpoch)
    .u32(UInt32(body.count)).u32(CRC32C.checksum(body)).u64(payloadBytes).u16(status)
    .appending([UInt8](repeating: 0, count: 18)).bytes
  header += RawBody().u32(CRC32C.checksum(header)).bytes
  return header + body
}

/// Recomputes the header checksum of the frame starting at `offset` after a test changed its fields.
func resealHeader(_ bytes: inout [UInt8], at offset: Int = 0) {
  let checksum = CRC32C.checksum(Array(bytes[offset..<offset + 60]))
  withUnsafeBytes(of: checksum.littleEndian) { bytes.replaceSubrange(offset + 60..<offset + 64, with: $0) }
}

/// Overwrites a little-endian field of the frame at `offset` and reseals the header unless told not to.
func patch<T: FixedWidthInteger>(
  _ bytes: inout [UInt8], field: Int, _ value: T, at offset: Int = 0, reseal: Bool = true
) {
  withUnsafeBytes(of: value.littleEndian) {
    bytes.replaceSubrange(offset + field..<offset + field + $0.count, with: $0)
  }
  if reseal { resealHeader(&bytes, at: offset) }
}
