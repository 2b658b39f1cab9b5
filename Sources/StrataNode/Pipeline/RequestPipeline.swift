// The node's one request pipeline, for every transport: HELLO (version, credentials, the peer
// capability, connection admission), then each request with its limits, ownership, leases,
// reservations, in-flight accounting and metrics. A transport hands it decoded frames and moves
// payload bytes when asked (PayloadTransport.swift); nothing here knows sockets or verbs, so every
// limit holds for TCP, RDMA and the in-memory test transport alike.

import Dispatch
import Logging
public import StrataCore
import StrataStorage
import StrataTCP
public import StrataWire

/// What a HELLO granted a connection.
public struct SessionGrant: Sendable, Hashable {
  public var namespace: Namespace
  /// What the connection may do (the token's scopes; read and write for a peer).
  public var scopes: TokenScopes
  /// How it was granted: a reload that takes the grant away closes the session.
  public var credential: SessionCredential
  public var capabilities: Capabilities

  /// A peer node (cluster token): no ownership checks, copies or read-through on its behalf, and
  /// no per-namespace request or probe limits (its traffic is the cluster's, not a tenant's).
  public var isPeer: Bool { credential == .peer }
  /// Sees the node-wide STAT counters: `operator` tokens and peers (which read `instance`).
  public var seesNode: Bool { isPeer || scopes.contains(.operator) }
}

extension NodeServer {
  /// Decides a HELLO for any transport: the protocol version, the credentials (a tenant token, or
  /// the cluster token for a peer node), then the connection limits (node, source address,
  /// namespace). Returns the grant and the answer; throws the error to answer with.
  ///
  /// `tls` is the connection's TLS session (TCP with TLS): with a cluster CA (`tls.ca`) the peer
  /// capability needs a node certificate from it naming a ring member.
  func authenticate(_ hello: HelloRequest, source: String, transport: String, tls session: TLSSession? = nil)
    throws(StrataError) -> (SessionGrant, HelloResponse)
  {
    guard hello.versionMin <= WireProtocol.version && WireProtocol.version <= hello.versionMax else {
      throw StrataError(
        .unsupported,
        "protocol versions \(hello.versionMin)-\(hello.versionMax) not spoken; this node speaks \(WireProtocol.version)"
      )
    }
    guard !isDraining else { throw StrataError(.unavailable, "the node is shutting down") }
    var granted: SessionGrant
    if hello.capabilities.contains(.peer) {
      do throws(StrataError) {
        try checkNodeIdentity(session, transport: transport)
        granted = try grantPeer(hello)
      } catch {
        if error.code == .permissionDenied {
          audit(
            .authFailure, detail: "peer_refused", namespace: nil, source: source, message: error.message,
            fingerprint: hello.token.isEmpty ? nil : tokenFingerprint(TokenDigest(secret: hello.token)))
        }
        throw error
      }
    } else {
      guard let mapped = grant(token: hello.token) else {
        audit(
          .authFailure, detail: hello.token.isEmpty ? "no_token" : "unknown_token", namespace: nil, source: source,
          message: "HELLO over \(transport) with a token this node does not know",
          fingerprint: hello.token.isEmpty ? nil : tokenFingerprint(TokenDigest(secret: hello.token)))
        throw StrataError(.permissionDenied, "unknown token")
      }
      granted = SessionGrant(
        namespace: mapped.namespace, scopes: mapped.scopes, credential: mapped.credential, capabilities: [])
    }
    try admit(source: source, namespace: granted.namespace)
    var sameHostSocket = ""
    switch transport {
    case "tcp":
      granted.capabilities = grantCapabilities(hello, peer: source)
      // A client on this machine learns where the same-host path is (it connects there itself).
      if hello.capabilities.contains(.sharedMemory), let path = sameHostPath { sameHostSocket = path }
    case "shm":
      granted.capabilities = hello.capabilities.intersection([.tcp, .leases, .sharedMemory])
    default:
      granted.capabilities = [.tcp, .rdma, .leases]
    }
    if granted.isPeer { granted.capabilities.insert(.peer) }
    // VERIFY is answered on every transport, to a client that offers it.
    if hello.capabilities.contains(.verify) { granted.capabilities.insert(.verify) }
    // RDMA carries no TLS (docs/security.md): where the node requires TLS, only a client whose
    // HELLO came over TLS may move blocks over the fabric.
    if tls != nil && transport == "tcp" && session == nil { granted.capabilities.remove(.rdma) }
    let response = HelloResponse(
      capabilities: granted.capabilities, nodeID: configuration.nodeID, namespace: granted.namespace,
      frameBytesMax: configuration.limits.payloadBytesMax,
      inflightBytesMax: UInt64(
        min(
          configuration.admission.inflightBytesMax, configuration.admission.quotas[granted.namespace].inflightBytesMax)),
      ringEpoch: epoch,
      sameHostSocket: sameHostSocket)
    return (granted, response)
  }

