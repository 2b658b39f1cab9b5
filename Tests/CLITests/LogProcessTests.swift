// A real node's log: JSON lines for log collectors, a level set at start, and a level moved by a
// config reload while the node runs.

import Foundation
import StrataAdmin
import StrataCore
import StrataTestKit
import Testing

@Suite struct LogProcessTests {
  @Test func jsonLinesAtALevelAConfigReloadMoves() async throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("strata-log-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let config = folder + "/node.yaml"
    let log = folder + "/node.log"
    try "log:\n  format: json\n".write(toFile: config, atomically: true, encoding: .utf8)
    let node = try await NodeProcess.launch(
      ram: "64MiB", nvme: "256MiB", log: log, extra: ["--config", config], files: [folder])
    defer { _ = node.stop() }
    let admin = try node.admin

    func lines() throws -> [JSONValue] {
      try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map { line in
        try JSONValue.parse(Array(line.utf8))
      }
    }
    func probes(_ all: [JSONValue]) -> [JSONValue] {
      all.filter { $0["message"] == .string("admin request") && $0["path"] == .string("/health") }
    }
    let started = try lines()
    #expect(started.count >= 5)
    for line in started {
      #expect(line["time"]?.stringValue?.hasSuffix("Z") == true && line["level"] != nil && line["message"] != nil)
    }
    #expect(started.contains { $0["message"] == .string("listening") && $0["address"] != nil })

    // Probes are logged at debug: not at the configured info.
    #expect(try adminCall(admin, "GET", "/health").status == 200)
    #expect(probes(try lines()).isEmpty)

    try "log:\n  format: text\n  level: debug\n".write(toFile: config, atomically: true, encoding: .utf8)
    let report = try AdminClient(address: admin, timeoutMilliseconds: 10_000).call("POST", "/v1/config/reload")
    #expect(report["applied"] == .array([.string("log.level")]), "\(report)")
    #expect(report["needs_restart"] == .array([.string("log.format")]), "\(report)")
    #expect(try adminCall(admin, "GET", "/health").status == 200)
    let probe = try #require(probes(try lines()).first)
    #expect(probe["level"] == .string("debug") && probe["status"] == .string("200"))
  }

  @Test func aLevelGivenAtStartLeavesOutTheLinesBelowIt() async throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("strata-log-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let log = folder + "/node.log"
    let node = try await NodeProcess.launch(
      ram: "64MiB", nvme: "256MiB", log: log, extra: ["--log-level", "warning"], files: [folder])
    #expect(node.stop(keepData: true) == 0)
    defer { for path in [folder, node.directory] { try? FileManager.default.removeItem(atPath: path) } }
    let text = try String(contentsOfFile: log, encoding: .utf8)
    #expect(!text.contains(" info strata."), "\(text)")
    // The 64 MiB arena's few-pages advice is a warning: it is still written.
    #expect(text.contains(" warning strata.node:"), "\(text)")

    let refused = try await strata("serve", "--log-level", "loud", "--dry-run")
    #expect(refused.status == 64 && refused.stderr.contains("'loud' is invalid for '--log-level"), "\(refused.stderr)")
  }
}
