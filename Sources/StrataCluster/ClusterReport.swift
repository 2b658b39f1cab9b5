// The JSON documents a node answers RING "members" and "drain"/"drain_status" with, and the
// values behind them (also used by STAT and the admin API): Codable values, encoded by JSONCoding.

import Foundation
import StrataCore
import StrataPlacement

/// RING `members` and the admin API's cluster section: ring epoch, mode, membership service, every
/// member with its health and ownership shares, replication and read-through counters, drain,
/// repair and write-quorum progress. A tenant without `operator` gets the members and the ring
/// only (the node-wide fields are nil and left out).
public struct MembersReport: Encodable, Sendable {
  public struct Entry: Encodable, Sendable {
    var id: String
    var address: String
    var zone: String
    var capacityBytes: UInt64
    var state: String
    var transports: [String]
    var health: String
    var primaryShare: Double
    var ownerShare: Double
    var isSelf: Bool

    enum CodingKeys: String, CodingKey {
      case id, address, zone
      case capacityBytes = "capacity_bytes"
      case state, transports, health
      case primaryShare = "primary_share"
      case ownerShare = "owner_share"
      case isSelf = "self"
    }
  }

  /// The membership service: `not_used`, `connecting`, `connected` or `disconnected` (with why and since when).
  public struct Service: Encodable, Sendable {
    var mode: String
    var state: String
    var reason: String?
    var since: Date?
  }

  public struct ReadThrough: Encodable, Sendable {
    var attempts: Int
    var filledBlocks: Int
    var filledBytes: Int
    var skippedBusy: Int
    var failures: Int

    enum CodingKeys: String, CodingKey {
      case attempts
      case filledBlocks = "filled_blocks"
      case filledBytes = "filled_bytes"
      case skippedBusy = "skipped_busy"
      case failures
    }
  }

  var nodeID: String
  var me: String
  var epoch: UInt64
  var replicationFactor: Int
  var members: [Entry]
  var membership: Service?
  var replication: ReplicationReport?
  var readThrough: ReadThrough?
  var drain: ProgressReport?
  var repair: ProgressReport?
  var writeQuorum: WriteQuorumReport?

  enum CodingKeys: String, CodingKey {
    case nodeID = "node_id"
    case me = "self"
    case epoch
    case replicationFactor = "replication_factor"
    case members, membership
    case replication
    case readThrough = "read_through"
    case drain, repair
    case writeQuorum = "write_quorum"
  }
}

/// Replication counters (RING `sync` answers `{"replication": ...}`).
public struct ReplicationReport: Encodable, Sendable {
  public struct Dropped: Encodable, Sendable {
    var queueFull: Int
    var unreachable: Int
    var noCredentials: Int
    var gone: Int
    var unreadable: Int
    var refused: Int

    enum CodingKeys: String, CodingKey {
      case queueFull = "queue_full"
      case unreachable
      case noCredentials = "no_credentials"
      case gone, unreadable, refused
    }
  }

  var queued: Int
  var queueMax: Int
  var sentBlocks: Int
  var sentBytes: Int
  var alreadyPresent: Int
  var dropped: Dropped

  enum CodingKeys: String, CodingKey {
    case queued
    case queueMax = "queue_max"
    case sentBlocks = "sent_blocks"
    case sentBytes = "sent_bytes"
    case alreadyPresent = "already_present"
    case dropped
  }
}

/// Write-quorum counters and the under-replicated backlog.
public struct WriteQuorumReport: Encodable, Sendable {
  public struct DemotionFailures: Encodable, Sendable {
    var droppedHeldElsewhere: Int
    var kept: Int
    var copiedToOwners: Int

    enum CodingKeys: String, CodingKey {
      case droppedHeldElsewhere = "dropped_held_elsewhere"
      case kept
      case copiedToOwners = "copied_to_owners"
    }
  }

  var configured: String
  var syncWrites: Int
  var copiedBlocks: Int
  var missedBlocks: Int
  var underReplicatedWrites: Int
  var underReplicatedBlocks: Int
  var underReplicatedOverflowed: Int
  var underReplicatedLimit: Int
  var demotionFailures: DemotionFailures

  enum CodingKeys: String, CodingKey {
    case configured
    case syncWrites = "sync_writes"
    case copiedBlocks = "copied_blocks"
    case missedBlocks = "missed_blocks"
    case underReplicatedWrites = "under_replicated_writes"
    case underReplicatedBlocks = "under_replicated_blocks"
    case underReplicatedOverflowed = "under_replicated_overflowed"
    case underReplicatedLimit = "under_replicated_limit"
    case demotionFailures = "demotion_failures"
  }
}

/// A drain's or repair's progress; `started_at` and `finished_at` are left out until set.
public struct ProgressReport: Encodable, Sendable {
  var state: String
  var totalBlocks: Int
  var totalBytes: Int
  var handedBlocks: Int
  var handedBytes: Int
  var presentBlocks: Int
  var failedBlocks: Int
  var goneBlocks: Int
  var corruptBlocks: Int
  /// Repair: blocks held without being owned, placed on every owner and dropped from this node.
  var releasedBlocks: Int
  /// Drain: attempts so far.
  var attempts: Int
  /// Some of the blocks not placed on all their owners (hex keys, at most 16).
  var unplacedSample: [String]
  var processedBlocks: Int
  var rateBytesPerSecond: Double
  var message: String
  var startedAt: Date?
  var finishedAt: Date?

