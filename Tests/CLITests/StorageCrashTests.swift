// Crash tests with real processes: a writer is killed with SIGKILL mid-stream, a new process
// restarts over the same data folder, and every acknowledged block must come back intact.

import Foundation
import StrataTestKit
import Testing

struct CrashDrill {
  let directory: String
  let count = 4000
  let arguments: [String]

  init(_ name: String) throws {
    directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-crash-\(name)-\(getpid())").path
    try? FileManager.default.removeItem(atPath: directory)
    arguments = [
      "--data-dir", directory, "--count", "\(count)", "--size", "40KiB", "--seed", "7", "--nvme", "256MiB",
      "--region-size", "4MiB",
    ]
  }

  /// Starts the writer, waits for `acks` acknowledgements, kills it with SIGKILL; returns the
  /// highest acknowledged block (acks arrive in order).
  func writeThenKill(afterAcks acks: Int) throws -> Int {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: strataExecutable)
    process.arguments = ["debug", "write-blocks"] + arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    try launch(process)
    let descriptor = out.fileHandleForReading.fileDescriptor
    var text = ""
    var lastAck = -1
    var buffer = [UInt8](repeating: 0, count: 4096)
    while lastAck + 1 < acks {
      let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
      if count <= 0 { break }  // the writer ended early: the checks below will say so
      text += String(decoding: buffer[0..<count], as: UTF8.self)
      while let newline = text.firstIndex(of: "\n") {
        let line = text[..<newline]
        if line.hasPrefix("ack "), let n = Int(line.dropFirst(4)) { lastAck = n }
        text = String(text[text.index(after: newline)...])
      }
    }
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
    #expect(process.terminationReason == .uncaughtSignal, "the writer finished before it was killed")
    return lastAck
  }

  /// Restarts over the folder in a new process and returns its report.
  func check() async throws -> (status: Int32, report: [String: Any]) {
    let run = try await strata(["debug", "check-blocks"] + arguments)
    let line = run.stdout.split(separator: "\n").last.map(String.init) ?? ""
    let report = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
    return (run.status, report)
  }

  func intactSet(_ report: [String: Any]) -> Set<Int> {
    var intact = Set<Int>()
    for part in ((report["intact_ranges"] as? String) ?? "").split(separator: ",") {
      let bounds = part.split(separator: "-").compactMap { Int($0) }
      if bounds.count == 1 { intact.insert(bounds[0]) }
      if bounds.count == 2 { intact.formUnion(bounds[0]...bounds[1]) }
    }
    return intact
  }
}

@Suite(.serialized) struct StorageCrashTests {
  @Test func killedWriterLosesNoAcknowledgedBlock() async throws {
    let drill = try CrashDrill("kill")
    defer { try? FileManager.default.removeItem(atPath: drill.directory) }
    let lastAck = try drill.writeThenKill(afterAcks: 1500)
    try #require(lastAck >= 1499, "the writer acknowledged only \(lastAck + 1) blocks")
    let (status, report) = try await drill.check()
    #expect(status == 0, "a block came back with wrong bytes: \(report)")
    #expect((report["wrong"] as? [Int]) == [])
    let intact = drill.intactSet(report)
    let lost = (0...lastAck).filter { !intact.contains($0) }
    #expect(lost.isEmpty, "acknowledged blocks lost after kill -9: \(lost.prefix(20))")
    // Blocks written after the last ack may or may not be there, but never corrupt.
    #expect(intact.count <= drill.count)
  }

  @Test func corruptionOnDiskIsDetectedAtRestartAndNeverServed() async throws {
    let drill = try CrashDrill("corrupt")
    defer { try? FileManager.default.removeItem(atPath: drill.directory) }
    let lastAck = try drill.writeThenKill(afterAcks: 600)
    try #require(lastAck >= 599)
    // Flip bytes in the middle of several records on disk.
    let file = drill.directory + "/nvme/strata-nvme.dat"
    let handle = try #require(FileHandle(forUpdatingAtPath: file))
    var flipped = 0
    for offset in stride(from: 10_000, to: 20 << 20, by: 3 << 20) {
      try handle.seek(toOffset: UInt64(offset))
      guard let byte = try handle.read(upToCount: 1)?.first else { continue }
      try handle.seek(toOffset: UInt64(offset))
      try handle.write(contentsOf: [byte ^ 0x40])
      flipped += 1
    }
    try handle.close()
    #expect(flipped >= 5)
    let (status, report) = try await drill.check()
    #expect(status == 0, "a corrupt block was served: \(report)")
    #expect((report["wrong"] as? [Int]) == [])
    let corrupt = report["corrupt_dropped"] as? Int ?? 0
    let intact = drill.intactSet(report).count
    // Each flip lands in one record: that record is dropped at restart, the rest come back.
    #expect(corrupt >= 1, "no corruption was detected: \(report)")
    #expect(intact >= lastAck + 1 - flipped, "\(report)")
  }
}
