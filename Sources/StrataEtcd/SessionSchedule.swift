// When an etcd session acts next: a pure value, time passed in, the random jitter drawn by the
// caller's source. EtcdSession's thread asks it what to do and how long to wait; tests drive it
// with any times they like.

/// The session's timetable. While registered: a lease keep-alive every third of the lease's TTL
/// (at least `keepAliveMinimumMilliseconds`). After a failure: a retry after a backoff that starts
/// at `backoffInitialMilliseconds` and doubles up to a third of the TTL (kept within 200 ms … 2 s,
/// so a short outage is bridged before the lease lapses), plus a jitter of up to a fifth of the
/// backoff, so nodes cut off together do not all return in the same instant. While connected,
/// also a relist every `relistIntervalMilliseconds`: the whole prefix read again and compared with
/// the map the watch built, so a watch that stays open but falls silent is noticed.
struct SessionSchedule: Sendable, Hashable {
  static let backoffInitialMilliseconds: UInt64 = 100
  static let keepAliveMinimumMilliseconds: UInt64 = 100

  /// The session's configured lease TTL.
  let ttlSeconds: Int64
  let relistIntervalMilliseconds: UInt64
  /// The wait after the next failure (before jitter).
  private(set) var backoffMilliseconds = SessionSchedule.backoffInitialMilliseconds
  /// On the session's monotonic clock.
  private(set) var nextActionMilliseconds: UInt64
  private(set) var nextRelistMilliseconds: UInt64

  /// A schedule whose first action (registering) is due at once.
  init(
    ttlSeconds: Int64, relistIntervalMilliseconds: UInt64 = 60_000,
    nowMilliseconds: UInt64
  ) {
    precondition(ttlSeconds > 0, "a lease TTL is positive")
    precondition(relistIntervalMilliseconds > 0, "a relist interval is positive")
    self.ttlSeconds = ttlSeconds
    self.relistIntervalMilliseconds = relistIntervalMilliseconds
    nextActionMilliseconds = nowMilliseconds
    nextRelistMilliseconds = nowMilliseconds + relistIntervalMilliseconds
  }

  var backoffCapMilliseconds: UInt64 { min(2_000, max(200, UInt64(ttlSeconds) * 1_000 / 3)) }

  /// A third of the lease's TTL as etcd granted it (the configured one when unknown: 0).
  func keepAliveIntervalMilliseconds(leaseTTLSeconds: Int64) -> UInt64 {
    let ttl = leaseTTLSeconds > 0 ? leaseTTLSeconds : ttlSeconds
    return max(Self.keepAliveMinimumMilliseconds, UInt64(ttl) * 1_000 / 3)
  }

  func isDue(nowMilliseconds: UInt64) -> Bool { nowMilliseconds >= nextActionMilliseconds }

  /// How long to wait for the next action (0: due now); the next relist too while `connected`.
  func waitMilliseconds(nowMilliseconds: UInt64, connected: Bool = false) -> UInt64 {
    let next = connected ? min(nextActionMilliseconds, nextRelistMilliseconds) : nextActionMilliseconds
    return next > nowMilliseconds ? next - nowMilliseconds : 0
  }

  func isRelistDue(nowMilliseconds: UInt64) -> Bool { nowMilliseconds >= nextRelistMilliseconds }

  /// The whole prefix was read (a relist, or a resync after registering): the next relist is an
  /// interval from now.
  mutating func listed(nowMilliseconds: UInt64) {
    nextRelistMilliseconds = nowMilliseconds + relistIntervalMilliseconds
  }

  /// Registered or kept alive: the next keep-alive a third of the TTL from now; backoff starts over.
  mutating func succeeded(leaseTTLSeconds: Int64, nowMilliseconds: UInt64) {
    backoffMilliseconds = Self.backoffInitialMilliseconds
    nextActionMilliseconds = nowMilliseconds + keepAliveIntervalMilliseconds(leaseTTLSeconds: leaseTTLSeconds)
  }

  /// A call to etcd failed: retry after the backoff plus `jitter(maximum)` (a draw in 0...maximum,
  /// clamped to it), and double the backoff up to its cap.
  mutating func failed(nowMilliseconds: UInt64, jitter: (_ maximum: UInt64) -> UInt64) {
    let maximum = backoffMilliseconds / 5
    nextActionMilliseconds = nowMilliseconds + backoffMilliseconds + min(jitter(maximum), maximum)
    backoffMilliseconds = min(backoffMilliseconds * 2, backoffCapMilliseconds)
  }

  /// Something needs checking at once (this member's own key was deleted).
  mutating func actNow(nowMilliseconds: UInt64) { nextActionMilliseconds = nowMilliseconds }
}
