// The read-back of blocks a node dropped as damaged, as a pure value: which blocks are due, the
// retry schedule, the limit, and the copies a block owed other owners coming back with it.

import StrataCore
import StrataStorage
import Testing

@testable import StrataCluster

private func id(_ n: Int) -> BlockID {
  var bytes = [UInt8](repeating: 0, count: 32)
  bytes[31] = UInt8(n)
  return BlockID(namespace: try! Namespace("t"), key: BlockKey(bytes: bytes)!)
}

@Suite struct DamagedReadBackTests {
  @Test func theScheduleDoublesUpToItsCap() {
    let schedule = ReadBackSchedule(firstMilliseconds: 1_000, maxMilliseconds: 5_000, attemptsMax: 6)
    #expect((1...5).map { schedule.delay(after: $0) } == [1_000, 2_000, 4_000, 5_000, 5_000])
    #expect(ReadBackSchedule.standard.delay(after: 40) == 300_000)
  }

  /// A block that is not read back is tried again on the schedule, never sooner: blocks that
  /// arrive later do not spend the attempts of those waiting (each is due on its own time).
  @Test func eachBlockIsRetriedOnItsOwnScheduleAndGivenUpAfterTheLast() {
    var readBack = DamagedReadBack(
      limit: 10, schedule: ReadBackSchedule(firstMilliseconds: 1_000, maxMilliseconds: 4_000, attemptsMax: 3))
    readBack.record([(id(1), [])], now: 0)
    #expect(readBack.due(now: 0) == [id(1)])
    _ = readBack.attempted([id(1)], present: [], disowned: [], now: 0)
    #expect(readBack.due(now: 999).isEmpty && readBack.nextDue == 1_000)
    // A second block arrives: due at once, alone.
    readBack.record([(id(2), [])], now: 500)
    #expect(readBack.due(now: 500) == [id(2)])
    _ = readBack.attempted([id(2)], present: [], disowned: [], now: 500)
    #expect(readBack.due(now: 1_000) == [id(1)])
    _ = readBack.attempted([id(1)], present: [], disowned: [], now: 1_000)
    #expect(readBack.nextDue == 1_500)  // block 2's second attempt
    #expect(readBack.due(now: 2_999) == [id(2)])
    let last = readBack.attempted([id(1)], present: [], disowned: [], now: 3_000)
    #expect(last.givenUp == 1 && last.readBack.isEmpty)
    #expect(readBack.counts == DamagedReadBack.Counts(waiting: 1, readBack: 0, notFound: 1, leftOut: 0))
  }

  @Test func readBackDisownedAndLimitAreCounted() throws {
    var readBack = DamagedReadBack(limit: 2, schedule: .standard)
    let owner = try HostPort(parsing: "10.0.0.2:7000")
    #expect(readBack.record([(id(1), []), (id(2), [owner]), (id(3), [])], now: 0) == 2)
    #expect(readBack.counts.leftOut == 1 && readBack.takeLeftOut() == 1 && readBack.takeLeftOut() == 0)
    #expect(!readBack.hasDuty(id(1)) && readBack.hasDuty(id(2)))
    // The same block dropped again while it waits: the owners it owes are merged, not a new entry.
    let other = try HostPort(parsing: "10.0.0.3:7000")
    #expect(readBack.record([(id(2), [other])], now: 10) == 0)
    let outcome = readBack.attempted([id(1), id(2)], present: [id(2)], disowned: [id(1)], now: 20)
    #expect(outcome.readBack.map(\.id) == [id(2)] && outcome.readBack.first?.lacking == [owner, other])
    #expect(readBack.isEmpty && readBack.nextDue == nil)
    #expect(readBack.counts == DamagedReadBack.Counts(waiting: 0, readBack: 1, notFound: 0, leftOut: 1))
  }

  /// A block let go because the disk failed its write is first due after the schedule's first
  /// wait (a damaged one at once), and says it needs a working disk: an attempt the node makes
  /// while writes fail (it reads nothing) counts as one that found nothing, so it backs off.
  @Test func aBlockLetGoForAFailingDiskWaitsForTheSchedulesFirstStep() {
    var readBack = DamagedReadBack(
      limit: 10, schedule: ReadBackSchedule(firstMilliseconds: 1_000, maxMilliseconds: 8_000, attemptsMax: 5))
    readBack.record([(id(1), [])], now: 0, needsWorkingDisk: true)
    readBack.record([(id(2), [])], now: 0)
    #expect(readBack.due(now: 0) == [id(2)])
    #expect(readBack.needsWorkingDisk(id(1)) && !readBack.needsWorkingDisk(id(2)))
    #expect(readBack.due(now: 1_000) == [id(1), id(2)])
    // Postponed while the disk fails writes: tried again 1 s later, then 2 s.
    _ = readBack.attempted([id(1)], present: [], disowned: [], now: 1_000)
    #expect(readBack.due(now: 1_999) == [id(2)] && readBack.due(now: 2_000).contains(id(1)))
    let outcome = readBack.attempted([id(1)], present: [id(1)], disowned: [], now: 2_000)
    #expect(outcome.readBack.map(\.id) == [id(1)] && !readBack.needsWorkingDisk(id(1)))
  }
}
