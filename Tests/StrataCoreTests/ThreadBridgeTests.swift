// The thread <-> async bridge: results and errors come back, the queue depth is enforced, a call
// cancelled while its job waits never runs the job, and plain threads wait for async work.

import Dispatch
import Foundation
import StrataCore
import StrataTestKit
import Synchronization
import Testing

/// A job that holds its worker thread until released, and says when it has started. Tests poll
/// `started` instead of waiting for it, so no Swift concurrency thread is ever blocked.
private final class Latch: Sendable {
  let started = Atomic<Bool>(false)
  let release = DispatchSemaphore(value: 0)

  func hold() {
    started.store(true, ordering: .releasing)
    release.wait()
  }

  var hasStarted: Bool { started.load(ordering: .acquiring) }
}

@Suite struct WorkerPoolTests {
  @Test func returnsResultsAndErrors() async throws {
    let pool = WorkerPool(label: "test.results", threads: 2)
    #expect(try await pool.run { () throws(StrataError) in 42 } == 42)
    await #expect(throws: StrataError.self) {
      try await pool.run { () throws(StrataError) -> Int in throw StrataError(.ioError, "disk on fire") }
    }
    #expect(pool.queuedCount == 0)
  }

  @Test func aFullQueueRefusesAtOnce() async throws {
    let pool = WorkerPool(label: "test.depth", threads: 1, queueDepthMax: 2)
    let latch = Latch()
    async let first: Void = pool.run { () throws(StrataError) in latch.hold() }
    #expect(try await eventually(within: 120) { latch.hasStarted })
    async let second: Int = pool.run { () throws(StrataError) in 2 }
    #expect(try await eventually(within: 120) { pool.queuedCount == 2 })
    do {
      _ = try await pool.run { () throws(StrataError) in 3 }
      Issue.record("a third job was accepted past a depth of 2")
    } catch {
      #expect(error.code == .resourceExhausted)
    }
    latch.release.signal()
    try await first
    #expect(try await second == 2)
    #expect(pool.queuedCount == 0)
  }

  @Test func aCancelledWaitingJobNeverRuns() async throws {
    let pool = WorkerPool(label: "test.cancel", threads: 1)
    let latch = Latch()
    let ran = Atomic<Bool>(false)
    async let holder: Void = pool.run { () throws(StrataError) in latch.hold() }
    #expect(try await eventually(within: 120) { latch.hasStarted })
    let waiting = Task {
      try await pool.run { () throws(StrataError) in ran.store(true, ordering: .relaxed) }
    }
    #expect(try await eventually(within: 120) { pool.queuedCount == 2 })
    waiting.cancel()
    // It returns while the thread is still held: the cancelled call does not wait for its turn.
    switch await waiting.result {
    case .success: Issue.record("a cancelled call returned success")
    case .failure(let error): #expect((error as? StrataError)?.code == .cancelled)
    }
    latch.release.signal()
    try await holder
    #expect(try await eventually(within: 120) { pool.queuedCount == 0 })
    let jobRan = ran.load(ordering: .relaxed)
    #expect(!jobRan, "the cancelled job ran")
  }

  @Test func aRunningJobFinishesDespiteCancellation() async throws {
    let pool = WorkerPool(label: "test.running", threads: 1)
    let latch = Latch()
    let call = Task {
      try await pool.run { () throws(StrataError) in
        latch.hold()
        return 7
      }
    }
    #expect(try await eventually(within: 120) { latch.hasStarted })
    call.cancel()
    latch.release.signal()
    #expect(try await call.value == 7)
  }

  /// A job goes to an idle thread, not behind a job that holds another: with one of two threads
  /// held, every later job runs on the other (in turn, they would alternate and every second one
  /// would wait for the held job).
  @Test func aJobNeverWaitsBehindAHeldOneWhileAThreadIsIdle() async throws {
    let pool = WorkerPool(label: "test.idle", threads: 2)
    let latch = Latch()
    async let held: Void = pool.run { () throws(StrataError) in latch.hold() }
    #expect(try await eventually(within: 120) { latch.hasStarted })
    let ran = Atomic<Int>(0)
    let later = Task {
      for _ in 0..<4 { try await pool.run { () throws(StrataError) in _ = ran.add(1, ordering: .relaxed) } }
    }
    let allRan = try await eventually(within: 30) { ran.load(ordering: .relaxed) == 4 }
    #expect(allRan, "\(ran.load(ordering: .relaxed)) of 4 jobs ran while one thread was held")
    latch.release.signal()
    try await held
    try await later.value
    #expect(pool.queuedCount == 0)
  }

  @Test func aSingleThreadRunsJobsInOrder() async throws {
    let pool = WorkerPool(label: "test.order")
    let order = Mutex<[Int]>([])
    for index in 0..<20 { try pool.submit { order.withLock { $0.append(index) } } }
    let last = try await pool.run { () throws(StrataError) in order.withLock { $0 } }
    #expect(last == Array(0..<20))
  }
}

