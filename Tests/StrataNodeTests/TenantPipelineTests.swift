// Tenants in the request pipeline (in memory, so every transport inherits it): scopes on every
// opcode, sessions revoked by a token reload, request-rate and probe limits, audit counters; and
// the pure values behind them (Admission's buckets, the credential table).

import StrataConfig
import StrataCore
import StrataWire
import Testing

@testable import StrataNode

private let reader = "reader-secret-000000001"
private let writer = "writer-secret-000000001"
private let deleter = "deleter-secret-00000001"
private let operatorToken = "operator-secret-0000001"

private func scopedNode(configure: (inout NodeConfiguration) -> Void = { _ in }) throws -> PipelineNode {
  try PipelineNode { node in
    let t1 = try! Namespace("t1")
    node.auth.tokens = [
      .init(digest: TokenDigest(secret: reader), namespace: t1, scopes: [.read]),
      .init(digest: TokenDigest(secret: writer), namespace: t1, scopes: [.write]),
      .init(digest: TokenDigest(secret: deleter), namespace: t1, scopes: [.delete]),
      .init(digest: TokenDigest(secret: operatorToken), namespace: t1, scopes: [.operator]),
    ]
    configure(&node)
  }
}

/// The error code and message a single-frame answer carries, or nil when it is no error.
private func errorOf(_ answer: [UInt8]) -> (StrataError.Code?, String)? {
  guard case .error(_, let body)? = frames(answer).first?.1 else { return nil }
  return (StrataError.Code(number: body.code), body.message)
}

