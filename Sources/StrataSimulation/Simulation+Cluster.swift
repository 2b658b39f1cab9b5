// The cluster layer under the simulator: every node runs the real `ClusterNode` (write quorums,
// the replicator, repair, drain, read-through, ring adoption). It reaches its peers through
// `SimulatedPeerChannel`s: in-memory connections into the other nodes' real request pipelines,
// subject to the network model. Its membership is `SimulatedMembership`, the etcd model. Its
// background tasks run on `ManualExecutor`, which only the run loop drives.

import Logging
import StrataCluster
import StrataCore
import StrataNode
import StrataPlacement
import StrataStorage
import StrataWire

/// The peers of one node's process instance, as `PeerClients` asks for them.
final class SimulatedPeerTransport: PeerTransport, @unchecked Sendable {
  // Sendable: touched by the simulation's one logical thread at a time (see `Simulation`).
  private weak var simulation: Simulation?
  private let node: Int
  private let instance: Int
  private var channels: [SimulatedPeerChannel] = []

  init(simulation: Simulation, node: Int, instance: Int) {
    self.simulation = simulation
    self.node = node
    self.instance = instance
  }

  func channel(to peer: HostPort, namespace: Namespace, timeoutMilliseconds: UInt64) -> any PeerChannel {
    let channel = SimulatedPeerChannel(
      simulation: simulation, from: node, instance: instance, to: peer, namespace: namespace,
      timeoutMilliseconds: timeoutMilliseconds)
    channels.append(channel)
    return channel
  }

  /// Hangs up every peer connection this instance opened.
  func closeAll() {
    for channel in channels { channel.close() }
  }
}

/// One (peer, namespace) of a node: frames into the peer's request pipeline over an
/// `InMemoryConnection`, HELLO as a peer with the cluster token. A call fails as a TCP call would
/// when the network model says so: the peer down, partitioned off, or slower than the call's
/// timeout (a message delay drawn per call). A background call takes its delay in simulated time:
/// the request travels half of it on the caller's clock, the peer answers, the answer travels the
/// rest, and the network is looked at again at each end (a peer that went down or was cut off
/// meanwhile never got the request, or its answer is lost). A call made inside a request the run
/// loop or a peer waits for takes no time (`Simulation.runningTasks`, `servingPeerRequests`).
final class SimulatedPeerChannel: PeerChannel, @unchecked Sendable {
  // Sendable: touched by the simulation's one logical thread at a time (see `Simulation`).
  private weak var simulation: Simulation?
  private let from: Int
  private let instance: Int
  private let peer: HostPort
  private let namespace: Namespace
  private let timeoutMilliseconds: UInt64
  private var connection: (InMemoryConnection, instance: Int)?

  init(
    simulation: Simulation?, from: Int, instance: Int, to peer: HostPort, namespace: Namespace,
    timeoutMilliseconds: UInt64
  ) {
    self.simulation = simulation
    self.from = from
    self.instance = instance
    self.peer = peer
    self.namespace = namespace
    self.timeoutMilliseconds = timeoutMilliseconds
  }

  func lookup(_ keys: [BlockKey], deadline: Deadline) async throws(StrataError) -> PeerHoldings {
    let (header, message, _) = try await exchange { LookupRequest(keys: keys).frameBytes(requestID: $0, ringEpoch: 0) }
    guard case .lookupResponse(let response) = message, response.tiers.count == keys.count else {
      throw StrataError(.protocolError, "\(peer) answered LOOKUP with \(message.opcode)")
    }
    return PeerHoldings(tiers: response.tiers, ringEpoch: header.ringEpoch)
  }

  func put(copies blocks: [LeasedBlock], deadline: Deadline) async throws(StrataError) -> [PutOutcome] {
    // The injected bug: a mutated block is not sent, and counted as stored.
    let mutated = blocks.map { simulation?.isMutated($0.id, copiedFrom: from, to: peer) ?? false }
    let sent = zip(blocks, mutated).filter { !$0.1 }.map(\.0)
    var outcomes: [PutOutcome] = []
    if !sent.isEmpty {
      let items = sent.map { PutRequest.Item(key: $0.id.key, length: UInt64($0.bytes.count), checksum: $0.checksum) }
      let (_, message, _) = try await exchange {
        PutRequest(items: items).frameBytes(requestID: $0, ringEpoch: 0) + sent.flatMap { Array($0.bytes) }
      }
      guard case .putResponse(let response) = message, response.outcomes.count == sent.count else {
        throw StrataError(.protocolError, "\(peer) answered PUT with \(message.opcode)")
      }
      outcomes = response.outcomes
    }
    var next = outcomes.makeIterator()
    return mutated.map { $0 ? .stored : next.next()! }
  }

