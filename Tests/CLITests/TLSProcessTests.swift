// TLS against real `strata serve` processes on loopback, with certificates made by
// scripts/dev-ca.sh and the openssl CLI: the Swift client, `openssl s_client` and the CLI over
// TLS; a wrong CA, an expired certificate and plaintext to the TLS port refused with clear
// errors; the peer capability only for a node certificate naming a ring member; certificates
// reloaded without dropping open connections; three nodes replicating over mutual TLS.

import Foundation
import StrataAdmin
import StrataClient
import StrataCore
import StrataTCP
import StrataTestKit
import Synchronization
import Testing

/// A development CA and certificates in a temporary folder (scripts/dev-ca.sh).
struct DevCA {
  let directory: String

  /// Makes a CA with node certificates for `nodes` (and `client.pem`).
  init(nodes: [String] = ["node-1"], directory: String? = nil) async throws {
    self.directory =
      directory
      ?? FileManager.default.temporaryDirectory.appendingPathComponent("strata-ca-\(UUID().uuidString)").path
    let script = packageRoot.appendingPathComponent("scripts/dev-ca.sh").path
    let run = try await runProcess("/bin/bash", [script, self.directory] + nodes)
    guard run.status == 0 else { throw StrataError(.internalError, "dev-ca.sh failed: \(run.stderrText)") }
  }

  var ca: String { "\(directory)/ca.pem" }
  func certificate(_ name: String) -> String { "\(directory)/\(name).pem" }
  func key(_ name: String) -> String { "\(directory)/\(name).key" }

  /// A certificate for `name` signed by this CA that expired yesterday.
  func expired(_ name: String) async throws -> (certificate: String, key: String) {
    let base = "\(directory)/expired-\(name)"
    let request = try await runProcess(
      "/usr/bin/openssl",
      [
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(base).key", "-out",
        "\(base).csr", "-subj", "/CN=\(name)",
      ])
    try #require(request.status == 0, "\(request.stderrText)")
    try "subjectAltName=DNS:\(name),IP:127.0.0.1\n".write(toFile: "\(base).ext", atomically: true, encoding: .utf8)
    let sign = try await runProcess(
      "/usr/bin/openssl",
      [
        "x509", "-req", "-in", "\(base).csr", "-CA", ca, "-CAkey", "\(directory)/ca.key", "-CAcreateserial", "-out",
        "\(base).pem", "-days", "-1", "-extfile", "\(base).ext",
      ])
    try #require(sign.status == 0, "\(sign.stderrText)")
    return ("\(base).pem", "\(base).key")
  }

  /// `strata serve` arguments for TLS with node certificate `name`.
  func serveArguments(_ name: String) -> [String] {
    ["--tls-cert", certificate(name), "--tls-key", key(name), "--tls-ca", ca]
  }

  /// A client context trusting this CA, presenting certificate `name` when given.
  func client(presenting name: String? = nil) throws -> TLSContext {
    try TLSContext.client(
      TLSFiles(certificate: name.map(certificate) ?? "", key: name.map(key) ?? "", trusted: ca))
  }

