// Frame reception for every transport: the FrameAssembler (the code the fuzzers drive) pulling
// from a ByteSource. It reads no further than the frame in progress needs, parses header and body
// itself, and receives payload bytes straight into the caller's memory (an arena slot, a client's
// buffer) without a copy of its own.

public import StrataCore

/// Reads frames from one stream. A receiver calls `nextFrame` for each header and body, then
/// receives the frame's payload with `receivePayload` (into its own memory) and `discardPayload`,
/// and ends the frame with `endFrame`. Not thread-safe: one connection's thread owns it.
///
/// Limits: it holds `bufferBytes` (allocated once) plus what the assembler buffers of a header or
/// body that arrives in pieces (at most `limits.bodyBytesMax`). Reads are never larger than the
/// frame's missing header or body bytes, or than the payload asked for.
public final class FrameReader {
  public private(set) var assembler: FrameAssembler
  /// Header and body bytes, and payload bytes nobody keeps, pass through this memory.
  private let buffer: UnsafeMutableRawBufferPointer
  /// The segments of one payload read (reused: no allocation per read).
  private var window: [UnsafeMutableRawBufferPointer] = []
  /// The most segments one payload read fills (a socket's `recvmsg` takes up to 1,024).
  static let segmentsPerReadMax = 64

  /// - Parameter bufferBytes: the largest single read of header, body or discarded payload.
  public init(limits: WireLimits = .standard, receiving: FrameDirection, bufferBytes: Int = 64 << 10) {
    precondition(bufferBytes > 0, "FrameReader needs a buffer")
    assembler = FrameAssembler(limits: limits, receiving: receiving)
    buffer = .allocate(byteCount: bufferBytes, alignment: 64)
  }

  deinit { buffer.deallocate() }

  public var phase: FrameAssembler.Phase { assembler.phase }

  /// Payload bytes of the current frame still to come (0 between frames).
  public var payloadRemainingBytes: UInt64 {
    if case .payload(let remaining) = assembler.phase { return remaining }
    return 0
  }

  /// Starts over between frames with new limits (after HELLO, the node's own limits apply).
  public func restart(limits: WireLimits) {
    assembler = FrameAssembler(limits: limits, receiving: assembler.receiving)
  }