  /// With a cluster CA configured, a peer must prove it is a node: its TLS certificate chains to
  /// the cluster CA (alone, not a client CA) and names a member of the current ring.
  private func checkNodeIdentity(_ session: TLSSession?, transport: String) throws(StrataError) {
    guard let context = tls, !context.files.trusted.isEmpty else { return }
    guard let session else {
      throw StrataError(
        .permissionDenied,
        "the peer capability needs a node certificate over TLS; this \(transport) connection has none")
    }
    guard session.peerVerifies(against: context) else {
      throw StrataError(
        .permissionDenied,
        session.peerCommonName == nil
          ? "the peer capability needs a node certificate (signed by the cluster CA, tls.ca); this connection presented none"
          : "the peer capability needs a node certificate signed by the cluster CA (tls.ca); '\(session.peerCommonName ?? "")' is not"
      )
    }
    let member =
      cluster?.member(named: { session.peerNames($0) })
      ?? (session.peerNames(configuration.nodeID) ? configuration.nodeID : nil)
    guard member != nil else {
      throw StrataError(
        .permissionDenied,
        "the node certificate '\(session.peerCommonName ?? "?")' names no member of the current ring")
    }
  }

  /// The peer capability goes only to the cluster token (never to a tenant's), which then names the
  /// namespace the peer acts in. A node with no tokens at all (the open embedded default) grants
  /// it to anyone, as it grants everything.
  private func grantPeer(_ hello: HelloRequest) throws(StrataError) -> SessionGrant {
    let clusterToken = configuration.clusterToken
    if clusterToken.isEmpty, let context = tls, !context.files.trusted.isEmpty {
      // The node certificate (checked above) is the credential.
      guard !hello.peerNamespace.isEmpty || currentTokens.isEmpty else {
        throw StrataError(.invalidArgument, "a peer HELLO must name the namespace it acts in (peerNamespace)")
      }
      let namespace = hello.peerNamespace.isEmpty ? Namespace.embeddedDefault : try Namespace(hello.peerNamespace)
      return SessionGrant(namespace: namespace, scopes: Self.peerScopes, credential: .peer, capabilities: [])
    }
    if clusterToken.isEmpty {
      guard currentTokens.isEmpty else {
        throw StrataError(
          .permissionDenied, "the peer capability needs the cluster token (cluster.token), and none is configured")
      }
      let namespace = hello.peerNamespace.isEmpty ? Namespace.embeddedDefault : try Namespace(hello.peerNamespace)
      return SessionGrant(namespace: namespace, scopes: Self.peerScopes, credential: .peer, capabilities: [])
    }
    guard constantTimeEqual(hello.token, Array(clusterToken.utf8)) else {
      throw StrataError(.permissionDenied, "the peer capability needs the cluster token; this token is not it")
    }
    guard !hello.peerNamespace.isEmpty else {
      throw StrataError(.invalidArgument, "a peer HELLO must name the namespace it acts in (peerNamespace)")
    }
    return SessionGrant(
      namespace: try Namespace(hello.peerNamespace), scopes: Self.peerScopes, credential: .peer, capabilities: [])
  }

  /// What a peer node may do in the namespace it acts in: copy blocks in and out (replication,
  /// read-through, handoff, repair). Not `delete` (no peer operation deletes), and never
  /// `operator`: node administration is not a peer's.
  static let peerScopes: TokenScopes = [.read, .write]
}

/// Compares secrets in time that depends on their lengths only.
func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
  guard lhs.count == rhs.count else { return false }
  var difference: UInt8 = 0
  for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
  return difference == 0
}

/// One authenticated connection's protocol state, whatever its transport: the grant, the client
/// leases it holds, and where its storage calls run.
struct RequestSession {
  let server: NodeServer
  let grant: SessionGrant
  let source: String
  /// Client leases taken by this connection's LOOKUPs, by id, released by the GET naming them, by
  /// expiry or when the connection ends.
  private(set) var leases: [UInt64: BlockLease] = [:]
  /// Sizes of the blocks the request being answered moved, for the observer (metrics).
  private var movedBlockBytes: [Int] = []
  private var ended = false
  /// This session in the server's credential table (a reload may revoke it).
  private let registration: Int