  func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// A TLS client of `address` (`tls` nil: plaintext).
func tlsClient(
  _ address: HostPort, tls: TLSContext?, peer: Bool = false, connections: Int = 2, sameHost: Bool = true
) -> StrataClient {
  var configuration = StrataClient.Configuration(node: address)
  configuration.sameHost = sameHost
  configuration.connections = connections
  configuration.timeoutMilliseconds = 10_000
  configuration.retries = 0
  configuration.tls = tls
  configuration.isPeer = peer
  return StrataClient(configuration)
}

/// The error a call throws, or nil when it succeeds.
func failure(_ body: () async throws(StrataError) -> Void) async -> StrataError? {
  do throws(StrataError) {
    try await body()
    return nil
  } catch {
    return error
  }
}

@Suite(.serialized) struct TLSProcessTests {
  /// 64 blocks of up to 1 MiB through the Swift client over TLS, byte-compared; the node counts
  /// the TLS connections (user-space records here: no kernel TLS module). A TLS client that may
  /// take the same-host path verifies the node over TLS once, then moves to the (plaintext,
  /// local) Unix socket with every connection and reads the same bytes there.
  @Test func swiftClientRoundTripsBlocksOverTLS() async throws {
    let ca = try await DevCA()
    defer { ca.remove() }
    // RAM pages are as large as the largest block: 2 MiB blocks let 256 MiB hold all 64.
    let config = try temporaryFile("tls-small-blocks.yaml", "limits:\n  max_block_size: 2MiB\n")
    let node = try await NodeProcess.launch(
      ram: "256MiB", nvme: "512MiB", extra: ca.serveArguments("node-1") + ["--config", config])
    defer { _ = node.stop() }
    let blocks = BlockSet(count: 64, run: 41, smallest: 1024, spread: 1 << 20)
    let client = tlsClient(node.address, tls: try ca.client(), sameHost: false)
    defer { client.close() }
    try await blocks.putAll(client)
    let check = try await blocks.verify(client)
    #expect(check.ok == blocks.count, "\(check)")
    let stat = try await client.stat()
    #expect(stat.contains("\"tls_user\":2") || stat.contains("\"tls_kernel\":2"), "\(stat)")
    #expect(stat.contains("\"same_host_connections_accepted\":0"), "\(stat)")

    let local = tlsClient(node.address, tls: try ca.client(), sameHost: true)
    defer { local.close() }
    let localCheck = try await blocks.verify(local)
    #expect(localCheck.ok == blocks.count, "\(localCheck)")
    let localStat = try await local.stat()
    #expect(localStat.contains("\"tls_user\":3") || localStat.contains("\"tls_kernel\":3"), "\(localStat)")
    #expect(localStat.contains("\"same_host_connections_accepted\":2"), "\(localStat)")
  }

  /// 200 connections that begin a TLS handshake and stall (a record header, then nothing) hold
  /// no thread: a real client is served meanwhile, and each stalled one is closed at
  /// `limits.handshake_timeout`.
  @Test func stalledTLSHandshakesHoldNoThread() async throws {
    let ca = try await DevCA()
    defer { ca.remove() }
    let config = try temporaryFile("tls-stall.yaml", "limits:\n  handshake_timeout: 500ms\n")
    let node = try await NodeProcess.launch(
      ram: "64MiB", nvme: "256MiB", extra: ca.serveArguments("node-1") + ["--config", config])
    defer { _ = node.stop() }
    var stalled: [TCPSocket] = []
    for _ in 0..<200 {
      let socket = try TCPSocket.connect(to: node.address, timeoutMilliseconds: 5_000)
      socket.sendAvailable([0x16, 0x03, 0x01, 0x02, 0x00])  // a ClientHello record that never comes
      stalled.append(socket)
    }
    let client = tlsClient(node.address, tls: try ca.client())
    defer { client.close() }
    // Timed on a thread of its own that runs the connect itself (waitForTask), not from this
    // task: in the full suite this task can wait seconds for a cooperative thread after the
    // connect has finished, which is no delay of the node's (a CI run measured 5.7 s that way).
    let seconds = try await onNewThread { () throws(StrataError) -> Double in
      let started = Date()
      _ = try waitForTask { () throws(StrataError) in try await client.connect() }
      return Date().timeIntervalSince(started)
    }
    #expect(seconds < 5, "a TLS client waited \(seconds) s behind stalled handshakes")
    let closed = try await eventually(within: 10) {
      let stat = try await client.stat()
      return stat.contains("\"handshakes_timed_out\":200,") && stat.contains("\"handshakes_pending\":0,")
    }
    #expect(closed, "the stalled handshakes were not all closed at their deadline")
    _ = stalled
  }

  /// The node's TLS port as any TLS client sees it: TLS 1.3, AES-128-GCM, a certificate that verifies.
  @Test func opensslClientNegotiatesTLS13() async throws {
    let ca = try await DevCA()
    defer { ca.remove() }
    let node = try await NodeProcess.launch(ram: "64MiB", nvme: "256MiB", extra: ca.serveArguments("node-1"))
    defer { _ = node.stop() }
    let run = try await runProcess(
      "/usr/bin/openssl",
      [
        "s_client", "-connect", node.address.description, "-CAfile", ca.ca, "-verify_return_error",
        "-verify_hostname", "localhost",
      ], input: Data())
    #expect(run.stdoutText.contains("Verify return code: 0 (ok)"), "\(run.stdoutText)")
    #expect(run.stdoutText.contains("TLSv1.3"), "\(run.stdoutText)")
    // s_client lists TLS_AES_256_GCM_SHA384 first; the node picks by its own order.
    #expect(run.stdoutText.contains("TLS_AES_128_GCM_SHA256"), "\(run.stdoutText)")
    let wrong = try await DevCA()
    defer { wrong.remove() }
    let refused = try await runProcess(
      "/usr/bin/openssl",
      ["s_client", "-connect", node.address.description, "-CAfile", wrong.ca, "-verify_return_error"], input: Data())
    #expect(refused.status != 0)
    #expect((refused.stdoutText + refused.stderrText).contains("self-signed certificate in certificate chain"))
  }

