// Repair after members leave, join, or (static peers) come back: blocks whose other copy was on a
// departed node have one copy left, and a joined or returning owner lacks the blocks it owns.
// Each active node walks the blocks it owns in the new ring (hottest first) and copies each to
// its other owners that lack it (LOOKUP, then PUT only what is missing), so every block regains R
// copies without waiting for a read. One pass at a time; a change during a pass queues one more.

import Foundation
import StrataCore
import StrataPlacement
import StrataStorage

extension ClusterNode {
  /// Starts a repair pass now, or after the one running.
  func scheduleRepair(reason: String) {
    let start = repairState.withLock { state -> Bool in
      guard !state.running else {
        state.pending = true
        return false
      }
      state.running = true
      return true
    }
    guard start else { return }
    logger.info("repair: copying blocks to their owners after a ring change", metadata: ["reason": "\(reason)"])
    Task.detached { [self] in
      var retries = 0
      while true {
        let failed = await repairPass()
        // A pass that could not reach an owner (a returning peer's pooled connections are dead
        // at first, or it is still starting) is run again, a few times, a little later.
        if failed > 0 && retries < Self.repairRetriesMax && !isStopped {
          retries += 1
          try? await Task.sleep(for: .milliseconds(Self.repairRetryDelayMilliseconds))
          continue
        }
        retries = 0
        let again = repairState.withLock { state -> Bool in
          if state.pending && !isStopped {
            state.pending = false
            return true
          }
          state.running = false
          return false
        }
        if !again { return }
      }
    }
  }

  static let repairRetriesMax = 3
  static let repairRetryDelayMilliseconds: Int64 = 500

  /// One pass: every block this node owns in its current ring, offered to the other owners.
  /// Returns how many blocks could not be offered to any owner.
  private func repairPass() async -> Int {
    let (ring, addresses) = state.withLock { ($0.history.current, $0.addresses) }
    let me = settings.me.id
    guard let myIndex = ring.members.firstIndex(where: { $0.id == me }) else { return 0 }
    let owned = tiers.inventory().filter { ring.isOwner(memberIndex: myIndex, of: $0.id.key) }
    // Blocks this node no longer holds, or no longer owns, are for others to repair.
    let ownedIDs = Set(owned.map(\.id))
    underReplicated.retain { ownedIDs.contains($0) }
    repair.withLock { progress in
      let copied = progress.handedBlocksTotal + progress.handedBlocks
      progress = HandoffProgress()
      progress.handedBlocksTotal = copied
      progress.phase = .running
      progress.startedAt = Date()
    }
    var handoff = Handoff(tiers: tiers, peers: peers, corruptCopies: corruptCopies, logger: logger)
    handoff.underReplicated = underReplicated
    await handoff.run(
      target: ring, addresses: addresses, progress: repair, inventory: owned, excluding: me)
    let summary = repair.withLock { progress -> HandoffProgress in
      progress.phase = progress.failedBlocks == 0 ? .done : .failed
      progress.finishedAt = Date()
      progress.message =
        progress.failedBlocks == 0
        ? "every owned block is with its other owners"
        : "\(progress.failedBlocks) block(s) could not be copied to another owner"
      return progress
    }
    logger.info(
      "repair finished",
      metadata: [
        "epoch": "\(ring.epoch)", "owned_blocks": "\(summary.totalBlocks)", "copied_blocks": "\(summary.handedBlocks)",
        "present_blocks": "\(summary.presentBlocks)", "failed_blocks": "\(summary.failedBlocks)",
      ])
    return summary.failedBlocks
  }

  public var repairProgress: HandoffProgress { repair.withLock { $0 } }
}
