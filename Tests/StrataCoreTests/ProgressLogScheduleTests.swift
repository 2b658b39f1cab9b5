// ProgressLogSchedule: silent for the first interval, then at most one report an interval, counted
// from the report before (a late report does not make the next one early).

import StrataCore
import Testing

@Suite struct ProgressLogScheduleTests {
  @Test func reportsAtMostOnceAnIntervalAfterTheFirst() {
    var schedule = ProgressLogSchedule(startMilliseconds: 1_000, intervalMilliseconds: 5_000)
    let asked: [UInt64] = [1_000, 3_000, 5_999, 6_000, 6_001, 10_999, 11_000, 19_000, 23_999, 24_000]
    var due: [UInt64] = []
    for now in asked where schedule.isDue(nowMilliseconds: now) { due.append(now) }
    #expect(due == [6_000, 11_000, 19_000, 24_000])
  }

  /// A due time past the clock's end is held at its last value, never wrapped to a time long past.
  @Test func aDueTimePastTheClocksEndIsHeldAtItsLastValue() {
    var schedule = ProgressLogSchedule(startMilliseconds: .max - 10, intervalMilliseconds: 5_000)
    let early = schedule.isDue(nowMilliseconds: .max - 5)
    let atTheEnd = schedule.isDue(nowMilliseconds: .max)
    #expect(!early && atTheEnd)
  }
}
