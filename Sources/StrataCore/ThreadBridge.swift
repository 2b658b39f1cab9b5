// The one bridge between threads and Swift concurrency, both ways: async callers hand blocking
// work (disk I/O, blocking sockets, a client connection's requests) to a `WorkerPool` of threads
// of its own, and plain threads (a connection's thread, a C caller) wait for async work with
// `waitForTask`. Nothing blocking ever runs on the cooperative pool.

import Dispatch
import Foundation
import Synchronization

/// Runs blocking work for async callers on `threadCount` threads of its own, one job per thread
/// at a time. A job starts at once on an idle thread; while every thread is busy it waits in the
/// pool, in the queue of its *share* (whose work it is: a tenant's namespace, or nil for the
/// node's own), and a thread that frees up takes the oldest job of the next share in turn. So no
/// job waits while a thread is idle, the jobs of one share start in call order (a pool of one
/// thread used by one share runs its jobs in call order), and a share with a long backlog delays
/// another share's job by at most one job of its own, never by its backlog. A pool of no threads
/// (`threads: 0`) runs each job in its caller, before `run` returns: what a deterministic
/// simulation needs, whose run loop must know that no work goes on elsewhere.
///
/// Limits: at most `threadCount` threads and jobs running at once (a pool of one thread may run a
/// job on a thread waiting in `waitForTask` instead, still one at a time: `run`); at most
/// `queueDepthMax` jobs queued or running, and `shareDepthMax` of one share (so one share cannot
/// fill the queue that the others need), past which a call throws `resourceExhausted` at once. A
/// full queue still takes a job of a share holding less than an even part of `queueDepthMax`, so
/// several shares at their limit cannot lock another out; the queue then holds at most twice its
/// depth.
/// Cancellation: a call cancelled while its job waits in the queue returns `cancelled` at once and
/// the job never runs; a job already running is not interrupted (blocking work cannot be), and its
/// call returns its result.
public final class WorkerPool: Sendable {
  public let label: String
  public let threadCount: Int
  public let queueDepthMax: Int
  public let shareDepthMax: Int
  private let threads: [DispatchQueue]
  private let schedule: Mutex<Schedule>

  /// A queued job: it runs its work (or finds its call cancelled), then counts itself out.
  private typealias Start = @Sendable () -> Void

  /// Which threads are idle, the jobs waiting for one by share, and the order in which the shares
  /// with waiting jobs take their turns.
  private struct Schedule {
    var idle: [Int]
    var waiting: [Namespace?: FIFO<Start>] = [:]
    var turns = FIFO<Namespace?>()
    /// Jobs queued or running, by share and in all.
    var perShare: [Namespace?: Int] = [:]
    var jobs = 0

    /// Counts in one more job of `share`, unless a limit is reached (nil: it was counted in).
    /// A full queue still takes the job of a share holding less than an even part of the depth
    /// (divided among the shares with jobs, this one counted), up to twice the depth in all: shares
    /// at their own limit can fill the queue, but never lock another share out of it.
    mutating func admit(_ share: Namespace?, depthMax: Int, shareDepthMax: Int) -> StrataError? {
      let ofShare = perShare[share, default: 0]
      guard ofShare < shareDepthMax else {
        return StrataError(
          .resourceExhausted,
          "\(share.map { "namespace '\($0.name)'" } ?? "the node's own work") has \(shareDepthMax) jobs waiting or running, its most"
        )
      }
      let evenPart = depthMax / (perShare.count + (ofShare == 0 ? 1 : 0))
      guard jobs < depthMax || (ofShare < evenPart && jobs - depthMax < depthMax) else {
        return StrataError(.resourceExhausted, "the queue is full (\(depthMax) jobs waiting or running)")
      }
      perShare[share] = ofShare + 1
      jobs += 1
      return nil
    }

    mutating func finished(_ share: Namespace?) {
      jobs -= 1
      let left = perShare[share, default: 1] - 1
      perShare[share] = left == 0 ? nil : left
    }

    /// Places an admitted job: the idle thread to start it on, or nil when it waits its turn.
    mutating func place(_ start: @escaping Start, of share: Namespace?) -> Int? {
      if let thread = idle.popLast() { return thread }
      if waiting[share, default: FIFO()].isEmpty { turns.append(share) }
      waiting[share, default: FIFO()].append(start)
      return nil
    }

