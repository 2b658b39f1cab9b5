// Time for every component of a node that reads it or waits on it (tier manager and leases, the
// cluster layer: fill window, drain and repair schedules, member certificate checks), injected so
// that tests and the seeded simulator control it. `SystemClock` is the one place the node's
// components read the real clocks; `ManualClock` moves only when told to.

import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A monotonic millisecond clock, a wall clock for reports and certificate validity, and waiting.
public protocol NodeClock: Sendable {
  /// Monotonic milliseconds since an arbitrary start: for intervals, deadlines and schedules.
  func nowMilliseconds() -> UInt64
  /// Milliseconds since the Unix epoch: for timestamps shown to people and certificate validity,
  /// never for intervals (it jumps when the host's time is set).
  func wallMilliseconds() -> Int64
  /// Returns once `milliseconds` have passed on this clock, or at once when the task is cancelled.
  func sleep(milliseconds: UInt64) async
}

/// CLOCK_MONOTONIC (never jumps with wall-clock changes) and CLOCK_REALTIME.
public struct SystemClock: NodeClock {
  public init() {}

  public func nowMilliseconds() -> UInt64 { MonotonicTime.nowNanoseconds / 1_000_000 }

  public func wallMilliseconds() -> Int64 {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
  }

  public func sleep(milliseconds: UInt64) async {
    try? await Task.sleep(for: .milliseconds(Int64(clamping: milliseconds)))
  }
}

/// A clock that moves only when told to (`advance`). A `sleep` returns when an `advance` reaches
/// its end, or when its task is cancelled; sleepers due at one `advance` wake in the order of their
/// ends (then of their calls). At most `sleepersMax` sleep at once: one more returns at once, as if
/// its time had passed, so a test that forgets to advance fails on its assertions, not by hanging
/// on unbounded waiters.
public final class ManualClock: NodeClock {
  public static let sleepersMax = 4096

  private struct Sleeper {
    var end: UInt64
    var order: UInt64
    var continuation: CheckedContinuation<Void, Never>
  }

  private struct State {
    var now: UInt64
    var wallOffset: Int64
    var sleepers: [UInt64: Sleeper] = [:]
    /// Sleeps called but not yet waiting, and those of them cancelled meanwhile.
    var starting: Set<UInt64> = []
    var cancelled: Set<UInt64> = []
    var nextOrder: UInt64 = 0
  }

  private let state: Mutex<State>

  /// `milliseconds`: the monotonic reading to start at; `wallMilliseconds`: the wall clock then.
  public init(milliseconds: UInt64 = 0, wallMilliseconds: Int64 = 1_767_225_600_000) {
    state = Mutex(State(now: milliseconds, wallOffset: wallMilliseconds - Int64(clamping: milliseconds)))
  }

  public func nowMilliseconds() -> UInt64 { state.withLock { $0.now } }

  public func wallMilliseconds() -> Int64 { state.withLock { $0.wallOffset + Int64(clamping: $0.now) } }

  /// Sleepers waiting now.
  public var sleepers: Int { state.withLock { $0.sleepers.count } }

  /// The reading at which the next sleeper is due, nil when none sleeps (a simulation's run loop
  /// moves time there).
  public var nextWakeMilliseconds: UInt64? { state.withLock { $0.sleepers.values.map(\.end).min() } }

  /// Moves the clock on and wakes every sleeper whose end it reaches.
  public func advance(milliseconds: UInt64) {
    let due = state.withLock { state -> [Sleeper] in
      state.now = state.now.addingSaturating(milliseconds)
      let now = state.now
      let due = state.sleepers.filter { $0.value.end <= now }
      for order in due.keys { state.sleepers[order] = nil }
      return due.values.sorted { ($0.end, $0.order) < ($1.end, $1.order) }
    }
    for sleeper in due { sleeper.continuation.resume() }
  }

  public func sleep(milliseconds: UInt64) async {
    let order = state.withLock { state -> UInt64 in
      defer { state.nextOrder += 1 }
      state.starting.insert(state.nextOrder)
      return state.nextOrder
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let waits = state.withLock { state -> Bool in
          state.starting.remove(order)
          let end = state.now.addingSaturating(milliseconds)
          guard end > state.now, state.cancelled.remove(order) == nil, state.sleepers.count < Self.sleepersMax else {
            return false
          }
          state.sleepers[order] = Sleeper(end: end, order: order, continuation: continuation)
          return true
        }
        if !waits { continuation.resume() }
      }
    } onCancel: {
      let sleeper = state.withLock { state -> Sleeper? in
        if let sleeper = state.sleepers.removeValue(forKey: order) { return sleeper }
        // Cancelled before it began waiting: it must not begin (after it ended: nothing to do).
        if state.starting.contains(order) { state.cancelled.insert(order) }
        return nil
      }
      sleeper?.continuation.resume()
    }
  }
}