extension WorkerPoolTests {
  /// Shares take turns for a busy pool's threads: with the only thread held, six jobs of one
  /// namespace queued and then one of another, the other's job runs second, not last; each
  /// share's own jobs still run in call order.
  @Test func sharesTakeTurnsForABusyPool() async throws {
    let pool = WorkerPool(label: "test.shares", threads: 1)
    let (busy, other) = (try Namespace("busy"), try Namespace("other"))
    let latch = Latch()
    let order = Mutex<[String]>([])
    try pool.submit(for: busy) { latch.hold() }
    #expect(try await eventually(within: 120) { latch.hasStarted })
    for index in 0..<5 { try pool.submit(for: busy) { order.withLock { $0.append("busy \(index)") } } }
    try pool.submit(for: other) { order.withLock { $0.append("other") } }
    #expect(pool.queuedCount == 7 && pool.queuedCount(of: busy) == 6 && pool.queuedCount(of: other) == 1)
    latch.release.signal()
    #expect(try await eventually(within: 120) { pool.queuedCount == 0 })
    #expect(order.withLock { $0 } == ["busy 0", "other", "busy 1", "busy 2", "busy 3", "busy 4"])
  }

  /// One share cannot fill the queue: past its own depth its calls are refused, naming it, while
  /// another share's are still taken.
  @Test func oneShareCannotFillTheQueue() async throws {
    let pool = WorkerPool(label: "test.share-depth", threads: 1, queueDepthMax: 8, shareDepthMax: 2)
    let (busy, other) = (try Namespace("busy"), try Namespace("other"))
    let latch = Latch()
    try pool.submit(for: busy) { latch.hold() }
    try pool.submit(for: busy) {}
    do {
      try pool.submit(for: busy) {}
      Issue.record("a third job of one share was taken past its depth of 2")
    } catch {
      #expect(error.code == .resourceExhausted && error.message.contains("namespace 'busy'"), "\(error)")
    }
    try pool.submit(for: other) {}
    #expect(pool.queuedCount == 3)
    latch.release.signal()
    #expect(try await eventually(within: 120) { pool.queuedCount == 0 })
  }

  /// Shares at their own limit can fill the queue but not lock another share out: a full queue
  /// still takes a newcomer's job while it holds less than an even part of the depth (4 jobs
  /// among 3 shares: 1), then refuses it. (With the full queue refusing everyone, the newcomer's
  /// first job was refused.)
  @Test func sharesAtTheirLimitCannotLockAnotherOut() async throws {
    let pool = WorkerPool(label: "test.lockout", threads: 1, queueDepthMax: 4, shareDepthMax: 2)
    let (busy, other, late) = (try Namespace("busy"), try Namespace("other"), try Namespace("late"))
    let latch = Latch()
    try pool.submit(for: busy) { latch.hold() }
    try pool.submit(for: busy) {}
    for _ in 0..<2 { try pool.submit(for: other) {} }
    #expect(pool.queuedCount == 4)
    try pool.submit(for: late) {}
    do {
      try pool.submit(for: late) {}
      Issue.record("a share past its even part of a full queue was taken")
    } catch {
      #expect(error.code == .resourceExhausted && error.message.contains("the queue is full"), "\(error)")
    }
    #expect(pool.queuedCount == 5 && pool.queuedCount(of: late) == 1)
    latch.release.signal()
    #expect(try await eventually(within: 120) { pool.queuedCount == 0 })
  }

  /// `runAndWait` from a plain thread runs on the pool's thread after the jobs queued before it.
  @Test func runAndWaitRunsAfterTheJobsQueuedBeforeIt() async throws {
    let pool = WorkerPool(label: "test.run-and-wait", threads: 1)
    let order = Mutex<[Int]>([])
    let seen = try await onNewThread { () throws(StrataError) -> [Int] in
      for index in 0..<5 { try pool.submit { order.withLock { $0.append(index) } } }
      return pool.runAndWait { order.withLock { $0 } }
    }
    #expect(seen == Array(0..<5))
    #expect(pool.queuedCount == 0)
  }
}