  /// A session for a connection `authenticate` admitted; `end` must follow. `close` ends the
  /// connection from another thread (a reload that revokes its token calls it): it must make the
  /// transport's blocking calls fail promptly, and be safe to call at any time before `end`.
  init(
    server: NodeServer, grant: SessionGrant, source: String,
    close: @escaping @Sendable () -> Void = {}
  ) {
    self.server = server
    self.grant = grant
    self.source = source
    registration = server.registerSession(grant, close: close)
  }

  var namespace: Namespace { grant.namespace }
  var limits: NodeServer.PipelineLimits { server.configuration.pipeline }

  mutating func end() {
    guard !ended else { return }
    ended = true
    server.unregisterSession(registration)
    for lease in leases.values { server.tiers.release(lease) }
    leases.removeAll()
    server.leave(source: source, namespace: grant.namespace)
  }

  /// The deadline for a request that moves `bytes` once it has begun.
  func transferDeadline(bytes: Int) -> Deadline {
    Deadline.transfer(
      bytes: UInt64(bytes), baseMilliseconds: limits.requestTimeoutMilliseconds,
      minimumBytesPerSecond: limits.minTransferBytesPerSecond)
  }

  /// Runs storage work that may wait for the disk (a promotion from NVMe, an eviction that makes
  /// room, a check of a disk copy) as a task on this thread, for at most `transferDeadline(bytes:)`:
  /// on a disk that stopped answering the request fails with `io_error` at that deadline and the
  /// connection goes on serving (RAM-resident blocks need no disk). The work itself cannot be taken
  /// back; `late` gives back what it holds (a lease, reservations) if it ends after the deadline.
  func waitForStorage<T: Sendable>(
    _ operation: String, bytes: Int, late: @escaping @Sendable (T) -> Void = { _ in },
    _ body: @escaping @Sendable () async throws(StrataError) -> T
  ) throws(StrataError) -> T {
    guard let value = try waitForTask(until: transferDeadline(bytes: bytes), late: late, body) else {
      throw StrataError(
        .ioError,
        "\(operation): the node's disk did not answer within the request's deadline (limits.request_timeout \(limits.requestTimeoutMilliseconds) ms); the node's log names the operation that waits"
      )
    }
    return value
  }

  /// Serves one well-formed request frame. A request that fails is answered with its error and the
  /// connection stays; throws only when the connection must end (the peer went away, a deadline
  /// passed, a protocol violation, GOODBYE).
  mutating func serve(_ message: WireMessage, header: FrameHeader, over transport: inout some PayloadTransport)
    throws(StrataError)
  {
    let started = MonotonicTime.nowNanoseconds
    server.count { $0.requests += 1 }
    var failure: StrataError.Code?
    defer { observe(header, transport: transport.name, startedAt: started, error: failure) }
    do throws(StrataError) {
      guard !server.isRevoked(registration) else {
        throw StrataError(
          .unavailable, "this connection's token was removed or narrowed by a configuration reload; connect again")
      }
      do throws(StrataError) {
        try admitRequest(message, header: header)
      } catch {
        if header.payloadBytes > 0 {
          _ = try transport.receivePut(
            [.skip(Int(header.payloadBytes))], deadline: transferDeadline(bytes: Int(header.payloadBytes)))
        }
        throw error
      }
      try dispatch(message, header: header, over: &transport)
    } catch  where !Self.endsConnection(error) {
      server.count { $0.errorResponses += 1 }
      failure = error.code
      server.logger.debug(
        "request failed",
        metadata: [
          "request_id": "\(header.requestID)", "op": "\(header.opcode)", "code": "\(error.code)",
          "reason": "\(error.message)", "transport": "\(transport.name)",
        ])
      try respond(.error(header.opcode, ErrorBody(error)), to: header, over: &transport)
    }
  }