  func get(_ key: BlockKey, into destination: UnsafeMutableRawBufferPointer, deadline: Deadline)
    async throws(StrataError) -> Int?
  {
    let (_, message, payload) = try await exchange {
      GetRequest(items: [.init(key: key)]).frameBytes(requestID: $0, ringEpoch: 0)
    }
    guard case .getResponse(let response) = message, let item = response.items.first else {
      throw StrataError(.protocolError, "\(peer) answered GET with \(message.opcode)")
    }
    guard item.status == .ok, payload.count == Int(item.length), payload.count <= destination.count else { return nil }
    // As StrataClient does: a block that fails the checksum the peer sent (its RAM copy damaged)
    // is not taken, and is reported to the peer (VERIFY), which checks its copy and drops it.
    guard CRC32C.checksum(payload) == item.checksum else {
      let report = try? await exchange { VerifyRequest(keys: [key]).frameBytes(requestID: $0, ringEpoch: 0) }
      simulation?.note(
        "n\(from) got block \(key.hex.prefix(12)) damaged from \(peer): \(simulation?.describe(report?.1) ?? "")")
      return nil
    }
    payload.withUnsafeBytes { destination.copyMemory(from: $0) }
    return payload.count
  }

  func stat(deadline: Deadline) async throws(StrataError) -> String {
    let (_, message, _) = try await exchange { StatRequest().frameBytes(requestID: $0, ringEpoch: 0) }
    guard case .statResponse(let response) = message else {
      throw StrataError(.protocolError, "\(peer) answered STAT with \(message.opcode)")
    }
    return response.json
  }

  func close() {
    connection?.0.close()
    connection = nil
  }

  /// Sends one request (made with its request id) and returns the answer's header, message and payload.
  private func exchange(_ request: (UInt64) -> [UInt8]) async throws(StrataError) -> (
    FrameHeader, WireMessage, [UInt8]
  ) {
    guard let simulation else { throw StrataError(.unavailable, "the simulation has ended") }
    var target = try simulation.reachPeer(from: from, instance: instance, to: peer)
    let delay = simulation.messageDelay(from, target.index)
    let timedOut = StrataError(
      .timeout, "\(peer) did not answer within \(timeoutMilliseconds) ms (message delay \(delay) ms)")
    let timed = simulation.runningTasks && simulation.servingPeerRequests == 0
    if timed {
      simulation.peerCallsInFlight[from, default: 0] += 1
      simulation.timedPeerCalls += 1
    }
    defer { if timed { simulation.peerCallsInFlight[from, default: 0] -= 1 } }
    // The request travels the first half of the delay; one that arrives within the timeout runs,
    // even when its answer will not (below).
    let requestLeg = delay - delay / 2
    /// How long the caller has waited when the peer runs the request.
    var spent = requestLeg
    if timed {
      try await travel(min(requestLeg, timeoutMilliseconds), in: simulation)
      guard requestLeg <= timeoutMilliseconds else { throw timedOut }
      target = try simulation.reachPeer(from: from, instance: instance, to: peer)
    } else {
      guard requestLeg <= timeoutMilliseconds else { throw timedOut }
    }
    // The peer's process is paused: the request waits in its socket until it goes on, and runs
    // then if the caller still waits (a call made inside a request takes no time: it gives up).
    while target.isPaused(at: simulation.now) {
      let waited = target.pausedUntil - simulation.now
      guard timed, spent + waited <= timeoutMilliseconds else {
        if timed { try await travel(timeoutMilliseconds - spent, in: simulation) }
        throw StrataError(.timeout, "\(peer) did not answer within \(timeoutMilliseconds) ms (its process is paused)")
      }
      try await travel(waited, in: simulation)
      target = try simulation.reachPeer(from: from, instance: instance, to: peer)
      spent += waited
    }
    // Messages to the peer are lost (a one-way loss as the request arrives): it never hears of
    // the call, and the caller waits out its timeout.
    if simulation.oneWayLosses.contains([from, target.index]) {
      if timed { try await travel(timeoutMilliseconds - spent, in: simulation) }
      throw StrataError(.timeout, "\(peer) did not answer within \(timeoutMilliseconds) ms (the request was lost)")
    }
    let connection = try connect(to: target, in: simulation)
    simulation.servingPeerRequests += 1
    let frames = answeredFrames(connection.receive(request(simulation.nextRequestID())))
    simulation.servingPeerRequests -= 1
    guard let (header, message, payload) = frames.first else {
      throw StrataError(
        .unavailable, "\(peer) closed the connection: \(connection.closeReason?.message ?? "no answer")")
    }
    // The peer did the work, but its answer comes after the caller's timeout: the caller cannot
    // tell a copy that landed from one that did not (a slow network, not a dead peer).
    if spent + delay / 2 > timeoutMilliseconds {
      if timed { try await travel(timeoutMilliseconds - spent, in: simulation) }
      simulation.answersLost += 1
      throw timedOut
    }
    if timed {
      try await travel(delay / 2, in: simulation)
      do {
        _ = try simulation.reachPeer(from: from, instance: instance, to: peer)
      } catch {
        simulation.answersLost += 1
        throw error
      }
    }
    // Messages from the peer are lost (a one-way loss as the answer travels): the peer did the
    // work and the caller waits out its timeout, as with a late answer.
    if simulation.oneWayLosses.contains([target.index, from]) {
      if timed { try await travel(timeoutMilliseconds - spent - delay / 2, in: simulation) }
      simulation.answersLost += 1
      throw StrataError(.timeout, "\(peer) did not answer within \(timeoutMilliseconds) ms (the answer was lost)")
    }
    if case .error(_, let body) = message {
      throw StrataError(StrataError.Code(number: body.code) ?? .internalError, "\(peer): \(body.message)")
    }
    return (header, message, payload)
  }

