// A node's lifecycle: its services started in one stated order and stopped in the reverse order,
// each stop bounded by its own deadline, every failure typed. `strata serve` lists its services
// here once (docs/architecture.md, "Lifecycle") instead of ordering stops by hand.

import Dispatch
public import StrataCore
import Synchronization

/// One service of a node: how it starts, how it stops, and how long its stop may take.
public struct LifecycleService: Sendable {
  public var name: String
  /// The longest `stop` may run before the lifecycle reports it overdue and stops the next service;
  /// with `progress`, the longest it may run without moving on.
  public var stopWithin: Duration
  public var start: @Sendable () async throws(StrataError) -> Void
  public var stop: @Sendable () async throws(StrataError) -> Void
  /// A count that grows while `stop` moves on (blocks written, say): a stop of any length is waited
  /// for as long as it grows by `stopWithin`, and one that stops growing is overdue.
  public var progress: (@Sendable () -> Int)?

  /// `stop` may block its thread (joining threads, waiting for connections): it runs on a
  /// dispatch queue of its own, never on Swift's cooperative pool.
  public init(
    _ name: String, stopWithin: Duration, start: @escaping @Sendable () async throws(StrataError) -> Void = {},
    stop: @escaping @Sendable () async throws(StrataError) -> Void, progress: (@Sendable () -> Int)? = nil
  ) {
    self.name = name
    self.stopWithin = stopWithin
    self.start = start
    self.stop = stop
    self.progress = progress
  }
}

/// Why a service did not start or stop cleanly.
public enum LifecycleFailure: Error, Sendable, CustomStringConvertible {
  /// `start` threw; the services started before it were stopped again.
  case startFailed(service: String, StrataError)
  /// `stop` threw.
  case stopFailed(service: String, StrataError)
  /// `stop` ran past its deadline (with progress: went that long without moving on); the
  /// lifecycle went on without it.
  case stopOverdue(service: String, after: Duration)
  /// `start` was called after `stop` had begun.
  case stopping(service: String)

  public var description: String {
    switch self {
    case .startFailed(let service, let error): "\(service) did not start: \(error)"
    case .stopFailed(let service, let error): "\(service) did not stop cleanly: \(error)"
    case .stopOverdue(let service, let after): "\(service) was still stopping after \(after)"
    case .stopping(let service): "\(service) not started: the node is stopping"
    }
  }

  /// The failure as the node's error type (the CLI reports it and exits non-zero).
  public var error: StrataError {
    switch self {
    case .startFailed(_, let error): error
    case .stopFailed(_, let error): StrataError(error.code, description)
    case .stopOverdue: StrataError(.timeout, description)
    case .stopping: StrataError(.cancelled, description)
    }
  }
}

/// What `Lifecycle.stop()` did, service by service, in the order it stopped them.
public struct LifecycleReport: Sendable {
  public var stopped: [String] = []
  public var failures: [LifecycleFailure] = []
  public var isClean: Bool { failures.isEmpty }
}

/// Services started one by one (`start`) and stopped together in reverse order (`stop`).
public final class Lifecycle: Sendable {
  private struct State {
    var started: [LifecycleService] = []
    var stopping = false
  }

  private let state = Mutex(State())

  public init() {}

  /// The names of the services started so far, in start order.
  public var started: [String] { state.withLock { $0.started.map(\.name) } }

  /// Starts `service` now and records it for `stop`. When its start throws, the services started
  /// before it are stopped (in reverse order) and the failure is thrown.
  public func start(_ service: LifecycleService) async throws(LifecycleFailure) {
    guard !state.withLock({ $0.stopping }) else { throw .stopping(service: service.name) }
    do throws(StrataError) {
      try await service.start()
    } catch {
      _ = await stop()
      throw .startFailed(service: service.name, error)
    }
    state.withLock { $0.started.append(service) }
  }

  /// Stops every started service, last started first, each within its `stopWithin`. A stop that
  /// throws or overruns is reported and the next service still stops. Later calls stop nothing.
  public func stop() async -> LifecycleReport {
    let services = state.withLock { state -> [LifecycleService] in
      state.stopping = true
      defer { state.started = [] }
      return state.started.reversed()
    }
    var report = LifecycleReport()
    for service in services {
      if let failure = await stopOne(service) { report.failures.append(failure) }
      report.stopped.append(service.name)
    }
    return report
  }

  /// Runs one stop on a queue of its own (so an overdue stop holds up no other) and waits for it
  /// or its deadline, whichever comes first; a deadline the stop's progress passed moves on by
  /// `stopWithin`.
  private func stopOne(_ service: LifecycleService) async -> LifecycleFailure? {
    let answer = Mutex<CheckedContinuation<LifecycleFailure?, Never>?>(nil)
    let finish: @Sendable (LifecycleFailure?) -> Void = { failure in
      answer.withLock { continuation in
        continuation?.resume(returning: failure)
        continuation = nil
      }
    }
    return await withCheckedContinuation { continuation in
      answer.withLock { $0 = continuation }
      // A queue of its own: the global queues' few threads may all be blocked at shutdown.
      let deadlines = DispatchQueue(label: "strata.lifecycle.deadline")
      let within = DispatchTimeInterval.nanoseconds(Int(clamping: service.stopWithin.inNanoseconds))
      @Sendable func check(after seen: Int?) {
        deadlines.asyncAfter(deadline: .now() + within) {
          let now = service.progress?()
          if let now, now != seen {
            check(after: now)
          } else {
            finish(.stopOverdue(service: service.name, after: service.stopWithin))
          }
        }
      }
      check(after: service.progress?())
      Task(executorPreference: QueueExecutor(label: "strata.lifecycle.\(service.name)")) {
        do throws(StrataError) {
          try await service.stop()
          finish(nil)
        } catch {
          finish(.stopFailed(service: service.name, error))
        }
      }
    }
  }
}
