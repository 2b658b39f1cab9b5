// Shared by the test targets: run a program to completion (within a time limit) and collect what
// it printed.

public import Foundation
import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

public struct ProcessResult: Sendable {
  public var status: Int32
  /// Whether the program exited (rather than being ended by a signal).
  public var exited: Bool
  public var stdout: Data
  public var stderr: Data
  public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
  public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}

/// A program that ran past its time limit (it was killed); what it printed until then.
public struct ProcessTimedOut: Error, CustomStringConvertible {
  public var executable: String
  public var limit: Duration
  public var printed: String
  public var description: String { "\(executable) ran for more than \(limit) and was killed; it printed: \(printed)" }
}

/// Runs a program to completion, feeding `input` to its standard input. A program still running
/// after `timeout` (10 minutes unless given: no test's program should run that long, and a hung
/// one then fails its test by name instead of holding the suite) is killed (SIGKILL) and
/// `ProcessTimedOut` thrown. The wait is on a thread of its own, never on one of the cooperative
/// pool (which the tests running beside it need).
public func runProcess(
  _ executable: String, _ arguments: [String], input: Data? = nil, timeout: Duration? = .seconds(600)
)
  async throws -> ProcessResult
{
  try await onNewThread { try runToCompletion(executable, arguments, input: input, timeout: timeout) }
}

/// `runProcess` on the calling thread, which it blocks until the program ends: for callers that are
/// not async (a namespace set up in an initializer).
func runToCompletion(
  _ executable: String, _ arguments: [String], input: Data? = nil, timeout: Duration? = .seconds(600)
)
  throws -> ProcessResult
{
  let process = Process()
  process.executableURL = URL(fileURLWithPath: executable)
  process.arguments = arguments
  let stdoutPipe = Pipe()
  let stderrPipe = Pipe()
  let stdinPipe = Pipe()
  process.standardOutput = stdoutPipe
  process.standardError = stderrPipe
  process.standardInput = stdinPipe
  try launch(process)
  let killed = TimeoutFlag()
  let killer = DispatchWorkItem {
    guard process.isRunning else { return }
    killed.set()
    kill(process.processIdentifier, SIGKILL)
  }
  if let timeout {
    DispatchQueue(label: "strata.test.process-timeout").asyncAfter(
      deadline: .now() + .nanoseconds(Int(clamping: timeout.inNanoseconds)), execute: killer)
  }
  // Drain both pipes concurrently so a chatty child never blocks on a full pipe, each on a thread
  // of its own: on libdispatch's global pool (as wide as the machine) two readers blocked for the
  // child's whole life would starve everything else of the process that uses the pool, such as a
  // test's timer or a node's spread copy.
  let group = DispatchGroup()
  nonisolated(unsafe) var out = Data()
  nonisolated(unsafe) var err = Data()
  group.enter()
  Thread {
    out = stdoutPipe.fileHandleForReading.readDataToEndOfFile()
    group.leave()
  }.start()
  group.enter()
  Thread {
    err = stderrPipe.fileHandleForReading.readDataToEndOfFile()
    group.leave()
  }.start()
  if let input { stdinPipe.fileHandleForWriting.write(input) }
  try stdinPipe.fileHandleForWriting.close()
  group.wait()
  process.waitUntilExit()
  killer.cancel()
  if let timeout, killed.isSet {
    throw ProcessTimedOut(
      executable: executable, limit: timeout,
      printed: String(decoding: out, as: UTF8.self) + String(decoding: err, as: UTF8.self))
  }
  return ProcessResult(
    status: process.terminationStatus, exited: process.terminationReason == .exit, stdout: out, stderr: err)
}

/// Set once by the killer, read after the program ended.
private final class TimeoutFlag: Sendable {
  private let flag = Mutex(false)
  func set() { flag.withLock { $0 = true } }
  var isSet: Bool { flag.withLock { $0 } }
}
