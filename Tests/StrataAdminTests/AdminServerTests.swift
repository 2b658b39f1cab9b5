// The admin API in process over loopback HTTP: routing, tokens, error mapping, the extension
// point (routes, status sections, readiness), config reload, metrics names, and the OpenAPI
// document listing every route the server registers.

import Foundation
import Logging
import StrataAdmin
import StrataConfig
import StrataCore
import StrataNode
import StrataStorage
import StrataWire
import Testing

let adminToken = "admin-token-0123456789"
let tenantToken = "tenant-token-0123456789"

/// A node in this process (RAM tier only) with its admin API on a free loopback port.
final class AdminFixture {
  let administration: NodeAdministration
  let configPath: String

  /// `diskStalls`: the tiers' disk operations in flight (none by default: RAM tier only).
  init(
    tokens: Bool = true, diskStalls: DiskStallMonitor? = nil, extend: (NodeAdministration) -> Void = { _ in }
  ) throws {
    configPath =
      FileManager.default.temporaryDirectory.appendingPathComponent("strata-admin-\(UUID().uuidString).yaml")
      .path
    try AdminFixture.writeConfig(configPath, tokens: tokens ? [adminToken: true, tenantToken: false] : [:])
    var settings = try NodeConfiguration(yaml: try String(contentsOfFile: configPath, encoding: .utf8))
    settings.listen = HostPort(host: "127.0.0.1", port: 0)
    let tiers = try TierManager(
      configuration: TierConfiguration(ramBytes: 64 << 20, blockBytesMax: 1 << 20, lockMemory: false), nvme: nil,
      diskStalls: diskStalls)
    let metrics = NodeMetrics()
    let node = try NodeServer(
      configuration: ServerConfiguration(settings, nodeID: "test-node"), tiers: tiers,
      logger: Logger(label: "test"), observer: metrics)
    administration = NodeAdministration(
      settings: settings, configPath: configPath, nodeID: "test-node", tiers: tiers, node: node,
      verifier: StorageVerifier(tiers: tiers), metrics: metrics,
      machine: NodeConfiguration.Machine(physicalMemoryBytes: 64 << 30),
      admin: try AdminServer(configuration: .init(settings), logger: Logger(label: "test")),
      logger: Logger(label: "test"))
    extend(administration)
    administration.start()
  }

  static func writeConfig(_ path: String, tokens: [String: Bool], ram: String = "1GiB") throws {
    var text = "ram: {capacity: \(ram)}\nadmin: {listen: \"127.0.0.1:0\"}\n"
    if !tokens.isEmpty {
      text += "auth:\n  tokens:\n"
      for (token, admin) in tokens.sorted(by: { $0.key < $1.key }) {
        text += "    - {token: \(token), namespace: \(admin ? "ops" : "tenant"), admin: \(admin)}\n"
      }
    }
    try text.write(toFile: path, atomically: true, encoding: .utf8)
  }

  func client(_ token: String = adminToken) -> AdminClient {
    AdminClient(address: administration.address, token: token, timeoutMilliseconds: 10_000)
  }

  deinit {
    administration.stop()
    try? FileManager.default.removeItem(atPath: configPath)
  }
}

@Suite struct AdminServerTests {
  @Test func jsonRoundTripsAndRejectsBadInput() throws {
    let text = #"{"a":[1,-2,3.5,true,null,"x\"y\n\u00e9"],"b":{"c":9007199254740993}}"#
    let value = try JSONValue.parse(text)
    #expect(value["b"]?["c"]?.intValue == 9_007_199_254_740_993)
    #expect(value["a"]?.arrayValue?[5].stringValue == "x\"y\né")
    #expect(try JSONValue.parse(value.encoded) == value)
    #expect(try JSONValue.parse(value.pretty) == value)
    for bad in ["", "{", "[1,,2]", "{\"a\" 1}", "tru", "\"open", "{} x", String(repeating: "[", count: 100)] {
      #expect(throws: StrataError.self, "\(bad)") { try JSONValue.parse(bad) }
    }
    // Foundation's JSONDecoder (JSONCoding) takes one trailing comma, as in `[1,]`.
    #expect(try JSONValue.parse("[1,]") == .array([.int(1)]))
  }

