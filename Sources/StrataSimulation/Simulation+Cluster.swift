// The cluster layer, modelled: what ClusterNode does over real peer connections (WriteQuorum.swift,
// Replicator.swift, Repair.swift, Handoff.swift), done here over in-memory peer connections into
// the other nodes' real request pipelines. The decisions use the real pieces: Ring ownership and
// WriteQuorumRule. A pass (repair, handoff) runs at one simulated instant.

import StrataCluster
import StrataCore
import StrataNode
import StrataPlacement
import StrataStorage
import StrataWire

/// The data plane's view of the modelled cluster layer (NodeServer.cluster).
final class SimulatedClusterHooks: ClusterHooks, @unchecked Sendable {
  // Sendable: the simulation is touched by one logical thread at a time (see `Simulation`).
  private unowned let simulation: Simulation
  private let node: Int

  init(simulation: Simulation, node: Int) {
    self.simulation = simulation
    self.node = node
  }

  var epoch: UInt64 { simulation.nodes[node].ring.epoch }

  func answerRing(_ body: [UInt8], isAdmin: Bool) async throws(StrataError) -> [UInt8] {
    simulation.nodes[node].ring.jsonBytes()
  }

  func firstUnowned(_ keys: [BlockKey]) -> BlockKey? {
    let ring = simulation.nodes[node].ring
    guard let me = ring.members.firstIndex(where: { $0.id == simulation.nodes[node].id }) else { return keys.first }
    return keys.first { !ring.isOwner(memberIndex: me, of: $0) }
  }

  func replicate(stored: [BlockID], present: [BlockID], writeQuorum: UInt8, deadline: Deadline) async -> StrataError? {
    await simulation.replicate(from: node, ids: stored + present, writeQuorum: writeQuorum)
  }

  var readsThrough: Bool {
    let state = simulation.nodes[node]
    return state.previousRing != nil
      && simulation.now - state.ringChangedAt < Simulation.fillWindowMilliseconds
  }

  func fill(_ ids: [BlockID]) async -> Int { await simulation.fill(node, ids) }

  func member(named names: (String) -> Bool) -> String? {
    simulation.nodes[node].ring.members.first { names($0.id) }?.id
  }
}

extension Simulation {
  enum CopyResult {
    case held
    case failed(String)
  }

  /// Whether the mutation skips this block (one in a thousand, chosen by key and seed).
  func isMutated(_ id: BlockID) -> Bool {
    guard options.mutation == .skipReplication else { return false }
    var mixer = SimulationRandom(seed: id.key.prefix64 ^ options.seed)
    return mixer.next() % 1000 == 0
  }

  /// A client's PUT on `index` (WriteQuorum.swift's `replicate`): each block copied to its other
  /// owners now; acknowledged when `required` owners hold it; copies not made go to the queue.
  func replicate(from index: Int, ids: [BlockID], writeQuorum: UInt8) async -> StrataError? {
    let node = nodes[index]
    let ring = node.ring
    let required = WriteQuorumRule.required(requested: writeQuorum, configured: nil, replicas: ring.replicationFactor)
    var short = 0
    for id in ids {
      let owners = ring.owners(of: id.key)
      var holders = owners.contains { $0.id == node.id } ? 1 : 0
      for owner in owners where owner.id != node.id {
        guard let target = nodes.first(where: { $0.id == owner.id })?.index else { continue }
        if isMutated(id) {
          note("mutation: copy of \(id.key.hex.prefix(12)) to \(owner.id) skipped and counted as made")
          holders += 1
          continue
        }
        guard required > 1 else {
          queue(ReplicationTask(id: id, from: index, to: target, attempt: 1))
          continue
        }
        guard let bytes = try? await node.tiers?.read(id) else { continue }
        switch copy(id, bytes: bytes, from: index, to: target, askFirst: false) {
        case .held: holders += 1
        case .failed(let reason):
          note("  copy \(id.key.hex.prefix(12)) n\(index)->\(owner.id) failed: \(reason); queued")
          queue(ReplicationTask(id: id, from: index, to: target, attempt: 1))
        }
      }
      if holders < required { short += 1 }
    }
    guard short > 0 else { return nil }
    return StrataError(
      .quorumNotReached, "write quorum \(required) of \(ring.replicationFactor) owners not reached for \(short) blocks")
  }

