// Handoff: a node offers blocks (hottest first) to their owners in a target ring. Each batch asks
// the owners what they lack (LOOKUP) and reads and sends only that (PUT from arena memory under a
// lease, a block only on NVMe read into RAM first; each block checked against its stored checksum first and sent with it; a block that fails is
// corrupt: removed from this node and never sent). A block counts as placed only once every one of
// its owners in the target ring holds it (Placement.swift).
// A drain hands every block to the ring without this node (ClusterNode.startDrain); a repair
// offers the blocks this node owns to their other owners, and the blocks it holds without owning
// them to their owners (Repair.swift).

public import Foundation
import Logging
import StrataCore
import StrataPlacement
public import StrataStorage
import StrataWire
import Synchronization

/// Where a handoff stands: a drain, or a repair pass.
public struct HandoffProgress: Sendable, Hashable {
  public enum Phase: String, Sendable, Hashable {
    case idle
    case running
    case done
    case failed
  }

  public var phase: Phase = .idle
  public var totalBlocks = 0
  public var totalBytes = 0
  public var handedBlocks = 0
  /// Blocks handed by earlier passes (repair runs a pass per ring change).
  public var handedBlocksTotal = 0
  public var handedBytes = 0
  /// Blocks every owner already held.
  public var presentBlocks = 0
  /// Blocks not placed: some owner in the target ring lacks them (down, unreachable, no
  /// credentials, refused), or the ring gives them fewer owners than the copies they must keep.
  /// The node keeps its copy.
  public var failedBlocks = 0
  /// Some of the blocks not placed (at most `unplacedSampleMax`), for the status report.
  public var unplacedSample: [BlockID] = []
  public static let unplacedSampleMax = 16
  /// A repair's blocks held without being owned, placed on every owner and dropped from this node.
  public var releasedBlocks = 0
  /// Blocks released by earlier passes.
  public var releasedBlocksTotal = 0
  /// A drain's attempts so far (DrainAttempts), the one running included.
  public var attempts = 0
  /// Blocks that left this node before their turn (evicted or removed).
  public var goneBlocks = 0
  /// Blocks whose RAM bytes failed their stored checksum: not handed, removed from this node.
  public var corruptBlocks = 0
  public var startedAt: Date?
  public var finishedAt: Date?
  public var message = ""

  public var processedBlocks: Int { handedBlocks + presentBlocks + failedBlocks + goneBlocks + corruptBlocks }
  /// Bytes handed per second, from the start to the finish (or to `now` while running).
  public func processedBytesRate(now: Date) -> Double {
    guard let startedAt else { return 0 }
    let seconds = (finishedAt ?? now).timeIntervalSince(startedAt)
    return seconds > 0 ? Double(handedBytes) / seconds : 0
  }
}

/// A handoff's progress, shared between the handoff and the readers of its status.
final class HandoffTracker: Sendable {
  private let progress = Mutex(HandoffProgress())
  func withLock<T>(_ body: (inout HandoffProgress) -> T) -> T { progress.withLock { body(&$0) } }
}

/// Counts the blocks that copies to other nodes (replication, drain, repair) refused because their
/// RAM bytes no longer matched their stored checksum (strata_copy_corrupt_blocks_total), and logs each.
final class CorruptCopyCounter: Sendable {
  private let count = Atomic<Int>(0)

  var total: Int { count.load(ordering: .relaxed) }

  func refused(_ ids: [BlockID], by copy: String, logger: Logger) {
    count.add(ids.count, ordering: .relaxed)
    for id in ids {
      logger.error(
        "a block failed its stored checksum in RAM: not copied, removed from this node",
        metadata: ["block": "\(id)", "copy": "\(copy)"])
    }
  }

  /// Blocks whose RAM copy failed its checksum (removed) and that were copied from their NVMe
  /// copy instead.
  func recovered(_ ids: [BlockID], by copy: String, logger: Logger) {
    for id in ids {
      logger.error(
        "a block failed its stored checksum in RAM: removed there, copied from its disk copy",
        metadata: ["block": "\(id)", "copy": "\(copy)"])
    }
  }
}

struct Handoff: Sendable {
  static let batchBlocks = 32
  let tiers: TierManager
  let peers: PeerClients
  let corruptCopies: CorruptCopyCounter
  let logger: Logger
  /// A repair records here which owners got or lack each block (a drain does not).
  var underReplicated: UnderReplicatedTracker? = nil

