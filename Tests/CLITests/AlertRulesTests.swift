// The Prometheus alerting rules (deploy/prometheus/strata-alerts.yml): promtool loads them and
// their unit tests pass (each alert fires on the series it is for, not early, not late, and not
// on the series it is not for), every alert is tested and documented, and the dashboard's queries
// are PromQL that Prometheus parses. The metrics the rules query are checked against a real node
// in DashboardTests.

import Foundation
import StrataTestKit
import Testing

/// The rules file and what it queries.
struct AlertRules {
  static let folder = DeployFixtures.deployFolder.appendingPathComponent("prometheus")
  static let path = folder.appendingPathComponent("strata-alerts.yml").path
  static let testPath = folder.appendingPathComponent("strata-alerts.test.yml").path

  let text: String

  init() throws { text = try String(contentsOfFile: AlertRules.path, encoding: .utf8) }

  /// The alert names, in file order.
  var alerts: [String] {
    text.split(separator: "\n").compactMap { line in
      let trimmed = line.trimmingCharacters(in: .whitespaces)
      return trimmed.hasPrefix("- alert: ") ? String(trimmed.dropFirst("- alert: ".count)) : nil
    }
  }

  /// The rules one by one: the lines from a rule's comment to the next rule's.
  var rules: [(name: String, lines: [String])] {
    var found: [(name: String, lines: [String])] = []
    var pending: [String] = []
    for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
      let trimmed = line.trimmingCharacters(in: .whitespaces)
      if trimmed.hasPrefix("- alert: ") {
        found.append((String(trimmed.dropFirst("- alert: ".count)), pending + [line]))
        pending = []
      } else if trimmed.hasPrefix("#") || trimmed.hasPrefix("- name:") || trimmed.isEmpty {
        if trimmed.hasPrefix("#") { pending.append(line) } else { pending = [] }
      } else if !found.isEmpty {
        found[found.count - 1].lines.append(line)
      }
    }
    return found
  }

  /// The `strata_…` metric names the rules query.
  var metricNames: Set<String> { Set(Dashboard.metricNames(in: text)) }
}

/// promtool: `STRATA_PROMTOOL`, else where scripts/bootstrap.sh puts it, else the first on PATH.
enum Promtool {
  static var executable: String? {
    let environment = ProcessInfo.processInfo.environment
    var candidates: [String] = []
    if let given = environment["STRATA_PROMTOOL"] { candidates.append(given) }
    let cache = environment["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")
    candidates.append(cache + "/strata/promtool/promtool")
    candidates += (environment["PATH"] ?? "").split(separator: ":").map { "\($0)/promtool" }
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
  }

  /// promtool's exit status and everything it printed.
  static func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    let executable = try #require(executable, "promtool not found: run scripts/bootstrap.sh (it unpacks it)")
    let result = try await runProcess(executable, arguments)
    return (result.status, result.stdoutText + result.stderrText)
  }
}

@Suite struct AlertRulesTests {
  @Test func promtoolLoadsTheRulesAndTheirUnitTestsPass() async throws {
    let check = try await Promtool.run(["check", "rules", AlertRules.path])
    #expect(check.status == 0, "\(check.output)")
    #expect(check.output.contains("SUCCESS: \(try AlertRules().alerts.count) rules found"), "\(check.output)")
    let unit = try await Promtool.run(["test", "rules", AlertRules.testPath])
    #expect(unit.status == 0 && unit.output.contains("SUCCESS"), "\(unit.output)")
  }

  /// A unit test that cannot fail proves nothing: the same tests against rules with one
  /// threshold, one duration and one window changed each fail.
  @Test func theUnitTestsCatchAChangedThresholdDurationOrWindow() async throws {
    let original = try AlertRules().text
    let folder = try DeployFixtures.temporaryFolder("strata-alerts")
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let tests = try String(contentsOfFile: AlertRules.testPath, encoding: .utf8)
    try tests.write(toFile: folder + "/strata-alerts.test.yml", atomically: true, encoding: .utf8)
    for (from, to) in [
      ("strata_under_replicated_blocks > 0", "strata_under_replicated_blocks > 10"),
      ("expr: up{job=\"strata\"} == 0\n        for: 2m", "expr: up{job=\"strata\"} == 0\n        for: 10m"),
      ("increase(strata_nvme_io_errors_total[10m])", "increase(strata_nvme_io_errors_total[30m])"),
    ] {
      #expect(original.contains(from), "the rules no longer hold '\(from)'")
      try original.replacingOccurrences(of: from, with: to).write(
        toFile: folder + "/strata-alerts.yml", atomically: true, encoding: .utf8)
      let unit = try await Promtool.run(["test", "rules", folder + "/strata-alerts.test.yml"])
      #expect(unit.status != 0, "the unit tests pass with '\(to)' in place of '\(from)'")
    }
  }

  /// Every alert has a severity the docs define, a summary, a comment saying what it means, a
  /// unit test, and a line in docs/metrics.md.
  @Test func everyAlertIsExplainedTestedAndDocumented() throws {
    let rules = try AlertRules()
    #expect(rules.alerts.count >= 10 && Set(rules.alerts).count == rules.alerts.count)
    let tests = try String(contentsOfFile: AlertRules.testPath, encoding: .utf8)
    let docs = try String(contentsOfFile: packageRoot.appendingPathComponent("docs/metrics.md").path, encoding: .utf8)
    for (name, lines) in rules.rules {
      #expect(name.hasPrefix("Strata"), "\(name)")
      #expect(lines.first?.trimmingCharacters(in: .whitespaces).hasPrefix("#") == true, "\(name) has no comment")
      #expect(
        lines.contains { $0.contains("severity: critical") || $0.contains("severity: warning") },
        "\(name) has no severity")
      #expect(lines.contains { $0.contains("summary: ") }, "\(name) has no summary")
      #expect(tests.contains("alertname: \(name),") || tests.contains("alertname: \(name)\n"), "\(name) is not tested")
      #expect(docs.contains("`\(name)`"), "docs/metrics.md does not list \(name)")
    }
  }

  /// Every panel query of the Grafana dashboard parses as PromQL (Grafana's `$instance` and
  /// `$__rate_interval` replaced as Grafana would): each is loaded as a recording rule.
  @Test func everyDashboardQueryIsPromQL() async throws {
    let dashboard = try Dashboard()
    var expressions: [String] = []
    for panel in dashboard.panels {
      for target in panel["targets"] as? [[String: Any]] ?? [] {
        if let expr = target["expr"] as? String { expressions.append(expr) }
      }
    }
    #expect(expressions.count >= 40)
    let folder = try DeployFixtures.temporaryFolder("strata-dashboard-promql")
    defer { try? FileManager.default.removeItem(atPath: folder) }
    var rules = "groups:\n  - name: dashboard\n    rules:\n"
    for (index, expr) in expressions.enumerated() {
      let promql = expr.replacingOccurrences(of: "$__rate_interval", with: "5m").replacingOccurrences(
        of: "$instance", with: ".*")
      // A YAML single-quoted scalar: a quote inside is written twice.
      let quoted = "'" + promql.replacingOccurrences(of: "'", with: "''") + "'"
      rules += "      - record: dashboard:query_\(index)\n        expr: \(quoted)\n"
    }
    try rules.write(toFile: folder + "/dashboard.yml", atomically: true, encoding: .utf8)
    let check = try await Promtool.run(["check", "rules", folder + "/dashboard.yml"])
    #expect(check.status == 0, "\(check.output)")
    #expect(check.output.contains("SUCCESS: \(expressions.count) rules found"), "\(check.output)")
  }
}