  /// One copy over a peer connection into the target's pipeline: LOOKUP first when asked, PUT
  /// when missing; "already present" counts once a LOOKUP confirms it.
  func copy(_ id: BlockID, bytes: [UInt8]?, from source: Int, to target: Int, askFirst: Bool) -> CopyResult {
    let to = nodes[target]
    guard to.isUp else { return .failed("n\(target) is down") }
    guard !partitioned(source, target) else { return .failed("partitioned") }
    let delay = messageDelay(source, target)
    guard delay <= Self.copyTimeoutMilliseconds else { return .failed("timed out after \(delay) ms") }
    guard let connection = peerConnection(from: source, to: target) else { return .failed("peer HELLO refused") }
    if askFirst {
      guard let present = lookup(connection, [id.key]) else { return .failed("LOOKUP failed") }
      if present == [true] { return .held }
    }
    guard let bytes else { return .failed("the source no longer holds it") }
    let request =
      PutRequest(items: [.init(key: id.key, length: UInt64(bytes.count), checksum: CRC32C.checksum(bytes))])
      .frameBytes(requestID: nextRequestID(), ringEpoch: 0) + bytes
    let answer = answeredFrames(connection.receive(request)).first?.1
    guard case .putResponse(let response)? = answer else { return .failed("PUT answered \(describe(answer))") }
    switch response.outcomes.first {
    case .stored?: return .held
    case .alreadyPresent?: return lookup(connection, [id.key]) == [true] ? .held : .failed("present but not committed")
    default: return .failed("refused: \(response.outcomes)")
    }
  }

  func lookup(_ connection: InMemoryConnection, _ keys: [BlockKey]) -> [Bool]? {
    let answer = answeredFrames(
      connection.receive(LookupRequest(keys: keys).frameBytes(requestID: nextRequestID(), ringEpoch: 0))
    ).first?.1
    guard case .lookupResponse(let response)? = answer else { return nil }
    return response.tiers.map { $0 != .absent }
  }

  func peerConnection(from source: Int, to target: Int) -> InMemoryConnection? {
    let from = nodes[source]
    let to = nodes[target]
    if let open = from.peers[to.id], !open.isClosed { return open }
    guard let server = to.server else { return nil }
    let connection = InMemoryConnection(server: server, source: from.address)
    let hello = HelloRequest(
      capabilities: [.tcp, .peer], frameBytesMax: 1 << 30, token: Array(SimulatedNode.clusterToken.utf8),
      clientName: from.id, peerNamespace: SimulatedNode.namespace.name)
    guard
      case .helloResponse? = answeredFrames(connection.receive(hello.frameBytes(requestID: 1, ringEpoch: 0))).first?.1
    else { return nil }
    from.peers[to.id] = connection
    return connection
  }

  func nextRequestID() -> UInt64 {
    requestID += 1
    return requestID
  }

  func describe(_ message: WireMessage?) -> String {
    guard let message else { return "nothing" }
    if case .error(_, let body) = message { return "error \(body.code): \(body.message)" }
    return "\(message)".prefix(60).description
  }

  func readBytes(_ index: Int, _ id: BlockID) -> [UInt8]? {
    guard let tiers = nodes[index].tiers else { return nil }
    return (try? waitForTask(on: executor) { () throws(StrataError) in try await tiers.read(id) }) ?? nil
  }

  // MARK: Read-through (ReadThrough.swift)

  /// A client missed blocks on `index` within the fill window: those it owns now and whose owners
  /// changed are asked of the previous owners, then the current co-owners, and kept.
  func fill(_ index: Int, _ ids: [BlockID]) async -> Int {
    let node = nodes[index]
    guard let previous = node.previousRing, let tiers = node.tiers else { return 0 }
    let current = node.ring
    var filled = 0
    for id in ids {
      let now = current.owners(of: id.key).map(\.id)
      guard now.contains(node.id), previous.owners(of: id.key).map(\.id) != now else { continue }
      var candidates: [String] = []
      for member in previous.owners(of: id.key) + current.owners(of: id.key)
      where member.id != node.id && !candidates.contains(member.id) {
        candidates.append(member.id)
      }
      for candidate in candidates {
        guard let source = nodes.first(where: { $0.id == candidate })?.index,
          let bytes = fetch(id, from: source, to: index)
        else { continue }
        if (try? await tiers.put(id, bytes: bytes, expectedChecksum: CRC32C.checksum(bytes))) != nil {
          note("n\(index) read \(id.key.hex.prefix(12)) through from n\(source)")
          filled += 1
        }
        break
      }
    }
    return filled
  }