  /// A disk operation in flight for 30 s is a warning in /v1/status (the node still serves); one
  /// that returns clears it.
  @Test func aStalledDiskOperationIsAStatusWarning() async throws {
    let clock = ManualClock()
    let stalls = DiskStallMonitor(clock: clock, logger: Logger(label: "test"))
    let fixture = try AdminFixture(diskStalls: stalls)
    defer { fixture.administration.stop() }
    let warnings = { () throws -> [String] in
      let status = try JSONValue.parse(try fixture.client().send("GET", "/v1/status").body)
      #expect(status["health"]?.stringValue == "ok")
      return status["warnings"]?.arrayValue?.compactMap(\.stringValue) ?? []
    }
    #expect(try warnings().isEmpty)
    let release = DispatchSemaphore(value: 0)
    let held = DispatchSemaphore(value: 0)
    let operation = DiskOperation(.read, path: "/nvme/strata-nvme.dat", offset: 0, bytes: 4096)
    async let done: Void = onNewThread {
      try? stalls.watching(operation) { () throws(StrataError) in
        held.signal()
        release.wait()
      }
    }
    await onNewThread { held.wait() }
    clock.advance(milliseconds: 29_000)
    #expect(try warnings().isEmpty)
    clock.advance(milliseconds: 16_000)
    let stalled = try warnings()
    #expect(
      stalled == [
        "1 NVMe operation(s) have not returned for 30 s or more (the oldest for 45 s): the disk may have stopped answering; requests that need it fail at their deadline"
      ])
    release.signal()
    await done
    #expect(try warnings().isEmpty)
  }

  @Test func tokensAreCheckedAndErrorsAreJSON() throws {
    let fixture = try AdminFixture()
    let open = fixture.client("")
    #expect(try open.call("GET", "/health")["status"]?.stringValue == "ok")
    #expect(try open.call("GET", "/ready")["status"]?.stringValue == "ready")
    #expect(try open.send("GET", "/metrics").status == 200)
    let missing = try open.send("GET", "/v1/status")
    #expect(missing.status == 401)
    #expect(try JSONValue.parse(missing.body)["error"]?["code"]?.stringValue == "permission_denied")
    #expect(try fixture.client(tenantToken).send("GET", "/v1/status").status == 403)
    #expect(try fixture.client("wrong-token-0123456789").send("GET", "/v1/status").status == 401)
    let status = try fixture.client().call("GET", "/v1/status")
    #expect(status["node_id"]?.stringValue == "test-node")
    #expect(status["health"]?.stringValue == "ok")
    #expect(status["tiers"]?["ram"]?["capacity"]?.intValue == 64 << 20)
    for field in ["version", "uptime_seconds", "epoch", "hit_rate", "transfers", "top_errors"] {
      #expect(status[field] != nil, "status lacks \(field)")
    }
    let notFound = try fixture.client().send("GET", "/v1/nothing")
    #expect(notFound.status == 404)
    #expect(try JSONValue.parse(notFound.body)["error"]?["code"]?.stringValue == "not_found")
    #expect(try fixture.client().send("DELETE", "/v1/status").status == 405)
    let empty = try fixture.client().send("POST", "/v1/evict", body: .object([:]))
    #expect(empty.status == 400)
    #expect(try JSONValue.parse(empty.body)["error"]?["code"]?.stringValue == "invalid_argument")
    #expect(
      try fixture.client().send("POST", "/v1/evict", body: .object(["key_prefixes": .array([.string("zz")])])).status
        == 400)
    // A body that is not JSON, or not an object, is named as such.
    func bodyError(_ text: String) -> String? {
      let request = AdminRequest(method: "POST", path: "/v1/evict", body: Array(text.utf8))
      do { _ = try request.jsonBody() } catch { return error.message }
      return nil
    }
    #expect(bodyError("{bad") == "the request body is not valid JSON")
    #expect(bodyError("[1]") == "the request body must be a JSON object")
    #expect(bodyError(" \n") == nil)
    let evicted = try fixture.client().call("POST", "/v1/evict", body: .object(["namespace": .string("tenant")]))
    #expect(evicted["evicted_blocks"]?.intValue == 0)
    #expect(try open.send("GET", "/health").headers["x-request-id"]?.hasPrefix("admin-") == true)
  }

  @Test func modulesExtendRoutesStatusAndReadiness() throws {
    let fixture = try AdminFixture { administration in
      administration.admin.route("GET", "/v1/cluster/members") { _ throws(StrataError) in
        .json(.object(["members": .array([.string("n1")])]))
      }
      administration.admin.route("POST", "/v1/drain") { _ throws(StrataError) in
        throw StrataError(.unavailable, "no ring yet")
      }
      administration.admin.statusSection("cluster") { .object(["members": .int(3)]) }
      administration.admin.readinessCheck("ring") { "no ring yet" }
    }
    #expect(try fixture.client().call("GET", "/v1/cluster/members")["members"]?.arrayValue?.count == 1)
    let drain = try fixture.client().send("POST", "/v1/drain")
    #expect(drain.status == 503)
    #expect(try fixture.client().call("GET", "/v1/status")["cluster"]?["members"]?.intValue == 3)
    let ready = try fixture.client().send("GET", "/ready")
    #expect(ready.status == 503)
    #expect(try JSONValue.parse(ready.body)["reason"]?.stringValue?.contains("no ring yet") == true)
  }

  @Test func configReloadAppliesTokensAndListsTheRest() throws {
    let fixture = try AdminFixture()
    let newAdmin = "rotated-admin-token-0123"
    try AdminFixture.writeConfig(fixture.configPath, tokens: [newAdmin: true], ram: "2GiB")
    let report = try fixture.client().call("POST", "/v1/config/reload")
    #expect(report["applied"] == .array([.string("auth.tokens")]))
    #expect(report["needs_restart"] == .array([.string("ram.capacity")]))
    #expect(report["rejected"] == .array([]))
    #expect(try fixture.client().send("GET", "/v1/status").status == 401)
    #expect(try fixture.client(newAdmin).send("GET", "/v1/status").status == 200)
    #expect(
      fixture.administration.node.currentTokens.first { $0.digest == TokenDigest(secret: newAdmin) }?.admin == true)
    try "ram: {capacity: lots}\n".write(toFile: fixture.configPath, atomically: true, encoding: .utf8)
    let rejected = try fixture.client(newAdmin).call("POST", "/v1/config/reload")
    #expect(rejected["rejected"]?.arrayValue?.isEmpty == false)
    #expect(rejected["applied"] == .array([]))
    #expect(try fixture.client(newAdmin).send("GET", "/v1/status").status == 200)
  }

  @Test func metricsExportEveryCatalogName() throws {
    let fixture = try AdminFixture(tokens: false)
    let text = try fixture.client().send("GET", "/metrics").text
    for metric in NodeMetrics.catalog {
      #expect(text.contains("\n\(metric.name)") || text.hasPrefix(metric.name), "\(metric.name) is not exported")
      #expect(metric.name.hasPrefix("strata_"))
    }
    let docs = try String(contentsOfFile: packageRoot + "/docs/metrics.md", encoding: .utf8)
    for metric in NodeMetrics.catalog {
      #expect(docs.contains("`\(metric.name)`"), "docs/metrics.md lacks \(metric.name)")
    }
    // And the other way: every metric the page names is in the catalog (so exported from start).
    let named = Set(docs.matches(of: /`(strata_[a-z0-9_]+)`/).map { String($0.output.1) })
    let histogramParts = ["_bucket", "_sum", "_count"]
    for name in named.sorted() {
      let base = histogramParts.first(where: name.hasSuffix).map { String(name.dropLast($0.count)) } ?? name
      #expect(NodeMetrics.catalog.contains { $0.name == base }, "docs/metrics.md names \(name), not in the catalog")
    }
  }

  /// A request's metrics are recorded into series made at start, found by the label the node gives
  /// (the opcode's description): every opcode a client sends, and every one of its transports, has
  /// them, with the op's name as its label, and recording adds to those series only.
  @Test func everyRequestRecordsIntoSeriesMadeAtStart() {
    let metrics = NodeMetrics()
    let before = String(decoding: metrics.render(), as: UTF8.self)
    for opcode in Opcode.allCases where opcode != .goodbye {
      #expect(NodeMetrics.ops.contains("\(opcode)"), "no series for \(opcode)")
      for transport in NodeMetrics.transports {
        metrics.requestFinished(
          RequestEvent(
            op: "\(opcode)", transport: transport, seconds: 0.001, error: nil,
            blockBytes: opcode == .get || opcode == .put ? [4096] : [], requestID: 1))
      }
    }
    let after = String(decoding: metrics.render(), as: UTF8.self)
    let seriesNames = { (text: String) in
      Set(text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { $0.split(separator: " ")[0] })
    }
    let made = seriesNames(after).subtracting(seriesNames(before))
    #expect(made.isEmpty, "recording made new series: \(made.sorted().prefix(5))")
    #expect(after.split(separator: "\n").contains(#"strata_requests_total{op="get"} 3"#))
    #expect(after.split(separator: "\n").contains(#"strata_transfer_block_bytes_count{op="put"} 3"#))
  }

  /// Every route the node's admin server registers is in proto/admin.openapi.yaml, and the other way round.
  @Test func openAPIDocumentListsEveryRoute() throws {
    let fixture = try AdminFixture(tokens: false)
    let yaml = try String(contentsOfFile: packageRoot + "/proto/admin.openapi.yaml", encoding: .utf8)
    var documented = Set<String>()
    var path: String?
    for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
      if line.hasPrefix("  /"), line.hasSuffix(":") { path = String(line.dropFirst(2).dropLast()) }
      if line.hasPrefix("components:") { path = nil }
      for method in ["get", "post", "put", "delete"] where line == "    \(method):" {
        if let path { documented.insert("\(method.uppercased()) \(path)") }
      }
    }
    let registered = Set(fixture.administration.admin.routes.map { "\($0.method) \($0.path)" })
    #expect(registered.count >= 8)
    #expect(
      registered.subtracting(documented).isEmpty, "not in the OpenAPI document: \(registered.subtracting(documented))")
    let clusterRoutes: Set = ["GET /v1/cluster/members", "GET /v1/cluster/ring", "POST /v1/drain", "GET /v1/drain"]
    #expect(documented.subtracting(registered) == clusterRoutes)
  }
}

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent().path