  enum CodingKeys: String, CodingKey {
    case state
    case totalBlocks = "total_blocks"
    case totalBytes = "total_bytes"
    case handedBlocks = "handed_blocks"
    case handedBytes = "handed_bytes"
    case presentBlocks = "present_blocks"
    case failedBlocks = "failed_blocks"
    case goneBlocks = "gone_blocks"
    case corruptBlocks = "corrupt_blocks"
    case releasedBlocks = "released_blocks"
    case attempts
    case unplacedSample = "unplaced_sample"
    case processedBlocks = "processed_blocks"
    case rateBytesPerSecond = "rate_bytes_per_second"
    case message
    case startedAt = "started_at"
    case finishedAt = "finished_at"
  }

  /// `now`: the wall clock the rate of a pass still running is measured to.
  init(_ progress: HandoffProgress, now: Date) {
    state = progress.phase.rawValue
    totalBlocks = progress.totalBlocks
    totalBytes = progress.totalBytes
    handedBlocks = progress.handedBlocks
    handedBytes = progress.handedBytes
    presentBlocks = progress.presentBlocks
    failedBlocks = progress.failedBlocks
    goneBlocks = progress.goneBlocks
    corruptBlocks = progress.corruptBlocks
    releasedBlocks = progress.releasedBlocks
    attempts = progress.attempts
    unplacedSample = progress.unplacedSample.map(\.key.hex)
    processedBlocks = progress.processedBlocks
    let rate = progress.processedBytesRate(now: now)
    rateBytesPerSecond = rate.isFinite ? rate : 0
    message = progress.message
    startedAt = progress.startedAt
    finishedAt = progress.finishedAt
  }
}

extension ClusterNode {
  /// The membership view (see `MembersReport`); `full: false` is a tenant's view.
  public func membersReport(full: Bool = true) -> MembersReport {
    let (history, health, service) = state.withLock { ($0.history, $0.health, $0.service) }
    let ring = history.current
    let primary = ring.primaryShares()
    let owner = ring.ownerShares()
    let members = ring.members.map { member in
      MembersReport.Entry(
        id: member.id, address: member.address, zone: member.zone, capacityBytes: member.capacityBytes,
        state: member.state.rawValue, transports: member.transports,
        health: member.id == settings.me.id ? "up" : (health[member.id] ?? .unknown).rawValue,
        primaryShare: primary[member.id] ?? 0, ownerShare: owner[member.id] ?? 0, isSelf: member.id == settings.me.id)
    }
    var report = MembersReport(
      nodeID: settings.nodeID, me: settings.me.id, epoch: ring.epoch, replicationFactor: ring.replicationFactor,
      members: members)
    guard full else { return report }
    var membership = MembersReport.Service(mode: settings.mode.rawValue, state: "not_used")
    switch service {
    case .notUsed: membership.state = "not_used"
    case .connecting: membership.state = "connecting"
    case .connected: membership.state = "connected"
    case .disconnected(let reason, let since):
      membership.state = "disconnected"
      membership.reason = reason
      membership.since = since
    }
    let fill = readThrough.stats
    report.membership = membership
    report.replication = replicationReport()
    report.readThrough = .init(
      attempts: fill.attempts, filledBlocks: fill.filledBlocks, filledBytes: fill.filledBytes,
      skippedBusy: fill.skippedBusy, failures: fill.failures)
    report.drain = drainReport()
    report.repair = repairReport()
    report.writeQuorum = writeQuorumReport()
    return report
  }

  public func replicationReport() -> ReplicationReport {
    let replication = replicator.stats
    return ReplicationReport(
      queued: replication.queued, queueMax: replication.queueMax, sentBlocks: replication.sentBlocks,
      sentBytes: replication.sentBytes, alreadyPresent: replication.alreadyPresent,
      dropped: .init(
        queueFull: replication.droppedQueueFull, unreachable: replication.droppedUnreachable,
        noCredentials: replication.droppedNoCredentials, gone: replication.droppedGone,
        unreadable: replication.droppedUnreadable, refused: replication.droppedRefused))
  }

  public func writeQuorumReport() -> WriteQuorumReport {
    let quorum = writeQuorumStats
    return WriteQuorumReport(
      configured: settings.writeQuorum.map { "\($0)" } ?? "auto", syncWrites: quorum.syncWrites,
      copiedBlocks: quorum.syncCopiedBlocks, missedBlocks: quorum.missedBlocks,
      underReplicatedWrites: quorum.underReplicatedWrites, underReplicatedBlocks: underReplicatedCounts.blocks,
      underReplicatedOverflowed: underReplicatedCounts.overflowed, underReplicatedLimit: underReplicatedCounts.limit,
      demotionFailures: .init(
        droppedHeldElsewhere: demotionFailureStats.droppedHeldElsewhere, kept: demotionFailureStats.kept,
        copiedToOwners: demotionFailureStats.copiedToOwners))
  }

  public func drainReport() -> ProgressReport { ProgressReport(drainProgress, now: settings.clock.date) }

  public func repairReport() -> ProgressReport { ProgressReport(repairProgress, now: settings.clock.date) }
}

/// RING `sync`'s answer.
struct SyncReport: Encodable {
  var replication: ReplicationReport
}
