// A BlockDevice that logs every failed read, write and sync of the device it wraps at error level,
// with the device's own message (the system call and its errno) and where on the device: the
// metric `strata_nvme_io_errors_total` says that a disk fails, this line says how. A dying disk can
// fail thousands of operations a second, so lines are rate-limited (as audit lines are); a line
// after a suppressed spell says how many were left out. With a DiskStallMonitor, every operation
// is in flight there until it returns, so one that never does is named too. Every node's devices
// are wrapped in one.

public import Logging
public import StrataCore
import Synchronization

/// The rate limit of device error lines: one a second per device, bursts of 10.
struct DeviceErrorLineLimiter: Sendable {
  static let linesPerSecond = 1
  static let burst = 10
  private var bucket: TokenBucket
  private var leftOut = 0

  init(nowNanoseconds: UInt64) {
    bucket = TokenBucket(ratePerSecond: Self.linesPerSecond, capacity: Self.burst, now: nowNanoseconds)
  }

  /// Whether a line may be written now, and how many were left out before it.
  mutating func admit(nowNanoseconds: UInt64) -> (write: Bool, leftOut: Int) {
    guard bucket.take(1, now: nowNanoseconds) else {
      leftOut += 1
      return (false, 0)
    }
    defer { leftOut = 0 }
    return (true, leftOut)
  }
}

public final class ReportingBlockDevice: BlockDevice {
  private let device: any BlockDevice
  /// The device's file, for the log line.
  private let path: String
  private let logger: Logger
  private let clock: any NodeClock
  private let limiter: Mutex<DeviceErrorLineLimiter>
  private let stalls: DiskStallMonitor?

  public init(
    _ device: any BlockDevice, path: String, logger: Logger, clock: any NodeClock, stalls: DiskStallMonitor? = nil
  ) {
    self.device = device
    self.path = path
    self.logger = logger
    self.clock = clock
    self.stalls = stalls
    limiter = Mutex(DeviceErrorLineLimiter(nowNanoseconds: clock.nowMilliseconds() * 1_000_000))
  }

  public var capacityBytes: Int { device.capacityBytes }
  public var alignmentBytes: Int { device.alignmentBytes }

  public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
    try perform(DiskOperation(.read, path: path, offset: offset, bytes: buffer.count)) { () throws(StrataError) in
      try device.read(at: offset, into: buffer)
    }
  }

  public func write(at offset: Int, from buffer: UnsafeRawBufferPointer) throws(StrataError) {
    try perform(DiskOperation(.write, path: path, offset: offset, bytes: buffer.count)) { () throws(StrataError) in
      try device.write(at: offset, from: buffer)
    }
  }

  public func write(at offset: Int, gathering segments: [UnsafeRawBufferPointer]) throws(StrataError) {
    let bytes = segments.reduce(0) { $0 + $1.count }
    try perform(DiskOperation(.write, path: path, offset: offset, bytes: bytes)) { () throws(StrataError) in
      try device.write(at: offset, gathering: segments)
    }
  }

  public func sync() throws(StrataError) {
    try perform(DiskOperation(.sync, path: path)) { () throws(StrataError) in try device.sync() }
  }

  public func discard(at offset: Int, bytes: Int) { device.discard(at: offset, bytes: bytes) }

  /// Runs `body`, in flight on the stall monitor meanwhile, and logs its failure.
  private func perform(_ operation: DiskOperation, _ body: () throws(StrataError) -> Void) throws(StrataError) {
    do {
      if let stalls { try stalls.watching(operation, body) } else { try body() }
    } catch {
      report(error, operation)
      throw error
    }
  }

  private func report(_ error: StrataError, _ operation: DiskOperation) {
    let now = clock.nowMilliseconds() * 1_000_000
    let (write, leftOut) = limiter.withLock { $0.admit(nowNanoseconds: now) }
    guard write else { return }
    var metadata: Logger.Metadata = [
      "operation": "\(operation.kind.rawValue)", "path": "\(path)", "error": "\(error.message)",
    ]
    if let offset = operation.offset { metadata["offset"] = "\(offset)" }
    if let bytes = operation.bytes { metadata["bytes"] = "\(bytes)" }
    if leftOut > 0 { metadata["lines_left_out"] = "\(leftOut)" }
    logger.error("storage: NVMe device error", metadata: metadata)
  }
}