  /// Waits `milliseconds` on the calling node's clock; a call whose task was cancelled (its
  /// process stopped) ends here.
  private func travel(_ milliseconds: UInt64, in simulation: Simulation) async throws(StrataError) {
    await simulation.nodes[from].clock.sleep(milliseconds: milliseconds)
    if Task.isCancelled { throw StrataError(.cancelled, "n\(from)'s call to \(peer) was cancelled") }
  }

  /// The open connection to the peer's current process, or a new one after its HELLO.
  private func connect(to target: SimulatedNode, in simulation: Simulation) throws(StrataError) -> InMemoryConnection {
    if let (open, instance) = connection, instance == target.instance, !open.isClosed { return open }
    connection?.0.close()
    connection = nil
    guard let server = target.server else { throw StrataError(.unavailable, "cannot connect to \(peer)") }
    let opened = InMemoryConnection(server: server, source: simulation.nodes[from].address)
    let hello = HelloRequest(
      capabilities: [.tcp, .peer, .verify], frameBytesMax: 1 << 30, token: Array(SimulatedNode.clusterToken.utf8),
      clientName: "strata-peer-\(simulation.nodes[from].id)", peerNamespace: namespace.name)
    let answer = answeredFrames(opened.receive(hello.frameBytes(requestID: 1, ringEpoch: 0))).first?.1
    guard case .helloResponse? = answer else {
      throw StrataError(.permissionDenied, "\(peer) refused the peer HELLO: \(simulation.describe(answer))")
    }
    connection = (opened, target.instance)
    return opened
  }
}

/// The etcd session of one node's process instance, as the membership model sees it: `start`
/// registers (lease, member key, watch), `announceDraining` rewrites the key with the state
/// draining, `stop` ends the keep-alives and, when asked, deletes the key.
final class SimulatedMembership: MembershipSource, @unchecked Sendable {
  // Sendable: touched by the simulation's one logical thread at a time (see `Simulation`).
  private weak var simulation: Simulation?
  private let node: Int
  private let instance: Int

  init(simulation: Simulation, node: Int, instance: Int) {
    self.simulation = simulation
    self.node = node
    self.instance = instance
  }

  func start() { simulation?.register(node) }
  func announceDraining() { simulation?.announceDraining(node, instance: instance) }
  func stop(deregister: Bool) { simulation?.endSession(node, instance: instance, deregister: deregister) }
}