@Suite struct TenantPipelineTests {
  /// Every opcode needs its scope: LOOKUP, GET, STAT and RING read; PUT write; DELETE delete.
  @Test func everyOpcodeChecksItsScope() throws {
    let node = try scopedNode()
    let block = [UInt8](repeating: 7, count: 4096)
    let requests: [(String, TokenScopes, [UInt8])] = [
      ("LOOKUP", .read, LookupRequest(keys: [pipelineKey(1)]).frameBytes(requestID: 2, ringEpoch: 0)),
      ("GET", .read, GetRequest(items: [.init(key: pipelineKey(1))]).frameBytes(requestID: 3, ringEpoch: 0)),
      ("PUT", .write, putFrame(1, bytes: block, requestID: 4)),
      ("DELETE", .delete, DeleteRequest(keys: [pipelineKey(1)]).frameBytes(requestID: 5, ringEpoch: 0)),
      ("STAT", .read, StatRequest().frameBytes(requestID: 6, ringEpoch: 0)),
      (
        "RING", .read,
        WireMessage.ringRequest(body: Array(#"{"op":"ring"}"#.utf8)).frameBytes(requestID: 7, ringEpoch: 0)
      ),
    ]
    for (token, scopes) in [
      (reader, TokenScopes.read), (writer, .write), (deleter, .delete), (operatorToken, .operator),
    ] {
      let (connection, hello) = node.connect(token)
      guard case .helloResponse = hello else { throw StrataError(.protocolError, "HELLO refused: \(hello)") }
      for (operation, needed, frame) in requests {
        let refusal = errorOf(connection.receive(frame))
        // STAT and RING: read, or operator (which sees the node's view).
        let describesNode = operation == "STAT" || operation == "RING"
        if scopes.contains(needed) || (describesNode && scopes.contains(.operator)) {
          #expect(refusal?.0 != .permissionDenied, "\(operation) refused to a token with \(scopes)")
        } else {
          #expect(refusal?.0 == .permissionDenied, "\(operation) allowed to a token with \(scopes)")
          #expect(refusal?.1.contains("\(operation) needs scope '\(needed)'") == true, "\(refusal?.1 ?? "")")
        }
      }
      // A refused PUT's payload was read and dropped: the connection is still in step.
      #expect(errorOf(connection.receive(StatRequest().frameBytes(requestID: 9, ringEpoch: 0)))?.0 != .protocolError)
      connection.close()
    }
    let counters = node.server.auditCounters
    // Refused: reader PUT, DELETE; writer 5; deleter 5; operator 4; then the STAT of 2 of them.
    #expect(counters.total(.scopeDenied) == 2 + 5 + 5 + 4 + 2)
    #expect(node.server.stats.connectionsOpen == 0)
  }

  @Test func unknownTokensAreCountedWithoutTheToken() throws {
    let node = try scopedNode()
    let (_, hello) = node.connect("not-a-token-of-this-node-1")
    guard case .error(_, let body) = hello else { throw StrataError(.protocolError, "HELLO granted: \(hello)") }
    #expect(StrataError.Code(number: body.code) == .permissionDenied)
    #expect(node.server.auditCounters.total(.authFailure) == 1)
  }

  /// A reload that removes a token, moves it or narrows its scopes closes its sessions; one that
  /// widens a token, or leaves it, keeps them.
  @Test func reloadRevokesTheSessionsOfRemovedOrNarrowedTokens() throws {
    let node = try scopedNode()
    let t1 = try Namespace("t1")
    let (readerConnection, _) = node.connect(reader)
    let (writerConnection, _) = node.connect(writer)
    let (deleterConnection, _) = node.connect(deleter)
    #expect(node.server.stats.connectionsOpen == 3)
    let closed = node.server.replaceTokens([
      // reader widened: kept. writer removed. deleter narrowed to read: closed.
      .init(digest: TokenDigest(secret: reader), namespace: t1, scopes: [.read, .write]),
      .init(digest: TokenDigest(secret: deleter), namespace: t1, scopes: [.read]),
    ])
    #expect(closed == 2)
    let stat = StatRequest().frameBytes(requestID: 3, ringEpoch: 0)
    guard case .statResponse? = frames(readerConnection.receive(stat)).first?.1 else {
      throw StrataError(.protocolError, "the widened token's session was closed")
    }
    for connection in [writerConnection, deleterConnection] {
      let answer = frames(connection.receive(stat))
      #expect(answer.allSatisfy { if case .statResponse = $0.1 { false } else { true } })
    }
    #expect(node.server.stats.connectionsOpen == 1)
    #expect(node.server.auditCounters.total(.sessionRevoked) == 2)
    // The removed token can no longer say HELLO.
    guard case .error = node.connect(writer).1 else { throw StrataError(.protocolError, "removed token granted") }
    readerConnection.close()
  }

  @Test func requestRateAndProbeLimitsTripWithTypedErrors() throws {
    let node = try scopedNode { node in
      node.auth.tokens.append(
        .init(digest: TokenDigest(secret: "prober-secret-000000001"), namespace: try! Namespace("probe"), scopes: .all))
      node.limits.requestsPerSecondPerNamespace = 5
      node.namespaces = [
        {
          var probe = NodeConfiguration.NamespaceSettings(namespace: try! Namespace("probe"))
          probe.requestsPerSecond = 1_000_000
          probe.lookupKeysPerSecond = 100
          probe.missesPerSecond = 20
          return probe
        }()
      ]
    }
    let (connection, _) = node.connect(reader)
    var refusals: [String] = []
    let started = MonotonicTime.nowNanoseconds
    for n in 0..<20 {
      let answer = connection.receive(StatRequest().frameBytes(requestID: UInt64(n + 10), ringEpoch: 0))
      if let (code, message) = errorOf(answer) {
        #expect(code == .resourceExhausted)
        refusals.append(message)
      }
    }
    // A bucket of one second's worth: 5 pass at once, then 5 a second.
    let seconds = Double(MonotonicTime.nowNanoseconds - started) / 1e9
    let passed = 20 - refusals.count
    #expect(passed >= 5, "\(passed) passed in \(seconds) s")
    #expect(Double(passed) <= 5 + 5 * seconds + 1, "\(passed) passed in \(seconds) s")
    #expect(refusals.allSatisfy { $0.contains("limits.requests_per_second_per_namespace") })
    let (prober, _) = node.connect("prober-secret-000000001")
    func lookup(_ range: Range<Int>) -> (StrataError.Code?, String)? {
      errorOf(
        prober.receive(LookupRequest(keys: range.map(pipelineKey)).frameBytes(requestID: 9, ringEpoch: 0)))
    }
    // 30 absent keys: answered, and the misses put the namespace in debt for its next probe.
    #expect(lookup(0..<30) == nil)
    let misses = try #require(lookup(30..<31))
    #expect(misses.0 == .resourceExhausted && misses.1.contains("misses_per_second"))
    // A LOOKUP larger than a second's budget of keys is refused whatever the misses.
    let keys = try #require(lookup(0..<101))
    #expect(keys.1.contains("lookup_keys_per_second") || keys.1.contains("misses_per_second"))
    let counters = node.server.auditCounters
    #expect(counters.total(.quotaRefused) == refusals.count)
    #expect(counters.total(.probeLimit) == 2)
    connection.close()
    prober.close()
  }

  @Test func admissionBucketsAreDrivenByTheTimeGiven() throws {
    let a = try Namespace("a")
    let b = try Namespace("b")
    var limits = AdmissionLimits(
      connectionsMax: 10, connectionsPerSourceMax: 10, connectionsPerNamespaceMax: 10, inflightBytesMax: 1 << 20,
      inflightBytesPerNamespaceMax: 1 << 20)
    limits.quotas.defaults.requestsPerSecond = 2
    limits.quotas.defaults.lookupKeysPerSecond = 10
    limits.quotas.overrides[b] = NamespaceQuota(inflightBytesMax: 1 << 10, missesPerSecond: 4)
    var admission = Admission(limits: limits)
    try admission.admitRequest(for: a, now: 0)
    try admission.admitRequest(for: a, now: 0)
    #expect(
      throws: AdmissionRefusal.requestRate(namespace: a, limit: 2, setting: "limits.requests_per_second_per_namespace")
    ) { try admission.admitRequest(for: a, now: 0) }
    try admission.admitRequest(for: a, now: 500_000_000)
    // b's override has no request rate: unlimited.
    for _ in 0..<100 { try admission.admitRequest(for: b, now: 0) }
    try admission.admitProbe(keys: 10, for: a, now: 0)
    #expect(
      throws: AdmissionRefusal.lookupKeys(
        namespace: a, limit: 10, asked: 1, setting: "limits.lookup_keys_per_second_per_namespace")
    ) {
      try admission.admitProbe(keys: 1, for: a, now: 0)
    }
    admission.chargeMisses(8, for: b, now: 0)
    #expect(throws: AdmissionRefusal.misses(namespace: b, limit: 4, setting: "namespaces entry 'b', misses_per_second"))
    {
      try admission.admitProbe(keys: 0, for: b, now: 0)
    }
    try admission.admitProbe(keys: 0, for: b, now: 1_250_000_000)
    // In-flight bytes: b's own override.
    #expect(
      throws: AdmissionRefusal.namespaceInflight(
        namespace: b, limit: 1 << 10, setting: "namespaces entry 'b', inflight")
    ) {
      try admission.reserve(2048, for: b)
    }
    try admission.reserve(2048, for: a)
    admission.release(2048, for: a)
    // The error names the setting that gave the limit: b's own entry, a's defaults.
    #expect(
      AdmissionRefusal.misses(namespace: b, limit: 4, setting: "namespaces entry 'b', misses_per_second").error.message
        .contains("(namespaces entry 'b', misses_per_second)"))
  }

  @Test func aSessionRegisteredAfterItsTokenWasRevokedIsRevokedAtOnce() throws {
    let t1 = try Namespace("t1")
    let digest = TokenDigest(secret: reader)
    var table = CredentialTable(tokens: [.init(digest: digest, namespace: t1, scopes: [.read])])
    let kept = table.register(.token(digest), namespace: t1, scopes: [.read], close: {})
    let peer = table.register(.peer, namespace: t1, scopes: [.read, .write], close: {})
    let open = table.register(.open, namespace: .embeddedDefault, scopes: .all, close: {})
    #expect(!table.isRevoked(kept) && !table.isRevoked(peer) && table.isRevoked(open))
    #expect(table.replace([]).count == 1)
    // Granted before the reload, registered after it.
    let late = table.register(.token(digest), namespace: t1, scopes: [.read], close: {})
    #expect(table.isRevoked(kept) && table.isRevoked(late) && !table.isRevoked(peer))
    // With no tokens left the node is open again: open sessions stand.
    let reopened = table.register(.open, namespace: .embeddedDefault, scopes: .all, close: {})
    #expect(!table.isRevoked(reopened))
  }
}
