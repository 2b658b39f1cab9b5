// Runs async work from a plain thread (a connection's thread) and waits for it: the storage API
// is async because promotion and demotion await disk I/O on the I/O pool. The work runs on a
// task executor of the caller's own (a serial dispatch queue), never on Swift's cooperative pool,
// so a node whose cooperative threads are all busy (or blocked) still serves its connections.

import Dispatch
public import StrataCore
import Synchronization

/// A task executor backed by one serial dispatch queue.
public final class QueueExecutor: TaskExecutor {
  let queue: DispatchQueue

  public init(label: String) { queue = DispatchQueue(label: label) }

  public func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
  }
}

private final class Outcome<T: Sendable>: Sendable {
  let result = Mutex<Result<T, StrataError>?>(nil)
  let done = DispatchSemaphore(value: 0)
}

/// Waits on the calling thread for `body`, run as a task on `executor`. Never call from a Swift
/// concurrency thread: it blocks the thread until the task ends.
public func blocking<T: Sendable>(
  on executor: QueueExecutor, _ body: @escaping @Sendable () async throws(StrataError) -> T
) throws(StrataError) -> T {
  let outcome = Outcome<T>()
  Task(executorPreference: executor) {
    let result: Result<T, StrataError>
    do throws(StrataError) {
      result = .success(try await body())
    } catch {
      result = .failure(error)
    }
    outcome.result.withLock { $0 = result }
    outcome.done.signal()
  }
  outcome.done.wait()
  return try outcome.result.withLock { $0! }.get()
}
