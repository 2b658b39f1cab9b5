// Where a receiver's bytes come from: a socket, or bytes already in memory. StrataWire's
// FrameReader reads frames from any of them, so every transport receives frames the same way.

/// A stream of bytes read in pieces the reader sizes: it never asks for more than it needs next,
/// so a source never gives out bytes that belong to the reader's next step.
public protocol ByteSource {
  /// Receives at least one and at most `buffer.count` bytes into `buffer` by `deadline`, and
  /// returns how many. 0 only from a source that cannot wait (non-blocking, or in memory) and has
  /// nothing now. Throws when the stream ended or failed, or `timeout` when the deadline passed.
  mutating func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: Deadline) throws(StrataError) -> Int

  /// Receives at least one byte into `segments` (none empty), filling each before the next, and
  /// returns how many (at most their total); otherwise as `receive(into:deadline:)`. The peer is
  /// bound to send `followedBy` more bytes after them (the rest of a frame's payload), so a socket
  /// may sleep until a large piece has arrived rather than wake for every packet.
  mutating func receive(
    into segments: [UnsafeMutableRawBufferPointer], deadline: Deadline, followedBy: Int
  ) throws(StrataError) -> Int
}

extension ByteSource {
  /// One segment at a time.
  public mutating func receive(
    into segments: [UnsafeMutableRawBufferPointer], deadline: Deadline, followedBy: Int
  ) throws(StrataError) -> Int {
    try receive(into: segments[0], deadline: deadline)
  }
}

/// Bytes already in memory, appended as they arrive and taken from the front: the source of an
/// in-process connection (and of tests and fuzzers). Never waits: it gives what it has.
public struct ByteQueue: ByteSource, Sendable {
  private var bytes: [UInt8] = []
  private var head = 0

  public init(_ bytes: [UInt8] = []) { self.bytes = bytes }

  /// Bytes appended and not yet received.
  public var count: Int { bytes.count - head }

  public mutating func append(_ more: some Sequence<UInt8>) {
    // Received bytes are dropped once they are the larger part, so the queue stays bounded by
    // what is still unread (plus as much again).
    if head > 0 && head >= bytes.count - head {
      bytes.removeSubrange(0..<head)
      head = 0
    }
    bytes.append(contentsOf: more)
  }

  public mutating func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: Deadline) -> Int {
    let take = min(buffer.count, count)
    guard take > 0 else { return 0 }
    bytes.withUnsafeBytes { raw in
      buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[head..<head + take]))
    }
    head += take
    return take
  }
}
