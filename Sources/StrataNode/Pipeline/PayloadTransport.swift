// The seam between the request pipeline and a transport: the pipeline decides everything
// (authentication, limits, ownership, leases, reservations, accounting, metrics) and a transport
// only moves bytes — response frames, GET payloads out of pinned arena memory, PUT payloads into
// reserved arena slots. TCP, RDMA and the in-memory test transport implement it.

public import StrataCore
public import StrataWire

/// Where one PUT item's payload goes.
public enum PayloadSlot {
  /// Into this reserved arena slot (exactly its size).
  case into(UnsafeMutableRawBufferPointer)
  /// Nowhere: the item was refused; a stream transport reads and drops its `Int` bytes.
  case skip(Int)
}

public protocol PayloadTransport {
  /// For metrics and logs: "tcp", "rdma", "memory".
  var name: String { get }

  /// Sends a response that carries no payload.
  mutating func respond(_ frame: [UInt8], deadline: Deadline) throws(StrataError)

  /// Delivers a GET: `ranges[i]` (pinned arena bytes; nil where the item has none) to the client,
  /// and the response built from `items`. Returns the items as answered (a transport may refuse an
  /// item it cannot deliver, e.g. an RDMA destination too small). Must not return before every
  /// byte it started moving out of `ranges` has left or been cancelled: the caller unpins the
  /// ranges when it returns, successfully or not.
  mutating func deliverGet(
    items: [GetResponse.Item], ranges: [UnsafeRawBufferPointer?], response: ResponseFrame, deadline: Deadline
  ) throws(StrataError) -> [GetResponse.Item]

  /// Receives a PUT's payload, or a run of it: item `firstItem + i` into `slots[i]`, in order (a
  /// PUT is received in one call, or in consecutive runs when RAM makes room for it in rounds).
  /// On a throw the caller aborts every reservation; the transport must not write into the slots
  /// after it returns. Returns, per slot, the CRC-32C of the bytes now in it when the transport
  /// computed it over those very bytes as they landed (the commit then does not read the slot
  /// again), nil where it did not.
  mutating func receivePut(_ slots: [PayloadSlot], firstItem: Int, deadline: Deadline) throws(StrataError) -> [UInt32?]
}

extension PayloadTransport {
  /// Receives a whole PUT's payload.
  mutating func receivePut(_ slots: [PayloadSlot], deadline: Deadline) throws(StrataError) -> [UInt32?] {
    try receivePut(slots, firstItem: 0, deadline: deadline)
  }
}

/// `items` as answered once each delivered range is checked against the checksum it is answered
/// with: a range that no longer matches (a block damaged in RAM after its commit) is answered
/// `corrupt` and must not be delivered. For a transport whose bytes land where the client does not
/// read them back (RDMA into GPU memory); the pipeline removes the blocks found so.
func checkedBeforeDelivery(_ items: [GetResponse.Item], _ ranges: [UnsafeRawBufferPointer?]) -> [GetResponse.Item] {
  var answered = items
  for (index, range) in ranges.enumerated() {
    guard let range, items[index].status == .ok, CRC32C.checksum(range) != items[index].checksum else { continue }
    answered[index] = GetResponse.Item(status: .corrupt)
  }
  return answered
}

extension FrameReader {
  /// A stream transport's PUT payload: each slot received from `source` and checksummed as it
  /// lands; refused items' bytes read and dropped. With no item refused, the whole payload is read
  /// as one stream into all the slots at once.
  func receive<Source: ByteSource>(
    _ slots: [PayloadSlot], from source: inout Source, deadline: Deadline
  ) throws(StrataError) -> [UInt32?] {
    let buffers = slots.compactMap { slot -> UnsafeMutableRawBufferPointer? in
      if case .into(let buffer) = slot { return buffer }
      return nil
    }
    if buffers.count == slots.count {
      var checksums = [UInt32](repeating: 0, count: slots.count)
      try receivePayload(into: buffers, from: &source, deadline: deadline) { slot, bytes in
        checksums[slot] = CRC32C.checksum(bytes, continuing: checksums[slot])
      }
      return checksums
    }
    var landed: [UInt32?] = []
    landed.reserveCapacity(slots.count)
    for slot in slots {
      switch slot {
      case .into(let buffer):
        landed.append(try receiveChecksummedPayload(into: buffer, from: &source, deadline: deadline))
      case .skip(let bytes):
        try discardPayload(bytes, from: &source, deadline: deadline)
        landed.append(nil)
      }
    }
    return landed
  }
}

/// What a transport needs to frame a response: the request it answers and the epoch to carry.
public struct ResponseFrame: Sendable {
  public var requestID: UInt64
  public var ringEpoch: UInt64

  public func bytes(_ message: WireMessage) -> [UInt8] {
    message.frameBytes(requestID: requestID, ringEpoch: ringEpoch)
  }
}
