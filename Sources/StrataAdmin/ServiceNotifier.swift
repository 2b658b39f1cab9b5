// Tells the service manager how a node's start and stop go, by systemd's notify protocol
// (`Type=notify`, deploy/systemd/strata.service): a status line with the start's progress, more
// time for a start (or a stop's flush) that moves on, READY=1 once the node serves, STOPPING=1 when it stops, and
// WATCHDOG=1 while its data plane accepts connections (`WatchdogSec`). Written here rather than
// linking libsystemd: the protocol is one datagram of KEY=VALUE lines.

public import Logging
public import StrataCore
public import StrataStorage
import StrataTCP
import Synchronization

/// The notify socket's messages. Without NOTIFY_SOCKET (not started by systemd, or a unit of
/// another type) there is none, and nothing is sent.
public final class ServiceNotifier: Sendable {
  /// A start may go this long without a step before systemd gives up on it: each step asks for
  /// this much more time (EXTEND_TIMEOUT_USEC), so a recovery of any length that keeps reading is
  /// waited for, and one whose disk stopped answering is not. Generous, because one step (the
  /// RAM arena's pre-fault) can take minutes where a VM's host must first hand the memory back.
  public static let stepTimeoutSeconds = 300

  private let socket: UnixDatagramSocket
  /// The socket's path ('@': abstract namespace).
  public let destination: String
  private let logger: Logger
  private struct State {
    var lastStatus = ""
    var failed = false
  }
  private let state = Mutex(State())

  /// The notifier of `socketPath` (NOTIFY_SOCKET's value); nil without one (or with one that is
  /// not a path or an abstract address).
  public init?(socketPath: String?, logger: Logger) {
    guard let path = socketPath, path.hasPrefix("/") || path.hasPrefix("@"), path.count > 1,
      let socket = try? UnixDatagramSocket()
    else { return nil }
    self.socket = socket
    destination = path
    self.logger = logger
  }

  /// One datagram: a `KEY=VALUE` line for each field, in order. A value's line breaks become
  /// spaces (each field is one line).
  public static func message(_ fields: [(String, String)]) -> String {
    fields.map { key, value in
      "\(key)=\(value.map { $0 == "\n" || $0 == "\r" ? " " : $0 }.reduce(into: "") { $0.append($1) })\n"
    }.joined()
  }

  /// The start moved on: its status line, and `stepTimeoutSeconds` more (sent when the line changes).
  public func starting(_ progress: StartProgress) { step("starting: \(progress.summary)") }

  /// The stop's flush of RAM blocks to NVMe moved on: its status line (whole percent), and
  /// `stepTimeoutSeconds` more, so systemd waits out a flush of any size that keeps writing
  /// instead of killing it at `TimeoutStopSec` (and losing the RAM blocks not yet written).
  public func flushing(_ progress: FlushProgress) {
    step(
      "stopping: writing RAM blocks to NVMe: \(progress.percent)% of \(ByteSize(bytes: UInt64(progress.bytesToWrite)))"
    )
  }

  /// A step of a start or stop: its status line and more time, sent when the line changes.
  private func step(_ status: String) {
    let changed = state.withLock { state in
      defer { state.lastStatus = status }
      return state.lastStatus != status
    }
    guard changed else { return }
    send([("STATUS", status), ("EXTEND_TIMEOUT_USEC", "\(Self.stepTimeoutSeconds * 1_000_000)")])
  }

  /// The node serves.
  public func ready(_ status: String) { send([("READY", "1"), ("STATUS", status)]) }

  /// The node stops.
  public func stopping(_ status: String) { send([("STOPPING", "1"), ("STATUS", status)]) }

  /// The node is alive: feeds systemd's watchdog.
  public func alive() { send([("WATCHDOG", "1")]) }

  /// The watchdog interval systemd set for this process (WATCHDOG_USEC, when WATCHDOG_PID is
  /// unset or names `pid`), in milliseconds; nil without a usable one.
  public static func watchdogMilliseconds(_ environment: [String: String], pid: Int32) -> UInt64? {
    if let owner = environment["WATCHDOG_PID"], Int32(owner) != pid { return nil }
    guard let text = environment["WATCHDOG_USEC"], let microseconds = UInt64(text), microseconds >= 1_000 else {
      return nil
    }
    return microseconds / 1_000
  }

  private func send(_ fields: [(String, String)]) {
    do throws(StrataError) {
      try socket.send(Array(Self.message(fields).utf8), to: destination)
    } catch {
      // Said once: a service manager that stopped listening (or one whose queue is full: the
      // send never waits) does not fill the log.
      let first = state.withLock { state in
        defer { state.failed = true }
        return !state.failed
      }
      if first { logger.warning("cannot notify the service manager", metadata: ["reason": "\(error.message)"]) }
    }
  }
}

/// Feeds systemd's watchdog at half its interval while the node's data plane is alive
/// (`problems` empty: `NodeServer.livenessProblems`); while it is not, it says why once and
/// stops feeding, so systemd restarts a node that can no longer accept connections.
public final class ServiceWatchdog: Sendable {
  private let task: Task<Void, Never>

  public init(
    notifier: ServiceNotifier, intervalMilliseconds: UInt64, logger: Logger, clock: any NodeClock = SystemClock(),
    problems: @escaping @Sendable () -> [String]
  ) {
    task = Task {
      var withheld = false
      while !Task.isCancelled {
        let found = problems()
        if found.isEmpty {
          notifier.alive()
          if withheld { logger.notice("feeding the service manager's watchdog again") }
          withheld = false
        } else if !withheld {
          withheld = true
          logger.error(
            "not feeding the service manager's watchdog: the node no longer accepts connections; it will be restarted",
            metadata: ["reason": "\(found.joined(separator: "; "))"])
        }
        await clock.sleep(milliseconds: max(1, intervalMilliseconds / 2))
      }
    }
  }

  /// Stops feeding the watchdog.
  public func stop() { task.cancel() }
}
