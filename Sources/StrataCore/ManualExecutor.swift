// An executor that runs nothing until told to: the partner of `ManualClock` for code whose
// background tasks a test or the simulator must interleave by hand. A component that takes an
// executor for its owned tasks (`OwnedTasks(executor:)`, `ClusterNode.Settings.executor`) is given
// one; its jobs then wait, in the order they were enqueued, until `runUntilIdle` runs them on the
// calling thread.

import Synchronization

/// A task executor whose jobs run only in `runUntilIdle`, one at a time, in enqueue order.
/// Limit: one `runUntilIdle` runs at most `jobsPerRunMax` jobs (tasks that wake each other without
/// end are reported, not run forever).
public final class ManualExecutor: TaskExecutor {
  public static let jobsPerRunMax = 1_000_000

  private let jobs = Mutex<[UnownedJob]>([])

  public init() {}

  /// Jobs waiting to run.
  public var queued: Int { jobs.withLock { $0.count } }

  public func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    jobs.withLock { $0.append(job) }
  }

  /// Runs the queued jobs, and those they queue, on the calling thread until none is left; false
  /// when `jobsPerRunMax` ran and some were still queued.
  @discardableResult
  public func runUntilIdle() -> Bool {
    var ran = 0
    while let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
      job.runSynchronously(on: asUnownedTaskExecutor())
      ran += 1
      if ran >= Self.jobsPerRunMax { return queued == 0 }
    }
    return true
  }
}