extension WorkerPoolTests {
  /// A pool of no threads (the simulator's storage) runs each job in its caller: done by the time
  /// `submit` returns, results and errors as from threads, nothing ever queued.
  @Test func aPoolOfNoThreadsRunsEachJobInItsCaller() async throws {
    let pool = WorkerPool(label: "test.inline", threads: 0, queueDepthMax: 1)
    let ran = Mutex(0)
    for _ in 0..<3 { try pool.submit { ran.withLock { $0 += 1 } } }
    #expect(ran.withLock { $0 } == 3 && pool.queuedCount == 0)
    #expect(try await pool.run { () throws(StrataError) in ran.withLock { $0 } } == 3)
    await #expect(throws: StrataError.self) {
      try await pool.run { () throws(StrataError) -> Int in throw StrataError(.ioError, "disk") }
    }
    #expect(pool.runAndWait { 7 } == 7)
  }
}

@Suite struct WaitForTaskTests {
  @Test func aPlainThreadWaitsForAsyncWork() async throws {
    // From a dispatch thread, as a connection's thread or a C caller would.
    let (value, failure) = await withCheckedContinuation { continuation in
      DispatchQueue(label: "test.plain-thread").async {
        let value = try? waitForTask { () async throws(StrataError) -> Int in
          try? await Task.sleep(for: .milliseconds(10))
          return 5
        }
        var failure: StrataError.Code?
        do throws(StrataError) {
          _ = try waitForTask { () async throws(StrataError) -> Int in throw StrataError(.timeout, "too late") }
        } catch {
          failure = error.code
        }
        continuation.resume(returning: (value, failure))
      }
    }
    #expect(value == 5)
    #expect(failure == .timeout)
  }

  /// Where a task that a plain thread waits for runs, and where the blocking work it hands to a
  /// pool of one thread runs: on the waiting thread itself, no hop. A child task (a fan-out's part)
  /// runs on the waiting thread too, but its blocking work goes to the pool's thread, so that the
  /// parts run in parallel; from an ordinary task, always the pool's thread.
  @Test func theWaitingThreadRunsItsTaskAndItsBlockingWork() async throws {
    let pool = WorkerPool(label: "test.connection")
    let seen = await onNewThread { () -> [String: Bool] in
      let waiting = pthread_self()
      let answer = try? waitForTask { () async throws(StrataError) -> [String: Bool] in
        let taskHere = pthread_equal(pthread_self(), waiting) != 0
        let poolHere = try await pool.run { () throws(StrataError) in pthread_equal(pthread_self(), waiting) != 0 }
        let mayBlock = WaitingThread.mayBlockHere
        async let child = { () async -> (Bool, Bool, Bool?) in
          (
            pthread_equal(pthread_self(), waiting) != 0, WaitingThread.mayBlockHere,
            try? await pool.run { () throws(StrataError) in pthread_equal(pthread_self(), waiting) != 0 }
          )
        }()
        let (childHere, childMayBlock, childPoolHere) = await child
        // After a suspension the task resumes on the waiting thread.
        try? await Task.sleep(for: .milliseconds(1))
        let resumedHere = pthread_equal(pthread_self(), waiting) != 0
        return [
          "task": taskHere, "pool": poolHere, "mayBlock": mayBlock, "child": childHere,
          "childMayBlock": childMayBlock, "childPool": childPoolHere ?? true, "resumed": resumedHere,
        ]
      }
      return answer ?? [:]
    }
    #expect(
      seen == [
        "task": true, "pool": true, "mayBlock": true, "child": true, "childMayBlock": false, "childPool": false,
        "resumed": true,
      ])
    // From an ordinary task: never inline.
    #expect(!WaitingThread.mayBlockHere)
    #expect(pool.queuedCount == 0)
  }

  /// `onNewThread` runs its body on a thread of its own, off the cooperative pool, and hands back
  /// what the body throws with its type.
  @Test func aNewThreadHandsBackItsValueOrItsTypedError() async {
    let caller = pthread_self()
    let elsewhere = await onNewThread { pthread_equal(pthread_self(), caller) == 0 && !Thread.isMainThread }
    #expect(elsewhere)
    var failure: StrataError.Code?
    do throws(StrataError) {
      _ = try await onNewThread { () throws(StrataError) -> Int in throw StrataError(.timeout, "too late") }
    } catch {
      failure = error.code
    }
    #expect(failure == .timeout)
  }

  /// A task started by the one waited for, and not awaited by it, still finishes after the waiting
  /// thread has gone back to its caller: it never needs that thread.
  @Test func aTaskLeftBehindFinishesAfterTheWaitEnds() async throws {
    let gate = Gate()
    let leftBehind = await onNewThread { () -> Task<Int, Never>? in
      try? waitForTask { () async throws(StrataError) -> Task<Int, Never> in
        Task {
          await gate.wait()
          return 7
        }
      }
    }
    gate.open()
    #expect(await leftBehind?.value == 7)
  }

  /// A wait with a deadline returns nil once it passes while the task still waits (a read of a
  /// disk that stopped answering); the task runs on, and what it returns goes to `late`. A task
  /// that ends in time returns its value and `late` hears nothing; a late failure is dropped.
  @Test func aWaitWithADeadlineLeavesTheTaskToItsLateHandler() async throws {
    let gate = Gate()
    let lateValues = Mutex<[Int]>([])
    let late: @Sendable (Int) -> Void = { value in lateValues.withLock { $0.append(value) } }
    let (abandoned, waited) = await onNewThread { () -> (Int??, Duration) in
      let began = ContinuousClock.now
      let value = try? waitForTask(until: .after(milliseconds: 200), late: late) {
        () async throws(StrataError) -> Int in
        await gate.wait()
        return 11
      }
      return (value, ContinuousClock.now - began)
    }
    #expect(abandoned == .some(nil))
    #expect(waited >= .milliseconds(200) && waited < .seconds(10))
    #expect(lateValues.withLock { $0 }.isEmpty)
    gate.open()
    #expect(try await eventually(within: 10) { lateValues.withLock { $0 } == [11] })

    let inTime = await onNewThread { () -> Int?? in
      try? waitForTask(until: .after(milliseconds: 60_000), late: late) { () async throws(StrataError) -> Int in
        try? await Task.sleep(for: .milliseconds(5))
        return 12
      }
    }
    #expect(inTime == .some(12))

    let failing = Gate()
    let failed = await onNewThread { () -> Int?? in
      try? waitForTask(until: .after(milliseconds: 50), late: late) { () async throws(StrataError) -> Int in
        await failing.wait()
        throw StrataError(.ioError, "failed after the deadline")
      }
    }
    #expect(failed == .some(nil))
    failing.open()
    // A task that succeeds afterwards is seen by `late`, so one that fails would have been by now.
    let marker = Gate()
    _ = await onNewThread { () -> Int?? in
      try? waitForTask(until: .after(milliseconds: 50), late: late) { () async throws(StrataError) -> Int in
        await marker.wait()
        return 13
      }
    }
    marker.open()
    #expect(try await eventually(within: 10) { lateValues.withLock { $0 }.contains(13) })
    #expect(lateValues.withLock { $0 } == [11, 13])
  }
}