  /// Hands `inventory` (a drain: every block held, hottest first) to the blocks' owners in
  /// `target` other than `excluding` (this node, when it stays a member), adding into `progress`.
  /// A block is placed once `required` of those owners hold it (BlockPlacement); an owner counts
  /// only when it answered LOOKUP at ring epoch `holdersFrom` or later (it may otherwise drop its
  /// copy under an older ring). Returns which blocks are placed and which are not; blocks that left
  /// this node meanwhile, or failed their checksum, are in neither.
  @discardableResult
  func run(
    target: Ring, addresses: [String: HostPort], progress: HandoffTracker, inventory: [InventoryEntry],
    excluding: String? = nil, required: Int, holdersFrom: UInt64 = 0
  ) async -> HandoffOutcome {
    progress.withLock {
      $0.totalBlocks += inventory.count
      $0.totalBytes += inventory.reduce(0) { $0 + $1.bytes }
    }
    var outcome = HandoffOutcome()
    var skipped = SkippedOwners()
    var start = 0
    while start < inventory.count {
      let batch = Array(inventory[start..<min(inventory.count, start + Self.batchBlocks)])
      start += batch.count
      await hand(
        batch.map(\.id), target: target, addresses: addresses, progress: progress, excluding: excluding,
        required: required, holdersFrom: holdersFrom, outcome: &outcome, skipped: &skipped)
    }
    return outcome
  }

  /// Owners a run stops offering blocks to after one failed exchange: every later batch would
  /// wait out the same failure (a hung owner costs the peer timeout, 10 s, per batch, and the
  /// owners after it in the batch wait with it). Their blocks stay unplaced for this run; the
  /// drain's next attempt or the repair's next pass offers them again.
  struct SkippedOwners {
    /// Unreachable or not answering: skipped in every namespace.
    var owners: Set<HostPort> = []
    /// Refused this namespace's request (credentials, limits): skipped in that namespace only.
    var namespaces: Set<OwnerNamespace> = []

    struct OwnerNamespace: Hashable {
      var owner: HostPort
      var namespace: Namespace
    }

    func contains(_ owner: HostPort, _ namespace: Namespace) -> Bool {
      owners.contains(owner) || namespaces.contains(OwnerNamespace(owner: owner, namespace: namespace))
    }

    /// Records a failed exchange; returns whether the owner is skipped in every namespace.
    mutating func failed(_ owner: HostPort, _ namespace: Namespace, code: StrataError.Code) -> Bool {
      if code == .unavailable || code == .timeout {
        owners.insert(owner)
        return true
      }
      namespaces.insert(OwnerNamespace(owner: owner, namespace: namespace))
      return false
    }
  }

