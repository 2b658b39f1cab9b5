// FrameReader, the receive loop every transport runs: frames read from a stream however it
// arrives, payloads received in place, discarded, or moved another way, and the stream refused
// once it has lost its place.

import StrataCore
import Testing

@testable import StrataWire

/// A PUT carrying `payload`, or a STAT (no payload) when it is empty.
private func put(_ id: UInt64, _ payload: [UInt8]) -> [UInt8] {
  if payload.isEmpty { return StatRequest().frameBytes(requestID: id, ringEpoch: 0) }
  return PutRequest(items: [
    .init(key: BlockKey(bytes: [UInt8](repeating: UInt8(id), count: 32))!, length: UInt64(payload.count), checksum: 0)
  ]).frameBytes(requestID: id, ringEpoch: 0) + payload
}

/// A source that gives at most `pieceBytes` at a time, as a slow socket would.
private struct Dripping: ByteSource {
  var queue: ByteQueue
  let pieceBytes: Int

  mutating func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: Deadline) -> Int {
    queue.receive(
      into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(buffer.count, pieceBytes)]), deadline: deadline)
  }
}

/// A source that fills up to `pieceBytes` across several segments at once, as a socket's
/// `recvmsg` does, and records how much each read was owed after its segments.
private struct Spreading: ByteSource {
  var queue: ByteQueue
  let pieceBytes: Int
  var owed: [Int] = []

  mutating func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: Deadline) -> Int {
    queue.receive(
      into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(buffer.count, pieceBytes)]), deadline: deadline)
  }

  mutating func receive(
    into segments: [UnsafeMutableRawBufferPointer], deadline: Deadline, followedBy: Int
  ) -> Int {
    owed.append(followedBy)
    var moved = 0
    for segment in segments where moved < pieceBytes {
      #expect(!segment.isEmpty, "a read is never given an empty segment")
      let count = receive(into: UnsafeMutableRawBufferPointer(rebasing: segment[0...]), deadline: deadline)
      moved += count
      if count < segment.count { break }
    }
    return moved
  }
}