  /// Plaintext to the TLS port, a client trusting another CA, TLS to a plaintext port and a node
  /// whose certificate expired: each refused with an error that says why.
  @Test func mismatchesAreRefusedWithClearErrors() async throws {
    let ca = try await DevCA()
    let other = try await DevCA()
    defer {
      ca.remove()
      other.remove()
    }
    let node = try await NodeProcess.launch(ram: "64MiB", nvme: "256MiB", extra: ca.serveArguments("node-1"))
    defer { _ = node.stop() }

    let plain = tlsClient(node.address, tls: nil)
    defer { plain.close() }
    let plaintextError = await failure { () throws(StrataError) in _ = try await plain.connect() }
    #expect(plaintextError?.code == .permissionDenied)
    #expect(plaintextError?.message.contains("this port requires TLS") == true, "\(String(describing: plaintextError))")

    let wrongCA = tlsClient(node.address, tls: try other.client())
    defer { wrongCA.close() }
    let wrongCAError = await failure { () throws(StrataError) in _ = try await wrongCA.connect() }
    #expect(
      wrongCAError?.message.contains("certificate verification failed: self-signed certificate in certificate chain")
        == true, "\(String(describing: wrongCAError))")

    let plaintextNode = try await NodeProcess.launch(ram: "64MiB", nvme: "256MiB")
    defer { _ = plaintextNode.stop() }
    let tlsToPlain = tlsClient(plaintextNode.address, tls: try ca.client())
    defer { tlsToPlain.close() }
    let tlsToPlainError = await failure { () throws(StrataError) in _ = try await tlsToPlain.connect() }
    #expect(tlsToPlainError?.message.contains("TLS handshake") == true, "\(String(describing: tlsToPlainError))")

