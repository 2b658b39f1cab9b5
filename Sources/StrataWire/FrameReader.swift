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
    _ = try receivePayload(into: destination, from: &source, deadline: deadline, checksummed: false)
  }

  /// `receivePayload`, returning the CRC-32C of the bytes received, computed over each piece the
  /// source returns as it lands, so nobody reads the slot again later to checksum it. A TCP socket
  /// fills the whole payload in one piece (a block of a few MiB stays in this CPU's L3); asking
  /// for 128 KiB pieces to checksum from L2 instead measured no faster (docs/performance.md).
  public func receiveChecksummedPayload<Source: ByteSource>(
    into destination: UnsafeMutableRawBufferPointer, from source: inout Source, deadline: Deadline
  ) throws(StrataError) -> UInt32 {
    try receivePayload(into: destination, from: &source, deadline: deadline, checksummed: true)
  }

  private func receivePayload<Source: ByteSource>(
    into destination: UnsafeMutableRawBufferPointer, from source: inout Source, deadline: Deadline, checksummed: Bool
  ) throws(StrataError) -> UInt32 {
    try checkPayload(destination.count)
    var checksum: UInt32 = 0
    var filled = 0
    while filled < destination.count {
      let count = try source.receive(
        into: UnsafeMutableRawBufferPointer(rebasing: destination[filled...]), deadline: deadline)
      guard count > 0 else {
        throw StrataError(.unavailable, "the stream ended \(destination.count - filled) bytes short of a payload")
      }
      if checksummed {
        checksum = CRC32C.checksum(
          UnsafeRawBufferPointer(rebasing: destination[filled..<(filled + count)]), continuing: checksum)
      }
      filled += count
    }
    if filled > 0 { assembler.consumePayload(UInt64(filled)) }
    return checksum
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
