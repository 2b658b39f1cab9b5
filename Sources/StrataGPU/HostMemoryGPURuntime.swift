// A GPURuntime whose "device memory" is host memory and whose copies run only when an event is
// waited for or a stream synchronized, the latest a real GPU could finish them. It lets the staging
// path and the client's GPU regions be tested without a GPU: reusing a slot before its copy is
// done, or reporting a block before it landed, shows up as wrong bytes.

public import StrataCore
import Synchronization

/// Host memory standing in for `devices` GPUs; registered ranges are the "device memory".
public final class HostMemoryGPURuntime: GPURuntime {
  private struct Copy {
    var destination: UInt64
    var bytes: [UInt8]?
    var source: UInt64
    var count: Int
    var fill: UInt8?
  }

  private struct State {
    var ranges: [(address: UInt64, count: Int, device: Int)] = []
    /// Per stream, copies not yet run; each event remembers how many were queued before it.
    var queues: [Int: [Copy]] = [:]
    var events: [Int: (stream: Int, upTo: Int)] = [:]
    var started: [Int: Int] = [:]
    var nextHandle = 1
    var pinnedBytes = 0
  }

  public let name = "host-memory stand-in"
  public let devices: Int
  private let state = Mutex(State())

  public init(devices: Int = 1) { self.devices = devices }

  /// Declares `count` bytes at `address` to be memory of `device`.
  public func addDeviceMemory(_ buffer: UnsafeMutableRawBufferPointer, device: Int) {
    state.withLock { $0.ranges.append((UInt64(UInt(bitPattern: buffer.baseAddress)), buffer.count, device)) }
  }

  public var pinnedBytesAllocated: Int { state.withLock { $0.pinnedBytes } }

  public func deviceCount() throws(StrataError) -> Int { devices }

  public func checkDeviceMemory(address: UInt64, byteCount: Int, device: Int) throws(StrataError) {
    let owner = state.withLock { state in
      state.ranges.first { address >= $0.address && address + UInt64(byteCount) <= $0.address + UInt64($0.count) }?
        .device
    }
    guard let owner else { throw StrataError(.invalidArgument, "0x\(String(address, radix: 16)) is not device memory") }
    guard owner == device else { throw StrataError(.invalidArgument, "memory of GPU \(owner), not GPU \(device)") }
  }

  public func allocatePinnedHost(byteCount: Int) throws(StrataError) -> UnsafeMutableRawPointer {
    state.withLock { $0.pinnedBytes += byteCount }
    return UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 4096)
  }

  public func freePinnedHost(_ pointer: UnsafeMutableRawPointer) { pointer.deallocate() }

  public func makeStream(device: Int) throws(StrataError) -> GPUStream {
    guard device >= 0 && device < devices else { throw StrataError(.invalidArgument, "no GPU \(device)") }
    let handle = state.withLock { state -> Int in
      defer { state.nextHandle += 1 }
      state.queues[state.nextHandle] = []
      state.started[state.nextHandle] = 0
      return state.nextHandle
    }
    return GPUStream(handle: UnsafeMutableRawPointer(bitPattern: handle))
  }

  public func destroyStream(_ stream: GPUStream) {
    state.withLock { $0.queues[Self.key(stream.handle)] = nil }
  }

  public func copyToDeviceAsync(
    _ destination: UInt64, from source: UnsafeRawPointer, byteCount: Int, stream: GPUStream
  ) throws(StrataError) {
    // The source is read when the copy runs, as a DMA engine would read the pinned slot.
    enqueue(
      Copy(destination: destination, bytes: nil, source: UInt64(UInt(bitPattern: source)), count: byteCount, fill: nil),
      stream)
  }

  public func fillDeviceAsync(_ destination: UInt64, byte: UInt8, byteCount: Int, stream: GPUStream) throws(StrataError)
  {
    enqueue(Copy(destination: destination, bytes: nil, source: 0, count: byteCount, fill: byte), stream)
  }

  public func copyToHost(_ destination: UnsafeMutableRawPointer, from source: UInt64, byteCount: Int, device: Int)
    throws(StrataError)
  {
    try checkDeviceMemory(address: source, byteCount: byteCount, device: device)
    destination.copyMemory(from: UnsafeRawPointer(bitPattern: UInt(source))!, byteCount: byteCount)
  }

  public func recordEvent(_ stream: GPUStream) throws(StrataError) -> GPUEvent {
    let key = Self.key(stream.handle)
    let handle = state.withLock { state -> Int in
      defer { state.nextHandle += 1 }
      state.events[state.nextHandle] = (key, state.started[key, default: 0] + (state.queues[key]?.count ?? 0))
      return state.nextHandle
    }
    return GPUEvent(handle: UnsafeMutableRawPointer(bitPattern: handle))
  }

  public func isComplete(_ event: GPUEvent) throws(StrataError) -> Bool {
    state.withLock { state in
      guard let (stream, upTo) = state.events[Self.key(event.handle)] else { return true }
      return state.started[stream, default: 0] >= upTo
    }
  }

  public func wait(_ event: GPUEvent) throws(StrataError) {
    guard let (stream, upTo) = state.withLock({ $0.events[Self.key(event.handle)] }) else { return }
    run(stream: stream, upTo: upTo)
  }

  public func destroyEvent(_ event: GPUEvent) { state.withLock { $0.events[Self.key(event.handle)] = nil } }

  public func synchronize(_ stream: GPUStream) throws(StrataError) { run(stream: Self.key(stream.handle), upTo: .max) }

  public func dmaBuf(address: UInt64, byteCount: Int) -> (fd: Int32, offset: UInt64)? { nil }

  private func enqueue(_ copy: Copy, _ stream: GPUStream) {
    state.withLock { $0.queues[Self.key(stream.handle), default: []].append(copy) }
  }

  /// Runs the stream's queued copies until `upTo` have run in total.
  private func run(stream: Int, upTo: Int) {
    let copies = state.withLock { state -> [Copy] in
      let started = state.started[stream, default: 0]
      let count = min(max(upTo - started, 0), state.queues[stream]?.count ?? 0)
      let taken = Array(state.queues[stream]?.prefix(count) ?? [])
      state.queues[stream]?.removeFirst(count)
      state.started[stream] = started + count
      return taken
    }
    for copy in copies {
      let target = UnsafeMutableRawPointer(bitPattern: UInt(copy.destination))!
      if let fill = copy.fill {
        target.initializeMemory(as: UInt8.self, repeating: fill, count: copy.count)
      } else {
        target.copyMemory(from: UnsafeRawPointer(bitPattern: UInt(copy.source))!, byteCount: copy.count)
      }
    }
  }

  private static func key(_ handle: UnsafeMutableRawPointer?) -> Int { Int(bitPattern: handle) }
}
