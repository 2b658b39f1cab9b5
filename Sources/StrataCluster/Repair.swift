// Repair after members leave, join, or (static peers) come back: blocks whose other copy was on a
// departed node have one copy left, and a joined or returning owner lacks the blocks it owns.
// Each active node walks the blocks it owns in the new ring (hottest first) and copies each to
// its other owners that lack it (LOOKUP, then PUT only what is missing), so every block regains R
// copies without waiting for a read. It also offers the blocks it holds but no longer owns to their
// owners (after two quick ring changes a block's only holders may own it in neither ring, where
// neither this walk nor read-through would look), at most NotOwnedOffers.perPassMax per pass, and
// drops its copy of each once every owner holds it. One pass at a time; a change during a pass
// queues one more. Blocks left under-replicated with no ring change to come (a peer that timed
// out and is back, in etcd mode where nothing probes it) get a pass of their own, over those
// blocks only, 5 s after and then at doubling intervals while some remain.

import Foundation
import StrataCore
import StrataPlacement
import StrataStorage

/// Whether a repair pass runs, and whether a full one is wanted after it.
struct RepairState {
  var running = false
  var pending = false
}

extension ClusterNode {
  /// Starts a repair pass now, or after the one running. `only`: a pass over those blocks alone
  /// (a retry of blocks known to be under-replicated), started only when no pass runs (one that
  /// runs covers them, or leaves them for the next retry).
  /// Returns whether a pass started now.
  @discardableResult
  func scheduleRepair(reason: String, only: Set<BlockID>? = nil) -> Bool {
    let start = repairState.withLock { state -> Bool in
      guard !state.running else {
        if only == nil { state.pending = true }
        return false
      }
      state.running = true
      return true
    }
    guard start else { return false }
    if let only {
      logger.info(
        "repair: copying under-replicated blocks to their owners",
        metadata: ["blocks": "\(only.count)", "reason": "\(reason)"])
    } else {
      logger.info("repair: copying blocks to their owners after a ring change", metadata: ["reason": "\(reason)"])
    }
    let clock = settings.clock
    tasks.start { [self] in
      var retries = 0
      var only = only
      while true {
        let (failed, more) = await repairPass(only: only)
        // The per-pass bound left blocks held without being owned: one more pass reaches them.
        if more { repairState.withLock { $0.pending = true } }
        // A pass that could not reach an owner (a returning peer's pooled connections are dead
        // at first, or it is still starting) is run again, a few times, a little later.
        if failed > 0 && retries < Self.repairRetriesMax && !isStopped && !Task.isCancelled {
          retries += 1
          await clock.sleep(milliseconds: Self.repairRetryDelayMilliseconds)
          continue
        }
        retries = 0
        let again = repairState.withLock { state -> Bool in
          if state.pending && !isStopped && !Task.isCancelled {
            state.pending = false
            only = nil
            return true
          }
          state.running = false
          return false
        }
        if !again { return }
      }
    }
    return true
  }

  static let repairRetriesMax = 3
  static let repairRetryDelayMilliseconds: UInt64 = 500

  /// Runs until the node stops: once copies have failed, a repair of the blocks left
  /// under-replicated after `underReplicatedRetryMilliseconds`, then at doubling intervals up to
  /// `underReplicatedRetryMaxMilliseconds` while some remain (or failures went untracked because
  /// the set was full); once none do, it waits for the next failure (no timer while healthy).
  /// Tracked blocks get a pass of their own; untracked failures, a full pass.
  func retryUnderReplicated() async {
    let first = settings.underReplicatedRetryMilliseconds
    var overflowSeen = underReplicated.counts.overflowed
    for await _ in underReplicated.failures {
      var wait = first
      while !isStopped && !Task.isCancelled {
        await settings.clock.sleep(milliseconds: wait)
        if isStopped || Task.isCancelled { return }
        let overflowed = underReplicated.counts.overflowed
        let ids = underReplicated.ids
        let started: Bool
        if overflowed > overflowSeen {
          started = scheduleRepair(reason: "under-replicated blocks beyond the tracked set")
          if started { overflowSeen = overflowed }
        } else if !ids.isEmpty {
          started = scheduleRepair(reason: "under-replicated blocks", only: ids)
        } else {
          break
        }
        // A pass already running covers them, or leaves them for the next look, as soon as ever.
        if started { wait = min(wait * 2, max(first, settings.underReplicatedRetryMaxMilliseconds)) }
      }
    }
  }

