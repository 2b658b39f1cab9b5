// Tenants against real `strata serve` processes: token scopes on every data-plane opcode and every
// admin route, a config reload that removes or narrows a token closing its live sessions, a
// tenant filling its RAM quota without evicting another tenant's blocks, request-rate and probe
// limits tripping with their typed errors, and audit lines that never hold a token.

import Foundation
import StrataAdmin
import StrataClient
import StrataConfig
import StrataCore
import StrataPlacement
import StrataTCP
import StrataTestKit
import StrataWire
import Testing

private let readerSecret = "reader-secret-0000000001"
private let writerSecret = "writer-secret-0000000001"
private let deleterSecret = "deleter-secret-000000001"
private let operatorSecret = "operator-secret-00000001"
private let clusterSecret = "cluster-secret-000000001"

/// A node from `yaml` (its tokens given as digests), its admin address, and its log file.
private func tenantNode(_ yaml: String, ram: String = "64MiB") async throws -> (NodeProcess, HostPort, String) {
  let base = FileManager.default.temporaryDirectory.appendingPathComponent("strata-tenant-\(UUID().uuidString)").path
  try yaml.write(toFile: base + ".yaml", atomically: true, encoding: .utf8)
  let node = try await NodeProcess.launch(
    ram: ram, nvme: "256MiB", log: base + ".log", extra: ["--config", base + ".yaml"],
    files: [base + ".yaml", base + ".log"])
  do { return (node, try node.admin, base + ".log") } catch {
    _ = node.stop()
    throw error
  }
}

private func digest(_ secret: String) -> String { TokenDigest(secret: secret).description }

/// The error a call threw, or nil when it succeeded.
private func failure(_ call: () async throws -> Void) async -> StrataError? {
  do {
    try await call()
    return nil
  } catch let error as StrataError {
    return error
  } catch {
    return StrataError(.internalError, "\(error)")
  }
}

/// Every method and path of the admin API's OpenAPI document (kept complete by AdminServerTests).
private func documentedRoutes() throws -> [(method: String, path: String)] {
  let yaml = try String(
    contentsOf: packageRoot.appendingPathComponent("proto/admin.openapi.yaml"), encoding: .utf8)
  var routes: [(String, String)] = []
  var path: String?
  for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
    if line.hasPrefix("  /"), line.hasSuffix(":") { path = String(line.dropFirst(2).dropLast()) }
    if line.hasPrefix("components:") { path = nil }
    for method in ["get", "post", "put", "delete"] where line == "    \(method):" {
      if let path { routes.append((method.uppercased(), path)) }
    }
  }
  return routes
}

/// `strata token hash` and `generate` print the digests `auth.tokens` stores; a printed
/// configuration holds digests, never a secret.
@Test func tokenCommandsPrintDigestsAndConfigurationsNeverPrintSecrets() async throws {
  let hashed = try await strata("token", "hash", readerSecret)
  #expect(hashed.status == 0 && hashed.stdout == digest(readerSecret) + "\n")
  let piped = try await strata("token", "hash", input: readerSecret + "\n")
  #expect(piped.status == 0 && piped.stdout == hashed.stdout, "\(piped.stderr)")
  #expect(try await strata("token", "hash", "short").status == 2)
  let generated = try await strata("token", "generate")
  let lines = generated.stdout.split(separator: "\n").map { String($0.split(separator: " ").last ?? "") }
  #expect(generated.status == 0 && lines.count == 2 && lines[0].utf8.count == 64)
  #expect(lines.count == 2 && digest(lines[0]) == lines[1])
  let config = try temporaryFile(
    "tokens-\(UUID().uuidString).yaml",
    "auth:\n  tokens:\n    - {token: \(readerSecret), namespace: t1, admin: true}\n")
  let checked = try await strata("config", "check", config)
  #expect(checked.status == 0 && checked.stderr.contains("auth.tokens[0].token is a plain secret"))
  #expect(checked.stderr.contains(digest(readerSecret)) && !checked.stderr.contains(readerSecret))
  let printed = try await strata("config", "check", "--print", config)
  #expect(printed.status == 0 && !printed.stdout.contains(readerSecret))
  #expect(
    printed.stdout.contains(digest(readerSecret)) && printed.stdout.contains("scopes: [read, write, delete, operator]"))
}

/// A reload reports changed quota settings as needing a restart (they are not applied live),
/// rather than ignoring them.
@Test func changedQuotasAreReportedByReload() throws {
  let old = try NodeConfiguration(yaml: "limits: {max_inflight_bytes_per_namespace: 64MiB}")
  let new = try NodeConfiguration(
    yaml: """
      limits: {max_ram_bytes_per_namespace: 1GiB, requests_per_second_per_namespace: 10, misses_per_second_per_namespace: 5}
      namespaces: [{namespace: a, nvme: 2GiB}]
      """)
  #expect(
    old.changedFields(comparedTo: new) == [
      "limits.max_inflight_bytes_per_namespace", "limits.max_ram_bytes_per_namespace",
      "limits.requests_per_second_per_namespace", "limits.misses_per_second_per_namespace", "namespaces",
    ])
}

