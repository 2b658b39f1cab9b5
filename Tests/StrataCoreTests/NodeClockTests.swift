// The injected clock and owned tasks: a ManualClock's sleepers wake exactly when `advance` reaches
// their ends (in order), a cancelled sleep returns at once, waiters are bounded; owned tasks are
// cancelled by their owner's stop and refused afterwards.

import StrataCore
import StrataTestKit
import Synchronization
import Testing

@Suite struct ManualClockTests {
  @Test func sleepersWakeWhenTheClockReachesTheirEndsInOrder() async throws {
    let clock = ManualClock(milliseconds: 100)
    let woke = Mutex<[Int]>([])
    let tasks = OwnedTasks()
    for (index, milliseconds) in [(0, 300), (1, 100), (2, 200), (3, 100)] {
      tasks.start {
        await clock.sleep(milliseconds: UInt64(milliseconds))
        woke.withLock { $0.append(index) }
      }
      // Each sleeper registers before the next starts: the order among equal ends is call order.
      #expect(try await eventually(within: 30) { clock.sleepers == index + 1 })
    }
    clock.advance(milliseconds: 99)
    #expect(clock.sleepers == 4)
    clock.advance(milliseconds: 1)
    #expect(clock.sleepers == 2)
    #expect(try await eventually(within: 30) { woke.withLock { $0.count } == 2 })
    clock.advance(milliseconds: 250)
    await tasks.waitUntilIdle()
    #expect(clock.sleepers == 0)
    #expect(Set(woke.withLock { $0 }) == [0, 1, 2, 3])
    #expect(Set(woke.withLock { Array($0.prefix(2)) }) == [1, 3])
    #expect(clock.nowMilliseconds() == 450)
  }

  @Test func aCancelledSleepReturnsAtOnce() async throws {
    let clock = ManualClock()
    let sleeper = Task { await clock.sleep(milliseconds: 60_000) }
    #expect(try await eventually(within: 30) { clock.sleepers == 1 })
    sleeper.cancel()
    await sleeper.value
    #expect(clock.sleepers == 0)
    #expect(clock.nowMilliseconds() == 0)

    // Cancelled before it begins: it never waits.
    let early = Task {
      withUnsafeCurrentTask { $0?.cancel() }
      await clock.sleep(milliseconds: 60_000)
    }
    await early.value
    #expect(clock.sleepers == 0)
  }

  @Test func aZeroSleepAndTheWallClockFollowTheMonotonicOne() async {
    let clock = ManualClock(milliseconds: 5, wallMilliseconds: 1_000_005)
    await clock.sleep(milliseconds: 0)
    clock.advance(milliseconds: 995)
    #expect(clock.nowMilliseconds() == 1_000)
    #expect(clock.wallMilliseconds() == 1_001_000)
  }

  @Test func theSystemClockMovesForwardAndSleeps() async {
    let clock = SystemClock()
    let before = clock.nowMilliseconds()
    await clock.sleep(milliseconds: 20)
    #expect(clock.nowMilliseconds() >= before + 20)
    // After 2026-01-01: the wall clock is the real one, in milliseconds.
    #expect(clock.wallMilliseconds() > 1_767_225_600_000)
  }
}

@Suite struct OwnedTasksTests {
  @Test func cancelAllStopsRunningTasksAndRefusesNewOnes() async throws {
    let clock = ManualClock()
    let tasks = OwnedTasks()
    let ended = Atomic<Int>(0)
    for _ in 0..<3 {
      #expect(
        tasks.start {
          await clock.sleep(milliseconds: 3_600_000)
          if Task.isCancelled { ended.add(1, ordering: .relaxed) }
        })
    }
    #expect(try await eventually(within: 30) { clock.sleepers == 3 })
    #expect(tasks.count == 3)
    tasks.cancelAll()
    await tasks.waitUntilIdle()
    #expect(ended.load(ordering: .relaxed) == 3)
    #expect(tasks.count == 0)
    #expect(!tasks.start {})
  }

  /// Tasks owned on a `ManualExecutor` run only when it is told to, in the order they became
  /// ready; a sleeper woken by its clock waits for the executor too. This is how the simulator
  /// interleaves a node's background work: nothing here waits on real time or another thread.
  @Test func tasksOnAManualExecutorRunOnlyWhenToldInOrder() {
    let executor = ManualExecutor()
    let clock = ManualClock()
    let tasks = OwnedTasks(executor: executor)
    let steps = Mutex<[String]>([])
    for name in ["a", "b"] {
      tasks.start {
        steps.withLock { $0.append("\(name) starts") }
        await clock.sleep(milliseconds: name == "a" ? 200 : 100)
        steps.withLock { $0.append("\(name) wakes") }
      }
    }
    #expect(steps.withLock { $0 }.isEmpty && executor.queued == 2 && tasks.count == 2)
    #expect(executor.runUntilIdle())
    #expect(steps.withLock { $0 } == ["a starts", "b starts"])
    #expect(clock.sleepers == 2 && clock.nextWakeMilliseconds == 100)
    // Both sleepers are due: they wake in the order of their ends, once the executor runs.
    clock.advance(milliseconds: 250)
    #expect(steps.withLock { $0.count } == 2 && executor.queued == 2 && clock.nextWakeMilliseconds == nil)
    executor.runUntilIdle()
    #expect(steps.withLock { $0 } == ["a starts", "b starts", "b wakes", "a wakes"])
    #expect(tasks.count == 0 && executor.queued == 0)
  }

  @Test func startsPastTheLimitAreRefused() async throws {
    let clock = ManualClock()
    let tasks = OwnedTasks(limit: 2)
    #expect(tasks.start { await clock.sleep(milliseconds: 10) })
    #expect(tasks.start { await clock.sleep(milliseconds: 10) })
    #expect(!tasks.start {})
    #expect(try await eventually(within: 30) { clock.sleepers == 2 })
    clock.advance(milliseconds: 10)
    await tasks.waitUntilIdle()
    #expect(tasks.start {})
    await tasks.waitUntilIdle()
  }
}