/// Opens once; every `wait` before or after returns once it is open.
final class Gate: Sendable {
  private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

  func wait() async {
    await withCheckedContinuation { continuation in
      let resumeNow = state.withLock { state -> Bool in
        if state.open { return true }
        state.waiters.append(continuation)
        return false
      }
      if resumeNow { continuation.resume() }
    }
  }

  func open() {
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.open = true
      defer { state.waiters = [] }
      return state.waiters
    }
    for waiter in waiters { waiter.resume() }
  }
}

@Suite struct ChangeSignalTests {
  /// Runs `body` on a thread of its own; the semaphore says when it has returned.
  func onThread(_ body: @escaping @Sendable () -> Void) -> DispatchSemaphore {
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
      body()
      done.signal()
    }
    return done
  }

  @Test func aWaitingThreadIsWokenByTheChangeItWaitsFor() {
    let signal = ChangeSignal()
    let changed = Atomic<Bool>(false)
    let result = Atomic<Bool>(false)
    let done = onThread {
      result.store(signal.wait(until: .never) { changed.load(ordering: .acquiring) }, ordering: .releasing)
    }
    // The waiter is inside `wait` before the change, so the wake-up path (not the first look) is tested.
    while signal.blockedCount == 0 { sched_yield() }
    signal.notify()  // a notify without the change: the waiter looks again and goes on waiting
    #expect(done.wait(timeout: .now() + .milliseconds(50)) == .timedOut)
    changed.store(true, ordering: .releasing)
    signal.notify()
    #expect(done.wait(timeout: .now() + .seconds(30)) == .success)
    let waitEnded = result.load(ordering: .acquiring)
    #expect(waitEnded)
    #expect(signal.blockedCount == 0)
  }

  @Test func aWaitEndsAtItsDeadlineOrAtOnceWhenTheConditionHolds() {
    let signal = ChangeSignal()
    #expect(!signal.wait(until: .after(milliseconds: 20)) { false })
    #expect(signal.wait(until: Deadline(nanoseconds: 0)) { true })
    #expect(!signal.wait(until: Deadline(nanoseconds: 0)) { false })
  }
}
