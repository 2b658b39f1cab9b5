// A node that fails calls is skipped for longer each time it fails again without answering one in
// between, so a node that hangs costs a call's timeout ever more rarely (ClusterRouting.swift).

import StrataCore
import Testing

@testable import StrataClient

@Suite struct DownBackoffTests {
  let node = HostPort(host: "10.0.0.7", port: 7400)
  let base = Duration.seconds(1)

  @Test func eachFailureInARowDoublesTheSkipUpToThirtyTwoTimes() {
    var state = RoutingState()
    var now = ContinuousClock.now
    var periods: [Duration] = []
    for _ in 0..<8 {
      state.noteFailure(of: node, now: now, base: base)
      let until = state.down[node]!
      periods.append(until - now)
      now = until  // tried again once the skip is over, and it fails again
    }
    #expect(periods == [1, 2, 4, 8, 16, 32, 32, 32].map { Duration.seconds($0) })
  }

  @Test func failuresWhileDownCountOnceAndAnAnswerStartsOver() {
    var state = RoutingState()
    let now = ContinuousClock.now
    // Eight calls in flight fail together: one failure.
    for offset in 0..<8 { state.noteFailure(of: node, now: now + .milliseconds(offset), base: base) }
    #expect(state.failuresInARow[node] == 1 && state.down[node] == now + base)
    state.noteFailure(of: node, now: now + base, base: base)
    #expect(state.down[node] == now + base + .seconds(2))
    // It answers a call (tried last, or after the skip): not skipped, and the count starts over.
    state.noteAnswer(from: node)
    #expect(state.down[node] == nil && state.failuresInARow[node] == nil)
    state.noteFailure(of: node, now: now + .seconds(10), base: base)
    #expect(state.down[node] == now + .seconds(11))
  }

  @Test func aNodeThatLeftTheRingIsForgotten() {
    var state = RoutingState()
    state.noteFailure(of: node, now: .now, base: base)
    _ = state.forgetAddresses(keeping: [])
    #expect(state.down.isEmpty && state.failuresInARow.isEmpty)
  }
}
