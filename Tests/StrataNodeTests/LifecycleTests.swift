// The lifecycle with fake services that record what happened: start order, reverse stop order,
// a failed start unwinding what had started, a stop that throws or overruns its deadline.

import Dispatch
import Foundation
import StrataCore
import StrataNode
import Synchronization
import Testing

/// What the fake services did, in order.
private final class Journal: Sendable {
  let entries = Mutex<[String]>([])
  func note(_ entry: String) { entries.withLock { $0.append(entry) } }
  var all: [String] { entries.withLock { $0 } }
}

private func service(
  _ name: String, _ journal: Journal, stopWithin: Duration = .seconds(5), failStart: Bool = false,
  failStop: Bool = false
) -> LifecycleService {
  LifecycleService(
    name, stopWithin: stopWithin,
    start: { () throws(StrataError) in
      if failStart { throw StrataError(.ioError, "\(name) cannot start") }
      journal.note("start \(name)")
    },
    stop: { () throws(StrataError) in
      journal.note("stop \(name)")
      if failStop { throw StrataError(.ioError, "\(name) cannot stop") }
    })
}

@Suite struct LifecycleTests {
  @Test func servicesStartInOrderAndStopInReverse() async throws {
    let journal = Journal()
    let lifecycle = Lifecycle()
    for name in ["storage", "cluster", "data plane", "admin"] { try await lifecycle.start(service(name, journal)) }
    #expect(lifecycle.started == ["storage", "cluster", "data plane", "admin"])
    let report = await lifecycle.stop()
    #expect(report.isClean && report.stopped == ["admin", "data plane", "cluster", "storage"])
    #expect(
      journal.all == [
        "start storage", "start cluster", "start data plane", "start admin",
        "stop admin", "stop data plane", "stop cluster", "stop storage",
      ])
    #expect(await lifecycle.stop().stopped.isEmpty, "a second stop stops nothing")
  }

  @Test func aFailedStartStopsWhatHadStartedAndNamesTheService() async {
    let journal = Journal()
    let lifecycle = Lifecycle()
    do {
      try await lifecycle.start(service("storage", journal))
      try await lifecycle.start(service("cluster", journal))
      try await lifecycle.start(service("data plane", journal, failStart: true))
      Issue.record("the failing start was not reported")
    } catch {
      guard case .startFailed(let name, let cause) = error else {
        Issue.record("wrong failure: \(error)")
        return
      }
      #expect(name == "data plane" && cause.code == .ioError && error.error.code == .ioError)
    }
    #expect(journal.all == ["start storage", "start cluster", "stop cluster", "stop storage"])
    await #expect(throws: LifecycleFailure.self) { try await lifecycle.start(service("late", journal)) }
    #expect(!journal.all.contains("start late"), "nothing starts once the lifecycle is stopping")
  }

  @Test func aStopThatThrowsIsReportedAndTheRestStillStop() async throws {
    let journal = Journal()
    let lifecycle = Lifecycle()
    try await lifecycle.start(service("storage", journal))
    try await lifecycle.start(service("cluster", journal, failStop: true))
    try await lifecycle.start(service("admin", journal))
    let report = await lifecycle.stop()
    #expect(report.stopped == ["admin", "cluster", "storage"] && report.failures.count == 1)
    guard case .stopFailed(let name, let cause)? = report.failures.first else {
      Issue.record("wrong failures: \(report.failures)")
      return
    }
    #expect(name == "cluster" && cause.code == .ioError)
    #expect(journal.all.suffix(3) == ["stop admin", "stop cluster", "stop storage"])
  }

  @Test func anOverdueStopIsReportedAtItsDeadlineAndTheRestStillStop() async throws {
    let journal = Journal()
    let release = DispatchSemaphore(value: 0)
    let lifecycle = Lifecycle()
    try await lifecycle.start(service("storage", journal))
    // A stop that blocks its thread (as joining a stuck thread would) until the test releases it.
    try await lifecycle.start(
      LifecycleService(
        "stuck", stopWithin: .milliseconds(200),
        stop: {
          journal.note("stop stuck begins")
          release.wait()
          journal.note("stop stuck ends")
        }))
    let began = ContinuousClock.now
    let report = await lifecycle.stop()
    let took = ContinuousClock.now - began
    // It waited for the deadline, and returned while the stuck stop was still blocked.
    #expect(took >= .milliseconds(200), "took \(took)")
    #expect(!journal.all.contains("stop stuck ends"))
    #expect(report.stopped == ["stuck", "storage"] && report.failures.count == 1)
    guard case .stopOverdue(let name, let after)? = report.failures.first else {
      Issue.record("wrong failures: \(report.failures)")
      return
    }
    #expect(name == "stuck" && after == .milliseconds(200) && report.failures[0].error.code == .timeout)
    #expect(journal.all == ["start storage", "stop stuck begins", "stop storage"])
    release.signal()
  }

  /// A stop with progress (a flush writing blocks) is waited for as long as it moves on, however
  /// long that is, and is overdue once it stops moving for `stopWithin`.
  @Test func aStopWithProgressIsWaitedForWhileItMovesOn() async throws {
    /// A stop bounded at 200 ms that moves on every 50 ms for `steps` steps, then waits for `end`.
    func stepping(_ steps: Int, then end: DispatchSemaphore? = nil) -> LifecycleService {
      let done = Atomic<Int>(0)
      return LifecycleService(
        "stepping", stopWithin: .milliseconds(200),
        stop: {
          for _ in 0..<steps {
            usleep(50_000)
            done.add(1, ordering: .relaxed)
          }
          end?.wait()
        }, progress: { done.load(ordering: .relaxed) })
    }
    // 600 ms in all, three times its bound.
    let moving = Lifecycle()
    try await moving.start(stepping(12))
    #expect(await moving.stop().isClean)

    // Moves on twice, then stops moving: overdue one bound after its last step.
    let stall = DispatchSemaphore(value: 0)
    defer { stall.signal() }
    let stalled = Lifecycle()
    try await stalled.start(stepping(2, then: stall))
    let began = ContinuousClock.now
    let report = await stalled.stop()
    let took = ContinuousClock.now - began
    guard case .stopOverdue(let name, _)? = report.failures.first else {
      Issue.record("not overdue: \(report.failures)")
      return
    }
    #expect(name == "stepping" && took >= .milliseconds(300), "took \(took)")
  }
}