    let expired = try await ca.expired("node-1")
    let stale = try await NodeProcess.launch(
      ram: "64MiB", nvme: "256MiB", extra: ["--tls-cert", expired.certificate, "--tls-key", expired.key])
    defer { _ = stale.stop() }
    let toStale = tlsClient(stale.address, tls: try ca.client())
    defer { toStale.close() }
    let expiredError = await failure { () throws(StrataError) in _ = try await toStale.connect() }
    #expect(
      expiredError?.message.contains("certificate verification failed: certificate has expired") == true,
      "\(String(describing: expiredError))")
    // The CLI says the same.
    let cli = try await strata(["stat", "--node", stale.address.description, "--tls-ca", ca.ca])
    #expect(cli.status != 0 && cli.stderr.contains("certificate has expired"), "\(cli.stderr)")
  }

  /// The peer capability: refused to a client without a certificate, and to one whose
  /// certificate (signed by the cluster CA) names no ring member; granted to a node certificate
  /// naming a member.
  @Test func peerClaimNeedsANodeCertificateOfARingMember() async throws {
    let ca = try await DevCA(nodes: ["node-1", "node-9"])
    defer { ca.remove() }
    let node = try await NodeProcess.launch(
      ram: "64MiB", nvme: "256MiB", extra: ca.serveArguments("node-1") + ["--node-id", "node-1"])
    defer { _ = node.stop() }

    let anonymous = tlsClient(node.address, tls: try ca.client(), peer: true)
    defer { anonymous.close() }
    let anonymousError = await failure { () throws(StrataError) in _ = try await anonymous.connect() }
    #expect(anonymousError?.code == .permissionDenied)
    #expect(
      anonymousError?.message.contains("needs a node certificate") == true, "\(String(describing: anonymousError))")

    let tenant = tlsClient(node.address, tls: try ca.client(presenting: "client"), peer: true)
    defer { tenant.close() }
    let tenantError = await failure { () throws(StrataError) in _ = try await tenant.connect() }
    #expect(tenantError?.code == .permissionDenied)
    #expect(
      tenantError?.message.contains("names no member of the current ring") == true,
      "\(String(describing: tenantError))")

    // A certificate from the CA for a node id that is not in the ring ("node-9"; its SAN
    // 127.0.0.1 names no member either, the node being alone under its id).
    let member = tlsClient(node.address, tls: try ca.client(presenting: "node-1"), peer: true)
    defer { member.close() }
    #expect(await failure { () throws(StrataError) in _ = try await member.connect() } == nil)
    // The same client certificate without the peer claim is an ordinary client.
    let ordinary = tlsClient(node.address, tls: try ca.client(presenting: "client"))
    defer { ordinary.close() }
    #expect(await failure { () throws(StrataError) in _ = try await ordinary.connect() } == nil)
  }

  /// New certificates on `config reload`: new handshakes use them, a connection opened before
  /// keeps working on its session.
  @Test func certificateReloadKeepsOpenConnections() async throws {
    let first = try await DevCA()
    let second = try await DevCA()
    defer {
      first.remove()
      second.remove()
    }
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("strata-reload-\(UUID().uuidString)")
      .path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let certificate = "\(folder)/node.pem"
    let key = "\(folder)/node.key"
    func install(_ ca: DevCA) throws {
      for (from, to) in [(ca.certificate("node-1"), certificate), (ca.key("node-1"), key)] {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
      }
    }
    try install(first)
    let config = "\(folder)/node.yaml"
    try "tls:\n  cert: \(certificate)\n  key: \(key)\n".write(toFile: config, atomically: true, encoding: .utf8)
    let node = try await NodeProcess.launch(ram: "64MiB", nvme: "256MiB", extra: ["--config", config])
    defer { _ = node.stop() }
    let admin = try node.admin

    // One connection, so that every call after the reload goes over the session opened before it.
    let before = tlsClient(node.address, tls: try first.client(), connections: 1)
    defer { before.close() }
    _ = try await before.stat()

    try install(second)
    let report = try AdminClient(address: admin, tls: try first.client()).call("POST", "/v1/config/reload")
    #expect(report["rejected"] == .array([]), "\(report)")

    // The connection opened before the reload still answers.
    #expect(try await before.stat().contains("tls_user"))
    let stale = tlsClient(node.address, tls: try first.client())
    defer { stale.close() }
    let staleError = await failure { () throws(StrataError) in _ = try await stale.connect() }
    #expect(
      staleError?.message.contains("certificate verification failed") == true, "\(String(describing: staleError))")
    let renewed = tlsClient(node.address, tls: try second.client())
    defer { renewed.close() }
    #expect(await failure { () throws(StrataError) in _ = try await renewed.connect() } == nil)
    // The admin port, opened before the data plane existed, follows its certificates too.
    #expect(try AdminClient(address: admin, tls: try second.client()).send("GET", "/health").status == 200)
    #expect(throws: StrataError.self) {
      try AdminClient(address: admin, tls: try first.client()).send("GET", "/health")
    }
  }

  /// Three static nodes over mutual TLS: blocks written through one are replicated to their
  /// other owner over node-certificate connections, and survive losing any one node.
  @Test func threeStaticNodesReplicateOverMutualTLS() async throws {
    let ca = try await DevCA(nodes: ["node-a", "node-b", "node-c"])
    defer { ca.remove() }
    let cluster = try ClusterHarness(membership: .staticPeers, names: ["a", "b", "c"])
    defer { cluster.shutdown() }
    cluster.staticMembers = ["a", "b", "c"]
    cluster.clientTLS = try ca.client()
    for name in ["a", "b", "c"] {
      cluster.extraArguments = ca.serveArguments("node-\(name)")
      try await cluster.start(name)
    }
    let blocks = BlockSet(count: 300, run: 77)
    try await cluster.write(blocks, through: ["a", "b", "c"])
    try await cluster.killAndReadBack("b", blocks, survivors: ["a", "c"])
    // Peer connections were TLS: each surviving node accepted node-certificate connections.
    let stats = try await tlsClient(cluster.address("a"), tls: try ca.client()).stat()
    #expect(!stats.contains("\"tls_user\":0,"), "\(stats)")
  }
}
/// Tenant tokens and a cluster CA but no cluster token (configuration allows it: the node
/// certificates are the peers' credential): a PUT with write quorum 2 through a is copied to b
/// over a node-certificate connection in the tenant's namespace and acknowledged. (The peer pool
/// used to open no channel without a cluster token, so every such PUT missed its quorum.)
@Test func tenantNodesWithCertificatesAndNoClusterTokenReplicate() async throws {
  let ca = try await DevCA(nodes: ["node-a", "node-b"])
  defer { ca.remove() }
  let cluster = try ClusterHarness(membership: .staticPeers, names: ["a", "b"])
  defer { cluster.shutdown() }
  cluster.staticMembers = ["a", "b"]
  let token = "tenant-token-for-certificate-peers"
  cluster.staticClusterConfig = ["write_quorum: 2"]
  cluster.configSections = ["auth:", "  tokens:", "    - {token: \"\(token)\", namespace: tenant}"]
  for name in ["a", "b"] {
    cluster.extraArguments = ca.serveArguments("node-\(name)")
    try await cluster.start(name)
  }
  let blocks = BlockSet(count: 20, run: 93)
  var configuration = StrataClient.Configuration(node: cluster.address("a"))
  configuration.token = token
  configuration.tls = try ca.client()
  configuration.timeoutMilliseconds = 10_000
  let writer = StrataClient(configuration)
  defer { writer.close() }
  let region = writer.register(blocks.source)
  let items = try (0..<blocks.count).map { n in
    try blocks.putItem(n, in: region)
  }
  let outcomes = try await writer.put(items, writeQuorum: 2)
  #expect(outcomes == Array(repeating: .stored, count: blocks.count))
  configuration.node = cluster.address("b")
  let reader = StrataClient(configuration)
  defer { reader.close() }
  #expect(try await reader.lookup(blocks.keys).leadingRun == blocks.count, "b holds every block")
}