  /// Receives the next frame's header and checked body from `source`. The header must arrive by
  /// `deadline`; once it has, `headerArrived` is told the body's size and returns the deadline for
  /// the body (or throws to stop). Returns nil when the source has nothing more for now (only a
  /// source that cannot wait does that): call again when more has arrived; progress is kept.
  ///
  /// Throws the source's errors as they are, and `protocolError` (with its `WireViolation`) for a
  /// malformed frame, after which the stream is unusable. Called with a payload still unread (a
  /// receiver that failed halfway), it throws `protocolError` too: the stream has lost its place.
  public func nextFrame<Source: ByteSource>(
    from source: inout Source, deadline: Deadline,
    headerArrived: (_ bodyBytes: Int) throws(StrataError) -> Deadline
  ) throws(StrataError) -> (FrameHeader, WireMessage)? {
    var deadline = deadline
    while true {
      let missing: Int
      let inHeader: Bool
      switch assembler.phase {
      case .header(let bytes): (missing, inHeader) = (bytes, true)
      case .body(let bytes): (missing, inHeader) = (bytes, false)
      case .payload(let remaining):
        throw StrataError(
          .protocolError, "a new frame was read with \(remaining) payload bytes of the last one unread")
      case .failed:
        throw StrataError(
          .protocolError, "the stream was read after a malformed frame (\(assembler.failure?.message ?? ""))")
      }
      let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(missing, buffer.count)])
      let count = try source.receive(into: chunk, deadline: deadline)
      guard count > 0 else { return nil }
      var fed = UnsafeRawBufferPointer(rebasing: chunk[0..<count])
      while !fed.isEmpty {
        let step = try assembler.feed(fed)
        fed = UnsafeRawBufferPointer(rebasing: fed[step.consumedBytes...])
        switch step.event {
        case .frame(let header, let message)?:
          precondition(fed.isEmpty, "FrameReader reads no further than the frame in progress")
          if inHeader { _ = try headerArrived(0) }
          return (header, message)
        case .payloadBytes?:
          preconditionFailure("FrameReader never feeds payload bytes to the assembler")
        case nil:
          break
        }
      }
      if inHeader, case .body(let bytes) = assembler.phase { deadline = try headerArrived(bytes) }
    }
  }

  /// Receives the next `destination.count` payload bytes of the current frame straight into
  /// `destination`. Throws `protocolError` when the frame has fewer left, `unavailable` when a
  /// source that cannot wait runs dry halfway.
  public func receivePayload<Source: ByteSource>(
    into destination: UnsafeMutableRawBufferPointer, from source: inout Source, deadline: Deadline
  ) throws(StrataError) {
    try receivePayload(into: [destination], from: &source, deadline: deadline) { _, _ in }
  }

  /// `receivePayload`, returning the CRC-32C of the bytes received, computed over each piece as
  /// it lands, so nobody reads the slot again later to checksum it.
  public func receiveChecksummedPayload<Source: ByteSource>(
    into destination: UnsafeMutableRawBufferPointer, from source: inout Source, deadline: Deadline
  ) throws(StrataError) -> UInt32 {
    var checksum: UInt32 = 0
    try receivePayload(into: [destination], from: &source, deadline: deadline) { _, bytes in
      checksum = CRC32C.checksum(bytes, continuing: checksum)
    }
    return checksum
  }

  /// Receives the next payload bytes of the current frame into `segments` (several blocks of a
  /// batch, say), each filled before the next, taking whatever has arrived with each read: from a
  /// socket one read fills up to `segmentsPerReadMax` segments, so a streamed batch costs few
  /// system calls and wake-ups. `landed` sees every piece right after it landed (its segment's
  /// index and its bytes), so a caller can checksum it while it is in the cache. Throws as
  /// `receivePayload(into:from:deadline:)`.
  public func receivePayload<Source: ByteSource>(
    into segments: [UnsafeMutableRawBufferPointer], from source: inout Source, deadline: Deadline,
    landed: (_ segment: Int, _ bytes: UnsafeRawBufferPointer) -> Void
  ) throws(StrataError) {
    var left = 0
    for segment in segments { left += segment.count }
    try checkPayload(left)
    // The frame's payload after these segments: the sender owes it whatever a read waits for.
    let following = Int(clamping: payloadRemainingBytes) - left
    var index = 0
    var offset = 0
    while left > 0 {
      window.removeAll(keepingCapacity: true)
      var windowBytes = 0
      for next in index..<segments.count where window.count < Self.segmentsPerReadMax {
        let piece = UnsafeMutableRawBufferPointer(rebasing: segments[next][(next == index ? offset : 0)...])
        guard !piece.isEmpty else { continue }
        window.append(piece)
        windowBytes += piece.count
      }
      let count = try source.receive(into: window, deadline: deadline, followedBy: following + left - windowBytes)
      guard count > 0 else {
        throw StrataError(.unavailable, "the stream ended \(left) bytes short of a payload")
      }
      assembler.consumePayload(UInt64(count))
      left -= count
      var unreported = count
      while unreported > 0 {
        let segment = segments[index]
        let take = min(unreported, segment.count - offset)
        if take > 0 { landed(index, UnsafeRawBufferPointer(rebasing: segment[offset..<(offset + take)])) }
        offset += take
        unreported -= take
        if offset == segment.count {
          index += 1
          offset = 0
        }
      }
    }
  }

  /// Reads and drops the next `byteCount` payload bytes of the current frame (a refused item's).
  public func discardPayload<Source: ByteSource>(
    _ byteCount: Int, from source: inout Source, deadline: Deadline
  ) throws(StrataError) {
    try checkPayload(byteCount)
    var left = byteCount
    while left > 0 {
      let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(left, buffer.count)])
      try receivePayload(into: chunk, from: &source, deadline: deadline)
      left -= chunk.count
    }
  }

  /// Ends the current frame: payload bytes not received from the stream travelled another way
  /// (a same-host region, an RDMA one-sided operation) and are not in it. Returns how many.
  @discardableResult
  public func endFrame() -> UInt64 {
    let remaining = payloadRemainingBytes
    if remaining > 0 { assembler.consumePayload(remaining) }
    return remaining
  }

  private func checkPayload(_ byteCount: Int) throws(StrataError) {
    guard UInt64(byteCount) <= payloadRemainingBytes else {
      throw StrataError(
        .protocolError, "\(byteCount) payload bytes asked for where the frame has \(payloadRemainingBytes) left")
    }
  }
}

extension FrameAssembler {
  /// The whole frames at the start of `bytes` (what a node answered, in memory), each with its
  /// payload; stops at the first frame that is incomplete or malformed.
  public static func frames(in bytes: [UInt8], limits: WireLimits = .standard, receiving: FrameDirection) -> [(
    FrameHeader, WireMessage, [UInt8]
  )] {
    var assembler = FrameAssembler(limits: limits, receiving: receiving)
    var frames: [(FrameHeader, WireMessage, [UInt8])] = []
    bytes.withUnsafeBytes { all in
      var offset = 0
      while offset < all.count {
        guard let step = try? assembler.feed(UnsafeRawBufferPointer(rebasing: all[offset...])),
          case .frame(let header, let message)? = step.event
        else { return }
        offset += step.consumedBytes
        guard header.payloadBytes <= UInt64(all.count - offset) else { return }
        let payloadEnd = offset + Int(header.payloadBytes)
        frames.append((header, message, Array(all[offset..<payloadEnd])))
        if header.payloadBytes > 0 { assembler.consumePayload(header.payloadBytes) }
        offset = payloadEnd
      }
    }
    return frames
  }

  /// Decodes one whole frame that arrived as one message (header and body, nothing more; any
  /// payload it announces moves another way, as RDMA's one-sided operations move it).
  public static func decode(
    message bytes: UnsafeRawBufferPointer, limits: WireLimits, receiving: FrameDirection
  ) throws(StrataError) -> (FrameHeader, WireMessage) {
    var assembler = FrameAssembler(limits: limits, receiving: receiving)
    let step = try assembler.feed(bytes)
    guard case .frame(let header, let message)? = step.event else {
      throw .wire(.truncated, "a \(bytes.count)-byte message holds no whole frame")
    }
    guard step.consumedBytes == bytes.count else {
      throw .wire(
        .trailingBytes,
        "\(header.context): \(bytes.count - step.consumedBytes) bytes follow the frame in its message")
    }
    return (header, message)
  }
}