  /// One pass: every block this node owns in its current ring, offered to the other owners; then
  /// the blocks it holds without owning them (at most `NotOwnedOffers.perPassMax`), offered to their
  /// owners and dropped from this node once every owner holds them. Returns how many blocks are not
  /// yet on every owner, and whether another pass should follow (the bound left blocks unoffered).
  func repairPass(only: Set<BlockID>? = nil) async -> (failed: Int, again: Bool) {
    let (ring, addresses) = state.withLock { ($0.history.current, $0.addresses) }
    let me = settings.me.id
    guard let myIndex = ring.members.firstIndex(where: { $0.id == me }) else { return (0, false) }
    // A pass over some blocks only walks those (owned, or held without being owned: an offer of
    // those can fail too), in key order: a set's order differs from process to process, and with
    // it which blocks share a batch (the simulator replays a seed exactly only so).
    let inventory =
      only.map { tiers.inventory(of: $0.sorted { ($0.key, $0.namespace.name) < ($1.key, $1.namespace.name) }) }
      ?? tiers.inventory()
    let owned = inventory.filter { ring.isOwner(memberIndex: myIndex, of: $0.id.key) }
    let notOwned = inventory.filter { !ring.isOwner(memberIndex: myIndex, of: $0.id.key) }
    let offered = Array(notOwned.prefix(NotOwnedOffers.perPassMax))
    // Blocks this node no longer holds, or holds unowned beyond this pass's offers, are left to
    // others (or to a later pass) to repair.
    let tracked = Set(owned.map(\.id) + offered.map(\.id))
    underReplicated.retain { tracked.contains($0) || only?.contains($0) == false }
    repair.withLock { progress in
      let copied = progress.handedBlocksTotal + progress.handedBlocks
      let released = progress.releasedBlocksTotal + progress.releasedBlocks
      progress = HandoffProgress()
      progress.handedBlocksTotal = copied
      progress.releasedBlocksTotal = released
      progress.phase = .running
      progress.startedAt = settings.clock.date
    }
    var handoff = Handoff(tiers: tiers, peers: peers, corruptCopies: corruptCopies, logger: logger)
    handoff.underReplicated = underReplicated
    // An owned block is placed once every other owner holds it; a block held without being owned
    // once every owner does.
    let ownedPlaced = await handoff.run(
      target: ring, addresses: addresses, progress: repair, inventory: owned, excluding: me,
      required: max(0, ring.effectiveReplicationFactor - 1)
    ).placed
    // Every owner in this ring holds these: any owner still listed as lacking one has left it.
    underReplicated.forget(ownedPlaced)
    // A block this node holds without owning it: its copy goes once every owner holds the block
    // (kept, each later pass would offer it again, and the bound would keep offering the same
    // ones); until then it stays, and is offered again by the next pass.
    // Owners count only when they answered at this pass's epoch or later: one still on an older
    // ring may not own the block there, and drop its copy because this node holds one while this
    // node drops its own because that owner holds one.
    // A draining node counts them only from the membership's publication of its drain, as its
    // drain does: its own ring shows it draining before any peer's does.
    // It lets a copy go only on the drain's own rule, too: as many copies as the ring promised
    // with it active (a pass on a draining node whose ring had shrunk to one active owner, its
    // other peer's lease lapsed, dropped its copies once that owner held them, leaving one copy
    // where the drain keeps two; simulation seed 7595).
    let (draining, drainPublished) = state.withLock {
      ($0.draining, $0.draining ? $0.drainPublishedAtEpoch ?? .max : 0)
    }
    let placed = await handoff.run(
      target: ring, addresses: addresses, progress: repair, inventory: offered, excluding: me,
      required: draining ? drainTarget().required : ring.effectiveReplicationFactor,
      holdersFrom: max(ring.epoch, drainPublished)
    ).placed
    // The ring may have changed while the copies travelled: a block this node owns in its
    // current ring stays, whatever the pass's ring said. Another node may be dropping its own copy
    // at this moment because this one holds it (found by the simulator, seed 7588: a node dropped
    // a block under the older ring while a draining node dropped its copy for the same reason).
    // Each checked and dropped with no ring adopted in between (`ringChange`): a peer told "held
    // at epoch e" (read before the look, PeerHoldings) never sees the copy dropped under a ring
    // older than e.
    var released: [BlockID] = []
    for id in placed {
      let dropped = ringChange.withLock { _ -> Bool in
        let current = state.withLock { $0.history.current }
        // Placed on the pass's owners, which a newer ring may have changed: kept for the pass the
        // change queued, which offers it to the new owners (dropped now, an owner that joined in
        // the new ring would never get it: the nodes that got it from this pass had run their
        // own pass of that ring already; found by the simulator, seed 10388).
        if current.epoch != ring.epoch { return false }
        if let index = current.members.firstIndex(where: { $0.id == me }),
          current.isOwner(memberIndex: index, of: id.key)
        {
          return false
        }
        tiers.remove(id)
        return true
      }
      if dropped { released.append(id) }
    }
    underReplicated.forget(placed)
    let summary = repair.withLock { progress -> HandoffProgress in
      progress.releasedBlocks = released.count
      progress.phase = progress.failedBlocks == 0 ? .done : .failed
      progress.finishedAt = settings.clock.date
      progress.message =
        progress.failedBlocks == 0
        ? "every block held is with all its owners"
        : "\(progress.failedBlocks) block(s) are not yet on all their owners"
      return progress
    }
    logger.info(
      "repair finished",
      metadata: [
        "epoch": "\(ring.epoch)", "owned_blocks": "\(owned.count)", "not_owned_blocks": "\(notOwned.count)",
        "copied_blocks": "\(summary.handedBlocks)", "present_blocks": "\(summary.presentBlocks)",
        "released_blocks": "\(summary.releasedBlocks)", "failed_blocks": "\(summary.failedBlocks)",
      ])
    let again = NotOwnedOffers.passAgain(held: notOwned.count, offered: offered.count, released: released.count)
    return (summary.failedBlocks, again)
  }

  public var repairProgress: HandoffProgress { repair.withLock { $0 } }
}
