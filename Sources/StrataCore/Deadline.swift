// A point on the monotonic clock by which something must finish. Every wait on a socket or a
// peer is bounded by one; the value is plain arithmetic, and `now` is passed in where tests need
// to drive it (`MonotonicTime.nowNanoseconds` is the one place the real clock is read).

#if canImport(Glibc)
  import Glibc
#endif

/// The monotonic clock (CLOCK_MONOTONIC), in nanoseconds since an arbitrary start.
public enum MonotonicTime {
  public static var nowNanoseconds: UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
  }
}

public struct Deadline: Hashable, Comparable, Sendable, CustomStringConvertible {
  /// On the `MonotonicTime` clock, in nanoseconds.
  public let nanoseconds: UInt64

  public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

  /// No deadline at all (waits that have none must say so explicitly).
  public static let never = Deadline(nanoseconds: .max)

  /// `milliseconds` after `now` (saturating).
  public static func after(milliseconds: UInt64, now: UInt64 = MonotonicTime.nowNanoseconds) -> Deadline {
    let (product, overflow) = milliseconds.multipliedReportingOverflow(by: 1_000_000)
    return Deadline(nanoseconds: overflow ? .max : now.addingSaturating(product))
  }

  /// The deadline for moving `bytes` once a request has begun: a base allowance plus the time the
  /// slowest acceptable peer (`minimumBytesPerSecond`) needs for the bytes.
  public static func transfer(
    bytes: UInt64, baseMilliseconds: UInt64, minimumBytesPerSecond: UInt64, now: UInt64 = MonotonicTime.nowNanoseconds
  ) -> Deadline {
    let rate = max(minimumBytesPerSecond, 1)
    let transferMilliseconds = bytes / rate * 1000 + (bytes % rate) * 1000 / rate
    return after(milliseconds: baseMilliseconds.addingSaturating(transferMilliseconds), now: now)
  }

  /// Milliseconds left at `now`; 0 once passed.
  public func remainingMilliseconds(now: UInt64 = MonotonicTime.nowNanoseconds) -> UInt64 {
    guard nanoseconds > now else { return 0 }
    let left = nanoseconds - now
    return left / 1_000_000 + (left % 1_000_000 == 0 ? 0 : 1)
  }

  public func hasPassed(now: UInt64 = MonotonicTime.nowNanoseconds) -> Bool { now >= nanoseconds }

  public static func < (lhs: Deadline, rhs: Deadline) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

  public var description: String { self == .never ? "never" : "t+\(nanoseconds)ns" }
}

extension UInt64 {
  /// `self + other`, or `.max` where that overflows.
  public func addingSaturating(_ other: UInt64) -> UInt64 {
    let (sum, overflow) = addingReportingOverflow(other)
    return overflow ? .max : sum
  }

  /// `self - other`, or 0 where `other` is larger.
  public func subtractingSaturating(_ other: UInt64) -> UInt64 { self > other ? self - other : 0 }
}
