// The receiving side's frame state machine: turns bytes, in whatever pieces they arrive, into
// checked frames, and hands payload bytes back untouched so a transport can land them in place.

public import StrataCore

/// Assembles frames from a byte stream. Pure: it does no I/O and owns no socket. A transport either
/// reads exactly what `phase` asks for (64 header bytes, then the body, then receives the payload
/// into its own memory and calls `consumePayload`), or feeds whatever arrived and handles the events,
/// taking payload bytes as `.payloadBytes` slices of its own buffer.
///
/// Header and body are buffered here (bounded by `limits.bodyBytesMax`); payload bytes never are.
/// Any malformed input throws and leaves the assembler failed: every later feed throws too, and the
/// transport closes this one connection.
public struct FrameAssembler: Sendable {
  public enum Phase: Hashable, Sendable {
    /// Reading a header; `missingBytes` more complete it.
    case header(missingBytes: Int)
    /// Reading a body; exactly `missingBytes` more complete it.
    case body(missingBytes: Int)
    /// Inside the current frame's payload, `remainingBytes` of it still to come.
    case payload(remainingBytes: UInt64)
    /// Input was rejected; the connection must be closed.
    case failed
  }

  public enum Event {
    /// A header and its checked, decoded body. When `header.payloadBytes > 0`, the assembler is now in
    /// `.payload` and that many payload bytes follow before the next frame.
    case frame(FrameHeader, WireMessage)
    /// Payload bytes of the current frame: a slice of the buffer just fed (valid as long as that
    /// buffer), with `remainingBytes` more of this payload to come after it.
    case payloadBytes(UnsafeRawBufferPointer, remainingBytes: UInt64)
  }

  /// What one `feed` did: how many of the fed bytes it used, and the event they completed, if any.
  /// Feed the unused rest again (it belongs to what follows the event).
  public struct Step {
    public var consumedBytes: Int
    public var event: Event?
  }

  private enum State: Sendable {
    case header
    case body(FrameHeader)
    case payload(remainingBytes: UInt64)
    case failed(StrataError)
  }

  public let limits: WireLimits
  /// The direction of the frames this side receives: a server receives requests, a client responses.
  public let receiving: FrameDirection
  private var state: State = .header
  /// A header that arrived in pieces.
  private var partialHeader: [UInt8] = []
  /// A body that arrived in pieces.
  private var partialBody: [UInt8] = []

  /// Partial bodies up to this size keep their buffer for the next frame; larger ones release it so
  /// an idle connection does not hold a 16 MiB buffer.
  private static let retainedBodyCapacityBytes = 64 << 10

  public init(limits: WireLimits = .standard, receiving: FrameDirection) {
    self.limits = limits
    self.receiving = receiving
    partialHeader.reserveCapacity(FrameHeader.byteCount)
  }

  public var phase: Phase {
    switch state {
    case .header: return .header(missingBytes: FrameHeader.byteCount - partialHeader.count)
    case .body(let header): return .body(missingBytes: Int(header.bodyBytes) - partialBody.count)
    case .payload(let remaining): return .payload(remainingBytes: remaining)
    case .failed: return .failed
    }
  }

  /// The error that failed the assembler, if it has failed.
  public var failure: StrataError? {
    if case .failed(let error) = state { return error }
    return nil
  }

  /// Consumes bytes up to and including the next event. Call again with the unused rest until it
  /// is empty; a step without an event has used everything it was given.
  public mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(StrataError) -> Step {
    if case .failed(let first) = state {
      throw .wire(
        .failedEarlier, "frame assembler: fed after it failed (\(first.message)); the connection must be closed")
    }
    do {
      return try advance(bytes)
    } catch {
      state = .failed(error)
      throw error
    }
  }

  /// Records that the transport received `byteCount` payload bytes itself, straight into its own
  /// memory. Returns how many payload bytes of the frame remain.
  @discardableResult
  public mutating func consumePayload(_ byteCount: UInt64) -> UInt64 {
    guard case .payload(let remaining) = state, byteCount <= remaining else {
      preconditionFailure(
        "consumePayload(\(byteCount)) in phase \(phase): only payload bytes still due can be consumed")
    }
    let left = remaining - byteCount
    state = left == 0 ? .header : .payload(remainingBytes: left)
    return left
  }

