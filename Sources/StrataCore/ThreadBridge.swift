// The one bridge between threads and Swift concurrency, both ways: async callers hand blocking
// work (disk I/O, blocking sockets, a client connection's requests) to a `WorkerPool` of threads
// of its own, and plain threads (a connection's thread, a C caller) wait for async work with
// `waitForTask`. Nothing blocking ever runs on the cooperative pool.

import Dispatch
import Foundation
import Synchronization

/// Runs blocking work for async callers on `threadCount` threads of its own, one job per thread
/// at a time. Each job goes to the thread with the fewest jobs queued or running (ties taken in
/// turn), so a job never waits behind a slow one while another thread is idle; a pool of one
/// thread runs its jobs in call order. A pool of
/// no threads (`threads: 0`) runs each job in its caller, before `run` returns: what a
/// deterministic simulation needs, whose run loop must know that no work goes on elsewhere.
///
/// Limits: at most `threadCount` threads and jobs running at once (a pool of one thread may run a
/// job on a thread waiting in `waitForTask` instead, still one at a time: `run`); at most
/// `queueDepthMax` jobs queued or running, past which a call throws `resourceExhausted` at once.
/// Cancellation: a call cancelled while its job waits in the queue returns `cancelled` at once and
/// the job never runs; a job already running is not interrupted (blocking work cannot be), and its
/// call returns its result.
public final class WorkerPool: Sendable {
  public let label: String
  public let threadCount: Int
  public let queueDepthMax: Int
  private let queues: [DispatchQueue]
  private let state: Mutex<Load>

  /// Jobs queued or running on each thread's queue; where the next search for the least-loaded
  /// queue starts (so that ties are taken in turn).
  private struct Load {
    var perQueue: [Int]
    var next = 0
    var queued: Int { perQueue.reduce(0, +) }
  }

  public init(label: String, threads: Int = 1, queueDepthMax: Int = .max) {
    precondition(threads >= 0 && queueDepthMax > 0, "a worker pool needs a thread count and at least one queue slot")
    self.label = label
    threadCount = threads
    self.queueDepthMax = queueDepthMax
    queues = (0..<threads).map { DispatchQueue(label: threads == 1 ? label : "\(label).\($0)") }
    state = Mutex(Load(perQueue: Array(repeating: 0, count: threads)))
  }

  /// Jobs queued or running now.
  public var queuedCount: Int { state.withLock { $0.queued } }

  /// Queues `work` that nobody waits for; it counts against the queue depth until it has run.
  public func submit(_ work: @escaping @Sendable () -> Void) throws(StrataError) {
    if queues.isEmpty { return work() }
    let index = try reserve()
    queues[index].async {
      work()
      self.finished(index)
    }
  }

  /// Runs `work` on a pool thread and returns its result to the awaiting task. From a thread waiting
  /// in `waitForTask` (`WaitingThread.mayBlockHere`), a pool of one thread runs the job on that
  /// thread instead, in turn with its other jobs (still one at a time, in call order): no hop there
  /// and back for a thread that would only wait. Larger pools always use their own threads, which
  /// bound how many jobs run at once.
  public func run<T: Sendable>(_ work: @escaping @Sendable () throws(StrataError) -> T) async throws(StrataError) -> T {
    if Task.isCancelled { throw StrataError(.cancelled, "\(label): cancelled before it was queued") }
    if queues.isEmpty { return try work() }
    if queues.count == 1 && WaitingThread.mayBlockHere {
      let index = try reserve()
      defer { finished(index) }
      return try runAndWait(work)
    }
    let index = try reserve()
    let job = Job<T>(label: label)
    let result = await withTaskCancellationHandler {
      await withCheckedContinuation { continuation in
        job.wait(continuation)
        queues[index].async {
          // The job leaves the queue's count before its caller resumes, so the caller sees it gone.
          job.run(work) { self.finished(index) }
        }
      }
    } onCancel: {
      job.cancel()
    }
    return try result.get()
  }

  /// The least-loaded queue, for one more job, or `resourceExhausted`.
  private func reserve() throws(StrataError) -> Int {
    let index: Int? = state.withLock { state in
      guard state.queued < queueDepthMax else { return nil }
      let count = state.perQueue.count
      var best = state.next
      for step in 1..<count {
        let candidate = (state.next + step) % count
        if state.perQueue[candidate] < state.perQueue[best] { best = candidate }
      }
      state.next = (best + 1) % count
      state.perQueue[best] += 1
      return best
    }
    guard let index else {
      throw StrataError(.resourceExhausted, "\(label): the queue is full (\(queueDepthMax) jobs waiting or running)")
    }
    return index
  }

