// SharedParts: every part runs exactly once on up to the threads asked for, and a part that
// returns false stops the parts not yet taken.

import StrataCore
import Synchronization
import Testing

@Suite struct SharedPartsTests {
  @Test(arguments: [1, 2, 8])
  func everyPartRunsExactlyOnce(threads: Int) {
    let count = 1_000
    let runs = Mutex([Int](repeating: 0, count: count))
    let finished = SharedParts.run(count, threads: threads) { part in
      runs.withLock { $0[part] += 1 }
      return true
    }
    #expect(finished)
    #expect(runs.withLock { $0 } == [Int](repeating: 1, count: count))
  }

  @Test func noPartsRunsNothing() {
    let runs = Atomic<Int>(0)
    #expect(SharedParts.run(0, threads: 4) { _ in runs.add(1, ordering: .relaxed).newValue > 0 })
    #expect(runs.load(ordering: .relaxed) == 0)
  }

  /// On one thread the parts run in order, so the stop is exact: nothing after the failing part.
  @Test func aFailingPartStopsThePartsNotYetTaken() {
    let ran = Mutex<[Int]>([])
    let finished = SharedParts.run(100, threads: 1) { part in
      ran.withLock { $0.append(part) }
      return part != 6
    }
    #expect(!finished)
    #expect(ran.withLock { $0 } == Array(0...6))
  }

  /// On several threads a stop still ends the job early: at most the parts already taken by the
  /// other threads run after it.
  @Test func aFailingPartStopsTheOtherThreads() {
    let count = 100_000
    let runs = Atomic<Int>(0)
    let finished = SharedParts.run(count, threads: 4) { part in
      runs.add(1, ordering: .relaxed)
      return part != 10
    }
    #expect(!finished)
    #expect(runs.load(ordering: .relaxed) < count / 2)
  }
}