  private mutating func advance(_ bytes: UnsafeRawBufferPointer) throws(StrataError) -> Step {
    var consumed = 0
    while true {
      let available = bytes.count - consumed
      switch state {
      case .failed:
        preconditionFailure("FrameAssembler.advance in the failed state")

      case .header:
        let header: FrameHeader
        if partialHeader.isEmpty && available >= FrameHeader.byteCount {
          // The common case: the whole header is in the input; decode it in place.
          header = try FrameHeader(decoding: slice(bytes, consumed, FrameHeader.byteCount), limits: limits)
          consumed += FrameHeader.byteCount
        } else {
          let take = min(FrameHeader.byteCount - partialHeader.count, available)
          guard take > 0 else { return Step(consumedBytes: consumed, event: nil) }
          partialHeader.append(contentsOf: slice(bytes, consumed, take))
          consumed += take
          guard partialHeader.count == FrameHeader.byteCount else { return Step(consumedBytes: consumed, event: nil) }
          let limits = limits
          let decoded = partialHeader.withUnsafeBytes { raw in
            Result { () throws(StrataError) in try FrameHeader(decoding: raw, limits: limits) }
          }
          partialHeader.removeAll(keepingCapacity: true)
          header = try decoded.get()
        }
        guard header.direction == receiving else {
          throw .wire(
            .unexpectedDirection,
            "\(header.context): a \(header.direction) frame where this side receives only \(receiving)s")
        }
        if header.bodyBytes == 0 {
          return Step(
            consumedBytes: consumed, event: try complete(header, body: UnsafeRawBufferPointer(start: nil, count: 0)))
        }
        state = .body(header)

      case .body(let header):
        let bodyBytes = Int(header.bodyBytes)
        if partialBody.isEmpty && available >= bodyBytes {
          let event = try complete(header, body: slice(bytes, consumed, bodyBytes))
          return Step(consumedBytes: consumed + bodyBytes, event: event)
        }
        let take = min(bodyBytes - partialBody.count, available)
        guard take > 0 else { return Step(consumedBytes: consumed, event: nil) }
        // Grown with what arrives (doubling), never sized by what the header announces: a peer
        // that claims a large body and sends little costs only what it sent.
        if partialBody.isEmpty { partialBody.reserveCapacity(min(bodyBytes, Self.retainedBodyCapacityBytes)) }
        partialBody.append(contentsOf: slice(bytes, consumed, take))
        consumed += take
        guard partialBody.count == bodyBytes else { return Step(consumedBytes: consumed, event: nil) }
        // Move the buffer out while decoding from it: `complete` mutates self.
        var body: [UInt8] = []
        swap(&body, &partialBody)
        defer {
          body.removeAll(keepingCapacity: body.capacity <= FrameAssembler.retainedBodyCapacityBytes)
          swap(&body, &partialBody)
        }
        let decoded = body.withUnsafeBytes { raw in
          Result { () throws(StrataError) in try complete(header, body: raw) }
        }
        return Step(consumedBytes: consumed, event: try decoded.get())

      case .payload(let remaining):
        guard available > 0 else { return Step(consumedBytes: consumed, event: nil) }
        let take = Int(min(UInt64(available), remaining))
        let left = remaining - UInt64(take)
        state = left == 0 ? .header : .payload(remainingBytes: left)
        return Step(
          consumedBytes: consumed + take, event: .payloadBytes(slice(bytes, consumed, take), remainingBytes: left))
      }
    }
  }

  /// Checks and decodes a complete body, moves to the payload or the next header, and makes the event.
  private mutating func complete(_ header: FrameHeader, body: UnsafeRawBufferPointer) throws(StrataError) -> Event {
    try header.verifyBody(body)
    let message = try WireMessage(header: header, body: body, limits: limits)
    state = header.payloadBytes == 0 ? .header : .payload(remainingBytes: header.payloadBytes)
    return .frame(header, message)
  }
}

private func slice(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ count: Int) -> UnsafeRawBufferPointer {
  UnsafeRawBufferPointer(rebasing: bytes[start..<start + count])
}
