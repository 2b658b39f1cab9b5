// Tells the service manager how a node's start and stop go, by systemd's notify protocol
// (`Type=notify`, deploy/systemd/strata.service): a status line with the start's progress, more
// time for a start that moves on, READY=1 once the node serves, STOPPING=1 when it stops. Written
// here rather than linking libsystemd: the protocol is one datagram of KEY=VALUE lines.

public import Logging
import StrataCore
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
  public func starting(_ progress: StartProgress) {
    let status = "starting: \(progress.summary)"
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
