// The fuzz body: one input through everything that parses untrusted wire bytes. Rejecting is fine;
// crashing, or accepting bytes that do not re-encode to themselves, is a bug (it traps).

import StrataCore
import StrataWire

enum WireFuzz {
  static let limitSets: [WireLimits] = [
    .standard, WireLimits(bodyBytesMax: 256, payloadBytesMax: 4096, itemsPerBatchMax: 3),
  ]

  static func run(_ input: UnsafeRawBufferPointer) {
    // 1. As a stream of frames, both directions, whole and in chunks whose size the input picks.
    let chunkBytes = 1 + Int(input.first ?? 0) % 97
    for limits in limitSets {
      for direction in [FrameDirection.request, .response] {
        assemble(input, direction, limits, chunkBytes: nil)
        assemble(input, direction, limits, chunkBytes: chunkBytes)
      }
    }
    // 2. With the first header's magic and checksums repaired (and, in a second copy, its version,
    //    flags and reserved bytes normalized), so mutations get past the checksums to the field and
    //    body checks instead of all dying at the header checksum.
    if input.count >= FrameHeader.byteCount {
      for normalize in [false, true] {
        let bytes = repaired(input, normalize: normalize)
        bytes.withUnsafeBytes { raw in
          for direction in [FrameDirection.request, .response] {
            assemble(raw, direction, .standard, chunkBytes: nil)
          }
        }
      }
    }
    // 3. Every body decoder, on the whole input and on what follows a 64-byte header.
    for limits in limitSets {
      decodeBodies(input, limits)
      if input.count >= FrameHeader.byteCount {
        decodeBodies(UnsafeRawBufferPointer(rebasing: input[FrameHeader.byteCount...]), limits)
      }
    }
  }

  /// Feeds `input` to an assembler until it is used up or rejected, checking every accepted frame.
  static func assemble(
    _ input: UnsafeRawBufferPointer, _ direction: FrameDirection, _ limits: WireLimits, chunkBytes: Int?
  ) {
    var assembler = FrameAssembler(limits: limits, receiving: direction)
    var offset = 0
    var frameStart = 0
    while offset < input.count {
      let end = chunkBytes.map { min(offset + $0, input.count) } ?? input.count
      var rest = UnsafeRawBufferPointer(rebasing: input[offset..<end])
      while !rest.isEmpty {
        if assembler.phase == .header(missingBytes: FrameHeader.byteCount) { frameStart = offset }
        let step: FrameAssembler.Step
        do {
          step = try assembler.feed(rest)
        } catch {
          check(error.wireViolation != nil, "an assembler error without a violation kind: \(error)")
          return
        }
        check(step.consumedBytes <= rest.count, "consumed more than fed")
        check(step.event != nil || step.consumedBytes == rest.count, "stopped early without an event")
        offset += step.consumedBytes
        rest = UnsafeRawBufferPointer(rebasing: rest[step.consumedBytes...])
        switch step.event {
        case .frame(let header, let message):
          check(message.direction == direction, "a \(message.direction) message accepted as \(direction)")
          check(header.payloadBytes == message.payloadBytes, "payload length disagrees with the items")
          // Strict decoding means exactly one encoding per value: re-encoding gives the input back.
          let encoded = message.frameBytes(
            requestID: header.requestID, ringEpoch: header.ringEpoch, version: header.version)
          check(
            encoded.elementsEqual(input[frameStart..<offset]),
            "accepted \(header.opcode) frame does not re-encode to its input bytes")
        case .payloadBytes(let bytes, _):
          check(!bytes.isEmpty, "an empty payload slice")
        case nil:
          break
        }
      }
    }
  }

  static func repaired(_ input: UnsafeRawBufferPointer, normalize: Bool) -> [UInt8] {
    var bytes = [UInt8](input)
    bytes.replaceSubrange(0..<4, with: [0x53, 0x54, 0x52, 0x57])
    if normalize {
      bytes.replaceSubrange(4..<6, with: [1, 0])
      bytes[7] &= 0x03
      bytes.replaceSubrange(42..<60, with: repeatElement(0, count: 18))
    }
    let bodyBytes = bytes[24..<28].reversed().reduce(0) { $0 << 8 | Int($1) }
    let available = min(bodyBytes, bytes.count - FrameHeader.byteCount)
    store(CRC32C.checksum(Array(bytes[64..<64 + available])), at: 28, in: &bytes)
    store(CRC32C.checksum(Array(bytes[0..<60])), at: 60, in: &bytes)
    return bytes
  }

  static func store(_ value: UInt32, at offset: Int, in bytes: inout [UInt8]) {
    for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
  }

  static func decodeBodies(_ body: UnsafeRawBufferPointer, _ limits: WireLimits) {
    decode(HelloRequest.self, body, limits)
    decode(HelloResponse.self, body, limits)
    decode(LookupRequest.self, body, limits)
    decode(LookupResponse.self, body, limits)
    decode(GetRequest.self, body, limits)
    decode(GetResponse.self, body, limits)
    decode(PutRequest.self, body, limits)
    decode(PutResponse.self, body, limits)
    decode(DeleteRequest.self, body, limits)
    decode(DeleteResponse.self, body, limits)
    decode(StatRequest.self, body, limits)
    decode(StatResponse.self, body, limits)
    decode(GoodbyeRequest.self, body, limits)
    decode(GoodbyeResponse.self, body, limits)
    decode(ErrorBody.self, body, limits)
  }

  static func decode<Body: FrameBody>(_ type: Body.Type, _ bytes: UnsafeRawBufferPointer, _ limits: WireLimits) {
    let decoded: Body
    do {
      decoded = try Body(decoding: bytes, limits: limits)
    } catch {
      check(error.wireViolation != nil, "\(Body.messageName): an error without a violation kind: \(error)")
      return
    }
    check(decoded.encodedByteCount == bytes.count, "\(Body.messageName): encodedByteCount disagrees")
    check(
      decoded.encodedBody.elementsEqual(bytes), "\(Body.messageName): accepted bytes do not re-encode to themselves")
  }

  static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("wire fuzz: \(message())") }
  }
}