  /// Checks a request against the token's scopes and, for tenants, the namespace's request rate
  /// and probe limits. A refused request with a payload has its payload read and dropped, so the
  /// connection stays in step.
  private func admitRequest(_ message: WireMessage, header: FrameHeader) throws(StrataError) {
    let needed: TokenScopes
    let operation: String
    var probeKeys: Int? = nil
    switch message {
    case .lookupRequest(let request):
      (needed, operation, probeKeys) = (.read, "LOOKUP", request.keys.count)
    case .getRequest: (needed, operation, probeKeys) = (.read, "GET", 0)
    case .putRequest: (needed, operation) = (.write, "PUT")
    case .deleteRequest: (needed, operation) = (.delete, "DELETE")
    // A reader may report what it read: the node removes only a copy it finds damaged itself.
    case .verifyRequest: (needed, operation, probeKeys) = (.read, "VERIFY", 0)
    // STAT and RING describe the node: a tenant reads its own view, an operator the node's.
    case .statRequest: (needed, operation) = (grant.scopes.contains(.operator) ? [] : .read, "STAT")
    case .ringRequest: (needed, operation) = (grant.scopes.contains(.operator) ? [] : .read, "RING")
    default: return
    }
    do throws(ScopeRefusal) {
      try ScopeRefusal.check(operation, needs: needed, held: grant.scopes)
    } catch {
      let fingerprint: String? =
        if case .token(let digest) = grant.credential { tokenFingerprint(digest) } else { nil }
      server.audit(
        .scopeDenied, detail: "\(error.missing)", namespace: namespace, source: source, message: error.error.message,
        fingerprint: fingerprint)
      throw error.error
    }
    guard !grant.isPeer else { return }
    let now = MonotonicTime.nowNanoseconds
    let namespace = self.namespace
    try server.admitted(source: source) { admission throws(AdmissionRefusal) in
      try admission.admitRequest(for: namespace, now: now)
      if let probeKeys { try admission.admitProbe(keys: probeKeys, for: namespace, now: now) }
    }
  }

  /// VERIFY: checks the node's copies of blocks a client found damaged when it received them,
  /// removing those that fail; counted by outcome and logged (a confirmed one at error level: the
  /// node's memory or disk damaged a block it had stored whole).
  private func verify(_ keys: [BlockKey]) throws(StrataError) -> [VerifyOutcome] {
    let ids = keys.map { BlockID(namespace: namespace, key: $0) }
    let tiers = server.tiers
    let bytes = tiers.lookupSizes(ids).reduce(0) { $0 + Int($1.bytes) }
    let checks = try waitForStorage("VERIFY", bytes: bytes) { () throws(StrataError) in try await tiers.check(ids) }
    let outcomes = checks.map { check -> VerifyOutcome in
      switch check {
      case .intact: .intact
      case .corrupt: .corrupt
      case .absent: .absent
      }
    }
    let count = { (outcome: VerifyOutcome) in outcomes.count { $0 == outcome } }
    server.count { stats in
      stats.verifyConfirmed += count(.corrupt)
      stats.verifyIntact += count(.intact)
      stats.verifyAbsent += count(.absent)
    }
    chargeMisses(count(.absent))
    for (key, outcome) in zip(keys, outcomes) where outcome != .absent {
      let metadata: Logger.Metadata = [
        "namespace": "\(namespace.name)", "key": "\(key.hex)", "source": "\(source)",
      ]
      if outcome == .corrupt {
        server.logger.error(
          "a block a client received damaged failed its stored checksum here: removed", metadata: metadata)
      } else {
        server.logger.warning(
          "a block a client received damaged matches its stored checksum here: kept (damaged on the way or at the client)",
          metadata: metadata)
      }
    }
    return outcomes
  }

  /// Charges misses (absent LOOKUP keys, missing GET items) to a tenant's probe budget.
  private func chargeMisses(_ misses: Int) {
    guard misses > 0, !grant.isPeer else { return }
    let namespace = self.namespace
    try? server.admitted(source: source) { admission throws(AdmissionRefusal) in
      admission.chargeMisses(misses, for: namespace, now: MonotonicTime.nowNanoseconds)
    }
  }

  /// Errors after which a connection is closed instead of answered.
  static func endsConnection(_ error: StrataError) -> Bool {
    switch error.code {
    case .unavailable, .timeout, .protocolError: true
    default: false
    }
  }

  private mutating func observe(_ header: FrameHeader, transport: String, startedAt: UInt64, error: StrataError.Code?) {
    defer { movedBlockBytes.removeAll(keepingCapacity: true) }
    guard let observer = server.observer else { return }
    let seconds = Double(MonotonicTime.nowNanoseconds - startedAt) / 1e9
    observer.requestFinished(
      RequestEvent(
        op: "\(header.opcode)", transport: transport, seconds: seconds, error: error, blockBytes: movedBlockBytes,
        requestID: header.requestID))
  }

  /// `epoch`: the ring epoch to report (default: the node's now).
  private func respond(
    _ message: WireMessage, to header: FrameHeader, over transport: inout some PayloadTransport, epoch: UInt64? = nil
  ) throws(StrataError) {
    let frame = message.frameBytes(requestID: header.requestID, ringEpoch: epoch ?? server.epoch)
    try transport.respond(frame, deadline: transferDeadline(bytes: frame.count))
  }

