// Waiting, in tests, for something the system promises within a bound of time.

/// Polls `condition` every 20 ms until it holds, and returns whether it held. Gives up only once
/// `seconds` have passed *and* it has polled `seconds / 20 ms` times: in the full suite on a
/// 2-core machine, blocking tests can hold every cooperative thread for minutes, and then this
/// loop and the tasks it waits for are stalled alike; a stall counts no polls, so it cannot use up
/// the bound. Only for bounds the system promises in time ("within the lease TTL", "once the pin is
/// released after the reply"), never in place of a signal the code under test gives.
public func eventually(within seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
  let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
  let pollsAtLeast = Int(seconds * 1000) / 20
  var polls = 0
  while ContinuousClock.now < deadline || polls < pollsAtLeast {
    if try await condition() { return true }
    try? await Task.sleep(for: .milliseconds(20))
    polls += 1
  }
  return try await condition()
}