@Suite(.serialized) struct TenantProcessTests {
  /// Scopes on every opcode (LOOKUP, GET, PUT, DELETE, STAT, RING and its operations) and every
  /// admin route, on a node in cluster mode (so the cluster's routes and RING operations exist);
  /// the audit lines name the events and never a token.
  @Test func scopesAreEnforcedOnEveryOpcodeAndAdminRoute() async throws {
    let yaml = """
      auth:
        tokens:
          - {token: "\(digest(readerSecret))", namespace: t1, scopes: [read]}
          - {token: "\(digest(writerSecret))", namespace: t1, scopes: [write]}
          - {token: "\(digest(deleterSecret))", namespace: t1, scopes: [delete]}
          - {token: "\(digest(operatorSecret))", namespace: ops, scopes: [operator]}
      cluster:
        peers: ["127.0.0.1:9"]
        replicas: 1
        write_quorum: 1
        token: "\(clusterSecret)"
      """
    let (node, admin, log) = try await tenantNode(yaml)
    defer { _ = node.stop() }
    let size = 64 << 10
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
    defer { buffer.deallocate() }
    fill(buffer, seed: 1)
    let key = blockKey(1, 77)
    let address = node.address
    let calls: [(String, TokenScopes, @Sendable (StrataClient, MemoryRegion) async throws -> Void)] = [
      ("LOOKUP", .read, { client, _ in _ = try await client.lookup([key]) }),
      (
        "GET", .read,
        { client, region in _ = try await client.get([.init(key: key, destination: try region.slice(length: size))]) }
      ),
      (
        "PUT", .write,
        { client, region in _ = try await client.put([.init(key: key, source: try region.slice(length: size))]) }
      ),
      ("DELETE", .delete, { client, _ in _ = try await client.delete([key]) }),
      ("STAT", .read, { client, _ in _ = try await client.stat() }),
      (
        "RING", .read, { client, _ in _ = try await client.ringCall(.ring, node: address) }
      ),
    ]
    for (secret, scopes) in [
      (readerSecret, TokenScopes.read), (writerSecret, .write), (deleterSecret, .delete), (operatorSecret, .operator),
    ] {
      let client = tenantClient(node, secret)
      defer { client.close() }
      let region = client.register(buffer)
      for (operation, needed, call) in calls {
        let error = await failure { try await call(client, region) }
        // STAT and RING: read, or operator (which sees the node's view).
        let describesNode = operation == "STAT" || operation == "RING"
        if scopes.contains(needed) || (describesNode && scopes.contains(.operator)) {
          #expect(error?.code != .permissionDenied, "\(operation) refused to \(scopes): \(String(describing: error))")
        } else {
          #expect(error?.code == .permissionDenied, "\(operation) allowed to \(scopes)")
          #expect(
            error?.message.contains("\(operation) needs scope '\(needed)'") == true, "\(String(describing: error))")
        }
      }
      // RING operations beyond the ring need operator; members shows a tenant no node counters.
      for op in [RingCall.drainStatus, .sync] where scopes.contains(.read) {
        let error = await failure { _ = try await client.ringCall(op, node: node.address) }
        #expect(
          error?.code == .permissionDenied && error?.message.contains("'operator'") == true,
          "\(op): \(String(describing: error))")
      }
      if scopes.contains(.read) || scopes.contains(.operator) {
        let members = try JSONValue.parse(
          try await client.ringCall(.members, node: node.address))
        let stat = try JSONValue.parse(Array(try await client.stat().utf8))
        #expect(members["members"]?.arrayValue?.count == 2)
        if scopes.contains(.operator) {
          #expect(members["replication"] != nil && stat["hits_ram"] != nil, "an operator sees the node")
          let status = try await client.ringCall(.drainStatus, node: node.address)
          #expect(try JSONValue.parse(status)["state"] != nil)
        } else {
          #expect(members["replication"] == nil)
          #expect(stat["namespace"]?.stringValue == "t1" && stat["hits_ram"] == nil && stat["requests"] == nil)
        }
      }
    }
    // The admin API: every protected route needs operator (401 without a token or with an unknown
    // one, 403 naming the scope for a token without it).
    let routes = try documentedRoutes().filter { !["/health", "/ready", "/metrics"].contains($0.path) }
    #expect(routes.count >= 9)
    for route in routes {
      #expect(try AdminClient(address: admin).send(route.method, route.path).status == 401, "\(route)")
      #expect(
        try AdminClient(address: admin, token: "no-such-token-000000001").send(route.method, route.path).status == 401)
      for secret in [readerSecret, writerSecret, deleterSecret] {
        let reply = try AdminClient(address: admin, token: secret).send(route.method, route.path)
        #expect(reply.status == 403 && reply.text.contains("needs scope 'operator'"), "\(route): \(reply.text)")
      }
      // Not POST /v1/drain: it would drain this node; its refusals above are what is tested.
      guard !(route.method == "POST" && route.path == "/v1/drain") else { continue }
      let allowed = try AdminClient(address: admin, token: operatorSecret).send(route.method, route.path)
      #expect(allowed.status != 401 && allowed.status != 403, "\(route) refused to operator: \(allowed.text)")
    }
    // An unknown token on the data plane is refused and audited.
    let stranger = tenantClient(node, "no-such-token-000000001")
    #expect(await failure { _ = try await stranger.stat() }?.code == .permissionDenied)
    stranger.close()
    let metrics = try AdminClient(address: admin).send("GET", "/metrics").text
    #expect((sample(metrics, #"strata_scope_refusals_total{scope="operator"}"#) ?? 0) >= Double(routes.count * 3))
    #expect((sample(metrics, #"strata_auth_failures_total{reason="unknown_token"}"#) ?? 0) >= 1)
    let lines = try String(contentsOfFile: log, encoding: .utf8)
    for event in ["auth_failure", "scope_denied"] { #expect(lines.contains("audit=\(event)"), "no \(event) line") }
    for secret in [readerSecret, writerSecret, deleterSecret, operatorSecret, "no-such-token-000000001"] {
      #expect(!lines.contains(secret), "a token is in the log")
      #expect(!lines.contains(String(digest(secret).dropFirst(7))), "a token's whole digest is in the log")
    }
  }

  /// A reload that removes a token or narrows its scopes closes its sessions at once (idle ones
  /// included, with nothing sent); sessions of unchanged tokens stay.
  @Test func reloadRemovingOrNarrowingATokenClosesItsSessions() async throws {
    func config(_ entries: [String]) -> String {
      "auth:\n  tokens:\n" + entries.map { "    - \($0)\n" }.joined()
    }
    let keep = "{token: \"\(digest(readerSecret))\", namespace: t1, scopes: [read, write]}"
    let op = "{token: \"\(digest(operatorSecret))\", namespace: ops, scopes: [operator]}"
    let (node, admin, log) = try await tenantNode(
      config([
        keep, op, "{token: \"\(digest(writerSecret))\", namespace: t1, scopes: [read, write]}",
        "{token: \"\(digest(deleterSecret))\", namespace: t1, scopes: [read, write, delete]}",
      ]))
    defer { _ = node.stop() }
    var sessions: [String: TCPSocket] = [:]
    for secret in [readerSecret, writerSecret, deleterSecret] {
      let (socket, hello) = try rawSession(node, token: secret)
      guard case .helloResponse = hello else { throw StrataError(.protocolError, "HELLO refused: \(hello)") }
      sessions[secret] = socket
    }
    defer { for socket in sessions.values { socket.shutdown() } }
    // writer removed; deleter narrowed (delete taken away); reader unchanged.
    let path = String(log.dropLast(4)) + ".yaml"
    try config([keep, op, "{token: \"\(digest(deleterSecret))\", namespace: t1, scopes: [read, write]}"]).write(
      toFile: path, atomically: true, encoding: .utf8)
    // The reload and the waits block, so they run on a thread of their own (not a cooperative one
    // the tests beside this one need), which also times them.
    let revoked = [writerSecret, deleterSecret].map { sessions[$0]! }
    let (report, closed, seconds) = try await onNewThread { () throws(StrataError) -> (JSONValue, [Bool], Double) in
      let started = Date()
      let report = try AdminClient(address: admin, token: operatorSecret).call("POST", "/v1/config/reload")
      let closed = revoked.map { drainUntilClosed($0, seconds: 5).closed }
      return (report, closed, Date().timeIntervalSince(started))
    }
    #expect(report["applied"] == .array([.string("auth.tokens")]))
    #expect(closed == [true, true], "the sessions of revoked tokens stayed open: \(closed)")
    #expect(seconds < 3, "closing took \(seconds) s")
    #expect(!drainUntilClosed(sessions[readerSecret]!, seconds: 1).closed, "an unchanged token's session was closed")
    let metrics = try AdminClient(address: admin).send("GET", "/metrics").text
    #expect(sample(metrics, "strata_sessions_revoked_total") == 2)
    let (_, refused) = try rawSession(node, token: writerSecret)
    guard case .error(_, let body) = refused else { throw StrataError(.protocolError, "removed token granted") }
    #expect(StrataError.Code(number: body.code) == .permissionDenied)
    let lines = try String(contentsOfFile: log, encoding: .utf8)
    #expect(lines.contains("audit=session_revoked"))
    #expect(!lines.contains(writerSecret) && !lines.contains(deleterSecret))
  }

  /// Tenant A writing far past its RAM quota evicts only its own blocks: tenant B's stay. The
  /// same writes on a node without quotas evict B's blocks (the test can fail).
  @Test func aTenantFillingItsQuotaDoesNotEvictAnotherTenantsBlocks() async throws {
    let tokens = """
      auth:
        tokens:
          - {token: "\(digest(readerSecret))", namespace: tenant-a, scopes: [read, write]}
          - {token: "\(digest(writerSecret))", namespace: tenant-b, scopes: [read, write]}
      nvme: {admission: never}
      """
    let size = 1 << 20
    for quota in [false, true] {
      let (node, _, _) = try await tenantNode(
        tokens + (quota ? "\nlimits: {max_ram_bytes_per_namespace: 24MiB, max_block_size: 4MiB}\n" : "\n"))
      defer { _ = node.stop() }
      let a = tenantClient(node, readerSecret)
      let b = tenantClient(node, writerSecret)
      defer {
        a.close()
        b.close()
      }
      let bBlocks = try await putBlocks(b, count: 16, size: size, seed: 1)
      _ = try await putBlocks(a, count: 80, size: size, seed: 2)
      let lookup = try await b.lookup(bBlocks.map(\.0))
      let present = lookup.tiers.filter { $0 != .absent }.count
      if quota {
        #expect(present == 16, "tenant A's writes evicted \(16 - present) of tenant B's blocks")
        for (key, bytes) in bBlocks.prefix(4) { #expect(try await getBlock(b, key, size: size) == bytes) }
        let stat = try JSONValue.parse(Array(try await a.stat().utf8))
        #expect((stat["ram_used_bytes"]?.intValue ?? .max) <= 24 << 20)
        #expect(stat["ram_quota_bytes"]?.intValue == 24 << 20)
      } else {
        #expect(present < 16, "without quotas A's writes should have evicted some of B's blocks")
      }
    }
  }

  /// Request-rate and probe limits trip with resource_exhausted naming the setting; the metrics
  /// count them and the audit log says so, without a token.
  @Test func requestRateAndProbeLimitsTrip() async throws {
    let yaml = """
      auth:
        tokens:
          - {token: "\(digest(readerSecret))", namespace: rate, scopes: [read, write]}
          - {token: "\(digest(writerSecret))", namespace: probe, scopes: [read, write]}
      namespaces:
        - {namespace: rate, requests_per_second: 5}
        - {namespace: probe, lookup_keys_per_second: 200, misses_per_second: 10}
      """
    let (node, admin, log) = try await tenantNode(yaml)
    defer { _ = node.stop() }
    let rate = tenantClient(node, readerSecret)
    defer { rate.close() }
    var refused: [StrataError] = []
    let started = Date()
    for _ in 0..<30 {
      if let error = await failure({ _ = try await rate.stat() }) { refused.append(error) }
    }
    let passed = 30 - refused.count
    #expect(passed >= 5 && Double(passed) <= 5 + 5 * Date().timeIntervalSince(started) + 1, "\(passed) passed")
    #expect(
      refused.allSatisfy {
        $0.code == .resourceExhausted && $0.message.contains("namespaces entry 'rate', requests_per_second")
      })
    let probe = tenantClient(node, writerSecret)
    defer { probe.close() }
    // 30 absent keys: answered, and 3 seconds' worth of misses are owed.
    let keys = (0..<30).map { blockKey($0, 99) }
    #expect(try await probe.lookup(keys).tiers.allSatisfy { $0 == .absent })
    let misses = await failure { _ = try await probe.lookup([blockKey(100, 99)]) }
    #expect(misses?.code == .resourceExhausted && misses?.message.contains("misses_per_second") == true)
    // Later the debt is paid and probing resumes (at the allowed rate).
    let deadline = Date().addingTimeInterval(10)
    var resumed = false
    while !resumed && Date() < deadline {
      resumed = await failure { _ = try await probe.lookup([blockKey(101, 99)]) } == nil
      if !resumed { try await Task.sleep(for: .milliseconds(200)) }
    }
    #expect(resumed)
    let metrics = try AdminClient(address: admin).send("GET", "/metrics").text
    #expect(
      (sample(metrics, #"strata_quota_refusals_total{namespace="rate",quota="requests_per_second"}"#) ?? 0)
        == Double(refused.count))
    #expect((sample(metrics, #"strata_probe_limit_hits_total{namespace="probe",limit="misses_per_second"}"#) ?? 0) >= 1)
    let lines = try String(contentsOfFile: log, encoding: .utf8)
    #expect(lines.contains("audit=probe_limit") && lines.contains("audit=quota_refused"))
    #expect(!lines.contains(readerSecret) && !lines.contains(writerSecret))
  }
}