  private mutating func dispatch(
    _ message: WireMessage, header: FrameHeader, over transport: inout some PayloadTransport
  ) throws(StrataError) {
    switch message {
    case .lookupRequest(let request): try answerLookup(request, header: header, over: &transport)
    case .getRequest(let request): try answerGet(request, header: header, over: &transport)
    case .putRequest(let request): try answerPut(request, header: header, over: &transport)
    case .deleteRequest(let request):
      let tiers = server.tiers
      let removed = request.keys.map { key in
        let id = BlockID(namespace: namespace, key: key)
        let present = tiers.lookup([id])[0] != .absent
        tiers.remove(id)
        return present
      }
      try respond(.deleteResponse(DeleteResponse(removed: removed)), to: header, over: &transport)
    case .verifyRequest(let request):
      let outcomes = try verify(request.keys)
      try respond(.verifyResponse(VerifyResponse(outcomes: outcomes)), to: header, over: &transport)
    case .statRequest:
      let json = grant.seesNode ? server.statJSON() : server.statJSON(of: namespace)
      try respond(.statResponse(StatResponse(json: json)), to: header, over: &transport)
    case .goodbyeRequest:
      try respond(.goodbyeResponse(GoodbyeResponse()), to: header, over: &transport)
      throw StrataError(.unavailable, "the client said goodbye")
    case .helloRequest:
      throw StrataError(.invalidArgument, "HELLO was already received on this connection")
    case .ringRequest(let body):
      guard let cluster = server.cluster else {
        throw StrataError(.unsupported, "RING needs cluster mode; this node runs alone")
      }
      // Drain, drain_status, sync and the node-wide members report are the operator's (peers
      // included: no peer operation needs them).
      let admin = grant.scopes.contains(.operator)
      let answer = try waitForTask { () throws(StrataError) in
        try await cluster.answerRing(body, isAdmin: admin)
      }
      try respond(.ringResponse(body: answer), to: header, over: &transport)
    default:
      throw StrataError(.protocolError, "unexpected \(header.opcode) frame from a client")
    }
  }

  // MARK: LOOKUP

  private mutating func answerLookup(
    _ request: LookupRequest, header: FrameHeader, over transport: inout some PayloadTransport
  ) throws(StrataError) {
    // Read before looking: a block reported held was held while this node worked at that epoch,
    // so it is not dropped under an older ring afterwards (PeerHoldings, Repair.swift). A draining
    // node answers its peers at epoch 0 (no ring): a repair pass must not count a copy that is
    // leaving with it.
    let draining = grant.isPeer && server.cluster.map { !$0.takesCopies } ?? false
    let epoch = draining ? 0 : server.epoch
    try server.checkOwnership(request.keys, ringEpoch: header.ringEpoch, isPeer: grant.isPeer)
    let ids = request.keys.map { BlockID(namespace: namespace, key: $0) }
    try server.fillMissing(ids, isPeer: grant.isPeer, deadline: transferDeadline(bytes: 0))
    let tiers = server.tiers
    var response: LookupResponse
    if request.leaseMilliseconds > 0 {
      try makeRoomForLease()
      let kind = LeaseKind.client(namespace: namespace, durationMilliseconds: UInt64(request.leaseMilliseconds))
      // RAM-resident blocks are pinned on this thread; only a promotion from NVMe waits.
      let lease: BlockLease
      do throws(StrataError) {
        if let resident = try tiers.leaseResident(ids, kind) {
          lease = resident
        } else {
          let bytes = tiers.lookupSizes(ids).reduce(0) { $0 + Int($1.bytes) }
          lease = try waitForStorage("LOOKUP", bytes: bytes, late: tiers.release) { () throws(StrataError) in
            try await tiers.lease(ids, kind)
          }
        }
      } catch {
        if error.code == .resourceExhausted {
          server.audit(
            .quotaRefused, detail: "leases", namespace: namespace, source: source, message: error.message)
        }
        throw error
      }
      leases[lease.id.rawValue] = lease
      // The lease answers for itself: a leased block keeps its tier of origin and its size.
      response = LookupResponse(
        tiers: lease.blocks.map { $0.map { $0.foundIn == .nvme ? .nvme : .ram } ?? .absent },
        leadingRun: UInt32(lease.leadingRunCount), leaseID: lease.id.rawValue,
        leaseExpiresInMilliseconds: UInt32(clamping: lease.grantedMilliseconds))
      if request.wantsSizes { response.sizes = lease.blocks.map { UInt64($0?.bytes.count ?? 0) } }
    } else {
      let found = tiers.lookupSizes(ids)
      let tiers = found.map(\.tier)
      response = LookupResponse(tiers: tiers, leadingRun: UInt32(tiers.firstIndex(of: .absent) ?? tiers.count))
      if request.wantsSizes { response.sizes = found.map(\.bytes) }
    }
    chargeMisses(response.tiers.filter { $0 == .absent }.count)
    try respond(.lookupResponse(response), to: header, over: &transport, epoch: epoch)
  }

