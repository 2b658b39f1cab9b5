// The node's data plane over TCP: accepts connections (bounded), runs each on a thread of its
// own, and serves HELLO, LOOKUP, GET, PUT, DELETE and STAT frames against the tier manager.
// Payloads go from arena memory to the socket and from the socket into arena slots directly.

import Foundation
public import Logging
public import StrataConfig
public import StrataCore
public import StrataStorage
public import StrataTCP
public import StrataWire
import Synchronization

/// Counters of the data plane, read at one instant.
public struct ServerStats: Sendable, Hashable {
  public var connectionsOpen = 0
  public var connectionsAccepted = 0
  public var connectionsRefused = 0
  public var malformedFrames = 0
  public var requests = 0
  public var errorResponses = 0
  /// Blocks and payload bytes sent (GET) and stored (PUT), over every transport; the parts that
  /// moved over RDMA and over the same-host path are counted again below (TCP is the rest).
  public var getBlocks = 0
  public var getBytes = 0
  public var putBlocks = 0
  public var putBytes = 0
  public var rdmaGetBytes = 0
  public var rdmaPutBytes = 0
  public var inflightBytes = 0
  /// HELLOs answered with RDMA granted, and with TCP only (the log line says why).
  public var helloRDMAGranted = 0
  public var helloTCPOnly = 0
  /// RDMA connections established through rdma_cm, and those open now (not among `connectionsOpen`,
  /// which counts the TCP and same-host connections the admission limits hold).
  public var connectionsRDMA = 0
  public var connectionsRDMAOpen = 0
  /// Connections waiting for their HELLO now; those closed for the handshake deadline, and those
  /// closed to make room for newer ones (`limits.max_handshakes`).
  public var handshakesPending = 0
  public var handshakesTimedOut = 0
  public var handshakesEvicted = 0
  /// Authenticated connections closed for idling past `limits.idle_timeout`, and requests cut for
  /// missing their transfer deadline.
  public var idleClosed = 0
  public var deadlinesMissed = 0
  /// The same-host path: connections accepted on the Unix-domain socket and open now, payload
  /// bytes they moved, and shared-memory regions refused (not sealed, too large, not a memfd).
  public var sameHostConnectionsAccepted = 0
  public var sameHostConnectionsOpen = 0
  public var sameHostGetBytes = 0
  public var sameHostPutBytes = 0
  public var sameHostRegionsRefused = 0
  /// GETs and PUTs whose blocks moved through a client's shared-memory region (not the stream).
  public var sameHostRegionRequests = 0
  /// Blocks clients reported damaged (VERIFY), by what the node found: its copy failed its stored
  /// checksum (removed), matched it (kept), or was not there.
  public var verifyConfirmed = 0
  public var verifyIntact = 0
  public var verifyAbsent = 0
  /// TLS handshakes completed, by where records are encrypted (`tls_mode`), and refused: failed
  /// handshakes (wrong CA, expired certificate, no certificate where one is required) and
  /// plaintext frames sent to the TLS port.
  public var tlsKernel = 0
  public var tlsUser = 0
  public var tlsHandshakesFailed = 0
  public var tlsPlaintextRefused = 0

  /// Payload bytes sent (GET) and stored (PUT) over TCP: what neither RDMA nor the same-host path
  /// moved (in tests and the simulator, also what their in-process transport moved).
  public var tcpGetBytes: Int { getBytes - rdmaGetBytes - sameHostGetBytes }
  public var tcpPutBytes: Int { putBytes - rdmaPutBytes - sameHostPutBytes }

  /// Counts the blocks and payload bytes a GET sent or a PUT stored, and the bytes again under
  /// the transport that moved them (`PayloadTransport.name`).
  mutating func countMoved(_ direction: Direction, blocks: Int, bytes: Int, over transport: String) {
    let get = direction == .get
    self[keyPath: get ? \Self.getBlocks : \Self.putBlocks] += blocks
    self[keyPath: get ? \Self.getBytes : \Self.putBytes] += bytes
    switch transport {
    case "shm": self[keyPath: get ? \Self.sameHostGetBytes : \Self.sameHostPutBytes] += bytes
    case "rdma": self[keyPath: get ? \Self.rdmaGetBytes : \Self.rdmaPutBytes] += bytes
    default: break
    }
  }

  enum Direction { case get, put }
}