  /// A job of queue `index` left it (ran, or was cancelled while it waited).
  private func finished(_ index: Int) {
    state.withLock { $0.perQueue[index] -= 1 }
  }

  /// Runs `work` on the pool's thread and waits for it, from a plain thread (never a Swift
  /// concurrency thread). For a pool of one thread: it runs after every job queued before it.
  public func runAndWait<T, Failure: Error>(_ work: () throws(Failure) -> T) throws(Failure) -> T {
    if queues.isEmpty { return try work() }
    let result = queues[0].sync { () -> Result<T, Failure> in
      do throws(Failure) { return .success(try work()) } catch { return .failure(error) }
    }
    return try result.get()
  }
}

/// One call's job: it runs, or is cancelled while it waits, exactly once, and its caller is resumed
/// exactly once.
private final class Job<T: Sendable>: Sendable {
  private enum Phase {
    case waiting(CheckedContinuation<Result<T, StrataError>, Never>?)
    case cancelled
    case running(CheckedContinuation<Result<T, StrataError>, Never>)
    case done
  }
  private let label: String
  private let phase = Mutex<Phase>(.waiting(nil))

  init(label: String) { self.label = label }

  func wait(_ continuation: CheckedContinuation<Result<T, StrataError>, Never>) {
    let cancelledAlready = phase.withLock { phase -> Bool in
      if case .cancelled = phase { return true }
      phase = .waiting(continuation)
      return false
    }
    if cancelledAlready { continuation.resume(returning: .failure(cancelled)) }
  }

  func cancel() {
    let waiter = phase.withLock { phase -> CheckedContinuation<Result<T, StrataError>, Never>?? in
      guard case .waiting(let continuation) = phase else { return nil }
      phase = .cancelled
      return .some(continuation)
    }
    if case .some(.some(let continuation)) = waiter { continuation.resume(returning: .failure(cancelled)) }
  }

  /// Runs `work` unless cancelled, then `finished`, then resumes the caller.
  func run(_ work: () throws(StrataError) -> T, finished: () -> Void) {
    let waiter = phase.withLock { phase -> CheckedContinuation<Result<T, StrataError>, Never>? in
      guard case .waiting(let continuation?) = phase else { return nil }
      phase = .running(continuation)
      return continuation
    }
    guard let waiter else { return finished() }  // cancelled while it waited
    let result: Result<T, StrataError>
    do throws(StrataError) { result = .success(try work()) } catch { result = .failure(error) }
    phase.withLock { $0 = .done }
    finished()
    waiter.resume(returning: result)
  }

  private var cancelled: StrataError { StrataError(.cancelled, "\(label): cancelled while it waited in the queue") }
}

/// A task executor backed by one serial dispatch queue: a long-lived task (a node's service) that
/// must make progress even when every cooperative thread is busy or blocked runs there.
public final class QueueExecutor: TaskExecutor {
  let queue: DispatchQueue

  public init(label: String) { queue = DispatchQueue(label: label) }

  public func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
  }
}

/// Runs `body` as a task on the calling thread and blocks that thread until the task ends. Call
/// only from a plain thread (a connection's, a C caller's), never from a Swift concurrency thread:
/// that thread would be blocked for as long as `body` runs. The task is not cancelled by anything
/// here; `body` bounds itself (deadlines).
///
/// The waiting thread is the task's executor: the task starts without a thread hop, resumes on this
/// thread after each suspension, and blocking work it hands to a pool of one thread runs right
/// here, inline (`WaitingThread.mayBlockHere`): a request from a C caller to a node crosses no
/// thread, as a blocking socket call would not. A process whose cooperative threads are all busy
/// still makes progress. Child tasks also run on this thread, but their blocking work hops to the
/// pools' threads as from any task, so the parts of a fan-out still run in parallel.
public func waitForTask<T: Sendable>(_ body: @escaping @Sendable () async throws(StrataError) -> T) throws(StrataError)
  -> T
{
  let thread = WaitingThread()
  let outcome = Mutex<Result<T, StrataError>?>(nil)
  Task(executorPreference: thread) {
    withUnsafeCurrentTask { thread.root = $0 }
    let result: Result<T, StrataError>
    do throws(StrataError) { result = .success(try await body()) } catch { result = .failure(error) }
    outcome.withLock { $0 = result }
    thread.finish()
  }
  thread.runUntilFinished()
  return try outcome.withLock { $0! }.get()
}

/// Runs `body` on a new plain thread (not one of Swift's cooperative pool), where it may block or
/// call `waitForTask`, and returns its result (or throws its error) to the awaiting task. The thread
/// ends with `body`.
public func onNewThread<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
  try await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, E>, Never>) in
    Thread.detachNewThread { continuation.resume(returning: Result { () throws(E) in try body() }) }
  }.get()
}

