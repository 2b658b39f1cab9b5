// The node's log: JSON lines field by field, and the shared level a config reload moves.

import Logging
import StrataAdmin
import StrataConfig
import StrataCore
import Testing

@Suite struct NodeLogTests {
  @Test func aJSONLineHoldsEveryFieldAndTheMetadataAsItIs() throws {
    let line = NodeLogLine.json(
      seconds: 1_796_608_200, nanoseconds: 7_000_000, level: .warning, label: "strata.node",
      message: "a \"quoted\"\nmessage",
      metadata: [
        "address": "127.0.0.1:7400", "count": .stringConvertible(12), "paths": ["/a", "/b"],
        "nested": ["k": "v"], "message": "collides",
      ], source: "StrataAdmin", error: "disk gone")
    #expect(!line.contains("\n"), "one line: \(line)")
    let object = try JSONValue.parse(Array(line.utf8))
    #expect(object["time"] == .string("2026-12-07T01:50:00.007Z"))
    #expect(object["level"] == .string("warning"))
    #expect(object["logger"] == .string("strata.node"))
    #expect(object["message"] == .string("a \"quoted\"\nmessage"))
    #expect(object["source"] == .string("StrataAdmin"))
    #expect(object["error"] == .string("disk gone"))
    #expect(object["address"] == .string("127.0.0.1:7400"))
    #expect(object["count"] == .string("12"))
    #expect(object["paths"] == .array([.string("/a"), .string("/b")]))
    #expect(object["nested"] == .object(["k": .string("v")]))
    // A metadata key that names a field of the line is moved aside, never replacing it.
    #expect(object["metadata.message"] == .string("collides"))
    let plain = try JSONValue.parse(
      Array(
        NodeLogLine.json(
          seconds: 0, nanoseconds: 999_999_999, level: .info, label: "", message: "m", metadata: [:], source: "s"
        )
        .utf8))
    #expect(plain["time"] == .string("1970-01-01T00:00:00.999Z") && plain["error"] == nil)
  }

  @Test func everyLoggerFollowsTheSharedLevelUnlessItSetsItsOwn() {
    let level = NodeLogLevel(.info)
    var follows = NodeLogHandler(label: "a", format: .json, level: level)
    var own = NodeLogHandler(label: "b", format: .text, level: level)
    own.logLevel = .critical
    #expect(follows.logLevel == .info && own.logLevel == .critical)
    level.set(.debug)
    #expect(follows.logLevel == .debug && own.logLevel == .critical)
    level.set(.error)
    #expect(follows.logLevel == .error)
    follows[metadataKey: "k"] = "v"
    #expect(follows[metadataKey: "k"] == "v")
    for configured in LogLevel.allCases {
      level.set(configured)
      #expect(level.current.rawValue == configured.rawValue)
    }
  }
}