/// Settings of the data plane.
public struct ServerConfiguration: Sendable {
  public var listen: HostPort
  public var nodeID: String
  /// Authenticated connections and in-flight bytes: node-wide, per source, per namespace.
  public var admission: AdmissionLimits
  public var limits: WireLimits
  public var pipeline: NodeServer.PipelineLimits
  /// Connections waiting for their HELLO, and how long each may wait.
  public var handshakesMax: Int
  public var handshakeTimeoutMilliseconds: UInt64
  /// Tokens (digests) and what each grants; empty means the embedded default's one open namespace
  /// with every scope.
  public var tokens: [NodeConfiguration.Auth.Token]
  /// The secret that grants the peer capability (`cluster.token`); empty for none.
  public var clusterToken: String
  /// The same-host path's Unix-domain socket; nil when `same_host.enabled` is false.
  public var sameHostSocket: String?
  /// Whether that path was configured (then a failure to bind it stops the node; the default
  /// path only logs and leaves the same-host path off).
  public var sameHostSocketConfigured: Bool
  /// The largest shared-memory region a same-host connection may pass.
  public var sameHostRegionBytesMax: UInt64
  /// Threads one same-host request's copies are spread over (`same_host.copy_threads`, 0 resolved
  /// to the number of cores).
  public var sameHostCopyThreads: Int
  /// TLS on the data plane (`tls.*`); without a certificate the port speaks plaintext.
  public var tls: NodeConfiguration.TLS

  public init(_ node: NodeConfiguration, nodeID: String) {
    listen = node.listen
    self.nodeID = nodeID
    admission = AdmissionLimits(node)
    // A frame carries at most one batch: bounded by the per-connection in-flight limit.
    limits = WireLimits(payloadBytesMax: node.limits.inflightBytesPerConnectionMax.bytes)
    pipeline = NodeServer.PipelineLimits(node.limits)
    handshakesMax = node.limits.handshakesMax
    handshakeTimeoutMilliseconds = node.limits.handshakeTimeout.milliseconds
    tokens = node.auth.tokens
    clusterToken = node.cluster.token
    sameHostSocket = node.sameHost.enabled ? node.effectiveSameHostSocket : nil
    sameHostSocketConfigured = !node.sameHost.socket.isEmpty
    sameHostRegionBytesMax = node.sameHost.maxRegionSize.bytes
    sameHostCopyThreads =
      node.sameHost.copyThreads == 0 ? ProcessInfo.processInfo.activeProcessorCount : node.sameHost.copyThreads
    tls = node.tls
  }

  public var connectionsMax: Int { admission.connectionsMax }
  public var inflightBytesMax: Int { admission.inflightBytesMax }
}

public final class NodeServer: Sendable {
  /// Deadlines and per-connection limits of the request pipeline.
  public struct PipelineLimits: Hashable, Sendable {
    public var idleTimeoutMilliseconds: UInt64
    public var requestTimeoutMilliseconds: UInt64
    public var minTransferBytesPerSecond: UInt64
    public var leasesPerConnectionMax: Int

    public init(_ limits: NodeConfiguration.Limits) {
      idleTimeoutMilliseconds = limits.idleTimeout.milliseconds
      requestTimeoutMilliseconds = limits.requestTimeout.milliseconds
      minTransferBytesPerSecond = limits.minTransferRate.bytes
      leasesPerConnectionMax = limits.leasesPerConnectionMax
    }
  }

  public let configuration: ServerConfiguration
  public let tiers: TierManager
  /// Told about every request answered (metrics); nil for none.
  public let observer: (any NodeObserver)?
  let logger: Logger
  let listener: TCPListener
  private let state: Mutex<ServerState>
  /// The tokens in force (those of `configuration` until `replaceTokens`) and the sessions they
  /// granted (Pipeline/Credentials.swift).
  private let credentials: Mutex<CredentialTable>
  /// Audit counters and the rate limit of audit lines (Pipeline/Audit.swift).
  private let auditing = Mutex(AuditState())

  struct AuditState {
    var counters = AuditCounters()
    var limiter = AuditLineLimiter()
  }
  private let stopped = DispatchSemaphore(value: 0)
  private let clusterHooks = Mutex<(any ClusterHooks)?>(nil)
  /// The TLS context new handshakes use (nil: plaintext); replaced by `reloadTLS`, while open
  /// connections keep the session they began with.
  private let tlsContext: Mutex<TLSContext?>
  /// RDMA devices, the arena's registration and the rdma_cm listener (RDMA/NodeRDMA.swift).
  let rdma: NodeRDMA
  /// Accepts connections and reads their HELLOs without a thread each (TCP/HandshakeGate.swift).
  private let gate: HandshakeGate
  /// The same-host path's Unix-domain listener and its gate (nil when off).
  private let sameHost: (listener: TCPListener, gate: HandshakeGate)?
  /// Differs on every start of the process (STAT `instance`): peers that see it change know this
  /// node restarted, maybe with its RAM blocks lost, and copy it the blocks it owns (repair).
  public let instance = Int.random(in: 1...Int.max)

