// Shared by the test targets: run a program to completion and collect what it printed.

public import Foundation

public struct ProcessResult: Sendable {
  public var status: Int32
  public var stdout: Data
  public var stderr: Data
  public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
  public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}

/// Runs a program to completion, feeding `input` to its standard input.
public func runProcess(_ executable: String, _ arguments: [String], input: Data? = nil) throws -> ProcessResult {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: executable)
  process.arguments = arguments
  let stdoutPipe = Pipe()
  let stderrPipe = Pipe()
  let stdinPipe = Pipe()
  process.standardOutput = stdoutPipe
  process.standardError = stderrPipe
  process.standardInput = stdinPipe
  try process.run()
  // Drain both pipes concurrently so a chatty child never blocks on a full pipe.
  let group = DispatchGroup()
  nonisolated(unsafe) var out = Data()
  nonisolated(unsafe) var err = Data()
  DispatchQueue.global().async(group: group) { out = stdoutPipe.fileHandleForReading.readDataToEndOfFile() }
  DispatchQueue.global().async(group: group) { err = stderrPipe.fileHandleForReading.readDataToEndOfFile() }
  if let input { stdinPipe.fileHandleForWriting.write(input) }
  try stdinPipe.fileHandleForWriting.close()
  group.wait()
  process.waitUntilExit()
  return ProcessResult(status: process.terminationStatus, stdout: out, stderr: err)
}