  /// A GET of one block over a peer connection; nil when it is not there or not reachable.
  func fetch(_ id: BlockID, from source: Int, to index: Int) -> [UInt8]? {
    guard nodes[source].isUp, !partitioned(source, index),
      messageDelay(source, index) <= Self.copyTimeoutMilliseconds,
      let connection = peerConnection(from: index, to: source)
    else { return nil }
    let answer = answeredFrames(
      connection.receive(GetRequest(items: [.init(key: id.key)]).frameBytes(requestID: nextRequestID(), ringEpoch: 0)))
    guard case .getResponse(let response)? = answer.first?.1, response.items.first?.status == .ok else { return nil }
    return answer.first!.2
  }

  // MARK: The replication queue (Replicator.swift)

  static let replicationAttemptsMax = 5

  func queue(_ task: ReplicationTask) {
    events.schedule(.replicate(task), at: now + 200 * UInt64(task.attempt))
  }

  func replicateLater(_ task: ReplicationTask) {
    guard nodes[task.from].isUp else { return }
    let bytes = readBytes(task.from, task.id)
    guard bytes != nil else { return }
    switch copy(task.id, bytes: bytes, from: task.from, to: task.to, askFirst: true) {
    case .held: note("replicated \(task.id.key.hex.prefix(12)) n\(task.from)->n\(task.to)")
    case .failed(let reason):
      if task.attempt < Self.replicationAttemptsMax {
        var next = task
        next.attempt += 1
        queue(next)
      } else {
        note("replication of \(task.id.key.hex.prefix(12)) n\(task.from)->n\(task.to) dropped: \(reason)")
      }
    }
  }

  // MARK: Repair (Repair.swift)

  static let repairRetriesMax = 3

  func scheduleRepair(_ index: Int, reason: String) {
    let node = nodes[index]
    guard !node.repairScheduled else { return }
    node.repairScheduled = true
    note("n\(index) schedules repair: \(reason)")
    events.schedule(.repair(node: index, attempt: 0), at: now + 50)
  }

  /// Every block this node owns in its ring, offered to the other owners that lack it; then the
  /// blocks it holds without owning them (at most `NotOwnedOffers.perPassMax`), offered to their
  /// owners and dropped here once every owner holds them.
  func repairPass(_ index: Int, attempt: Int) {
    let node = nodes[index]
    node.repairScheduled = false
    guard node.isUp, let tiers = node.tiers,
      let me = node.ring.members.firstIndex(where: { $0.id == node.id && $0.isActive })
    else { return }
    let ring = node.ring
    let held = tiers.inventory().map(\.id).sorted { keyOrder($0.key, $1.key) }
    let owned = held.filter { ring.isOwner(memberIndex: me, of: $0.key) }
    let notOwned = held.filter { !ring.isOwner(memberIndex: me, of: $0.key) }
    let offered = notOwned.prefix(NotOwnedOffers.perPassMax)
    var copied = 0
    var failed = 0
    for id in owned {
      var bytes: [UInt8]?
      var holders = 0
      let others = ring.owners(of: id.key).filter { $0.id != node.id }
      for owner in others {
        guard let target = nodes.first(where: { $0.id == owner.id })?.index else { continue }
        if bytes == nil { bytes = readBytes(index, id) }
        if case .held = copy(id, bytes: bytes, from: index, to: target, askFirst: true) {
          copied += 1
          holders += 1
        }
      }
      let required = ring.effectiveReplicationFactor - 1
      if !BlockPlacement(owners: others.count, holders: holders, required: required).isPlaced { failed += 1 }
    }
    var released = 0
    for id in offered {
      let owners = ring.owners(of: id.key)
      guard let holders = offer(id, from: index, to: owners) else { continue }
      if BlockPlacement(owners: owners.count, holders: holders, required: ring.effectiveReplicationFactor).isPlaced {
        tiers.remove(id)
        released += 1
      } else {
        failed += 1
      }
    }
    note(
      "n\(index) repair pass at epoch \(ring.epoch): \(owned.count) owned, \(copied) offers held, \(notOwned.count) held unowned, \(released) released, \(failed) not on all owners"
    )
    if failed > 0 && attempt < Self.repairRetriesMax {
      node.repairScheduled = true
      events.schedule(.repair(node: index, attempt: attempt + 1), at: now + 500)
    } else if NotOwnedOffers.passAgain(held: notOwned.count, offered: offered.count, released: released) {
      scheduleRepair(index, reason: "more blocks held unowned")
    }
  }