  struct ServerState {
    var stats = ServerStats()
    var admission: Admission
    var connections: [Int: TCPConnection] = [:]
    var nextConnection = 0
    var draining = false
  }

  /// Binds the listening socket (port 0 picks a free one; see `address`).
  public init(
    configuration: ServerConfiguration, tiers: TierManager, logger: Logger, observer: (any NodeObserver)? = nil
  ) throws(StrataError) {
    self.configuration = configuration
    self.tiers = tiers
    self.observer = observer
    credentials = Mutex(CredentialTable(tokens: configuration.tokens))
    state = Mutex(ServerState(admission: Admission(limits: configuration.admission)))
    self.logger = logger
    tlsContext = Mutex(try Self.makeTLS(configuration.tls))
    listener = try TCPListener(binding: configuration.listen)
    rdma = NodeRDMA(arena: tiers.arena, address: listener.address, logger: logger)
    gate = try HandshakeGate(
      listener: listener, handshakesMax: configuration.handshakesMax,
      timeoutMilliseconds: configuration.handshakeTimeoutMilliseconds)
    sameHost = try Self.openSameHost(configuration, logger: logger)
  }

  /// Binds the same-host socket: a configured path must bind, the default one may fail (a data
  /// directory too deep for a socket path, or one not created yet) with a warning.
  private static func openSameHost(_ configuration: ServerConfiguration, logger: Logger) throws(StrataError) -> (
    listener: TCPListener, gate: HandshakeGate
  )? {
    guard let path = configuration.sameHostSocket else { return nil }
    do throws(StrataError) {
      let listener = try TCPListener(unixPath: path)
      let gate = try HandshakeGate(
        listener: listener, transport: "shm", handshakesMax: configuration.handshakesMax,
        timeoutMilliseconds: configuration.handshakeTimeoutMilliseconds)
      return (listener, gate)
    } catch  where !configuration.sameHostSocketConfigured {
      logger.warning(
        "the same-host path is off: its default socket cannot be bound (set same_host.socket)",
        metadata: ["path": "\(path)", "reason": "\(error.message)"])
      return nil
    }
  }

  /// The same-host path's socket, when it is listening.
  public var sameHostPath: String? { sameHost?.listener.unixPath }

  /// Where the node listens.
  public var address: HostPort { listener.address }

  /// The server context for `settings` (reading and checking every file), nil without TLS.
  public static func makeTLS(_ settings: NodeConfiguration.TLS) throws(StrataError) -> TLSContext? {
    guard settings.enabled else { return nil }
    return try TLSContext.server(
      TLSFiles(
        certificate: settings.certificate, key: settings.key, trusted: settings.clusterCA,
        clientTrusted: settings.clientCA, kernel: settings.kernel),
      requirePeerCertificate: settings.requireClientCertificate)
  }

  /// The context new TLS handshakes use; nil when the port speaks plaintext.
  public var tls: TLSContext? { tlsContext.withLock { $0 } }

  /// Puts new certificates in force for handshakes from now on (config reload); connections
  /// already open keep theirs. A node started without TLS cannot turn it on (nor off) here: the
  /// port's protocol is fixed at start.
  public func reloadTLS(_ settings: NodeConfiguration.TLS) throws(StrataError) {
    guard settings.enabled == (tls != nil) else {
      throw StrataError(
        .invalidConfiguration, "tls: turning TLS \(settings.enabled ? "on" : "off") needs a restart of the node")
    }
    let next = try Self.makeTLS(settings)
    tlsContext.withLock { $0 = next }
  }

  /// The cluster layer, if the node is part of one; attach it before `start`.
  public var cluster: (any ClusterHooks)? {
    get { clusterHooks.withLock { $0 } }
    set { clusterHooks.withLock { $0 = newValue } }
  }

  /// The ring epoch sent in response headers: the cluster's, or 0 on a node of its own.
  var epoch: UInt64 { cluster?.epoch ?? 0 }