    /// The job a thread that finished one runs next: the oldest of the next share in turn, which
    /// goes to the back of the turns if it has more waiting. Nil (the thread is idle) when none waits.
    mutating func next(for thread: Int) -> Start? {
      guard let share = turns.removeFirst() else {
        idle.append(thread)
        return nil
      }
      let start = waiting[share]!.removeFirst()!
      if waiting[share]!.isEmpty { waiting[share] = nil } else { turns.append(share) }
      return start
    }
  }

  public init(label: String, threads: Int = 1, queueDepthMax: Int = .max, shareDepthMax: Int? = nil) {
    precondition(threads >= 0 && queueDepthMax > 0, "a worker pool needs a thread count and at least one queue slot")
    self.label = label
    threadCount = threads
    self.queueDepthMax = queueDepthMax
    self.shareDepthMax = min(shareDepthMax ?? queueDepthMax, queueDepthMax)
    precondition(self.shareDepthMax > 0, "a share needs at least one queue slot")
    self.threads = (0..<threads).map { DispatchQueue(label: threads == 1 ? label : "\(label).\($0)") }
    schedule = Mutex(Schedule(idle: Array((0..<threads).reversed())))
  }

  /// Jobs queued or running now.
  public var queuedCount: Int { schedule.withLock { $0.jobs } }

  /// Jobs of one share queued or running now.
  public func queuedCount(of share: Namespace?) -> Int { schedule.withLock { $0.perShare[share, default: 0] } }

  /// Queues `work` that nobody waits for; it counts against the queue depth until it has run.
  public func submit(for share: Namespace? = nil, _ work: @escaping @Sendable () -> Void) throws(StrataError) {
    if threads.isEmpty { return work() }
    try admit(share)
    place(of: share) {
      work()
      self.finished(share)
    }
  }

  /// Runs `work` on a pool thread and returns its result to the awaiting task. From a thread waiting
  /// in `waitForTask` (`WaitingThread.mayBlockHere`), a pool of one thread that is idle runs the job
  /// on that thread instead (still one job at a time): no hop there and back for a thread that
  /// would only wait. Larger pools always use their own threads, which bound how many jobs run at once.
  public func run<T: Sendable>(
    for share: Namespace? = nil, _ work: @escaping @Sendable () throws(StrataError) -> T
  ) async throws(StrataError) -> T {
    if Task.isCancelled { throw StrataError(.cancelled, "\(label): cancelled before it was queued") }
    if threads.isEmpty { return try work() }
    try admit(share)
    if threads.count == 1 && WaitingThread.mayBlockHere, let thread = schedule.withLock({ $0.idle.popLast() }) {
      defer {
        finished(share)
        runNext(on: thread)
      }
      return try work()
    }
    let job = Job<T>(label: label)
    let result = await withTaskCancellationHandler {
      await withCheckedContinuation { continuation in
        job.wait(continuation)
        // The job leaves the share's count before its caller resumes, so the caller sees it gone.
        place(of: share) { job.run(work) { self.finished(share) } }
      }
    } onCancel: {
      job.cancel()
    }
    return try result.get()
  }

  /// Runs `work` on a pool thread and waits for it, from a plain thread (never a Swift concurrency
  /// thread); it is never refused for the queue's depth. For a pool of one thread used by one
  /// share: it runs after every job queued before it.
  public func runAndWait<T, Failure: Error>(_ work: @escaping @Sendable () throws(Failure) -> T) throws(Failure) -> T {
    if threads.isEmpty { return try work() }
    let outcome = HandedOver<Result<T, Failure>>()
    schedule.withLock { _ = $0.admit(nil, depthMax: .max, shareDepthMax: .max) }
    place(of: nil) {
      let result = Result { () throws(Failure) in try work() }
      self.finished(nil)
      outcome.hand(result)
    }
    return try outcome.take().get()
  }

  private func admit(_ share: Namespace?) throws(StrataError) {
    let refusal = schedule.withLock { $0.admit(share, depthMax: queueDepthMax, shareDepthMax: shareDepthMax) }
    if let refusal { throw StrataError(refusal.code, "\(label): \(refusal.message)") }
  }