  private func hand(
    _ ids: [BlockID], target: Ring, addresses: [String: HostPort], progress: HandoffTracker, excluding: String?,
    required: Int, holdersFrom: UInt64, outcome: inout HandoffOutcome, skipped: inout SkippedOwners
  ) async {
    // Per (owner, namespace): the blocks to offer; per block: its owners in the target ring (an
    // owner without a known address cannot take it).
    var offers: [HostPort: [Namespace: [BlockID]]] = [:]
    var ownersOf: [BlockID: Int] = [:]
    for id in ids {
      let owners = target.owners(of: id.key).filter { $0.id != excluding }
      ownersOf[id] = owners.count
      for owner in owners.compactMap({ addresses[$0.id] }) {
        offers[owner, default: [:]][id.namespace, default: []].append(id)
      }
    }
    // Per block: how many owners took it, how many already had it (each owner counted once).
    var stored: [BlockID: Int] = [:]
    var present: [BlockID: Int] = [:]
    // First the owners say what they lack: only that is read here. A pass after a peer's restart
    // finds most blocks on every owner already, and reading them all would pull this node's whole
    // disk through its RAM, evicting the blocks clients read.
    var lacking: [(owner: HostPort, namespace: Namespace, client: any PeerChannel, counts: Bool, ids: [BlockID])] = []
    for (owner, namespace, blocks) in inPeerOrder(offers, by: \.description) {
      guard !skipped.contains(owner, namespace), let client = peers.client(owner, namespace) else {
        underReplicated?.failed(blocks, to: owner)
        continue
      }
      do {
        let held = try await client.lookup(blocks.map(\.key), deadline: .never)
        // An owner behind the epoch asked for gets its copies but is not counted: under its older
        // ring it may not own the block, and drop it once the others hold it.
        let counts = held.ringEpoch >= holdersFrom
        var there: [BlockID] = []
        var missing: [BlockID] = []
        for (id, tier) in zip(blocks, held.tiers) {
          guard tier != .absent else {
            missing.append(id)
            continue
          }
          if counts { present[id, default: 0] += 1 }
          there.append(id)
        }
        underReplicated?.copied(there, to: owner)
        if !missing.isEmpty { lacking.append((owner, namespace, client, counts, missing)) }
      } catch {
        failed(blocks, owner: owner, namespace: namespace, error: error, skipped: &skipped)
      }
    }
    let needed = Set(lacking.flatMap(\.ids))
    var copy: CopyLease? = nil
    var unread = false
    if !needed.isEmpty {
      do {
        copy = try await tiers.leaseForCopy(ids.filter { needed.contains($0) })
      } catch {
        for entry in lacking { underReplicated?.failed(entry.ids, to: entry.owner) }
        lacking = []
        unread = true
      }
    }
    defer { copy.map { tiers.release($0) } }
    var leased: [BlockID: LeasedBlock] = [:]
    for case let block? in copy?.blocks ?? [] { leased[block.id] = block }
    let corrupt = Set(copy?.corrupt ?? [])
    // Held here but not read for the copy (only on NVMe, with neither copy buffers nor RAM room
    // left to read it into): short of the owners that lack it, so a later pass copies it
    // (simulation seed 332 under RAM pressure: counted as gone, it was never copied).
    let notRead = needed.filter { leased[$0] == nil && !corrupt.contains($0) }.sorted { $0.key < $1.key }
    let unreadable =
      copy == nil ? Set<BlockID>() : Set(zip(notRead, tiers.lookup(notRead)).filter { $0.1 != .absent }.map(\.0))
    if let copy {
      if !copy.corrupt.isEmpty { corruptCopies.refused(copy.corrupt, by: "handoff", logger: logger) }
      corruptCopies.recovered(copy.recovered, by: "handoff", logger: logger)
    }
    for (owner, namespace, client, counts, ids) in lacking {
      guard !skipped.contains(owner, namespace) else {
        underReplicated?.failed(ids, to: owner)
        continue
      }
      let sent = ids.compactMap { leased[$0] }
      underReplicated?.failed(ids.filter { unreadable.contains($0) }, to: owner)
      if sent.isEmpty { continue }
      do {
        let outcomes = try await client.put(copies: sent, deadline: .never)
        // "Already present" also means "being written" by another copy, which may yet fail: such a
        // block counts only once the owner holds it committed (as in WriteQuorum.swift).
        var doubted: [LeasedBlock] = []
        for (block, outcome) in zip(sent, outcomes) {
          switch outcome {
          case .stored:
            if counts { stored[block.id, default: 0] += 1 }
            underReplicated?.copied([block.id], to: owner)
          case .alreadyPresent: doubted.append(block)
          default: underReplicated?.failed([block.id], to: owner)
          }
        }
        if doubted.isEmpty { continue }
        let committed = try await client.lookup(doubted.map(\.id.key), deadline: .never)
        for (block, tier) in zip(doubted, committed.tiers) {
          guard tier != .absent else {
            underReplicated?.failed([block.id], to: owner)
            continue
          }
          if counts { present[block.id, default: 0] += 1 }
          underReplicated?.copied([block.id], to: owner)
        }
      } catch {
        failed(sent.map(\.id), owner: owner, namespace: namespace, error: error, skipped: &skipped)
      }
    }
    progress.withLock { progress in
      for id in ids {
        // A block some owner lacked and that this node no longer holds (evicted, removed, or
        // corrupt) is neither placed nor unplaced: it is not this node's to place.
        if needed.contains(id) && leased[id] == nil && !unread && !unreadable.contains(id) {
          if corrupt.contains(id) { progress.corruptBlocks += 1 } else { progress.goneBlocks += 1 }
          continue
        }
        let took = stored[id, default: 0]
        let placement = BlockPlacement(
          owners: ownersOf[id, default: 0], holders: took + present[id, default: 0], required: required)
        guard placement.isPlaced else {
          outcome.unplaced.append(id)
          progress.noteUnplaced([id])
          continue
        }
        outcome.placed.append(id)
        if took > 0 {
          progress.handedBlocks += 1
          progress.handedBytes += leased[id]?.bytes.count ?? 0
        } else {
          progress.presentBlocks += 1
        }
      }
    }
  }

  /// An exchange with `owner` failed: its blocks are short of it, and the owner is skipped for the
  /// rest of the run (in `namespace`, or everywhere when it did not answer).
  private func failed(
    _ ids: [BlockID], owner: HostPort, namespace: Namespace, error: StrataError, skipped: inout SkippedOwners
  ) {
    underReplicated?.failed(ids, to: owner)
    let everywhere = skipped.failed(owner, namespace, code: error.code)
    logger.warning(
      "handoff: an owner could not take blocks; no more are offered to it in this pass",
      metadata: [
        "owner": "\(owner)", "namespace": "\(everywhere ? "(all)" : namespace.description)",
        "reason": "\(error.message)",
      ])
  }
}

/// Which blocks a handoff placed on every owner of its target ring, and which it did not.
struct HandoffOutcome: Sendable {
  var placed: [BlockID] = []
  var unplaced: [BlockID] = []
}

extension HandoffProgress {
  mutating func noteUnplaced(_ ids: [BlockID]) {
    failedBlocks += ids.count
    unplacedSample += ids.prefix(max(0, Self.unplacedSampleMax - unplacedSample.count))
  }
}
