// Long-running work a long-lived object starts in the background (a node's replicator loop, its
// drain and repair passes): each task is owned, not detached. The owner cancels them all when it
// stops, and can wait for them to end, so no pass outlives the component that started it.

import Synchronization

/// Tasks an object owns. Each is forgotten when it ends; `cancelAll` cancels those running and
/// refuses new ones from then on. Limit: at most `limit` at once (a start past it is refused and
/// returns false), so a bug that starts passes in a loop cannot grow the set without bound.
public final class OwnedTasks: Sendable {
  public let limit: Int

  private struct State {
    var next: UInt64 = 0
    var running: [UInt64: Task<Void, Never>] = [:]
    var closed = false
    var idleWaiters: [CheckedContinuation<Void, Never>] = []
  }

  private let state = Mutex(State())
  /// Where the tasks run: nil, Swift's global executor; a simulation passes one its run loop drives.
  private let executor: (any TaskExecutor)?

  public init(limit: Int = 64, executor: (any TaskExecutor)? = nil) {
    precondition(limit > 0, "an owner may run at least one task")
    self.limit = limit
    self.executor = executor
  }

  /// Tasks running now.
  public var count: Int { state.withLock { $0.running.count } }

  /// Starts `operation` as an owned task; false (and nothing started) after `cancelAll` or at the limit.
  @discardableResult
  public func start(_ operation: @escaping @Sendable () async -> Void) -> Bool {
    state.withLock { state -> Bool in
      guard !state.closed, state.running.count < limit else { return false }
      let id = state.next
      state.next += 1
      // Registered before it can run: the task's own end (below) takes this same lock first.
      state.running[id] = Task(executorPreference: executor) { [self] in
        await operation()
        finished(id)
      }
      return true
    }
  }

  /// Cancels every running task; later starts are refused.
  public func cancelAll() {
    let running = state.withLock { state -> [Task<Void, Never>] in
      state.closed = true
      return Array(state.running.values)
    }
    for task in running { task.cancel() }
  }

  /// Returns once no owned task is running.
  public func waitUntilIdle() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let idle = state.withLock { state -> Bool in
        guard state.running.isEmpty else {
          state.idleWaiters.append(continuation)
          return false
        }
        return true
      }
      if idle { continuation.resume() }
    }
  }

  private func finished(_ id: UInt64) {
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.running[id] = nil
      guard state.running.isEmpty else { return [] }
      defer { state.idleWaiters.removeAll() }
      return state.idleWaiters
    }
    for waiter in waiters { waiter.resume() }
  }
}