  /// Forgets this connection's expired leases; refuses a new one past the per-connection limit.
  private mutating func makeRoomForLease() throws(StrataError) {
    guard leases.count >= limits.leasesPerConnectionMax else { return }
    let now = server.tiers.nowMilliseconds
    for (id, lease) in leases where lease.expiresAtMilliseconds <= now {
      server.tiers.release(lease)
      leases[id] = nil
    }
    guard leases.count < limits.leasesPerConnectionMax else {
      throw StrataError(
        .resourceExhausted,
        "this connection holds \(leases.count) leases, its limit (limits.max_leases_per_connection); name them in GETs or let them expire"
      )
    }
  }

  // MARK: GET

  private mutating func answerGet(
    _ request: GetRequest, header: FrameHeader, over transport: inout some PayloadTransport
  )
    throws(StrataError)
  {
    // The client lease named by the GET ends with it, whatever the outcome: once the transfer pins
    // hold the blocks (below), before the answer goes out, so a client that has its answer never
    // sees the lease still active; on an error, when the GET ends.
    var named = request.leaseID == 0 ? nil : leases.removeValue(forKey: request.leaseID)
    let tiers = server.tiers
    defer { if let named { tiers.release(named) } }
    try server.checkOwnership(request.items.map(\.key), ringEpoch: header.ringEpoch, isPeer: grant.isPeer)
    let ids = request.items.map { BlockID(namespace: namespace, key: $0.key) }
    try server.fillMissing(ids, isPeer: grant.isPeer, deadline: transferDeadline(bytes: 0))
    // Transfer pins: they never expire, so no slot is reused while its bytes are being sent; the
    // transport returns only once nothing moves out of them any more.
    // A GET of RAM-resident blocks pins them on this thread, no hop; only a promotion from NVMe
    // waits for the disk, in a task on this thread (waitForTask). Blocks read from NVMe take RAM
    // until they are sent, so their bytes are taken from the in-flight budgets first: a tenant's
    // GETs never stage more than its budget in RAM, and a GET over it reads nothing from the disk.
    // Once the blocks are pinned, what is held becomes the payload to send (below).
    var inflight = 0
    defer { server.releaseInflight(inflight, for: namespace) }
    let pins: BlockLease
    if let resident = try tiers.leaseResident(ids, .transfer) {
      pins = resident
    } else {
      let stored = tiers.lookupSizes(ids).reduce(0) { $0 + Int($1.bytes) }
      try server.reserveInflight(stored, for: namespace, source: source)
      inflight = stored
      pins = try waitForStorage("GET", bytes: stored, late: tiers.release) { () throws(StrataError) in
        try await tiers.lease(ids, .transfer)
      }
    }
    defer { tiers.release(pins) }
    if let lease = named {
      tiers.release(lease)
      named = nil
    }
    var items: [GetResponse.Item] = []
    var ranges: [UnsafeRawBufferPointer?] = []
    items.reserveCapacity(ids.count)
    ranges.reserveCapacity(ids.count)
    chargeMisses(pins.blocks.filter { $0 == nil }.count)
    var total = 0
    var corrupt: [BlockID] = []
    for (item, block) in zip(request.items, pins.blocks) {
      guard let (answer, bytes) = resolve(item, in: block) else {
        corrupt.append(block!.id)
        items.append(GetResponse.Item(status: .missing))
        ranges.append(nil)
        continue
      }
      items.append(answer)
      ranges.append(bytes)
      total += bytes?.count ?? 0
    }
    if !corrupt.isEmpty {
      server.logger.error(
        "blocks no longer match their stored checksum: removed", metadata: ["count": "\(corrupt.count)"])
      tiers.quarantine(corrupt)
    }
    guard UInt64(total) <= server.configuration.limits.payloadBytesMax else {
      throw StrataError(
        .resourceExhausted,
        "GET of \(total) bytes exceeds the \(server.configuration.limits.payloadBytesMax)-byte frame limit; split the batch"
      )
    }
    if total > inflight {
      try server.reserveInflight(total - inflight, for: namespace, source: source)
    } else {
      server.releaseInflight(inflight - total, for: namespace)
    }
    inflight = total
    let response = ResponseFrame(requestID: header.requestID, ringEpoch: server.epoch)
    let answered = try transport.deliverGet(
      items: items, ranges: ranges, response: response, deadline: transferDeadline(bytes: total))
    // A transport that reads the bytes it delivers (the same-host copy checksums them, RDMA checks
    // them before its NIC writes them) can find a block whose RAM copy no longer matches its
    // stored checksum: it is removed like the ones found above, so that the client's next PUT of
    // it stores a good copy instead of finding the bad one "already present".
    let foundCorrupt = zip(zip(items, answered), pins.blocks).compactMap { pair, block -> BlockID? in
      guard pair.0.status == .ok, pair.1.status == .corrupt else { return nil }
      return block?.id
    }
    if !foundCorrupt.isEmpty {
      server.logger.error(
        "blocks no longer match their stored checksum: removed",
        metadata: ["count": "\(foundCorrupt.count)", "transport": "\(transport.name)"])
      tiers.quarantine(foundCorrupt)
    }
    var blocks = 0
    var bytes = 0
    for (answer, range) in zip(answered, ranges) {
      guard case .ok = answer.status, let range else { continue }
      blocks += 1
      bytes += range.count
      if server.observer != nil { movedBlockBytes.append(range.count) }
    }
    let transportName = transport.name
    server.count { $0.countMoved(.get, blocks: blocks, bytes: bytes, over: transportName) }
  }

