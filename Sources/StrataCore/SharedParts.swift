// One way to spread independent parts of a large job (copying a batch, faulting an arena in) over
// a few threads, each taking the next part not yet taken.

import Dispatch
import Synchronization

public enum SharedParts {
  /// Calls `body` once with each part index of `0..<count`, on up to `threads` threads at once
  /// (libdispatch's `concurrentPerform`: the calling thread and the global pool, which is never
  /// wider than the machine), and returns when every call has returned. Each thread takes the next
  /// part not yet taken, so a thread that starts late (a pool thread still waking while the calling
  /// thread works) takes fewer parts instead of leaving the others to wait for its fixed share.
  /// When `body` returns `false` no part not yet taken is started (parts already running finish);
  /// the result is whether every part ran and returned `true`.
  @discardableResult
  public static func run(_ count: Int, threads: Int, _ body: @Sendable (Int) -> Bool) -> Bool {
    guard count > 0 else { return true }
    let taken = Atomic<Int>(0)
    let stopped = Atomic<Bool>(false)
    DispatchQueue.concurrentPerform(iterations: max(1, min(threads, count))) { _ in
      while !stopped.load(ordering: .relaxed),
        case let part = taken.wrappingAdd(1, ordering: .relaxed).oldValue, part < count
      {
        if !body(part) { stopped.store(true, ordering: .relaxed) }
      }
    }
    return !stopped.load(ordering: .relaxed)
  }
}
