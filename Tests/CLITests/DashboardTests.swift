// The Grafana dashboard (deploy/grafana/strata.json): its structure is one Grafana can load, and
// every metric it queries is one a running node exports on its admin port's /metrics.

import Foundation
import StrataClient
import StrataCore
import StrataTestKit
import Testing

/// The dashboard file and what it queries.
struct Dashboard {
  static let path = DeployFixtures.deployFolder.appendingPathComponent("grafana/strata.json").path

  let root: [String: Any]

  init() throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: Dashboard.path))
    root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "not a JSON object")
  }

  /// Every panel, rows included, with the panels nested in collapsed rows.
  var panels: [[String: Any]] {
    let top = root["panels"] as? [[String: Any]] ?? []
    return top.flatMap { [$0] + ($0["panels"] as? [[String: Any]] ?? []) }
  }

  /// Every PromQL text: each `expr` anywhere in the file, and the template variables' queries.
  var queries: [String] {
    var found: [String] = []
    func walk(_ value: Any, key: String?) {
      if let object = value as? [String: Any] {
        for (key, child) in object { walk(child, key: key) }
      } else if let array = value as? [Any] {
        for child in array { walk(child, key: nil) }
      } else if let text = value as? String, key == "expr" || key == "definition" || key == "query" {
        found.append(text)
      }
    }
    walk(root, key: nil)
    return found
  }

  /// The `strata_…` names in the queries as written (histogram series keep their suffix).
  var queriedNames: Set<String> { Set(queries.flatMap(Dashboard.metricNames(in:))) }

  /// Identifiers that start with `strata_` (and are not the tail of a longer identifier).
  static func metricNames(in query: String) -> [String] {
    let characters = Array(query.unicodeScalars)
    let prefix = Array("strata_".unicodeScalars)
    func isNamePart(_ scalar: Unicode.Scalar) -> Bool {
      scalar == "_" || scalar == ":" || (scalar.isASCII && scalar.properties.isAlphabetic)
        || ("0"..."9").contains(scalar)
    }
    var names: [String] = []
    var index = 0
    while index + prefix.count <= characters.count {
      if Array(characters[index..<index + prefix.count]) == prefix && (index == 0 || !isNamePart(characters[index - 1]))
      {
        var end = index + prefix.count
        while end < characters.count && isNamePart(characters[end]) { end += 1 }
        names.append(String(String.UnicodeScalarView(characters[index..<end])))
        index = end
      } else {
        index += 1
      }
    }
    return names
  }
}

/// The metric families in a Prometheus text exposition (format 0.0.4).
struct Exposition {
  /// Family name → type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
  var types: [String: String] = [:]
  /// Names of the sample lines.
  var sampleNames: Set<String> = []

  init(_ text: String) {
    for line in text.split(separator: "\n") {
      let words = line.split(separator: " ", omittingEmptySubsequences: true)
      if words.count >= 4, words[0] == "#", words[1] == "TYPE" {
        types[String(words[2])] = String(words[3])
      } else if !line.hasPrefix("#"), let name = line.split(whereSeparator: { $0 == "{" || $0 == " " }).first {
        sampleNames.insert(String(name))
      }
    }
  }

  /// Whether a name as a query writes it is exported: a family, a sample, or a histogram's
  /// `_bucket` / summary's or histogram's `_sum` and `_count` series.
  func exports(_ name: String) -> Bool {
    if types[name] != nil || sampleNames.contains(name) { return true }
    for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
      let base = String(name.dropLast(suffix.count))
      switch types[base] {
      case "histogram": return true
      case "summary": return suffix != "_bucket"
      default: continue
      }
    }
    return false
  }
}