@Suite struct FrameReaderTests {
  /// A payload read into several segments (a batch's blocks) lands in them in order whatever the
  /// reads cut: every piece is reported once, with its segment, before the next read; the bytes a
  /// read is told are still owed after its segments are the frame's rest; empty segments are
  /// passed over; the frame ends exactly at the payload's end.
  @Test(arguments: [1, 999, 4096, 1 << 20])
  func aPayloadScatteredOverSegmentsLandsInOrder(pieceBytes: Int) throws {
    let sizes = [70_000, 0, 1, 4096, 0, 123_457]
    let payload = (0..<sizes.reduce(0, +)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 11) }
    var source = Spreading(queue: ByteQueue(put(1, payload + [5, 5, 5]) + put(2, [])), pieceBytes: pieceBytes)
    let reader = FrameReader(receiving: .request, bufferBytes: 100)
    _ = try #require(try reader.nextFrame(from: &source, deadline: .never) { _ in .never })
    var landed = [UInt8](repeating: 0, count: payload.count)
    var reported: [(segment: Int, bytes: [UInt8])] = []
    try landed.withUnsafeMutableBytes { whole in
      var segments: [UnsafeMutableRawBufferPointer] = []
      var start = 0
      for size in sizes {
        segments.append(UnsafeMutableRawBufferPointer(rebasing: whole[start..<(start + size)]))
        start += size
      }
      try reader.receivePayload(into: segments, from: &source, deadline: .never) { segment, bytes in
        reported.append((segment, Array(bytes)))
      }
    }
    #expect(landed == payload)
    #expect(reader.payloadRemainingBytes == 3)
    for (index, size) in sizes.enumerated() {
      let pieces = reported.filter { $0.segment == index }
      #expect(pieces.reduce(0) { $0 + $1.bytes.count } == size)
      #expect(!pieces.contains { $0.bytes.isEmpty })
    }
    #expect(reported.map(\.segment) == reported.map(\.segment).sorted())
    #expect(reported.flatMap(\.bytes) == payload)
    #expect(source.owed.allSatisfy { $0 == 3 }, "all segments fit one read: only the frame's rest is owed after it")
    #expect(throws: StrataError.self) {
      var more = [UInt8](repeating: 0, count: 4)
      try more.withUnsafeMutableBytes {
        try reader.receivePayload(into: [$0], from: &source, deadline: .never) { _, _ in }
      }
    }
  }

  /// One read fills at most `segmentsPerReadMax` segments, and is told the bytes of the segments
  /// beyond them as owed too.
  @Test func aReadFillsAtMostItsShareOfSegmentsAndIsToldTheRestIsOwed() throws {
    let count = FrameReader.segmentsPerReadMax + 36
    let payload = (0..<(count * 10)).map { UInt8(truncatingIfNeeded: $0) }
    var source = Spreading(queue: ByteQueue(put(1, payload)), pieceBytes: 1 << 20)
    let reader = FrameReader(receiving: .request, bufferBytes: 100)
    _ = try #require(try reader.nextFrame(from: &source, deadline: .never) { _ in .never })
    var landed = [UInt8](repeating: 0, count: payload.count)
    try landed.withUnsafeMutableBytes { whole in
      let segments = (0..<count).map { UnsafeMutableRawBufferPointer(rebasing: whole[($0 * 10)..<($0 * 10 + 10)]) }
      try reader.receivePayload(into: segments, from: &source, deadline: .never) { _, _ in }
    }
    #expect(landed == payload)
    #expect(source.owed == [360, 0])
    #expect(reader.endFrame() == 0)
  }

  @Test(arguments: [1, 7, 64, 1000])
  func framesAndPayloadsArriveInPlace(pieceBytes: Int) throws {
    let payloads = [[UInt8](repeating: 1, count: 5000), [], (0..<300).map { UInt8($0 % 251) }]
    var stream: [UInt8] = []
    for (index, payload) in payloads.enumerated() { stream += put(UInt64(index + 1), payload) }
    var source = Dripping(queue: ByteQueue(stream), pieceBytes: pieceBytes)
    let reader = FrameReader(receiving: .request, bufferBytes: 100)
    var bodySizes: [Int] = []
    for (index, payload) in payloads.enumerated() {
      let frame = try reader.nextFrame(from: &source, deadline: .never) { bodyBytes in
        bodySizes.append(bodyBytes)
        return .never
      }
      let (header, message) = try #require(frame)
      #expect(header.requestID == UInt64(index + 1))
      #expect(message.payloadBytes == UInt64(payload.count))
      #expect(reader.payloadRemainingBytes == UInt64(payload.count))
      var landed = [UInt8](repeating: 0, count: payload.count)
      try landed.withUnsafeMutableBytes { try reader.receivePayload(into: $0, from: &source, deadline: .never) }
      #expect(landed == payload)
      #expect(reader.endFrame() == 0)
    }
    #expect(bodySizes.count == payloads.count, "headerArrived once per frame")
    #expect(source.queue.count == 0)
    #expect(try reader.nextFrame(from: &source, deadline: .never) { _ in .never } == nil)
  }

  /// The checksum computed piece by piece as a payload lands is the checksum of the whole, however
  /// the stream cuts it, and the bytes land as with `receivePayload`.
  @Test(arguments: [1, 7, 4096, 100_000])
  func aPayloadChecksummedAsItLandsHasTheWholeChecksum(pieceBytes: Int) throws {
    let payload = (0..<70_001).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
    var source = Dripping(queue: ByteQueue(put(1, payload) + put(2, [9, 9])), pieceBytes: pieceBytes)
    let reader = FrameReader(receiving: .request, bufferBytes: 100)
    _ = try #require(try reader.nextFrame(from: &source, deadline: .never) { _ in .never })
    var landed = [UInt8](repeating: 0, count: payload.count)
    let checksum = try landed.withUnsafeMutableBytes { destination in
      // In two calls, as a PUT's items are: the checksum covers each call's bytes only.
      let first = try reader.receiveChecksummedPayload(
        into: UnsafeMutableRawBufferPointer(rebasing: destination[0..<30_000]), from: &source, deadline: .never)
      #expect(first == CRC32C.checksum(Array(payload[0..<30_000])))
      return try reader.receiveChecksummedPayload(
        into: UnsafeMutableRawBufferPointer(rebasing: destination[30_000...]), from: &source, deadline: .never)
    }
    #expect(landed == payload)
    #expect(checksum == CRC32C.checksum(Array(payload[30_000...])))
    #expect(reader.endFrame() == 0)
    let next = try #require(try reader.nextFrame(from: &source, deadline: .never) { _ in .never })
    #expect(next.0.requestID == 2)
  }

  @Test func aSourceThatCannotWaitKeepsProgressBetweenCalls() throws {
    let stream = put(9, [7, 7, 7])
    var source = ByteQueue()
    let reader = FrameReader(receiving: .request)
    var frame: (FrameHeader, WireMessage)?
    for byte in stream.prefix(stream.count - 3) {
      #expect(frame == nil)
      source.append([byte])
      frame = try reader.nextFrame(from: &source, deadline: .never) { _ in .never }
    }
    #expect(frame?.0.requestID == 9)
  }

  @Test func discardedAndElsewherePayloadsKeepTheStreamInStep() throws {
    var source = ByteQueue(put(1, [UInt8](repeating: 9, count: 70_000)) + put(2, [1, 2, 3, 4]) + put(3, []))
    let reader = FrameReader(receiving: .request, bufferBytes: 4096)
    _ = try #require(try reader.nextFrame(from: &source, deadline: .never) { _ in .never })
    try reader.discardPayload(70_000, from: &source, deadline: .never)
    _ = try #require(try reader.nextFrame(from: &source, deadline: .never) { _ in .never })
    var first = [UInt8](repeating: 0, count: 1)
    try first.withUnsafeMutableBytes { try reader.receivePayload(into: $0, from: &source, deadline: .never) }
    #expect(first == [1])
    // The other 3 bytes "travelled another way": drop them from the stream to model that.
    var skipped = [UInt8](repeating: 0, count: 3)
    _ = skipped.withUnsafeMutableBytes { source.receive(into: $0, deadline: .never) }
    #expect(reader.endFrame() == 3)
    let third = try #require(try reader.nextFrame(from: &source, deadline: .never) { _ in .never })
    #expect(third.0.requestID == 3)
  }

  @Test func aLostPlaceOrAnOverreachIsRefused() throws {
    var source = ByteQueue(put(1, [1, 2, 3]) + put(2, []))
    let reader = FrameReader(receiving: .request)
    _ = try #require(try reader.nextFrame(from: &source, deadline: .never) { _ in .never })
    var four = [UInt8](repeating: 0, count: 4)
    #expect(throws: StrataError.self) {
      try four.withUnsafeMutableBytes { try reader.receivePayload(into: $0, from: &source, deadline: .never) }
    }
    do {
      _ = try reader.nextFrame(from: &source, deadline: .never) { _ in .never }
      Issue.record("a frame was read with the last one's payload unread")
    } catch {
      #expect(error.code == .protocolError)
    }
  }

  @Test func aMalformedFrameFailsTheStream() throws {
    var bytes = put(1, [])
    bytes[0] ^= 0xFF  // bad magic
    var source = ByteQueue(bytes)
    let reader = FrameReader(receiving: .request)
    #expect(throws: StrataError.self) { try reader.nextFrame(from: &source, deadline: .never) { _ in .never } }
    do {
      _ = try reader.nextFrame(from: &source, deadline: .never) { _ in .never }
      Issue.record("a failed stream was read again")
    } catch {
      #expect(error.code == .protocolError)
    }
  }

  @Test func wholeMessagesDecodeExactlyOneFrame() throws {
    let frame = put(4, [])
    let (header, _) = try frame.withUnsafeBytes {
      try FrameAssembler.decode(message: $0, limits: .standard, receiving: .request)
    }
    #expect(header.requestID == 4)
    for (bytes, violation) in [(frame + [0], WireViolation.trailingBytes), (Array(frame.dropLast()), .truncated)] {
      do {
        _ = try bytes.withUnsafeBytes { try FrameAssembler.decode(message: $0, limits: .standard, receiving: .request) }
        Issue.record("accepted \(bytes.count) bytes")
      } catch {
        #expect((error as? StrataError)?.wireViolation == violation)
      }
    }
    #expect(throws: StrataError.self) {
      try frame.withUnsafeBytes { try FrameAssembler.decode(message: $0, limits: .standard, receiving: .response) }
    }
  }
}
