// Time for the storage layer, injected so tests (and a seeded simulator) control lease expiry.

import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A monotonic millisecond clock.
public protocol StorageClock: Sendable {
  func nowMilliseconds() -> UInt64
}

/// CLOCK_MONOTONIC: never jumps with wall-clock changes.
public struct MonotonicClock: StorageClock {
  public init() {}
  public func nowMilliseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1000 + UInt64(time.tv_nsec) / 1_000_000
  }
}

/// A clock that moves only when told to.
public final class ManualClock: StorageClock {
  private let now: Mutex<UInt64>
  public init(milliseconds: UInt64 = 0) { now = Mutex(milliseconds) }
  public func nowMilliseconds() -> UInt64 { now.withLock { $0 } }
  public func advance(milliseconds: UInt64) { now.withLock { $0 += milliseconds } }
}