  private func finished(_ share: Namespace?) {
    schedule.withLock { $0.finished(share) }
  }

  /// Starts an admitted job on an idle thread, or leaves it waiting for its share's turn.
  private func place(of share: Namespace?, _ start: @escaping Start) {
    guard let thread = schedule.withLock({ $0.place(start, of: share) }) else { return }
    threads[thread].async { self.runJobs(on: thread, first: start) }
  }

  /// A thread's work: its job, then the next one in turn, until none waits.
  private func runJobs(on thread: Int, first: @escaping Start) {
    var start: Start? = first
    while let job = start {
      job()
      start = schedule.withLock { $0.next(for: thread) }
    }
  }

  /// After a job ran on a waiting thread in place of the pool's: the pool's thread takes the next
  /// job in turn (queued meanwhile), or is idle again.
  private func runNext(on thread: Int) {
    guard let start = schedule.withLock({ $0.next(for: thread) }) else { return }
    threads[thread].async { self.runJobs(on: thread, first: start) }
  }
}

/// A value one thread hands to another that waits for it.
private final class HandedOver<Value>: @unchecked Sendable {
  // @unchecked: `value` is written once before `ready` is signalled and read after the wait.
  private var value: Value?
  private let ready = DispatchSemaphore(value: 0)

  func hand(_ value: Value) {
    self.value = value
    ready.signal()
  }

  func take() -> Value {
    ready.wait()
    return value!
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
/// here; `body` bounds itself (deadlines), or the caller bounds its wait (below).
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
  try waitForTask(until: .never, late: { _ in }, body)!
}

/// `waitForTask`, waiting at most until `deadline`: nil when the task had not ended by then. The
/// task is left to run on (work it waits for, such as a read of a disk that stopped answering,
/// cannot be taken back), its later jobs on the global executor, and `late` gets what it returns
/// if it succeeds, to give back what it holds (a lease, a reservation).
public func waitForTask<T: Sendable>(
  until deadline: Deadline, late: @escaping @Sendable (T) -> Void,
  _ body: @escaping @Sendable () async throws(StrataError) -> T
) throws(StrataError) -> T? {
  let thread = WaitingThread()
  let outcome = Mutex(TaskOutcome<T>.running)
  Task(executorPreference: thread) {
    withUnsafeCurrentTask { thread.root = $0 }
    let result: Result<T, StrataError>
    do throws(StrataError) { result = .success(try await body()) } catch { result = .failure(error) }
    let abandoned = outcome.withLock { outcome -> Bool in
      guard case .running = outcome else { return true }
      outcome = .ended(result)
      return false
    }
    if abandoned, case .success(let value) = result { late(value) }
    thread.finish()
  }
  thread.runUntilFinished(deadline: deadline)
  let result = outcome.withLock { outcome -> Result<T, StrataError>? in
    guard case .ended(let result) = outcome else {
      outcome = .abandoned
      return nil
    }
    return result
  }
  return try result?.get()
}

/// Where a `waitForTask` task stands.
private enum TaskOutcome<T: Sendable>: Sendable {
  case running
  case ended(Result<T, StrataError>)
  /// Its waiter's deadline passed first: its result goes to `late`.
  case abandoned
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

  /// Runs jobs on this thread until the task has finished or `deadline` has passed (checked
  /// between jobs); later jobs go to the global executor.
  fileprivate func runUntilFinished(deadline: Deadline) {
    let outer = pthread_getspecific(Self.key)  // a wait inside a job of another one
    pthread_setspecific(Self.key, Unmanaged.passUnretained(self).toOpaque())
    defer { pthread_setspecific(Self.key, outer) }
    condition.lock()
    while true {
      while jobs.isEmpty && !finished {
        let now = MonotonicTime.nowNanoseconds
        guard !deadline.hasPassed(now: now) else { break }
        if deadline == .never {
          condition.wait()
        } else {
          _ = condition.wait(until: Date(timeIntervalSinceNow: Double(deadline.nanoseconds - now) / 1e9))
        }
      }
      guard !finished, !jobs.isEmpty, !deadline.hasPassed() else { break }
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
