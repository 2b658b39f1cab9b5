// The admin port's limits in the configuration file: read, printed back, and checked.

import StrataConfig
import StrataCore
import Testing

@Suite struct AdminSettingsTests {
  @Test func adminLimitsAreReadPrintedAndChecked() throws {
    let defaults = NodeConfiguration()
    #expect(defaults.admin.connectionsMax == 64 && defaults.admin.requestTimeout.milliseconds == 10_000)
    let config = try NodeConfiguration(yaml: "admin:\n  connections: 8\n  request_timeout: 2s\n")
    #expect(config.admin.connectionsMax == 8 && config.admin.requestTimeout.milliseconds == 2000)
    let printed = try NodeConfiguration(yaml: config.yaml)
    #expect(printed.admin == config.admin)
    for (yaml, field) in [
      ("admin:\n  connections: 1\n", "admin.connections"), ("admin:\n  connections: 100000\n", "admin.connections"),
      ("admin:\n  request_timeout: 10ms\n", "admin.request_timeout"),
      ("admin:\n  request_timeout: 1h\n", "admin.request_timeout"),
      ("admin:\n  request_timeout: soon\n", "admin.request_timeout"),
    ] {
      let found: [String]
      do {
        found = try NodeConfiguration(yaml: yaml).problems(on: .init(physicalMemoryBytes: 24 << 30)).map(\.description)
      } catch {
        found = [error.message]
      }
      #expect(found.contains { $0.contains(field) }, "\(yaml): \(found)")
    }
  }

  @Test func theLogsLevelAndFormatAreReadPrintedAndChecked() throws {
    #expect(NodeConfiguration().log.level == .info && NodeConfiguration().log.format == .text)
    let config = try NodeConfiguration(yaml: "log:\n  level: debug\n  format: json\n")
    #expect(config.log.level == .debug && config.log.format == .json)
    #expect(try NodeConfiguration(yaml: config.yaml).log == config.log)
    for yaml in ["log:\n  level: loud\n", "log:\n  format: xml\n"] {
      #expect {
        _ = try NodeConfiguration(yaml: yaml)
      } throws: { error in
        (error as? StrataError)?.message.contains("is not one of") == true
      }
    }
  }
}