/// A node's log lines, at `info` and above, as trace lines: message, then metadata by key.
struct TraceLogHandler: LogHandler {
  let node: String
  let write: @Sendable (String) -> Void
  var logLevel: Logger.Level = .info
  var metadata: Logger.Metadata = [:]

  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  func log(event: LogEvent) {
    let all = metadata.merging(event.metadata ?? [:]) { $1 }
    let fields = all.keys.sorted().map { "\($0)=\(all[$0]!)" }
    write(([node, "\(event.level):", "\(event.message)"] + fields).joined(separator: " "))
  }
}

extension Simulation {
  /// Whether the mutation skips this copy (one block in a thousand, chosen by key and seed).
  func isMutated(_ id: BlockID, copiedFrom source: Int, to peer: HostPort) -> Bool {
    guard options.mutation == .skipReplication else { return false }
    var mixer = SimulationRandom(seed: id.key.prefix64 ^ options.seed)
    guard mixer.next() % 1000 == 0 else { return false }
    note("mutation: copy of \(id.key.hex.prefix(12)) n\(source)->\(peer) skipped and counted as made")
    return true
  }

  /// The node a peer call from `source` reaches now, or the error a TCP call would meet.
  func reachPeer(from source: Int, instance: Int, to peer: HostPort) throws(StrataError) -> SimulatedNode {
    guard nodes[source].isUp, nodes[source].instance == instance else {
      throw StrataError(.unavailable, "n\(source)'s process (instance \(instance)) has ended")
    }
    guard let target = nodes.first(where: { $0.address == peer.description }), target.isUp else {
      throw StrataError(.unavailable, "cannot connect to \(peer): the node is down")
    }
    guard target.stoppingSince == nil else {
      throw StrataError(.unavailable, "cannot connect to \(peer): the node is stopping (its data plane is closed)")
    }
    guard !partitioned(source, target.index) else {
      throw StrataError(.unavailable, "cannot connect to \(peer): partitioned from n\(source)")
    }
    return target
  }

  func nextRequestID() -> UInt64 {
    requestID += 1
    return requestID
  }

  func describe(_ message: WireMessage?) -> String {
    guard let message else { return "nothing" }
    if case .error(_, let body) = message { return "error \(body.code): \(body.message)" }
    if case .verifyResponse(let response) = message { return "verify \(response.outcomes.map { "\($0)" })" }
    return "\(message)".prefix(60).description
  }

  // MARK: The node's cluster layer

  /// The real cluster layer of node `index`'s new process: its peers, membership and tasks in the
  /// simulation, its log in the trace.
  func startCluster(_ index: Int) throws(StrataError) {
    let node = nodes[index]
    guard let tiers = node.tiers, let server = node.server else { return }
    var settings = ClusterNode.Settings(
      configuration: SimulatedNode.configuration(), nodeID: node.id,
      advertise: try HostPort(parsing: node.address), capacityBytes: UInt64(node.ramBytes))
    settings.me = node.member(state: .active)
    settings.replicas = replicas
    settings.clock = node.clock
    settings.instance = node.instance
    settings.virtualNodes = Self.virtualNodes
    settings.peerTimeoutMilliseconds = Self.peerTimeoutMilliseconds
    settings.suspectPeerTimeoutMilliseconds = Self.peerTimeoutMilliseconds / 2
    // Retries of under-replicated blocks at the scale of the run (faults end by 10.5 s, the check is at 20 s).
    settings.underReplicatedRetryMilliseconds = Self.peerTimeoutMilliseconds
    settings.underReplicatedRetryMaxMilliseconds = 4 * Self.peerTimeoutMilliseconds
    settings.readBackSchedule = ReadBackSchedule(
      firstMilliseconds: Self.peerTimeoutMilliseconds, maxMilliseconds: 4 * Self.peerTimeoutMilliseconds,
      attemptsMax: ReadBackSchedule.standard.attemptsMax)
    let transport = SimulatedPeerTransport(simulation: self, node: index, instance: node.instance)
    settings.peerTransport = transport
    settings.executor = tasks
    let id = node.id
    let logger = Logger(label: "strata-sim.\(id)") { _ in
      TraceLogHandler(node: id) { [weak self] line in self?.note(line) }
    }
    let cluster = ClusterNode(settings: settings, tiers: tiers, logger: logger)
    if options.mutation == .noReadBack { tiers.setDamagedHandler { _ in } }
    let instance = node.instance
    cluster.setOnDrained { [weak self] in
      guard let self else { return }
      events.schedule(.depart(index, instance: instance), at: now)
    }
    node.cluster = cluster
    node.peerTransport = transport
    server.cluster = cluster
    try cluster.start(membership: SimulatedMembership(simulation: self, node: index, instance: node.instance))
  }

