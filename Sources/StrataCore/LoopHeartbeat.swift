// Liveness of a long-lived loop: the loop beats each time it goes round, and goes round at least
// every `turnMilliseconds` even when idle, so a reader can tell a wedged loop (a bug that blocks
// it) from a quiet one. A node's /health and the service manager's watchdog ask the data plane's
// accept loops this way: a node that can no longer accept connections is restarted, not left
// looking alive because its admin port answers.

import Synchronization

public final class LoopHeartbeat: Sendable {
  /// The longest an idle loop waits between turns.
  public static let turnMilliseconds: Int32 = 1_000
  /// A loop that has not turned for this long is wedged: ten times its idle turn, so a loaded
  /// machine's scheduling never makes it look so.
  public static let staleMilliseconds: UInt64 = 10_000

  /// What the loop is, in words ("the data plane's accept loop (tcp)").
  public let name: String
  /// The last turn's monotonic nanoseconds; 0 before the loop starts and after it ends.
  private let last = Atomic<UInt64>(0)

  public init(name: String) { self.name = name }

  /// The loop goes round at `now`.
  public func beat(now: UInt64 = MonotonicTime.nowNanoseconds) { last.store(max(now, 1), ordering: .relaxed) }

  /// The loop has ended (a stop): it is no longer judged.
  public func end() { last.store(0, ordering: .relaxed) }

  /// The last turn's time, nil when the loop is not running.
  public var lastBeat: UInt64? {
    let value = last.load(ordering: .relaxed)
    return value == 0 ? nil : value
  }

  /// What is wrong with the loop at `now`, nil when nothing is.
  public func problem(now: UInt64 = MonotonicTime.nowNanoseconds) -> String? {
    Self.problem(name: name, lastBeat: lastBeat, now: now, staleMilliseconds: Self.staleMilliseconds)
  }

  /// The rule, pure: a running loop whose last turn is `staleMilliseconds` or more before `now`
  /// is wedged.
  public static func problem(name: String, lastBeat: UInt64?, now: UInt64, staleMilliseconds: UInt64) -> String? {
    guard let lastBeat else { return nil }
    let milliseconds = now.subtractingSaturating(lastBeat) / 1_000_000
    guard milliseconds >= staleMilliseconds else { return nil }
    return "\(name) has not gone round for \(milliseconds / 1000) s"
  }
}
