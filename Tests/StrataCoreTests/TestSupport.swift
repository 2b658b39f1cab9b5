// Helpers shared by the Core tests: the package root, fixtures, a seeded generator, subprocesses.

import Foundation
import StrataTestKit

enum TestPaths {
  /// The package root, found from this file's location (Tests/StrataCoreTests/...).
  static let packageRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  static func fixture(_ name: String) -> URL {
    packageRoot.appendingPathComponent("Tests/Fixtures").appendingPathComponent(name)
  }
}

struct ProcessResult {
  var status: Int32
  var stdout: Data
  var stderr: Data
  var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
  var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}

/// Runs a program to completion, feeding `input` to its standard input.
func runProcess(_ executable: String, _ arguments: [String], input: Data? = nil) throws -> ProcessResult {
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

func python3() -> String {
  for candidate in ["/usr/bin/python3", "/usr/local/bin/python3"]
  where FileManager.default.isExecutableFile(atPath: candidate) {
    return candidate
  }
  return "/usr/bin/env"
}

func pythonArguments(_ arguments: [String]) -> [String] {
  python3() == "/usr/bin/env" ? ["python3"] + arguments : arguments
}
