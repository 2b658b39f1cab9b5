// Runs async work from a plain thread (a connection's thread) and waits for it: the storage API
// is async because promotion and demotion await disk I/O on the I/O pool.

import Dispatch
public import StrataCore
import Synchronization

private final class Outcome<T: Sendable>: Sendable {
  let result = Mutex<Result<T, StrataError>?>(nil)
  let done = DispatchSemaphore(value: 0)
}

/// Waits on the calling thread for `body`, run as a task. Never call from a Swift concurrency
/// thread: it blocks the thread until the task ends.
func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws(StrataError) -> T) throws(StrataError) -> T {
  let outcome = Outcome<T>()
  Task {
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
