// The documents the node's admin routes answer with, as Codable values (docs/admin.md shows
// each): field names are the snake_case keys of the API, encoded by JSONCoding.

import StrataCore
import StrataStorage

/// GET /health and GET /ready: `{"status": "ok" | "ready" | "not_ready" | "starting", "reason": ...}`.
struct ProbeDocument: Encodable {
  var status: String
  var reason: String?
  /// While the node starts: its step (`StartProgress.Phase`) and the NVMe recovery's progress.
  var phase: String?
  var progress: RecoveryProgressDocument?
}

/// The NVMe recovery's progress, in /health and /ready while the node starts.
struct RecoveryProgressDocument: Encodable {
  var regionsRead: Int
  var regionsTotal: Int
  var bytesRead: Int
  var recordsFound: Int

  init(_ progress: RecoveryProgress) {
    regionsRead = progress.regionsRead
    regionsTotal = progress.regionsTotal
    bytesRead = progress.bytesRead
    recordsFound = progress.recordsFound
  }

  enum CodingKeys: String, CodingKey {
    case regionsRead = "regions_read"
    case regionsTotal = "regions_total"
    case bytesRead = "bytes_read"
    case recordsFound = "records_found"
  }
}

/// POST /v1/evict.
struct EvictionDocument: Encodable {
  var evictedBlocks: Int
  var evictedBytes: Int
  var ramBlocks: Int
  var nvmeBlocks: Int

  init(_ report: EvictionReport) {
    evictedBlocks = report.blocks
    evictedBytes = report.bytes
    ramBlocks = report.ramBlocks
    nvmeBlocks = report.nvmeBlocks
  }

  enum CodingKeys: String, CodingKey {
    case evictedBlocks = "evicted_blocks"
    case evictedBytes = "evicted_bytes"
    case ramBlocks = "ram_blocks"
    case nvmeBlocks = "nvme_blocks"
  }
}

/// POST /v1/verify: the job started.
struct JobDocument: Encodable {
  var job: String
  var state: String
}

/// GET /v1/verify. `started_at` and `finished_at` (seconds since 1970) are null until set.
struct VerifyDocument: Encodable {
  var progress: VerifyProgress

  struct Corrupt: Encodable {
    var namespace: String
    var key: String
  }

  enum CodingKeys: String, CodingKey {
    case state, corrupt
    case scannedBlocks = "scanned_blocks"
    case totalBlocks = "total_blocks"
    case ramBlocks = "ram_blocks"
    case scannedBytes = "scanned_bytes"
    case corruptBlocks = "corrupt_blocks"
    case droppedBlocks = "dropped_blocks"
    case unreadableBlocks = "unreadable_blocks"
    case startedAt = "started_at"
    case finishedAt = "finished_at"
    case rate = "rate_bytes_per_second"
    case maxRate = "max_rate_bytes_per_second"
  }

  func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(progress.state.rawValue, forKey: .state)
    try container.encode(progress.scannedBlocks, forKey: .scannedBlocks)
    try container.encode(progress.totalBlocks, forKey: .totalBlocks)
    try container.encode(progress.ramBlocks, forKey: .ramBlocks)
    try container.encode(progress.scannedBytes, forKey: .scannedBytes)
    try container.encode(progress.corruptBlocks, forKey: .corruptBlocks)
    try container.encode(progress.droppedBlocks, forKey: .droppedBlocks)
    try container.encode(progress.unreadableBlocks, forKey: .unreadableBlocks)
    try container.encode(
      progress.corrupt.map { Corrupt(namespace: $0.namespace.name, key: $0.key.hex) }, forKey: .corrupt)
    try container.encode(progress.startedAt, forKey: .startedAt)
    try container.encode(progress.finishedAt, forKey: .finishedAt)
    try container.encode(finite(progress.rateBytesPerSecond.rounded()), forKey: .rate)
    try container.encode(progress.maxRateBytesPerSecond, forKey: .maxRate)
  }
}

/// POST /v1/debug/disk-fault: the faults now in force and what they did so far.
struct DiskFaultDocument: Encodable {
  var writes: String
  var reads: String
  var failedWrites: Int
  var failedReads: Int
  var corruptedReads: Int
  var stalledReads: Int
  var stalledWrites: Int

