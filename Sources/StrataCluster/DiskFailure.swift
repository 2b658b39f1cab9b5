// A block whose demotion to NVMe failed (the disk erred) must not leave RAM unless another copy
// is safe: the tier manager asks this node's cluster layer first. The block may go when another
// owner holds it on NVMe (a copy that survives that owner's crash); otherwise it stays in RAM and
// the write that needed its room is refused (the block's PUT outcome `no_space`), so a failing
// disk makes a node refuse writes rather than lose acknowledged blocks. A block no other owner
// holds at all is copied to them first (it is then in their RAM, and stays here too). Every
// outcome is counted, and logged (the first, then every 1000th).

import Logging
import StrataCore
import StrataPlacement
import StrataStorage
import StrataWire

/// What became of blocks whose demotion failed, counted since start.
public struct DemotionFailureStats: Sendable, Hashable {
  /// Left RAM: another owner holds them on NVMe.
  public var droppedHeldElsewhere = 0
  /// Stayed in RAM: no other owner holds them on NVMe (or none could be asked).
  public var kept = 0
  /// Of those kept: no other owner held them at all, and this node copied them there.
  public var copiedToOwners = 0
}

extension ClusterNode {
  /// The tier manager's question about `block`, whose NVMe write failed with `error`.
  func demotionFailed(_ block: LeasedBlock, error: StrataError) async -> DemotionFailureVerdict {
    let (ring, addresses) = state.withLock { ($0.history.current, $0.addresses) }
    let me = settings.me.id
    let owners = ring.owners(of: block.id.key).filter { $0.id != me }.compactMap { addresses[$0.id] }
    let deadline = Deadline.after(milliseconds: settings.suspectPeerTimeoutMilliseconds)
    var onNVMe: HostPort?
    var absentAt: [HostPort] = []
    for owner in owners {
      guard let client = syncPeers.client(owner, block.id.namespace),
        let found = try? await client.lookup([block.id.key], deadline: deadline), let tier = found.tiers.first
      else { continue }
      if tier == .nvme {
        onNVMe = owner
        break
      }
      if tier == .absent { absentAt.append(owner) }
    }
    if let onNVMe {
      let total = demotionFailures.withLock { stats -> Int in
        stats.droppedHeldElsewhere += 1
        return stats.droppedHeldElsewhere
      }
      // Its copy here goes: once the disk takes writes again it is read back from the other
      // owners (with the copies this node owed), so the block has R copies again (simulation
      // seed 193 under RAM pressure: nothing else gave it back).
      readBackDamaged([block.id], needsWorkingDisk: true)
      underReplicated.forget([block.id])
      if Self.logsFailure(total) {
        logger.warning(
          "NVMe write failed during demotion: block dropped from RAM, another owner holds it on NVMe",
          metadata: [
            "block": "\(block.id)", "owner": "\(onNVMe)", "reason": "\(error.message)", "dropped_total": "\(total)",
          ])
      }
      return .drop
    }
    var copied = 0
    for owner in absentAt {
      guard let client = syncPeers.client(owner, block.id.namespace) else { continue }
      let outcome = try? await client.put(copies: [block], deadline: deadline).first
      if outcome == .stored || outcome == .alreadyPresent {
        copied += 1
        underReplicated.copied([block.id], to: owner)
      } else {
        underReplicated.failed([block.id], to: owner)
      }
    }
    let total = demotionFailures.withLock { stats -> Int in
      stats.kept += 1
      stats.copiedToOwners += copied > 0 ? 1 : 0
      return stats.kept
    }
    if Self.logsFailure(total) {
      logger.error(
        "NVMe write failed during demotion: block kept in RAM, no other owner holds it on NVMe; writes needing its room are refused",
        metadata: [
          "block": "\(block.id)", "owners_asked": "\(owners.count)", "copied_to": "\(copied)",
          "reason": "\(error.message)", "kept_total": "\(total)",
        ])
    }
    return .keep
  }

  /// A failing disk fails every demotion: the first of each outcome is logged, then every 1000th
  /// (the counters have them all).
  static func logsFailure(_ total: Int) -> Bool { total == 1 || total % 1000 == 0 }
}
