// The fuzz body: one input through everything that parses untrusted wire bytes, by the code the
// transports run (FrameReader over a byte stream, FrameAssembler.decode for RDMA's whole-frame
// messages). Rejecting is fine; crashing, accepting bytes that do not re-encode to themselves, or
// landing payload bytes anywhere but where they were asked for is a bug (it traps).

import StrataCore
import StrataWire

enum WireFuzz {
  static let limitSets: [WireLimits] = [
    .standard, WireLimits(bodyBytesMax: 256, payloadBytesMax: 4096, itemsPerBatchMax: 3),
  ]

  static func run(_ input: UnsafeRawBufferPointer) {
    // 1. As a stream of frames, both directions, whole and in chunks whose size the input picks,
    //    and as one RDMA message.
    let chunkBytes = 1 + Int(input.first ?? 0) % 97
    for limits in limitSets {
      for direction in [FrameDirection.request, .response] {
        read(input, direction, limits, chunkBytes: nil)
        read(input, direction, limits, chunkBytes: chunkBytes)
        decodeMessage(input, direction, limits)
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
            read(raw, direction, .standard, chunkBytes: nil)
            decodeMessage(raw, direction, .standard)
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

  /// Reads `input` as a stream with a FrameReader, the bytes arriving `chunkBytes` at a time (all at
  /// once when nil), until it is used up or rejected: every accepted frame must re-encode to its
  /// bytes, and every payload must land, byte for byte, in the memory it was received into.
  static func read(_ input: UnsafeRawBufferPointer, _ direction: FrameDirection, _ limits: WireLimits, chunkBytes: Int?)
  {
    // A buffer smaller than a header, or than a chunk, exercises the reader's partial reads too.
    let reader = FrameReader(limits: limits, receiving: direction, bufferBytes: chunkBytes.map { 1 + $0 % 80 } ?? 4096)
    var source = ByteQueue()
    var arrived = 0
    var destination = [UInt8](repeating: 0, count: 1 + (chunkBytes ?? 4096) * 3)
    var frameStart = 0
    while arrived < input.count {
      let end = chunkBytes.map { min(arrived + $0, input.count) } ?? input.count
      source.append(input[arrived..<end])
      arrived = end
      while true {
        let taken = arrived - source.count
        let remaining = reader.payloadRemainingBytes
        if remaining > 0 {
          // Payload: into a destination in pieces, some kept and some dropped.
          let count = min(Int(clamping: remaining), source.count, destination.count)
          guard count > 0 else { break }
          do {
            if count % 3 == 2 {
              try reader.discardPayload(count, from: &source, deadline: .never)
            } else {
              try destination.withUnsafeMutableBytes { raw in
                try reader.receivePayload(
                  into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]), from: &source, deadline: .never)
              }
              check(destination[0..<count].elementsEqual(input[taken..<taken + count]), "payload landed wrong")
            }
          } catch {
            check(false, "payload reception failed with the bytes at hand: \(error)")
          }
          continue
        }
        if reader.phase == .header(missingBytes: FrameHeader.byteCount) { frameStart = taken }
        let frame: (FrameHeader, WireMessage)?
        do {
          frame = try reader.nextFrame(from: &source, deadline: .never) { _ in .never }
        } catch {
          check(error.wireViolation != nil, "a reader error without a violation kind: \(error)")
          return
        }
        guard let (header, message) = frame else { break }
        checkAccepted(header, message, direction, input[frameStart..<(arrived - source.count)])
      }
    }
  }

  /// Decodes `input` as one RDMA message's frame.
  static func decodeMessage(_ input: UnsafeRawBufferPointer, _ direction: FrameDirection, _ limits: WireLimits) {
    let header: FrameHeader
    let message: WireMessage
    do {
      (header, message) = try FrameAssembler.decode(message: input, limits: limits, receiving: direction)
    } catch {
      check(error.wireViolation != nil, "a message decode error without a violation kind: \(error)")
      return
    }
    checkAccepted(header, message, direction, input[...])
  }

  static func checkAccepted(
    _ header: FrameHeader, _ message: WireMessage, _ direction: FrameDirection, _ bytes: Slice<UnsafeRawBufferPointer>
  ) {
    check(message.direction == direction, "a \(message.direction) message accepted as \(direction)")
    check(header.payloadBytes == message.payloadBytes, "payload length disagrees with the items")
    // Strict decoding means exactly one encoding per value: re-encoding gives the input back.
    let encoded = message.frameBytes(requestID: header.requestID, ringEpoch: header.ringEpoch, version: header.version)
    check(encoded.elementsEqual(bytes), "accepted \(header.opcode) frame does not re-encode to its input bytes")
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
    decode(VerifyRequest.self, body, limits)
    decode(VerifyResponse.self, body, limits)
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
