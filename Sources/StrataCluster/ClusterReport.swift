// The JSON documents a node answers RING "members" and "drain"/"drain_status" with, and the
// values behind them (also used by STAT and the admin API).

import Foundation
import StrataCore
import StrataPlacement

extension ClusterNode {
  /// The membership view: ring epoch, mode, membership service, every member with its health and
  /// ownership shares, replication and read-through counters, drain progress.
  public func membersReport() -> [String: any Sendable] {
    let (history, health, service) = state.withLock { ($0.history, $0.health, $0.service) }
    let ring = history.current
    let primary = ring.primaryShares()
    let owner = ring.ownerShares()
    let members: [[String: any Sendable]] = ring.members.map { member in
      [
        "id": member.id, "address": member.address, "zone": member.zone,
        "capacity_bytes": member.capacityBytes, "state": member.state.rawValue,
        "transports": member.transports,
        "health": member.id == settings.me.id ? "up" : (health[member.id] ?? .unknown).rawValue,
        "primary_share": primary[member.id] ?? 0, "owner_share": owner[member.id] ?? 0,
        "self": member.id == settings.me.id,
      ]
    }
    var membership: [String: any Sendable] = ["mode": settings.mode.rawValue]
    switch service {
    case .notUsed: membership["state"] = "not_used"
    case .connecting: membership["state"] = "connecting"
    case .connected: membership["state"] = "connected"
    case .disconnected(let reason, let since):
      membership["state"] = "disconnected"
      membership["reason"] = reason
      membership["since"] = ISO8601DateFormatter().string(from: since)
    }
    let fill = readThrough.stats
    return [
      "node_id": settings.nodeID, "self": settings.me.id, "epoch": ring.epoch,
      "replication_factor": ring.replicationFactor, "membership": membership, "members": members,
      "replication": replicationReport(),
      "read_through": [
        "attempts": fill.attempts, "filled_blocks": fill.filledBlocks, "filled_bytes": fill.filledBytes,
        "skipped_busy": fill.skippedBusy, "failures": fill.failures,
      ] as [String: any Sendable],
      "drain": drainReport(),
      "repair": repairReport(),
      "write_quorum": writeQuorumReport(),
    ]
  }

  public func replicationReport() -> [String: any Sendable] {
    let replication = replicator.stats
    return [
      "queued": replication.queued, "queue_max": replication.queueMax, "sent_blocks": replication.sentBlocks,
      "sent_bytes": replication.sentBytes, "already_present": replication.alreadyPresent,
      "dropped": [
        "queue_full": replication.droppedQueueFull, "unreachable": replication.droppedUnreachable,
        "no_credentials": replication.droppedNoCredentials, "gone": replication.droppedGone,
        "refused": replication.droppedRefused,
      ] as [String: any Sendable],
    ]
  }

  public func writeQuorumReport() -> [String: any Sendable] {
    let quorum = writeQuorumStats
    return [
      "configured": settings.writeQuorum.map { "\($0)" } ?? "auto", "sync_writes": quorum.syncWrites,
      "copied_blocks": quorum.syncCopiedBlocks, "missed_blocks": quorum.missedBlocks,
      "under_replicated_writes": quorum.underReplicatedWrites,
      "under_replicated_blocks": underReplicatedCounts.blocks,
      "under_replicated_overflowed": underReplicatedCounts.overflowed,
      "under_replicated_limit": underReplicatedCounts.limit,
      "demotion_failures": [
        "dropped_held_elsewhere": demotionFailureStats.droppedHeldElsewhere, "kept": demotionFailureStats.kept,
        "copied_to_owners": demotionFailureStats.copiedToOwners,
      ] as [String: any Sendable],
    ]
  }

  public func drainReport() -> [String: any Sendable] { progressReport(drainProgress) }

  public func repairReport() -> [String: any Sendable] { progressReport(repairProgress) }

  private func progressReport(_ progress: HandoffProgress) -> [String: any Sendable] {
    var report: [String: any Sendable] = [
      "state": progress.phase.rawValue, "total_blocks": progress.totalBlocks, "total_bytes": progress.totalBytes,
      "handed_blocks": progress.handedBlocks, "handed_bytes": progress.handedBytes,
      "present_blocks": progress.presentBlocks, "failed_blocks": progress.failedBlocks,
      "gone_blocks": progress.goneBlocks, "corrupt_blocks": progress.corruptBlocks,
      "processed_blocks": progress.processedBlocks,
      "rate_bytes_per_second": progress.processedBytesRate, "message": progress.message,
    ]
    if let startedAt = progress.startedAt { report["started_at"] = ISO8601DateFormatter().string(from: startedAt) }
    if let finishedAt = progress.finishedAt { report["finished_at"] = ISO8601DateFormatter().string(from: finishedAt) }
    return report
  }

  public func membersJSON() -> [UInt8] { jsonBytes(membersReport()) }

  /// What a tenant without `operator` sees of RING members: the members and the ring, none of the
  /// node-wide replication, read-through, drain or repair counters.
  func tenantMembersJSON() -> [UInt8] {
    var report = membersReport()
    for key in ["replication", "read_through", "drain", "repair", "write_quorum", "membership"] { report[key] = nil }
    return jsonBytes(report)
  }
  func drainJSON() -> [UInt8] { jsonBytes(drainReport()) }
}

/// A JSON object's bytes (keys sorted, so documents compare and diff cleanly).
func jsonBytes(_ object: [String: any Sendable]) -> [UInt8] {
  guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
    return Array(#"{"error":"unencodable report"}"#.utf8)
  }
  return Array(data)
}