  init(faults: DiskFaults, counts: DiskFaultCounts) {
    writes = faults.writes.rawValue
    reads = faults.reads.rawValue
    failedWrites = counts.failedWrites
    failedReads = counts.failedReads
    corruptedReads = counts.corruptedReads
    stalledReads = counts.stalledReads
    stalledWrites = counts.stalledWrites
  }

  enum CodingKeys: String, CodingKey {
    case writes, reads
    case failedWrites = "failed_writes"
    case failedReads = "failed_reads"
    case corruptedReads = "corrupted_reads"
    case stalledReads = "stalled_reads"
    case stalledWrites = "stalled_writes"
  }
}

/// POST /v1/debug/flip-bit.
struct FlipBitDocument: Encodable {
  var flipped: Bool
}

/// GET /v1/status: the node's own fields, then each status section under its name.
struct NodeStatusDocument: Encodable {
  struct TierUse: Encodable {
    var used: Int
    var capacity: Int
    var blocks: Int
  }
  struct Tiers: Encodable {
    var ram: TierUse
    var nvme: TierUse
  }
  struct HitRate: Encodable {
    var ram: Double
    var nvme: Double
    var miss: Double
  }
  struct Traffic: Encodable {
    var getBytes: Int
    var putBytes: Int
    enum CodingKeys: String, CodingKey {
      case getBytes = "get_bytes"
      case putBytes = "put_bytes"
    }
  }
  /// Payload bytes moved, by transport (`shm`: the same-host path).
  struct Transfers: Encodable {
    var tcp: Traffic
    var rdma: Traffic
    var shm: Traffic
  }
  struct ErrorCount: Encodable {
    var code: String
    var count: Int
  }
  struct Connections: Encodable {
    var open: Int
    var accepted: Int
  }

  var nodeID: String
  var version: String
  var uptimeSeconds: Double
  var health: String
  var epoch: Int
  var tiers: Tiers
  var hitRate: HitRate
  var transfers: Transfers
  var topErrors: [ErrorCount]
  var connections: Connections
  var leasesActive: Int
  var verify: String
  /// Why the node is not ready; left out when it is.
  var notReady: [String]?
  /// What an operator should look at although the node serves (a disk that stopped answering),
  /// and why it is unhealthy; left out when nothing is.
  var warnings: [String]?
  /// Contributed by other modules (`AdminServer.statusSection`), each under its name.
  var sections: [String: any Encodable & Sendable]

  enum CodingKeys: String, CodingKey {
    case nodeID = "node_id"
    case version
    case uptimeSeconds = "uptime_seconds"
    case health, epoch, tiers
    case hitRate = "hit_rate"
    case transfers
    case topErrors = "top_errors"
    case connections
    case leasesActive = "leases_active"
    case verify
    case notReady = "not_ready"
    case warnings
  }

  struct SectionKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(nodeID, forKey: .nodeID)
    try container.encode(version, forKey: .version)
    try container.encode(finite(uptimeSeconds), forKey: .uptimeSeconds)
    try container.encode(health, forKey: .health)
    try container.encode(epoch, forKey: .epoch)
    try container.encode(tiers, forKey: .tiers)
    try container.encode(hitRate, forKey: .hitRate)
    try container.encode(transfers, forKey: .transfers)
    try container.encode(topErrors, forKey: .topErrors)
    try container.encode(connections, forKey: .connections)
    try container.encode(leasesActive, forKey: .leasesActive)
    try container.encode(verify, forKey: .verify)
    try container.encodeIfPresent(notReady, forKey: .notReady)
    try container.encodeIfPresent(warnings, forKey: .warnings)
    var named = encoder.container(keyedBy: SectionKey.self)
    for (name, section) in sections where CodingKeys(rawValue: name) == nil {
      try named.encode(section, forKey: SectionKey(stringValue: name))
    }
  }
}

/// `value`, or 0 when it is not finite (JSON has no spelling for infinity or NaN).
func finite(_ value: Double) -> Double { value.isFinite ? value : 0 }
