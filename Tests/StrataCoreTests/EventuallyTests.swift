// StrataTestKit's `eventually`: a wait for what the system promises within a bound of time.

import Foundation
import StrataTestKit
import Testing

@Suite struct EventuallyTests {
  /// A condition that never holds is polled until the bound has passed, and the wait says so.
  /// (Its upper end is not asserted: a stall of the pool moves it out, by design.)
  @Test func aConditionThatNeverHoldsIsPolledUntilTheBound() async throws {
    let started = Date()
    var calls = 0
    let held = try await eventually(within: 0.3) {
      calls += 1
      return false
    }
    #expect(!held)
    #expect(Date().timeIntervalSince(started) >= 0.3)
    #expect(calls >= 2)
  }

  /// A condition that comes to hold ends the wait at the poll that sees it, well inside the bound.
  /// (Counted in polls, not seconds: at the start of the full suite the pool stalls for a minute
  /// and more, and a wall-clock bound here failed in CI for that reason alone.)
  @Test func aConditionThatComesToHoldEndsTheWaitAtOnce() async throws {
    var calls = 0
    let held = try await eventually(within: 60) {
      calls += 1
      return calls == 3
    }
    #expect(held && calls == 3)
  }
}