/// A plain thread blocked in `waitForTask`, serving as its task's executor: it runs the task's jobs
/// (and its children's) until the task has finished. Jobs still queued then, or arriving later
/// (a task the finished one left running), go to the global concurrent executor.
public final class WaitingThread: TaskExecutor, @unchecked Sendable {
  // @unchecked: `jobs`, `finished` and `closed` are touched only under `condition`'s lock; `root`
  // is written by the task's first job and read by its later ones, all on the waiting thread.
  fileprivate var root: UnsafeCurrentTask?
  private let condition = NSCondition()
  private var jobs: [UnownedJob] = []
  private var finished = false
  private var closed = false

  fileprivate init() {}

  /// The waiting thread that is running jobs on the current thread, if any.
  private static let key: pthread_key_t = {
    var key = pthread_key_t()
    precondition(pthread_key_create(&key, nil) == 0, "no thread-specific key left")
    return key
  }()

  /// True when the code running now is a `waitForTask` task itself (not a child) on its waiting
  /// thread: work that blocks may run here, inline, instead of hopping to a pool's thread (which
  /// would only leave this thread waiting for it).
  public static var mayBlockHere: Bool {
    guard let raw = pthread_getspecific(key) else { return false }
    let thread = Unmanaged<WaitingThread>.fromOpaque(raw).takeUnretainedValue()
    return withUnsafeCurrentTask { $0 != nil && $0 == thread.root }
  }

  public func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    condition.lock()
    guard !closed else {
      condition.unlock()
      return globalConcurrentExecutor.enqueue(ExecutorJob(job))
    }
    jobs.append(job)
    condition.signal()
    condition.unlock()
  }

  fileprivate func finish() {
    condition.lock()
    finished = true
    condition.signal()
    condition.unlock()
  }

  /// Runs jobs on this thread until the task has finished; later jobs go to the global executor.
  fileprivate func runUntilFinished() {
    let outer = pthread_getspecific(Self.key)  // a wait inside a job of another one
    pthread_setspecific(Self.key, Unmanaged.passUnretained(self).toOpaque())
    defer { pthread_setspecific(Self.key, outer) }
    condition.lock()
    while true {
      while jobs.isEmpty && !finished { condition.wait() }
      guard !finished else { break }
      let job = jobs.removeFirst()
      condition.unlock()
      job.runSynchronously(on: asUnownedTaskExecutor())
      condition.lock()
    }
    closed = true
    let left = jobs
    jobs = []
    condition.unlock()
    for job in left { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
  }
}

/// Lets plain threads wait until a condition over shared state holds, woken by `notify()` from
/// whoever changes that state: no polling, and a waiter is woken at the change, not at its next
/// poll. A `notify()` with no waiter costs one atomic load.
///
/// The order that makes it race-free: a changer changes the state, then calls `notify()`; a waiter
/// counts itself in under the condition's lock before it looks at the state, and keeps the lock
/// until `wait` releases it. So a change either happens before the waiter looks, or its `notify()`
/// sees the waiter and broadcasts under the lock.
/// Lock order: the condition's lock, then whatever `holds` takes; `notify()` must not be called
/// while holding a lock that `holds` takes.
public final class ChangeSignal: @unchecked Sendable {
  // NSCondition is thread-safe; `waiters` is atomic.
  private let condition = NSCondition()
  private let waiters = Atomic<Int>(0)
  private let blocked = Atomic<Int>(0)

  public init() {}

  /// Threads blocked now, having found their condition false: a change made from here on must wake them.
  public var blockedCount: Int { blocked.load(ordering: .sequentiallyConsistent) }

  /// Wakes the waiters to look again; call after each change that may make a waiter's condition hold.
  public func notify() {
    guard waiters.load(ordering: .sequentiallyConsistent) > 0 else { return }
    condition.lock()
    condition.broadcast()
    condition.unlock()
  }

  /// Blocks the calling thread until `holds()` is true (returns true) or `deadline` passes
  /// (returns false).
  public func wait(until deadline: Deadline, for holds: () -> Bool) -> Bool {
    condition.lock()
    waiters.add(1, ordering: .sequentiallyConsistent)
    defer {
      waiters.subtract(1, ordering: .sequentiallyConsistent)
      condition.unlock()
    }
    while !holds() {
      let now = MonotonicTime.nowNanoseconds
      guard !deadline.hasPassed(now: now) else { return false }
      blocked.add(1, ordering: .sequentiallyConsistent)
      if deadline == .never {
        condition.wait()
      } else {
        _ = condition.wait(until: Date(timeIntervalSinceNow: Double(deadline.nanoseconds - now) / 1e9))
      }
      blocked.subtract(1, ordering: .sequentiallyConsistent)
    }
    return true
  }
}
