// Waiting, in tests, for something the system promises within a bound of time.

/// Polls `condition` every 20 ms until it holds or `seconds` pass, and returns whether it held.
/// Only for bounds the system promises in time ("within the lease TTL", "once the pin is
/// released after the reply"), never in place of a signal the code under test gives. Bounds are
/// generous: on a loaded 2-core machine the full suite can hold every cooperative thread for tens
/// of seconds.
public func eventually(within seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
  let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
  while ContinuousClock.now < deadline {
    if try await condition() { return true }
    try? await Task.sleep(for: .milliseconds(20))
  }
  return try await condition()
}
