// The etcd session's timetable, with time and jitter passed in: keep-alives every third of the
// lease's TTL, retries on a doubling backoff capped by the TTL, jitter bounded by a fifth of it.

import Testing

@testable import StrataEtcd

@Suite struct SessionScheduleTests {
  @Test func theFirstActionIsDueAtOnceAndKeepAlivesFollowAThirdOfTheTTL() {
    var schedule = SessionSchedule(ttlSeconds: 10, nowMilliseconds: 5_000)
    #expect(schedule.isDue(nowMilliseconds: 5_000))
    #expect(schedule.waitMilliseconds(nowMilliseconds: 5_000) == 0)
    // etcd granted 6 s instead of the 10 asked for: the granted TTL decides.
    schedule.succeeded(leaseTTLSeconds: 6, nowMilliseconds: 5_000)
    #expect(schedule.nextActionMilliseconds == 7_000)
    #expect(!schedule.isDue(nowMilliseconds: 6_999))
    #expect(schedule.waitMilliseconds(nowMilliseconds: 6_000) == 1_000)
    #expect(schedule.isDue(nowMilliseconds: 7_000))
    // Unknown grant (0): the configured TTL.
    schedule.succeeded(leaseTTLSeconds: 0, nowMilliseconds: 7_000)
    #expect(schedule.nextActionMilliseconds == 7_000 + 3_333)
    // Never more often than every 100 ms.
    #expect(SessionSchedule(ttlSeconds: 1, nowMilliseconds: 0).keepAliveIntervalMilliseconds(leaseTTLSeconds: 0) == 333)
    #expect(schedule.keepAliveIntervalMilliseconds(leaseTTLSeconds: 0) >= SessionSchedule.keepAliveMinimumMilliseconds)
  }

  /// A relist is due an interval after the last full read of the prefix, and counts in the wait
  /// only while connected (a disconnected session has no watch to check, and must not spin).
  @Test func aRelistIsDueAnIntervalAfterTheLastListingWhileConnected() {
    var schedule = SessionSchedule(ttlSeconds: 30, relistIntervalMilliseconds: 60_000, nowMilliseconds: 0)
    schedule.succeeded(leaseTTLSeconds: 30, nowMilliseconds: 0)
    schedule.listed(nowMilliseconds: 1_000)
    #expect(!schedule.isRelistDue(nowMilliseconds: 60_999) && schedule.isRelistDue(nowMilliseconds: 61_000))
    // Keep-alives every 10 s come first; past the last one before it, the relist decides the wait.
    #expect(schedule.waitMilliseconds(nowMilliseconds: 0, connected: true) == 10_000)
    schedule.succeeded(leaseTTLSeconds: 30, nowMilliseconds: 55_000)
    #expect(schedule.waitMilliseconds(nowMilliseconds: 55_000, connected: true) == 6_000)
    #expect(schedule.waitMilliseconds(nowMilliseconds: 55_000, connected: false) == 10_000)
    // Past due while disconnected: the wait is the retry's, not zero.
    schedule.failed(nowMilliseconds: 70_000, jitter: { _ in 0 })
    #expect(schedule.waitMilliseconds(nowMilliseconds: 70_000, connected: false) == 100)
  }

  @Test func failuresBackOffDoublingUpToTheCapAndASuccessStartsOver() {
    var schedule = SessionSchedule(ttlSeconds: 30, nowMilliseconds: 0)
    #expect(schedule.backoffCapMilliseconds == 2_000)
    var waits: [UInt64] = []
    var now: UInt64 = 0
    for _ in 0..<7 {
      schedule.failed(nowMilliseconds: now, jitter: { _ in 0 })
      waits.append(schedule.nextActionMilliseconds - now)
      now = schedule.nextActionMilliseconds
    }
    #expect(waits == [100, 200, 400, 800, 1_600, 2_000, 2_000])
    schedule.succeeded(leaseTTLSeconds: 30, nowMilliseconds: now)
    schedule.failed(nowMilliseconds: now, jitter: { _ in 0 })
    #expect(schedule.nextActionMilliseconds - now == 100)
  }

  @Test func theCapFollowsTheTTLWithinItsBounds() {
    #expect(SessionSchedule(ttlSeconds: 1, nowMilliseconds: 0).backoffCapMilliseconds == 333)
    #expect(SessionSchedule(ttlSeconds: 3, nowMilliseconds: 0).backoffCapMilliseconds == 1_000)
    #expect(SessionSchedule(ttlSeconds: 60, nowMilliseconds: 0).backoffCapMilliseconds == 2_000)
    // A 1 s lease: the backoff stops doubling at a third of it, so retries land within the TTL.
    var schedule = SessionSchedule(ttlSeconds: 1, nowMilliseconds: 0)
    for _ in 0..<6 { schedule.failed(nowMilliseconds: 0, jitter: { _ in 0 }) }
    #expect(schedule.backoffMilliseconds == 333)
  }

  @Test func jitterIsDrawnUpToAFifthOfTheBackoffAndClampedThere() {
    var schedule = SessionSchedule(ttlSeconds: 30, nowMilliseconds: 0)
    var asked: [UInt64] = []
    schedule.failed(
      nowMilliseconds: 1_000,
      jitter: { maximum in
        asked.append(maximum)
        return maximum
      })
    #expect(schedule.nextActionMilliseconds == 1_000 + 100 + 20)
    schedule.failed(
      nowMilliseconds: 2_000,
      jitter: { maximum in
        asked.append(maximum)
        return 7
      })
    #expect(schedule.nextActionMilliseconds == 2_000 + 200 + 7)
    // A source that draws too much is clamped to the bound.
    schedule.failed(nowMilliseconds: 3_000, jitter: { _ in .max })
    #expect(schedule.nextActionMilliseconds == 3_000 + 400 + 80)
    #expect(asked == [20, 40])
  }

  @Test func anOwnKeyDeletedMakesTheNextCheckDueNow() {
    var schedule = SessionSchedule(ttlSeconds: 10, nowMilliseconds: 0)
    schedule.succeeded(leaseTTLSeconds: 10, nowMilliseconds: 0)
    #expect(!schedule.isDue(nowMilliseconds: 10))
    schedule.actNow(nowMilliseconds: 10)
    #expect(schedule.isDue(nowMilliseconds: 10))
  }
}
