// When a long task at start says how far it has got (NVMe recovery reads every region, which on a
// large disk takes minutes): a pure value, time passed in.

/// Not before one interval has passed since the start (a short task says nothing more than its
/// start and end), then at most once an interval.
public struct ProgressLogSchedule: Hashable, Sendable {
  public let intervalMilliseconds: UInt64
  private var dueMilliseconds: UInt64

  public init(startMilliseconds: UInt64, intervalMilliseconds: UInt64) {
    self.intervalMilliseconds = intervalMilliseconds
    dueMilliseconds = Self.adding(startMilliseconds, intervalMilliseconds)
  }

  /// Whether to report at `nowMilliseconds`; when so, the next report is due an interval later.
  public mutating func isDue(nowMilliseconds: UInt64) -> Bool {
    guard nowMilliseconds >= dueMilliseconds else { return false }
    dueMilliseconds = Self.adding(nowMilliseconds, intervalMilliseconds)
    return true
  }

  /// The sum, held at the clock's last value rather than wrapping to a time long past.
  private static func adding(_ time: UInt64, _ interval: UInt64) -> UInt64 {
    let (sum, overflow) = time.addingReportingOverflow(interval)
    return overflow ? .max : sum
  }
}
