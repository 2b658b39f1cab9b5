// A loop's liveness: wedged once it has not gone round for the stale time, never before it starts
// or after it ends.

import StrataCore
import Testing

@Suite struct LoopHeartbeatTests {
  private let second: UInt64 = 1_000_000_000

  @Test func aLoopIsWedgedOnlyOnceItHasNotTurnedForTheStaleTime() {
    let rule = { (lastBeat: UInt64?, now: UInt64) in
      LoopHeartbeat.problem(name: "the loop", lastBeat: lastBeat, now: now, staleMilliseconds: 10_000)
    }
    #expect(rule(nil, 100 * second) == nil)
    #expect(rule(5 * second, 5 * second + 9_999_999_999) == nil)
    #expect(rule(5 * second, 15 * second) == "the loop has not gone round for 10 s")
    #expect(rule(5 * second, 47 * second + 500_000_000) == "the loop has not gone round for 42 s")
    // A beat read after a later clock reading (another thread's) is not stale.
    #expect(rule(20 * second, 15 * second) == nil)
  }

  @Test func aHeartbeatIsJudgedFromItsFirstBeatUntilItsEnd() {
    let heartbeat = LoopHeartbeat(name: "the accept loop (tcp)")
    #expect(heartbeat.lastBeat == nil && heartbeat.problem(now: 1_000 * second) == nil)
    heartbeat.beat(now: 100 * second)
    #expect(heartbeat.problem(now: 105 * second) == nil)
    #expect(heartbeat.problem(now: 111 * second) == "the accept loop (tcp) has not gone round for 11 s")
    heartbeat.beat(now: 110 * second)
    #expect(heartbeat.problem(now: 111 * second) == nil)
    heartbeat.end()
    #expect(heartbeat.lastBeat == nil && heartbeat.problem(now: 1_000 * second) == nil)
  }
}
