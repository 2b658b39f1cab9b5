// Waiting, in tests, for something the system promises within a bound of time.

/// Polls `condition` every 20 ms until it holds or `seconds` pass, and returns whether it held.
/// Only for bounds the system promises in time ("within the lease TTL", "once the pin is
/// released after the reply"), never in place of a signal the code under test gives.
///
/// A stall of the cooperative pool does not count against the bound: in the full suite on a
/// 2-core machine, blocking tests can hold every cooperative thread for minutes, and then this loop
/// and the tasks it waits for are stalled alike. A 20 ms sleep that overran by more than
/// `stallMilliseconds` was such a stall, and the deadline moves out by the overrun. Time spent in
/// `condition` always counts, so a condition that keeps timing out still ends the wait on time.
public func eventually(within seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
  var deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
  while ContinuousClock.now < deadline {
    if try await condition() { return true }
    let asleep = ContinuousClock.now
    try? await Task.sleep(for: .milliseconds(20))
    let overrun = ContinuousClock.now - asleep - .milliseconds(20)
    if overrun > .milliseconds(stallMilliseconds) { deadline += overrun }
  }
  return try await condition()
}

/// How far a 20 ms sleep of `eventually` must overrun to count as a stall of the pool.
private let stallMilliseconds = 200