  public var stats: ServerStats {
    state.withLock { state in
      var stats = state.stats
      stats.inflightBytes = state.admission.inflightBytes
      stats.connectionsOpen = state.admission.connections
      stats.connectionsRDMAOpen = rdma.sessions.current
      stats.handshakesPending = gate.pendingCount + (sameHost?.gate.pendingCount ?? 0)
      return stats
    }
  }

  /// The tokens new connections are checked against; empty means the open embedded default.
  public var currentTokens: [NodeConfiguration.Auth.Token] { credentials.withLock { $0.tokens } }

  /// Puts new tokens in force (config reload): new connections are checked against them, and
  /// every open session (TCP or RDMA) whose token was removed, moved to another namespace or lost
  /// a scope it was granted is closed now. Returns how many sessions were closed.
  @discardableResult
  public func replaceTokens(_ new: [NodeConfiguration.Auth.Token]) -> Int {
    let closers = credentials.withLock { $0.replace(new) }
    for (namespace, close) in closers {
      audit(
        .sessionRevoked, detail: "reload", namespace: namespace, source: "config",
        message: "closing a session: its token was removed or narrowed by a configuration reload")
      close()
    }
    return closers.count
  }

  /// Counters of audit events (authentication failures, refusals, probe-limit hits).
  public var auditCounters: AuditCounters { auditing.withLock { $0.counters } }

  func auditState<T>(_ body: (inout AuditState) -> T) -> T { auditing.withLock { body(&$0) } }

  /// Registers a granted session with the closer a reload calls to end it; see `CredentialTable`.
  func registerSession(_ grant: SessionGrant, close: @escaping @Sendable () -> Void) -> Int {
    credentials.withLock {
      $0.register(grant.credential, namespace: grant.namespace, scopes: grant.scopes, close: close)
    }
  }

  func unregisterSession(_ id: Int) { credentials.withLock { $0.unregister(id) } }

  func isRevoked(_ session: Int) -> Bool { credentials.withLock { $0.isRevoked(session) } }

  /// The token `secret` names (constant-time digest comparison against every token), or nil.
  func matchToken(_ secret: [UInt8]) -> NodeConfiguration.Auth.Token? {
    credentials.withLock { NodeConfiguration.Auth.match(secret: secret, in: $0.tokens) }
  }

  /// What keeps the node from accepting connections although it runs: an accept loop (TCP, or the
  /// same-host socket's) that has not gone round for `LoopHeartbeat.staleMilliseconds`. Empty
  /// when all is well, before `start` and after `stop`.
  public func livenessProblems(now: UInt64 = MonotonicTime.nowNanoseconds) -> [String] {
    [gate.heartbeat, sameHost?.gate.heartbeat].compactMap { $0?.problem(now: now) }
  }

  /// Starts accepting connections (one thread for every connection still in its handshake).
  public func start() {
    let thread = Thread { [self] in
      gate.run(server: self)
      waitForConnectionsThenSignal()
    }
    thread.name = "strata-gate"
    thread.start()
    if let sameHost {
      let unixThread = Thread { [self] in sameHost.gate.run(server: self) }
      unixThread.name = "strata-gate-shm"
      unixThread.start()
    }
    startRDMA()
  }

  /// Stops accepting, lets every request in progress finish, closes idle connections, and
  /// returns once every connection has ended.
  public func stop() {
    let connections = state.withLock { state -> [TCPConnection] in
      state.draining = true
      return Array(state.connections.values)
    }
    gate.stop()
    sameHost?.gate.stop()
    rdma.listener?.stop()
    for connection in connections { connection.closeWhenIdle() }
    stopped.wait()
  }

  /// Once the gate has stopped: waits for the connections to end, then reports stopped.
  private func waitForConnectionsThenSignal() {
    while state.withLock({ !$0.connections.isEmpty }) {
      let remaining = state.withLock { Array($0.connections.values) }
      for connection in remaining { connection.waitUntilClosed() }
    }
    stopped.signal()
  }