/// `config reload` renews the certificate a node presents to its peers, not only its listener's.
@Suite(.serialized) struct PeerCertificateReloadTests {
  /// Node a (static, two nodes, write quorum 2: every PUT through a is copied to b before it is
  /// answered) starts with a certificate of CA 1, which b trusts. Its tls.cert and tls.key are
  /// then overwritten with a certificate of CA 2, which b does not trust, and reloaded: new copies
  /// to b fail (b refuses the handshake). Back to the CA 1 files and reloaded again: copies to b
  /// succeed. A node that kept presenting the certificate it started with would copy in all three
  /// phases.
  @Test func reloadRenewsTheCertificatePresentedToPeers() async throws {
    let first = try await DevCA(nodes: ["node-a", "node-b"])
    let second = try await DevCA(nodes: ["node-a"])
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("strata-peer-\(UUID().uuidString)")
      .path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer {
      first.remove()
      second.remove()
      try? FileManager.default.removeItem(atPath: folder)
    }
    // a trusts both CAs (b's certificate is of CA 1 throughout); so do the test's clients.
    let bundle = "\(folder)/cas.pem"
    try (try readPEMFile(first.ca) + readPEMFile(second.ca)).write(toFile: bundle, atomically: true, encoding: .utf8)
    let certificate = "\(folder)/a.pem"
    let key = "\(folder)/a.key"
    func install(_ ca: DevCA) throws {
      for (from, to) in [(ca.certificate("node-a"), certificate), (ca.key("node-a"), key)] {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
      }
    }
    try install(first)

    let cluster = try ClusterHarness(membership: .staticPeers, names: ["a", "b"])
    defer { cluster.shutdown() }
    cluster.staticMembers = ["a", "b"]
    let clients = try TLSContext.client(TLSFiles(trusted: bundle))
    cluster.clientTLS = clients
    cluster.staticClusterConfig = ["write_quorum: 2"]
    cluster.configSections = ["tls:", "  cert: \(certificate)", "  key: \(key)", "  ca: \(bundle)"]
    try await cluster.start("a")
    cluster.staticClusterConfig = []
    cluster.configSections = []
    cluster.extraArguments = first.serveArguments("node-b")
    try await cluster.start("b")

    let admin = try cluster.node("a").admin
    func copied() throws -> Double {
      let text = try AdminClient(address: admin, tls: clients).send("GET", "/metrics").text
      let line = text.split(separator: "\n").first { $0.hasPrefix("strata_write_quorum_copied_blocks_total ") }
      return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) } ?? -1
    }
    func reload() throws {
      let report = try AdminClient(address: admin, tls: clients).call("POST", "/v1/config/reload")
      #expect(report["rejected"] == .array([]), "\(report)")
    }
    let writer = tlsClient(cluster.address("a"), tls: clients)
    defer { writer.close() }
    /// PUTs `count` new blocks through a; how many a acknowledged.
    func write(run: Int, count: Int) async throws -> Int {
      let blocks = BlockSet(count: count, run: run)
      let region = writer.register(blocks.source)
      var acknowledged = 0
      for n in 0..<blocks.count {
        let item = try blocks.putItem(n, in: region)
        if (try? await writer.put([item])) != nil { acknowledged += 1 }
      }
      return acknowledged
    }
    // Both nodes must be up (a copies only to an owner the probes found up) before the first phase.
    let ready = try await eventually(within: 60) {
      (try? await write(run: 400, count: 1)) == 1 && (try? copied()) ?? 0 >= 1
    }
    try #require(ready, "a did not copy to b: \(cluster.log("a"))")

    let before = try copied()
    #expect(try await write(run: 401, count: 20) == 20)
    #expect(try copied() >= before + 20, "copies with the first certificate")

    try install(second)
    try reload()
    let renewed = try copied()
    #expect(try await write(run: 402, count: 20) == 0, "a acknowledged writes it could not copy to b")
    #expect(try copied() == renewed, "a still presents the certificate it started with")

    try install(first)
    try reload()
    let restored = try copied()
    let copiedAgain = try await eventually(within: 60) {
      _ = try? await write(run: 403 + Int.random(in: 0..<1_000_000), count: 5)
      return (try? copied()) ?? 0 >= restored + 5
    }
    #expect(copiedAgain, "a did not copy to b with the first certificate back: \(cluster.log("a"))")
  }
}

