// Receives bytes for GPU memory where RDMA cannot write there directly: each chunk lands in a
// slot of pinned host memory, is checksummed on the host, and goes to the device with an
// asynchronous copy while the next chunk is received. A slot is reused only once its copy is done.

public import StrataCore

/// A ring of pinned host slots on one device's copy stream.
///
/// Not thread-safe: one connection's thread uses a ring (`@unchecked Sendable` lets the owner
/// keep it in a Sendable holder that hands it to one thread at a time).
public final class StagingRing: @unchecked Sendable {
  public let runtime: any GPURuntime
  public let device: Int
  public let slotBytes: Int
  public let slotCount: Int
  private let slots: UnsafeMutableRawPointer
  private let stream: GPUStream
  /// The copy each slot feeds, if one may still be running.
  private var pending: [GPUEvent?]
  private var next = 0

  /// Counters: bytes sent through the ring, and times a slot had to wait for its previous copy.
  public private(set) var stagedBytes = 0
  public private(set) var slotWaits = 0

  public init(runtime: any GPURuntime, device: Int, slotBytes: Int = 4 << 20, slotCount: Int = 4) throws(StrataError) {
    precondition(slotBytes > 0 && slotCount >= 2, "StagingRing: \(slotCount) slots of \(slotBytes) bytes")
    self.runtime = runtime
    self.device = device
    self.slotBytes = slotBytes
    self.slotCount = slotCount
    stream = try runtime.makeStream(device: device)
    do {
      slots = try runtime.allocatePinnedHost(byteCount: slotBytes * slotCount)
    } catch {
      runtime.destroyStream(stream)
      throw error
    }
    pending = Array(repeating: nil, count: slotCount)
  }

  deinit {
    try? runtime.synchronize(stream)
    for event in pending.compactMap({ $0 }) { runtime.destroyEvent(event) }
    runtime.destroyStream(stream)
    runtime.freePinnedHost(slots)
  }

  /// Moves `length` bytes to device address `destination`: `fill` is called once per chunk (at
  /// most `slotBytes`) with host memory to fill, in order. Returns the CRC-32C of all the bytes.
  /// The copies may still run when this returns: `finish()` waits for them.
  public func stage(
    length: Int, to destination: UInt64, fill: (UnsafeMutableRawBufferPointer) throws(StrataError) -> Void
  ) throws(StrataError) -> UInt32 {
    var crc: UInt32 = 0
    var offset = 0
    while offset < length {
      let count = min(slotBytes, length - offset)
      let slot = try acquire()
      let buffer = UnsafeMutableRawBufferPointer(start: slots + slot * slotBytes, count: count)
      try fill(buffer)
      crc = CRC32C.checksum(UnsafeRawBufferPointer(buffer), continuing: crc)
      try runtime.copyToDeviceAsync(
        destination + UInt64(offset), from: buffer.baseAddress!, byteCount: count, stream: stream)
      pending[slot] = try runtime.recordEvent(stream)
      stagedBytes += count
      offset += count
    }
    return crc
  }

  /// Overwrites `length` device bytes at `destination` with zeros (a block that failed its checksum).
  public func zero(_ destination: UInt64, length: Int) throws(StrataError) {
    try runtime.fillDeviceAsync(destination, byte: 0, byteCount: length, stream: stream)
  }

  /// Waits until every copy queued so far has landed in device memory.
  public func finish() throws(StrataError) {
    try runtime.synchronize(stream)
    for index in pending.indices {
      if let event = pending[index] { runtime.destroyEvent(event) }
      pending[index] = nil
    }
  }

  /// The next slot in ring order, once its previous copy is done.
  private func acquire() throws(StrataError) -> Int {
    let slot = next
    next = (next + 1) % slotCount
    if let event = pending[slot] {
      if !(try runtime.isComplete(event)) {
        slotWaits += 1
        try runtime.wait(event)
      }
      runtime.destroyEvent(event)
      pending[slot] = nil
    }
    return slot
  }
}