  /// Starts the thread of a connection whose HELLO was granted (called by the gate).
  func startConnection(socket: TCPSocket, session: RequestSession, hello: [UInt8], sameHost: Bool = false) {
    let connection = state.withLock { state -> TCPConnection? in
      // A HELLO granted while `stop` ran: `stop` has already told the open connections to close,
      // and would wait for this one forever if its peer kept it busy.
      guard !state.draining else { return nil }
      let id = state.nextConnection
      state.nextConnection += 1
      state.stats.connectionsAccepted += 1
      let connection = TCPConnection(id: id, socket: socket, server: self, isSameHost: sameHost)
      state.connections[id] = connection
      return connection
    }
    guard let connection else {
      var session = session
      session.end()
      socket.sendAvailable(
        WireMessage.error(.hello, ErrorBody(StrataError(.unavailable, "the node is shutting down")))
          .frameBytes(requestID: 0, ringEpoch: 0))
      socket.shutdown()
      return
    }
    let thread = Thread { connection.run(session: session, helloResponse: hello) }
    thread.name = "strata-conn-\(connection.id)"
    thread.start()
  }

  func connectionEnded(_ id: Int) {
    _ = state.withLock { $0.connections.removeValue(forKey: id) }
  }

  func count(_ update: (inout ServerStats) -> Void) {
    state.withLock { update(&$0.stats) }
  }

  var isDraining: Bool { state.withLock { $0.draining } }

  /// Runs `body` on the admission state under the server's lock.
  func admission<T>(_ body: (inout Admission) throws(AdmissionRefusal) -> T) throws(AdmissionRefusal) -> T {
    try state.withLock { state throws(AdmissionRefusal) -> T in try body(&state.admission) }
  }

  /// Counts an authenticated connection; throws the refusal as the error to answer with.
  func admit(source: String, namespace: Namespace) throws(StrataError) {
    do throws(AdmissionRefusal) {
      try admission { admission throws(AdmissionRefusal) in try admission.admit(source: source, namespace: namespace) }
    } catch {
      count { $0.connectionsRefused += 1 }
      throw error.error
    }
  }

  func leave(source: String, namespace: Namespace) {
    state.withLock { $0.admission.leave(source: source, namespace: namespace) }
  }

  /// Takes `bytes` of the node's and `namespace`'s in-flight budgets, or throws which is full.
  func reserveInflight(_ bytes: Int, for namespace: Namespace, source: String = "") throws(StrataError) {
    try admitted(source: source) { admission throws(AdmissionRefusal) in try admission.reserve(bytes, for: namespace) }
  }

  /// Runs an admission decision; a refusal by a namespace's quota or probe limit is counted and
  /// audited, and every refusal is thrown as the error to answer with.
  func admitted(source: String, _ body: (inout Admission) throws(AdmissionRefusal) -> Void) throws(StrataError) {
    do throws(AdmissionRefusal) {
      try admission(body)
    } catch {
      auditRefusal(error, source: source)
      throw error.error
    }
  }

  /// Counts and audits a refusal by a namespace's quota or probe limit.
  func auditRefusal(_ refusal: AdmissionRefusal, source: String) {
    guard let limit = refusal.namespaceLimit else { return }
    audit(
      limit.isProbe ? .probeLimit : .quotaRefused, detail: limit.name, namespace: limit.namespace, source: source,
      message: refusal.error.message)
  }

  func releaseInflight(_ bytes: Int, for namespace: Namespace) {
    state.withLock { $0.admission.release(bytes, for: namespace) }
  }

  /// The STAT body a tenant sees: its own namespace's usage and quotas, nothing of other tenants
  /// or of the node's traffic (node-wide counters would show other tenants' hits and misses).
  func statJSON(of namespace: Namespace) -> String {
    let (ram, nvme) = tiers.usageByNamespace()
    let quota = configuration.admission.quotas[namespace]
    let (connections, inflight) = state.withLock {
      ($0.admission.connections(of: namespace), $0.admission.inflightBytes(of: namespace))
    }
    let pinned = tiers.pinnedBytes(of: namespace)
    func limit(_ value: Int?) -> Int? { value == Int.max ? nil : value }
    let fields: [(String, Int?)] = [
      ("ram_blocks", ram[namespace]?.blocks ?? 0), ("ram_used_bytes", ram[namespace]?.bytes ?? 0),
      ("nvme_blocks", nvme[namespace]?.blocks ?? 0), ("nvme_used_bytes", nvme[namespace]?.bytes ?? 0),
      ("pinned_bytes", pinned), ("inflight_bytes", inflight), ("connections_open", connections),
      ("ram_quota_bytes", limit(quota.ramBytesMax)), ("nvme_quota_bytes", limit(quota.nvmeBytesMax)),
      ("pinned_quota_bytes", limit(quota.pinnedBytesMax)), ("inflight_quota_bytes", limit(quota.inflightBytesMax)),
      ("requests_per_second", limit(quota.requestsPerSecond)),
      ("lookup_keys_per_second", limit(quota.lookupKeysPerSecond)),
      ("misses_per_second", limit(quota.missesPerSecond)),
    ]
    return StatDocument(nodeID: configuration.nodeID, namespace: namespace.name, counters: fields).text
  }

