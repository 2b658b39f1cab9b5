// A bounded pool of threads for blocking disk I/O, so async callers (network event loops) never
// block on the disk: work waits in a bounded queue; past the bound callers get resourceExhausted.

import Dispatch
public import StrataCore
import Synchronization

/// Runs blocking closures on a fixed number of serial queues (one thread each at most).
public final class IOPool: Sendable {
  private let queues: [DispatchQueue]
  private let state: Mutex<(next: Int, queued: Int)>
  public let threadCount: Int
  public let queueDepthMax: Int

  public init(threads: Int, queueDepthMax: Int, label: String = "strata.io") {
    precondition(threads > 0 && queueDepthMax > 0, "an I/O pool needs at least one thread and one queue slot")
    threadCount = threads
    self.queueDepthMax = queueDepthMax
    queues = (0..<threads).map { DispatchQueue(label: "\(label).\($0)") }
    state = Mutex((0, 0))
  }

  /// Work queued or running now.
  public var queuedCount: Int { state.withLock { $0.queued } }

  /// Runs `work` on a pool thread and returns its result to the awaiting task.
  public func run<T: Sendable>(_ work: @escaping @Sendable () throws(StrataError) -> T) async throws(StrataError) -> T {
    let index: Int? = state.withLock { state in
      guard state.queued < queueDepthMax else { return nil }
      state.queued += 1
      state.next = (state.next + 1) % queues.count
      return state.next
    }
    guard let index else {
      throw StrataError(.resourceExhausted, "disk I/O queue is full (\(queueDepthMax) operations waiting)")
    }
    let result: Result<T, StrataError> = await withCheckedContinuation { continuation in
      queues[index].async {
        let outcome: Result<T, StrataError>
        do throws(StrataError) {
          outcome = .success(try work())
        } catch {
          outcome = .failure(error)
        }
        self.state.withLock { $0.queued -= 1 }
        continuation.resume(returning: outcome)
      }
    }
    return try result.get()
  }
}