  /// Runs the cluster layer's tasks until each waits for the run loop again.
  func settle() {
    runningTasks = true
    let settled = tasks.runUntilIdle()
    runningTasks = false
    guard settled else {
      return fail("the cluster layer's tasks ran \(ManualExecutor.jobsPerRunMax) jobs without settling")
    }
    // Wake the run loop when the next sleeper of any node is due.
    for node in nodes where node.isUp {
      guard let due = node.clock.nextWakeMilliseconds, due > node.clockOffset else { continue }
      let at = max(now + 1, due - node.clockOffset)
      if wakes.insert(at).inserted { events.schedule(.wake, at: at) }
    }
  }

  // MARK: Drain (ClusterNode.startDrain)

  /// How often `strata drain` asks for the drain's status (CLI/ClusterCommands.swift).
  static let drainPollMilliseconds: UInt64 = 500

  /// An operator's `strata drain` to node `index` (RING drain), when the others can take its
  /// blocks; it then asks for the status until the drain is done (the node exits) or failed.
  func startDrain(_ index: Int) {
    let node = nodes[index]
    let active = nodes.filter { $0.isUp && !$0.draining }.count
    guard !node.isPaused(at: now) else { return note("  skipped: n\(index) does not answer (paused)") }
    guard node.isUp, node.stoppingSince == nil, !node.draining, active > replicas, let cluster = node.cluster else {
      return note("  skipped: n\(index) cannot drain now (\(active) active nodes, R=\(replicas))")
    }
    let call = RingCall(.drain, node: node.id)
    Task(executorPreference: tasks) { [weak self] in
      do throws(StrataError) {
        _ = try await cluster.answerRing(call, isAdmin: true)
      } catch {
        self?.fail("n\(index) refused its drain: \(error.message)")
      }
    }
    events.schedule(.drainStatus(index, instance: node.instance), at: now + Self.drainPollMilliseconds)
  }

  /// One RING drain_status from the operator; the first that reports "done" lets the node exit.
  func pollDrain(_ index: Int, instance: Int) {
    let node = nodes[index]
    guard node.isUp, node.instance == instance, let cluster = node.cluster else { return }
    // The operator's poll waits for a paused node.
    if node.isPaused(at: now) { return events.schedule(.drainStatus(index, instance: instance), at: node.pausedUntil) }
    Task(executorPreference: tasks) { _ = try? await cluster.answerRing(RingCall(.drainStatus), isAdmin: true) }
    settle()
    switch cluster.drainProgress.phase {
    case .done, .failed: return
    default: events.schedule(.drainStatus(index, instance: instance), at: now + Self.drainPollMilliseconds)
    }
  }

  /// The drain's announcement: the member key is rewritten with the state draining.
  func announceDraining(_ index: Int, instance: Int) {
    let node = nodes[index]
    guard node.isUp, node.instance == instance else { return }
    node.draining = true
    putDrainingRecord(index)
  }

  /// Writes node `index`'s member key as draining, when it can reach the membership service and
  /// the key says otherwise (a later keep-alive tries again, as the session's update would).
  func putDrainingRecord(_ index: Int) {
    let node = nodes[index]
    guard node.draining, node.sessionActive, canReachMembership(index), membership.isAlive(node.membershipLease)
    else { return }
    let record = MembershipModel.Record(
      member: node.member(state: .draining), lease: node.membershipLease, instance: node.instance)
    if membership.put(record) {
      note("membership: n\(index) draining (revision \(membership.revision))")
      broadcast()
    }
  }