  /// The STAT body: tier and data-plane counters as one JSON object.
  func statJSON() -> String {
    let tier = tiers.stats
    let server = stats
    let fields: [(String, Int)] = [
      ("ram_blocks", tier.ramBlocks), ("ram_used_bytes", tier.ramUsedBytes),
      ("ram_capacity_bytes", tier.ramCapacityBytes), ("nvme_blocks", tier.nvmeBlocks),
      ("nvme_used_bytes", tier.nvmeUsedBytes), ("nvme_capacity_bytes", tier.nvmeCapacityBytes),
      ("puts", tier.puts), ("duplicate_puts", tier.duplicatePuts), ("hits_ram", tier.hitsRAM),
      ("hits_nvme", tier.hitsNVMe), ("misses", tier.misses), ("demoted_blocks", tier.demotedBlocks),
      ("promoted_blocks", tier.promotedBlocks), ("dropped_blocks", tier.droppedBlocks),
      ("checksum_failures", tier.checksumFailures), ("io_errors", tier.ioErrors),
      ("disk_operations_stalled", tier.diskOperationsStalled), ("io_queue_jobs", tier.ioQueueJobs),
      ("io_queue_refused", tier.ioQueueRefusals),
      ("promotions_without_room", tier.promotionsWithoutRoom), ("copy_nvme_reads", tier.copyReadsFromNVMe),
      ("leases_active", tier.leasesActive), ("connections_open", server.connectionsOpen),
      ("connections_accepted", server.connectionsAccepted), ("connections_refused", server.connectionsRefused),
      ("malformed_frames", server.malformedFrames), ("requests", server.requests),
      ("error_responses", server.errorResponses), ("get_blocks", server.getBlocks), ("get_bytes", server.getBytes),
      ("put_blocks", server.putBlocks), ("put_bytes", server.putBytes),
      ("hello_rdma_granted", server.helloRDMAGranted), ("hello_tcp_only", server.helloTCPOnly),
      ("connections_rdma", server.connectionsRDMA), ("handshakes_pending", server.handshakesPending),
      ("handshakes_timed_out", server.handshakesTimedOut), ("handshakes_evicted", server.handshakesEvicted),
      ("idle_closed", server.idleClosed), ("deadlines_missed", server.deadlinesMissed),
      ("tls_kernel", server.tlsKernel), ("tls_user", server.tlsUser),
      ("tls_handshakes_failed", server.tlsHandshakesFailed), ("tls_plaintext_refused", server.tlsPlaintextRefused),
      ("transfer_pins", tier.transferPins),
      ("same_host_connections_accepted", server.sameHostConnectionsAccepted),
      ("same_host_connections_open", server.sameHostConnectionsOpen),
      ("same_host_get_bytes", server.sameHostGetBytes), ("same_host_put_bytes", server.sameHostPutBytes),
      ("rdma_get_bytes", server.rdmaGetBytes), ("rdma_put_bytes", server.rdmaPutBytes),
      ("same_host_regions_refused", server.sameHostRegionsRefused),
      ("same_host_region_requests", server.sameHostRegionRequests),
      ("verify_confirmed", server.verifyConfirmed), ("verify_intact", server.verifyIntact),
      ("verify_absent", server.verifyAbsent),
    ]
    return StatDocument(nodeID: configuration.nodeID, instance: instance, counters: fields.map { ($0.0, $0.1) }).text
  }
}

/// A STAT body: the node's id, its process instance (the node-wide view) or the namespace (a
/// tenant's view), and the counters by name; a counter without a value (a quota without a
/// limit) is null.
struct StatDocument: Encodable {
  var nodeID: String
  var instance: Int?
  var namespace: String?
  var counters: [(String, Int?)]

  struct Key: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: Key.self)
    try container.encode(nodeID, forKey: Key(stringValue: "node_id"))
    try container.encodeIfPresent(instance, forKey: Key(stringValue: "instance"))
    try container.encodeIfPresent(namespace, forKey: Key(stringValue: "namespace"))
    for (name, value) in counters { try container.encode(value, forKey: Key(stringValue: name)) }
  }

  /// The body's text (strings and integers always encode).
  var text: String { (try? JSONCoding.text(self)) ?? "{}" }
}