@Suite(.serialized) struct DashboardTests {
  /// Grafana loads it: a datasource variable and a node (`instance`) variable; every panel has a
  /// unique id, a grid position inside the 24 columns that overlaps no other panel, the
  /// datasource variable, and targets with unique refIds and a query that selects `$instance`.
  @Test func dashboardStructureIsValid() throws {
    let dashboard = try Dashboard()
    #expect((dashboard.root["title"] as? String)?.isEmpty == false)
    #expect((dashboard.root["uid"] as? String)?.isEmpty == false)
    #expect(dashboard.root["schemaVersion"] as? Int != nil)
    let variables = (dashboard.root["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
    let datasource = try #require(variables.first { $0["type"] as? String == "datasource" }, "no datasource variable")
    #expect(datasource["query"] as? String == "prometheus")
    let datasourceName = try #require(datasource["name"] as? String)
    let instance = try #require(variables.first { $0["name"] as? String == "instance" }, "no instance variable")
    #expect((instance["definition"] as? String)?.contains("strata_") == true)

    var ids: Set<Int> = []
    var occupied: [(title: String, x: Int, y: Int, w: Int, h: Int)] = []
    let panels = dashboard.panels
    #expect(panels.count >= 20)
    for panel in panels {
      let title = panel["title"] as? String ?? "(untitled)"
      let id = try #require(panel["id"] as? Int, "\(title): no id")
      #expect(ids.insert(id).inserted, "\(title): id \(id) is used twice")
      let grid = try #require(panel["gridPos"] as? [String: Int], "\(title): no gridPos")
      let (x, y, w, h) = (grid["x"] ?? -1, grid["y"] ?? -1, grid["w"] ?? 0, grid["h"] ?? 0)
      #expect(x >= 0 && y >= 0 && w >= 1 && h >= 1 && x + w <= 24, "\(title): gridPos \(grid)")
      for other in occupied where x < other.x + other.w && other.x < x + w && y < other.y + other.h && other.y < y + h {
        Issue.record("\(title) overlaps \(other.title)")
      }
      occupied.append((title, x, y, w, h))
      if panel["type"] as? String == "row" { continue }
      #expect(!title.isEmpty && title != "(untitled)", "panel \(id) has no title")
      let source = try #require(panel["datasource"] as? [String: Any], "\(title): no datasource")
      #expect(source["uid"] as? String == "${\(datasourceName)}", "\(title): datasource is not the variable")
      let targets = try #require(panel["targets"] as? [[String: Any]], "\(title): no targets")
      #expect(!targets.isEmpty, "\(title): no targets")
      let refIDs = targets.compactMap { $0["refId"] as? String }
      #expect(refIDs.count == targets.count && Set(refIDs).count == refIDs.count, "\(title): refIds \(refIDs)")
      for target in targets {
        let expr = try #require(target["expr"] as? String, "\(title): a target has no expr")
        #expect(!Dashboard.metricNames(in: expr).isEmpty, "\(title): '\(expr)' queries no strata_ metric")
        #expect(expr.contains("$instance"), "\(title): '\(expr)' ignores the node variable")
        #expect(
          expr.filter { $0 == "(" }.count == expr.filter { $0 == ")" }.count
            && expr.filter { $0 == "{" }.count == expr.filter { $0 == "}" }.count,
          "\(title): unbalanced brackets in '\(expr)'")
      }
    }
  }

  /// The name extraction itself: histogram series keep their suffix, label values and longer
  /// identifiers are not names.
  @Test func metricNamesAreExtractedFromQueries() {
    let query =
      #"histogram_quantile(0.99, sum by (le) (rate(strata_request_duration_seconds_bucket{job="x_strata_y"}[5m])))"#
      + " / my_strata_other + strata_hits_total"
    #expect(Dashboard.metricNames(in: query) == ["strata_request_duration_seconds_bucket", "strata_hits_total"])
    let exposition = Exposition(
      """
      # HELP strata_request_duration_seconds Request latency.
      # TYPE strata_request_duration_seconds histogram
      strata_request_duration_seconds_bucket{op="get",le="0.1"} 3
      # TYPE strata_hits_total counter
      strata_hits_total{tier="ram"} 5
      strata_untyped_thing 1
      """)
    #expect(exposition.exports("strata_request_duration_seconds_bucket"))
    #expect(exposition.exports("strata_request_duration_seconds_count"))
    #expect(exposition.exports("strata_hits_total"))
    #expect(exposition.exports("strata_untyped_thing"))
    #expect(!exposition.exports("strata_hits_total_bucket"))
    #expect(!exposition.exports("strata_misses_total"))
  }

  /// The HTTP GET and the exposition reader against a real Prometheus exporter: etcd's /metrics.
  @Test func expositionOfARealExporterIsRead() throws {
    let etcd = try DeployFixtures.Etcd()
    defer { etcd.stop() }
    let address = try HostPort(parsing: String(etcd.clientURL.dropFirst("http://".count)))
    let (status, body) = try DeployFixtures.httpGet(address, "/metrics")
    #expect(status == 200)
    let exposition = Exposition(body)
    #expect(exposition.types.count >= 20)
    #expect(exposition.types["etcd_disk_wal_fsync_duration_seconds"] == "histogram")
    #expect(exposition.exports("etcd_disk_wal_fsync_duration_seconds_bucket"))
    #expect(exposition.exports("etcd_disk_wal_fsync_duration_seconds_count"))
    #expect(!exposition.exports("etcd_disk_wal_fsync_duration_seconds_total"))
    #expect(try DeployFixtures.httpGet(address, "/no-such-page").status == 404)
  }

  /// Every metric the dashboard and the alerting rules query is exported by a real node: `strata serve` with its
  /// admin port on a free loopback port and etcd membership (so the ring and etcd-session
  /// gauges exist), after a little traffic (puts that overflow RAM into NVMe, hits in both
  /// tiers, a miss, a delete). Needs the admin API and /metrics (docs/metrics.md).
  @Test func everyQueriedMetricIsExportedByTheNode() async throws {
    let dashboard = try Dashboard()
    #expect(dashboard.queriedNames.count >= 25)
    // The alerting rules' metrics too (deploy/prometheus/strata-alerts.yml).
    let queried = dashboard.queriedNames.union(try AlertRules().metricNames)

    let etcd = try DeployFixtures.Etcd()
    defer { etcd.stop() }
    let folder = try DeployFixtures.temporaryFolder("strata-dashboard")
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let adminPort = try freeLoopbackPort()
    let config = folder + "/node.yaml"
    try """
    node: {id: dashboard-test}
    listen: 127.0.0.1:0
    data_dir: \(folder)/data
    ram: {capacity: 16MiB, lock: false}
    nvme: {capacity: 64MiB, region_size: 2MiB}
    limits: {max_block_size: 1MiB, max_inflight_bytes_per_connection: 8MiB, max_inflight_bytes: 16MiB}
    admin: {listen: "127.0.0.1:\(adminPort)"}
    cluster: {etcd: "\(etcd.clientURL)"}

    """.write(toFile: config, atomically: true, encoding: .utf8)
    let check = try await strata("config", "check", config)
    try #require(check.status == 0, "the test's node configuration is refused: \(check.stderr)")

    let (node, address) = try DeployFixtures.startNode(config: config)
    defer { node.stop() }
    // The node logs its metrics URL at start (issue 7): the admin port serves from then on.
    let metricsURL = "http://127.0.0.1:\(adminPort)/metrics"
    _ = try node.waitFor("its metrics URL \(metricsURL)") { $0.contains(metricsURL) ? true : nil }

    try await driveTraffic(address)
    let (status, body) = try DeployFixtures.httpGet(HostPort(host: "127.0.0.1", port: adminPort), "/metrics")
    #expect(status == 200)
    let exposition = Exposition(body)
    #expect(!exposition.types.isEmpty, "/metrics has no # TYPE lines:\n\(body.prefix(2000))")
    let missing = queried.filter { !exposition.exports($0) }.sorted()
    #expect(
      missing.isEmpty,
      """
      the dashboard or the alerting rules query metrics the node does not export: \(missing.joined(separator: ", "))
      exported families: \(exposition.types.keys.sorted().joined(separator: ", "))
      """)
    #expect(node.stop() == 0, "the node did not exit 0 on SIGTERM:\n\(node.output)")
  }

