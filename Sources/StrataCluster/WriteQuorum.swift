// Write quorums: the node that takes a client's PUT copies each block to the key's other owners
// before it answers, so an acknowledged block is held by `cluster.write_quorum` owners (default:
// every owner that is up, and at least min(R, 2)) and survives the loss of any one node. Copies go
// to all owners in parallel over peer connections, each bounded by the PUT's deadline; blocks this
// node already held are first asked about (LOOKUP) and sent only where missing. A copy that could
// not be made now is queued for the asynchronous replicator, and owners that were down catch up by
// repair when they return (Repair.swift). Why the node forwards instead of the client writing to
// every owner: docs/cluster.md.

import Logging
public import StrataCore
import StrataPlacement
public import StrataStorage
import StrataWire
import Synchronization

/// How many of a block's owners must hold it before a PUT is acknowledged (pure).
public enum WriteQuorumRule {
  /// `requested` (the PUT's field, 0 = none) over `configured` (`cluster.write_quorum`, nil =
  /// auto); auto is min(R, 2), with copies to every owner that is up awaited. Never above R.
  public static func required(requested: UInt8, configured: Int?, replicas: Int) -> Int {
    let asked = requested != 0 ? Int(requested) : configured
    guard let asked else { return min(replicas, 2) }
    return max(1, min(asked, replicas))
  }
}

/// Counters of the write quorum, read at one instant.
public struct WriteQuorumStats: Sendable, Hashable {
  /// PUT batches that waited for copies before their answer.
  public var syncWrites = 0
  /// Blocks copied to another owner before the PUT's answer.
  public var syncCopiedBlocks = 0
  /// Blocks of PUTs answered `quorum_not_reached`.
  public var missedBlocks = 0
  /// Blocks answered (acknowledged or not) with fewer than R owners holding them.
  public var underReplicatedWrites = 0
}

/// A block to copy, and whether this node held it before the PUT (then it is asked about first).
private struct QuorumBlock: Sendable {
  var block: LeasedBlock
  var wasPresent: Bool
}

extension ClusterNode {
  public func replicate(stored: [BlockID], present: [BlockID], writeQuorum: UInt8, deadline: Deadline) async
    -> StrataError?
  {
    let (ring, addresses, health, draining) = state.withLock {
      ($0.history.current, $0.addresses, $0.health, $0.draining)
    }
    let required = WriteQuorumRule.required(
      requested: writeQuorum, configured: settings.writeQuorum, replicas: ring.replicationFactor)
    // A draining node is no owner in its own ring: its copy, and a queue it may exit with, count for
    // nothing, so even quorum 1 waits for one owner's copy (docs/cluster.md, "Drain").
    guard required > 1 || draining else {
      // Quorum 1: acknowledged once this node holds it; copies go out afterwards, from the queue.
      enqueueCopies(stored, ring: ring, addresses: addresses, health: health)
      return nil
    }
    quorumStats.withLock { $0.syncWrites += 1 }
    // Each block once: a key named twice in one PUT is one block, and each owner holding it counts
    // once toward its quorum (counting per item let one copy stand for two owners).
    var seen = Set<BlockID>()
    let ids = (stored + present).filter { seen.insert($0).inserted }
    let copy: CopyLease
    do {
      copy = try await tiers.leaseForCopy(ids)
    } catch {
      return StrataError(
        .quorumNotReached,
        "write quorum \(required) not reached: the blocks could not be pinned for copying (\(error.message))")
    }
    defer { tiers.release(copy) }
    let me = settings.me.id
    // Per block: how many owners hold it (this node, when it is one), and the owners still to ask.
    var holders: [BlockID: Int] = [:]
    var groups: [ReplicationTarget: [Namespace: [QuorumBlock]]] = [:]
    let presentSet = Set(present)
    for (id, leased) in zip(ids, copy.blocks) {
      let owners = ring.owners(of: id.key)
      holders[id] = owners.contains { $0.id == me } && leased != nil ? 1 : 0
      guard let leased else { continue }
      for owner in owners where owner.id != me {
        guard let address = addresses[owner.id] else { continue }
        let target = ReplicationTarget(address: address, suspect: health[owner.id] == .down)
        groups[target, default: [:]][id.namespace, default: []].append(
          QuorumBlock(block: leased, wasPresent: presentSet.contains(id)))
      }
    }
    // Every owner at once; each answers with the blocks it now holds, or its failure.
    let results = await withTaskGroup(of: (ReplicationTarget, [BlockID], [BlockID], String?).self) { group in
      for (target, namespace, blocks) in inPeerOrder(groups, by: \.name) {
        group.addTask {
          let (held, failure) = await self.copyNow(blocks, to: target, namespace: namespace, deadline: deadline)
          return (target, blocks.map(\.block.id), held, failure)
        }
      }
      var all: [(ReplicationTarget, [BlockID], [BlockID], String?)] = []
      for await result in group { all.append(result) }
      return all
    }
    var failures: [String] = []
    var retry: [BlockID: [ReplicationTarget]] = [:]
    var copied = 0
    for (target, asked, held, failure) in results {
      let heldSet = Set(held)
      for id in heldSet { holders[id, default: 0] += 1 }
      copied += heldSet.count
      for id in asked where !heldSet.contains(id) { retry[id, default: []].append(target) }
      underReplicated.copied(held, to: target.address)
      underReplicated.failed(asked.filter { !heldSet.contains($0) }, to: target.address)
      if let failure { failures.append("\(target.address): \(failure)") }
    }
    // What could not be copied now goes to the queue: the owners catch up when they can. In the
    // PUT's order, not the dictionary's (which differs from process to process, and with it the
    // queue's batches: simulation seed 848 replayed differently in each process).
    let queued = ids.compactMap { id in retry[id].map { ReplicationTask(id: id, targets: $0) } }
    if !queued.isEmpty { replicator.enqueue(queued) }
    // A draining node leaves soon, and with it the queue and the under-replicated record that
    // would give an owner it missed its copy later (nothing else tells the owners that one of them
    // lacks the block): it acknowledges only once every owner holds the block (simulator, seed 36801).
    let short = ids.filter { id in
      holders[id, default: 0] < (draining ? max(required, ring.owners(of: id.key).count) : required)
    }
    let underReplicated = ids.filter { holders[$0, default: 0] < ring.replicationFactor }.count
    quorumStats.withLock {
      $0.syncCopiedBlocks += copied
      $0.missedBlocks += short.isEmpty ? 0 : ids.count
      $0.underReplicatedWrites += underReplicated
    }
    guard !short.isEmpty else { return nil }
    return quorumError(
      short: short, holders: holders, of: ids.count, required: draining ? ring.replicationFactor : required,
      ring: ring, failures: failures)
  }