  /// Offers a block node `index` holds to `owners` (LOOKUP, then PUT where missing), as a handoff
  /// does. Returns how many of them hold it afterwards, or nil when the block is gone from the
  /// node since its inventory (evicted, or its record unreadable): nothing to offer.
  func offer(_ id: BlockID, from index: Int, to owners: [Member]) -> Int? {
    guard let bytes = readBytes(index, id) else { return nil }
    var holders = 0
    for owner in owners {
      guard let target = nodes.first(where: { $0.id == owner.id })?.index else { continue }
      if case .held = copy(id, bytes: bytes, from: index, to: target, askFirst: true) { holders += 1 }
    }
    return holders
  }

  // MARK: Drain (ClusterNode.startDrain, Handoff.swift)

  func startDrain(_ index: Int) {
    let node = nodes[index]
    let active = nodes.filter { $0.isUp && !$0.draining }.count
    guard node.isUp, !node.draining, active > replicas else {
      return note("  skipped: n\(index) cannot drain now (\(active) active nodes, R=\(replicas))")
    }
    node.draining = true
    node.drainAttempts = DrainAttempts()
    if canReachMembership(index),
      membership.put(.init(member: node.member(state: .draining), lease: node.membershipLease, instance: node.instance))
    {
      note("membership: n\(index) draining (revision \(membership.revision))")
      broadcast()
    }
    events.schedule(.handoff(node: index), at: now + 300)
  }

  /// Hands every block to its owners in the ring without this node; leaves once every owner of
  /// every block holds it, tries again later (`DrainAttempts`) while some do not, and after the
  /// last attempt stays up, draining.
  func handoff(_ index: Int) {
    let node = nodes[index]
    guard node.isUp, node.draining, let tiers = node.tiers else { return }
    var members = node.ring.members.filter { $0.id != node.id }
    members.append(node.member(state: .draining))
    let target = Ring(
      members: members.sorted { $0.id < $1.id }, epoch: node.ring.epoch, replicationFactor: replicas,
      virtualNodes: Self.virtualNodes)
    // As many copies as the ring promised with this node active: min(R, active members with it).
    let required = min(replicas, target.activeMembers.count + 1)
    let held = tiers.inventory().map(\.id).sorted { keyOrder($0.key, $1.key) }
    var unplaced = 0
    for id in held {
      let owners = target.owners(of: id.key)
      guard let holders = offer(id, from: index, to: owners) else { continue }
      if !BlockPlacement(owners: owners.count, holders: holders, required: required).isPlaced {
        unplaced += 1
      }
    }
    let next = node.drainAttempts.finished(unplaced: unplaced, nowMilliseconds: now)
    note(
      "n\(index) handoff attempt \(node.drainAttempts.attempts): \(held.count) blocks, \(unplaced) not on all owners")
    switch next {
    case .retry(let at):
      events.schedule(.handoff(node: index), at: at)
      return
    case .stayUp(let blocks):
      return note("n\(index) drain failed: \(blocks) blocks not on all owners; it stays up, draining")
    case .leave:
      break
    }
    guard canReachMembership(index) else {
      events.schedule(.handoff(node: index), at: now + 1_000)
      return
    }
    if membership.delete(node.id) {
      note("membership: n\(index) deregistered after its drain (revision \(membership.revision))")
      broadcast()
    }
    node.depart()
    clientConnections[index] = nil
    for other in nodes { other.peers[node.id]?.close() }
    for other in nodes { other.peers[node.id] = nil }
    checkNoAcknowledgedBlockLost()
  }
}