  // MARK: PUT

  private mutating func answerPut(
    _ request: PutRequest, header: FrameHeader, over transport: inout some PayloadTransport
  )
    throws(StrataError)
  {
    let total = Int(header.payloadBytes)
    let deadline = transferDeadline(bytes: total)
    let skipAll = request.items.map { PayloadSlot.skip(Int($0.length)) }
    do throws(StrataError) {
      try server.checkTakesWrites(isPeer: grant.isPeer)
      try server.checkOwnership(request.items.map(\.key), ringEpoch: header.ringEpoch, isPeer: grant.isPeer)
      // Blocks without the sender's checksums only through a region on this machine: over any
      // other transport the bytes crossed a link, and only the sender's checksum covers that.
      if request.checksumsByNode, transport.name != "shm" {
        throw StrataError(.invalidArgument, "PUT leaves its checksums to the node, which only a same-host region may")
      }
    } catch {
      _ = try transport.receivePut(skipAll, deadline: deadline)
      throw error
    }
    do throws(AdmissionRefusal) {
      try server.admission { admission throws(AdmissionRefusal) in try admission.reserve(total, for: namespace) }
    } catch {
      server.auditRefusal(error, source: source)
      // Refused whole: the payload is read and dropped, every item answered `noSpace`.
      _ = try transport.receivePut(skipAll, deadline: deadline)
      server.logger.debug("PUT refused", metadata: ["reason": "\(error.error.message)"])
      try respond(
        .putResponse(PutResponse(outcomes: request.items.map { _ in .noSpace })), to: header, over: &transport)
      return
    }
    defer { server.releaseInflight(total, for: namespace) }
    var outcomes = [PutOutcome](repeating: .noSpace, count: request.items.count)
    var stored = 0
    // In rounds: each reserves what it can in item order, receives those items' bytes and commits
    // them. A round ends early at an item refused for room while the round itself holds RAM (a
    // batch larger than what RAM can free at once): committing makes its blocks evictable, and the
    // next round starts at that item. Most PUTs are one round.
    var first = 0
    while first < request.items.count {
      var round = reserveRound(request, from: first, outcomes: &outcomes)
      let roundBytes = request.items[first..<round.end].reduce(0) { $0 + Int($1.length) }
      // The payload's deadline counts from when the node reads it: time spent waiting for room is
      // the node's, not the peer's (whose bytes wait in the socket meanwhile).
      let receiveDeadline = round.waited || first > 0 ? transferDeadline(bytes: roundBytes) : deadline
      let landed: [UInt32?]
      do throws(StrataError) {
        landed = try transport.receivePut(round.slots, firstItem: first, deadline: receiveDeadline)
      } catch {
        for (_, reservation) in round.reservations { server.tiers.abort(reservation) }
        throw error
      }
      for (index, reservation) in round.reservations {
        do throws(StrataError) {
          try server.tiers.commit(
            reservation, expectedChecksum: request.checksumsByNode ? nil : request.items[index].checksum,
            landedChecksum: landed[index - first])
          outcomes[index] = .stored
          stored += reservation.buffer.count
          if server.observer != nil { movedBlockBytes.append(reservation.buffer.count) }
        } catch {
          outcomes[index] = .checksumMismatch
        }
      }
      round.reservations = []
      first = round.end
    }
    let storedBlocks = outcomes.filter { $0 == .stored }.count
    let transportName = transport.name
    server.count { $0.countMoved(.put, blocks: storedBlocks, bytes: stored, over: transportName) }
    // Acknowledged means replicated: the answer goes out once the write quorum of each block's
    // owners holds it (a missed quorum is answered `quorumNotReached`), within the PUT's deadline.
    try server.replicate(
      request.items, outcomes: outcomes, namespace: namespace, isPeer: grant.isPeer,
      writeQuorum: request.writeQuorum, deadline: deadline)
    try respond(.putResponse(PutResponse(outcomes: outcomes)), to: header, over: &transport)
  }