  /// The answer to a PUT some of whose blocks are below quorum: how many copies each has.
  private func quorumError(
    short: [BlockID], holders: [BlockID: Int], of total: Int, required: Int, ring: Ring, failures: [String]
  ) -> StrataError {
    var byCopies: [Int: Int] = [:]
    for id in short { byCopies[holders[id, default: 0], default: 0] += 1 }
    let counts = byCopies.keys.sorted().map { copies in
      "\(byCopies[copies]!) with \(copies) \(copies == 1 ? "copy" : "copies")"
    }.joined(separator: ", ")
    let reasons = failures.isEmpty ? "" : "; failed copies: \(failures.sorted().prefix(3).joined(separator: "; "))"
    logger.warning(
      "write quorum not reached",
      metadata: [
        "short_blocks": "\(short.count)", "blocks": "\(total)", "quorum": "\(required)", "copies": "\(counts)",
      ])
    return StrataError(
      .quorumNotReached,
      "write quorum \(required) of \(ring.replicationFactor) owners not reached for \(short.count) of \(total) blocks (\(counts))\(reasons); the PUT is not acknowledged: the copies made stay, the missing ones are queued, retry it or keep the blocks"
    )
  }

  /// Copies `blocks` to one owner by `deadline` (sooner for an owner the probes found down);
  /// returns the blocks that owner now holds, and why the rest are not there.
  private func copyNow(_ blocks: [QuorumBlock], to target: ReplicationTarget, namespace: Namespace, deadline: Deadline)
    async -> ([BlockID], String?)
  {
    guard let client = syncPeers.client(target.address, namespace) else {
      return ([], "no credentials for namespace \(namespace.name) on peers")
    }
    let limit =
      target.suspect ? min(deadline, Deadline.after(milliseconds: settings.suspectPeerTimeoutMilliseconds)) : deadline
    do throws(StrataError) {
      var held: [BlockID] = []
      var send = blocks.filter { !$0.wasPresent }.map(\.block)
      let asked = blocks.filter(\.wasPresent).map(\.block)
      if !asked.isEmpty {
        let found = try await client.lookup(asked.map(\.id.key), deadline: limit).tiers
        for (block, tier) in zip(asked, found) {
          if tier == .absent { send.append(block) } else { held.append(block.id) }
        }
      }
      guard !send.isEmpty else { return (held, nil) }
      let outcomes = try await client.put(copies: send, deadline: limit)
      var refused = 0
      var doubted: [LeasedBlock] = []
      for (block, outcome) in zip(send, outcomes) {
        switch outcome {
        case .stored: held.append(block.id)
        // "Already present" also means "being written" by another copy, which may yet fail:
        // counted only once the owner holds it committed.
        case .alreadyPresent: doubted.append(block)
        default: refused += 1
        }
      }
      if !doubted.isEmpty {
        let found = try await client.lookup(doubted.map(\.id.key), deadline: limit).tiers
        for (block, tier) in zip(doubted, found) where tier != .absent { held.append(block.id) }
      }
      return (held, refused == 0 ? nil : "\(refused) block(s) refused (no room)")
    } catch {
      return ([], error.message)
    }
  }

  /// Queues copies of `ids` to their other owners (the asynchronous path).
  func enqueueCopies(
    _ ids: [BlockID], ring: Ring, addresses: [String: HostPort], health: [String: PeerHealth]
  ) {
    let me = settings.me.id
    var tasks: [ReplicationTask] = []
    for id in ids {
      // A peer the probes last found down still gets its copy, tried with a short timeout: it may
      // have come back since (or have been probed before it started).
      let targets = ring.owners(of: id.key).filter { $0.id != me }.compactMap { member in
        addresses[member.id].map { ReplicationTarget(address: $0, suspect: health[member.id] == .down) }
      }
      if !targets.isEmpty { tasks.append(ReplicationTask(id: id, targets: targets)) }
    }
    if !tasks.isEmpty { replicator.enqueue(tasks) }
  }
}