  /// The session ends: no more keep-alives; `deregister` deletes the member key (a drained node
  /// leaving) when the service can be reached, else the lease expires.
  func endSession(_ index: Int, instance: Int, deregister: Bool) {
    let node = nodes[index]
    guard node.instance == instance, node.sessionActive else { return }
    node.sessionActive = false
    guard deregister, canReachMembership(index) else { return }
    if membership.delete(node.id) {
      note("membership: n\(index) deregistered (revision \(membership.revision))")
      broadcast()
    }
  }

  /// The drained node exits (the node's drained action).
  func depart(_ index: Int, instance: Int) {
    let node = nodes[index]
    guard node.isUp, node.instance == instance else { return }
    if node.isPaused(at: now) { return events.schedule(.depart(index, instance: instance), at: node.pausedUntil) }
    note("n\(index) exits after its drain")
    node.depart()
    settle()
    clientConnections[index] = nil
    checkNoAcknowledgedBlockLost()
  }
}

extension Simulation {
  // MARK: Graceful stop (CLI/ServeLifecycle.swift)

  /// How long a stop waits for its replication copies: `strata serve` waits 10 s; the simulator
  /// scales it to the run (faults end by 10.5 s, the final check is at 20 s).
  static let stopCopiesMilliseconds: UInt64 = 4_000

  /// SIGTERM to node `index`, as `strata serve` stops: its data plane closes (clients and peers
  /// no longer reach it), then its cluster layer sends the copies it had queued and retries those
  /// that had failed (`ClusterNode.finishReplication`); `endStop` does the rest. A paused process
  /// takes the signal when it goes on.
  func startStop(_ index: Int, restartAfter: UInt64) {
    let node = nodes[index]
    guard node.isUp, node.stoppingSince == nil, let cluster = node.cluster else {
      return note("  skipped: n\(index) is not up, or stopping already")
    }
    if node.isPaused(at: now) {
      return events.schedule(.fault(.stop(node: index, restartAfter: restartAfter)), at: node.pausedUntil)
    }
    node.stoppingSince = now
    clientConnections[index]?.close()
    clientConnections[index] = nil
    let instance = node.instance
    Task(executorPreference: tasks) { [weak self] in
      let left = await cluster.finishReplication(withinMilliseconds: Self.stopCopiesMilliseconds)
      guard let self else { return }
      events.schedule(.endStop(index, instance: instance, left: left, restartAfter: restartAfter), at: now)
    }
  }

  /// The rest of a graceful stop: the cluster layer stops, every RAM block is written to the disk,
  /// and the process exits, to start again `restartAfter` ms later. A stop that left blocks
  /// unwritten counts as a failure of the node; one that did not must lose nothing: its disk is
  /// checked at the next start (`diskAtStop`), and the blocks it alone held meanwhile are on it.
  func endStop(_ index: Int, instance: Int, left: (queued: Int, failed: Int), restartAfter: UInt64) {
    let node = nodes[index]
    guard node.isUp, node.instance == instance, let since = node.stoppingSince, let cluster = node.cluster,
      let tiers = node.tiers
    else { return }
    if node.isPaused(at: now) {
      return events.schedule(
        .endStop(index, instance: instance, left: left, restartAfter: restartAfter), at: node.pausedUntil)
    }
    cluster.stop(deregister: false)
    settle()
    tiers.shutdown()
    var flushFailure: String?
    var written = 0
    do throws(StrataError) {
      if options.mutation != .stopWithoutFlush {
        written = try waitForTask { () throws(StrataError) in try await tiers.flush() }
      }
    } catch {
      flushFailure = error.message
    }
    let unwritten = tiers.inventory().count { $0.tier == .ram && node.nvme?.contains($0.id) != true }
    if unwritten > 0 && flushFailure == nil {
      fail("n\(index) stops with \(unwritten) RAM blocks not on its disk, and its flush reported no failure")
    }
    // Copies left unsent do not make the stop a failure: their blocks are on this node's disk and
    // come back with it. Blocks a failed flush left unwritten do.
    let clean = flushFailure == nil && unwritten == 0
    note(
      "n\(index) stops: copies queued \(left.queued), blocks short of owners \(left.failed); \(written) blocks written to disk, \(unwritten) not\(flushFailure.map { " (\($0))" } ?? "")\(clean ? "" : "; counted as a failure")"
    )
    node.endStop()
    settle()
    if !clean { failures.append((index, since)) }
    checkNoAcknowledgedBlockLost()
    events.schedule(.restart(index), at: now + restartAfter)
  }
}