/// etcd over https with client certificates and user/password auth, and a rogue member record.
@Suite(
  .serialized,
  .enabled(if: EtcdProcess.isAvailable, "etcd is not installed (scripts/bootstrap.sh installs etcd-server)"))
struct TLSEtcdProcessTests {
  /// Calls etcd's JSON gateway with curl over TLS (the etcd client certificate), with `token`.
  static func etcdCall(
    _ etcd: EtcdProcess, _ ca: DevCA, _ path: String, _ body: String, token: String? = nil
  ) async throws -> [String: Any] {
    var arguments = [
      "-sS", "--cacert", ca.ca, "--cert", ca.certificate("etcd-client"), "--key", ca.key("etcd-client"), "-X", "POST",
      "\(etcd.clientURL)\(path)", "-d", body,
    ]
    if let token { arguments += ["-H", "Authorization: \(token)"] }
    let run = try await runProcess("/usr/bin/curl", arguments)
    try #require(run.status == 0, "curl \(path): \(run.stderrText)")
    return (try? JSONSerialization.jsonObject(with: Data(run.stdoutText.utf8)) as? [String: Any]) ?? [:]
  }

  static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

  /// Three nodes registered in an etcd that speaks only TLS with client certificates and has
  /// auth enabled (a user for Strata, read-write on its prefix): they form one ring and replicate
  /// over mutual TLS. Then member records are written into etcd by hand, all pointing at one TLS
  /// listener: "rogue" with a certificate of another CA, "rogue-copy" with node a's genuine
  /// certificate (public, but it names node-a), "rogue-bare" with none. Each is seen, logged and
  /// counted as not honoured; none enters the ring or RING `members`, so no node connects to the
  /// listener (no replica, no token) and no client learns of it.
  @Test func etcdOverHTTPSWithAuthAndARogueMember() async throws {
    let ca = try await DevCA(nodes: ["node-a", "node-b", "node-c", "etcd"])
    defer { ca.remove() }
    let etcd = try EtcdProcess(tls: (ca.certificate("etcd"), ca.key("etcd"), ca.ca))
    defer { etcd.stop() }
    // Users and roles, then auth on (etcd's v3 JSON gateway).
    _ = try await Self.etcdCall(etcd, ca, "/v3/auth/user/add", #"{"name":"root","password":"root-password-1"}"#)
    _ = try await Self.etcdCall(etcd, ca, "/v3/auth/role/add", #"{"name":"root"}"#)
    _ = try await Self.etcdCall(etcd, ca, "/v3/auth/user/grant", #"{"user":"root","role":"root"}"#)
    _ = try await Self.etcdCall(etcd, ca, "/v3/auth/user/add", #"{"name":"strata","password":"strata-password-1"}"#)
    _ = try await Self.etcdCall(etcd, ca, "/v3/auth/role/add", #"{"name":"strata"}"#)
    _ = try await Self.etcdCall(
      etcd, ca, "/v3/auth/role/grant",
      #"{"name":"strata","perm":{"permType":"READWRITE","key":"\#(Self.base64("/strata/"))","range_end":"\#(Self.base64("/strata0"))"}}"#
    )
    _ = try await Self.etcdCall(etcd, ca, "/v3/auth/user/grant", #"{"user":"strata","role":"strata"}"#)
    _ = try await Self.etcdCall(etcd, ca, "/v3/auth/enable", "{}")
    // Without the token, etcd refuses now.
    let anonymous = try await Self.etcdCall(etcd, ca, "/v3/kv/range", #"{"key":"\#(Self.base64("/strata/"))"}"#)
    #expect(anonymous["error"] != nil || anonymous["code"] != nil, "\(anonymous)")

    let cluster = try ClusterHarness(membership: .etcd(etcd.clientURL), names: ["a", "b", "c"])
    defer { cluster.shutdown() }
    cluster.clientTLS = try ca.client()
    for name in ["a", "b", "c"] {
      cluster.etcdClusterConfig = [
        "etcd_cert: \(ca.certificate("etcd-client"))", "etcd_key: \(ca.key("etcd-client"))",
        "etcd_user: strata", "etcd_password: strata-password-1",
      ]
      cluster.extraArguments = ca.serveArguments("node-\(name)")
      try await cluster.start(name)
    }
    let registered = try await eventually(within: 15) {
      (try? await cluster.activeIDs(via: ["a"]).count) == 3
    }
    #expect(registered, "the nodes did not all register: \(cluster.log("a"))")
    let blocks = BlockSet(count: 200, run: 91)
    try await cluster.write(blocks, through: ["a", "b", "c"])
    try await cluster.killAndReadBack("c", blocks, survivors: ["a", "b"])

    // The rogue: a TLS listener with a certificate from another CA, named "rogue".
    let rogueCA = try await DevCA(nodes: ["rogue"])
    defer { rogueCA.remove() }
    let rogue = try RogueListener(
      context: try TLSContext.server(TLSFiles(certificate: rogueCA.certificate("rogue"), key: rogueCA.key("rogue"))))
    defer { rogue.stop() }
    let login = try await Self.etcdCall(
      etcd, ca, "/v3/auth/authenticate", #"{"name":"root","password":"root-password-1"}"#)
    let token = try #require(login["token"] as? String, "\(login)")
    let records: [(id: String, certificate: String?, reason: String)] = [
      ("rogue", try readPEMFile(rogueCA.certificate("rogue")), "untrusted"),
      ("rogue-copy", try readPEMFile(ca.certificate("node-a")), "wrong_identity"),
      ("rogue-bare", nil, "missing"),
    ]
    for record in records {
      var fields: [String: Any] = [
        "id": record.id, "address": rogue.address.description, "capacity_bytes": 1 << 40, "zone": "",
        "transports": ["tcp"], "state": "active",
      ]
      fields["certificate"] = record.certificate
      let value = String(decoding: try JSONSerialization.data(withJSONObject: fields), as: UTF8.self)
      _ = try await Self.etcdCall(
        etcd, ca, "/v3/kv/put",
        #"{"key":"\#(Self.base64("/strata/test-\(cluster.address("a").port)/members/\(record.id)"))","value":"\#(Self.base64(value))"}"#,
        token: token)
    }
    // Each survivor sees every record and says why it does not honour it.
    for name in ["a", "b"] {
      let refused = try await eventually(within: 10) {
        records.allSatisfy { cluster.log(name).contains("member=\($0.id) reason=\($0.reason)") }
      }
      #expect(refused, "node \(name) did not report the rogue records: \(cluster.log(name))")
    }
    let metrics = try await Self.adminMetrics(cluster, "a", ca)
    #expect(metrics.contains("strata_member_records_rejected 3"), "\(metrics)")
    for record in records {
      #expect(metrics.contains(#"strata_member_records_rejected_total{reason="\#(record.reason)"} 1"#), "\(metrics)")
    }
    // Neither the ring nor a client's view of it has them.
    let reader = cluster.client(seeds: ["a", "b"])
    defer { reader.close() }
    let ring = try await reader.refreshRing()
    let ids = Set(ring.members.map(\.id))
    #expect(ids.isSuperset(of: ["node-a", "node-b"]) && ids.isDisjoint(with: records.map(\.id)), "\(ids)")
    // Blocks written through node a (not ring-aware: a stores each and copies it to its other
    // owners): with the rogue records honoured, about half of them would name one as an owner.
    // First c's record lapses (its lease), so that a PUT's write quorum is a and b.
    let cGone = try await eventually(within: 20) {
      (try? await cluster.activeIDs(via: ["a", "b"])) == ["node-a", "node-b"]
    }
    #expect(cGone, "node-c's record did not lapse")
    let more = BlockSet(count: 100, run: 92)
    let writer = tlsClient(cluster.address("a"), tls: try ca.client())
    defer { writer.close() }
    let region = writer.register(more.source)
    for n in 0..<more.count {
      _ = try await writer.put([
        StrataClient.PutItem(
          key: more.keys[n], source: try region.slice(offset: more.offsets[n], length: more.sizes[n]))
      ])
    }
    try await cluster.syncReplication(["a", "b"])
    let check = try await more.verify(reader)
    #expect(check.ok == more.count, "\(check.description)")
    #expect(rogue.connectionsAccepted == 0, "a node or client connected to a rogue record's address")
    #expect(rogue.bytesReceived == 0, "the rogue received application bytes (a token or a block)")
  }

  /// Node `name`'s /metrics over https (the admin port speaks TLS when the data plane does).
  static func adminMetrics(_ cluster: ClusterHarness, _ name: String, _ ca: DevCA) async throws -> String {
    #expect(cluster.node(name).banner.contains("strata admin API at https://"))
    let address = try cluster.node(name).admin
    let run = try await runProcess("/usr/bin/curl", ["-sS", "--cacert", ca.ca, "https://\(address)/metrics"])
    try #require(run.status == 0, "curl /metrics: \(run.stderrText)")
    return run.stdoutText
  }
}

/// A TLS listener on loopback that counts accepted connections, completed handshakes and the
/// application bytes it receives (what a rogue member would get).
final class RogueListener: Sendable {
  let listener: TCPListener
  private let counters = Mutex((accepted: 0, handshakes: 0, bytes: 0))
  private let context: TLSContext

  init(context: TLSContext) throws {
    listener = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0))
    self.context = context
    let thread = Thread { [self] in
      while let socket = listener.accept() {
        counters.withLock { $0.accepted += 1 }
        let worker = Thread { [self] in serve(socket) }
        worker.start()
      }
    }
    thread.start()
  }

  private func serve(_ socket: TCPSocket) {
    socket.setTimeout(milliseconds: 3_000)
    guard let session = try? socket.attachTLS(context), (try? session.handshake(peer: socket.peer)) == .done else {
      socket.shutdown()
      return
    }
    counters.withLock { $0.handshakes += 1 }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = buffer.withUnsafeMutableBytes { (try? socket.readSome($0)) ?? 0 }
    counters.withLock { $0.bytes += count }
    socket.shutdown()
  }

  var address: HostPort { listener.address }
  var connectionsAccepted: Int { counters.withLock { $0.accepted } }
  var handshakesCompleted: Int { counters.withLock { $0.handshakes } }
  var bytesReceived: Int { counters.withLock { $0.bytes } }

  func stop() { listener.shutdown() }
}

@Suite struct ExposureTests {
  /// A node asked to listen beyond loopback without tokens, or without TLS, refuses to start and
  /// says how to fix it; `--insecure` accepts the risk; the embedded default (loopback) starts.
  @Test func nonLoopbackListenersNeedTokensAndTLSOrInsecure() async throws {
    let open = try await strata(["serve", "--listen", "0.0.0.0:0", "--admin", "127.0.0.1:0", "--dry-run"])
    #expect(open.status != 0)
    #expect(open.stderr.contains("auth.tokens is empty") && open.stderr.contains("insecure: true"), "\(open.stderr)")
    let tokens = try temporaryFile(
      "exposed-tokens.yaml", "auth:\n  tokens:\n    - {token: \"exposure-test-token-0001\", namespace: default}\n")
    let clear = try await strata([
      "serve", "--config", tokens, "--listen", "0.0.0.0:0", "--admin", "127.0.0.1:0", "--dry-run",
    ])
    #expect(clear.status != 0)
    #expect(clear.stderr.contains("without TLS") && clear.stderr.contains("tls.cert"), "\(clear.stderr)")
    let accepted = try await strata([
      "serve", "--listen", "0.0.0.0:0", "--admin", "127.0.0.1:0", "--insecure", "--dry-run",
    ])
    #expect(accepted.status == 0, "\(accepted.stderr)")
    let embedded = try await strata(["serve", "--dry-run"])
    #expect(embedded.status == 0, "\(embedded.stderr)")
    #expect(embedded.stdout.contains("listen: \"127.0.0.1:7400\""), "\(embedded.stdout)")
  }
}