  /// One round of a PUT (`answerPut`): the items from `first` on, each reserved, found present or
  /// refused, up to `end`, where the round stops.
  private struct PutRound {
    /// Where each item of `first..<end` goes: its reservation, or skipped.
    var slots: [PayloadSlot]
    var reservations: [(index: Int, reservation: PutReservation)]
    var end: Int
    /// Whether it waited for room (evictions that may write to the disk).
    var waited: Bool
  }

  /// Reserves the items from `first` on, in order: on this thread while the arena has room now,
  /// then (eviction first, which may write to NVMe) in one task for the rest. An item refused for
  /// room ends the round there while the round holds reservations (the next round starts at it);
  /// with none held it is answered `noSpace` and the round goes on. Room the disk does not make by
  /// the deadline answers the items still waiting `noSpace` (reservations made after it are given
  /// back).
  private func reserveRound(
    _ request: PutRequest, from first: Int, outcomes: inout [PutOutcome]
  ) -> PutRound {
    let tiers = server.tiers
    let namespace = namespace
    let blockBytesMax = tiers.configuration.blockBytesMax
    let items = request.items
    var round = PutRound(
      slots: items[first...].map { .skip(Int($0.length)) }, reservations: [], end: items.count, waited: false)
    let isTooLarge = { @Sendable (index: Int) in items[index].length == 0 || items[index].length > UInt64(blockBytesMax)
    }
    var next = first
    scan: while next < items.count {
      if isTooLarge(next) {
        outcomes[next] = .tooLarge
      } else {
        switch try? tiers.reserveNow(
          BlockID(namespace: namespace, key: items[next].key), bytes: Int(items[next].length))
        {
        case .reserved(let reservation):
          round.reservations.append((next, reservation))
          round.slots[next - first] = .into(reservation.buffer)
        case .present: outcomes[next] = .alreadyPresent
        case .needsRoom: break scan
        case nil: break  // noSpace
        }
      }
      next += 1
    }
    guard next < items.count else { return round }
    round.waited = true
    let holding = !round.reservations.isEmpty
    let waiting = next
    let late: @Sendable ((reserved: [(Int, PutReservation?)], end: Int)) -> Void = { result in
      for case (_, let reservation?) in result.reserved { tiers.abort(reservation) }
    }
    let waitingBytes = items[waiting...].reduce(0) { $0 + Int($1.length) }
    let logger = server.logger
    do throws(StrataError) {
      let result = try waitForStorage("PUT", bytes: waitingBytes, late: late) {
        () throws(StrataError) -> (reserved: [(Int, PutReservation?)], end: Int) in
        var reserved: [(Int, PutReservation?)] = []
        var holds = holding
        for index in waiting..<items.count where !isTooLarge(index) {
          do throws(StrataError) {
            let reservation = try await tiers.reserve(
              BlockID(namespace: namespace, key: items[index].key), bytes: Int(items[index].length))
            reserved.append((index, reservation))
            holds = holds || reservation != nil
          } catch {
            // Refused for room while this round holds some: the next round starts here.
            if holds { return (reserved, index) }
            logger.debug(
              "PUT: no room", metadata: ["block": "\(items[index].key)", "reason": "\(error.message)"])
          }
        }
        return (reserved, items.count)
      }
      for (index, reservation) in result.reserved {
        if let reservation {
          round.reservations.append((index, reservation))
          round.slots[index - first] = .into(reservation.buffer)
        } else {
          outcomes[index] = .alreadyPresent
        }
      }
      for index in waiting..<items.count where isTooLarge(index) { outcomes[index] = .tooLarge }
      round.end = result.end
      round.slots.removeLast(items.count - result.end)
    } catch {
      server.logger.debug("PUT: no room made in time", metadata: ["reason": "\(error.message)"])
      for index in waiting..<items.count where isTooLarge(index) { outcomes[index] = .tooLarge }
    }
    return round
  }
}