  /// 24 blocks of 1 MiB into a 16 MiB RAM tier (the first ones are demoted to NVMe), reads of
  /// the first and last (an NVMe and a RAM hit), a lookup, a read of an absent key, a delete, a stat.
  private func driveTraffic(_ address: HostPort) async throws {
    let client = NodeProcess.client(address, connections: 1)
    defer { client.close() }
    let size = 1 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size * 2, alignment: 4096)
    defer { buffer.deallocate() }
    fill(buffer, seed: 7)
    let region = client.register(buffer)
    for n in 0..<24 {
      let stored = try await client.put([.init(key: blockKey(n, 70), source: try region.slice(length: size))])
      #expect(stored == [.stored])
    }
    for n in [0, 23] {
      let got = try await client.get([
        .init(key: blockKey(n, 70), destination: try region.slice(offset: size, length: size))
      ])
      #expect(got == [.ok(length: size)], "block \(n)")
    }
    _ = try await client.lookup((0..<24).map { blockKey($0, 70) })
    let absent = try await client.get([
      .init(key: blockKey(99, 70), destination: try region.slice(offset: size, length: size))
    ])
    #expect(absent == [.missing])
    #expect(try await client.delete([blockKey(1, 70)]) == [true])
    _ = try await client.stat()
  }
}
