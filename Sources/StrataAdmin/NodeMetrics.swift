// The node's Prometheus metrics (names in docs/metrics.md): gauges and tier counters read from
// the tier manager and the data plane at scrape time, request latencies and block sizes recorded
// as requests finish (NodeObserver), and an API for the cluster module's gauges and counters.

import Dispatch
public import Prometheus
public import StrataCore
public import StrataNode
public import StrataStorage
import StrataTCP
import Synchronization

/// One metric the node exports: its name, type, labels and meaning (docs/metrics.md lists these).
public struct MetricInfo: Sendable {
  public enum Kind: String, Sendable {
    case gauge
    case counter
    case histogram
  }

  public var name: String
  public var kind: Kind
  public var labels: [String]
  public var help: String
}

/// The metrics of one node, in a registry of its own (so tests can run several nodes in one
/// process). `factory` lets code written against swift-metrics record into the same registry.
public final class NodeMetrics: NodeObserver {
  /// Request latency buckets: 50 µs to 10 s.
  public static let durationBuckets: [Double] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
  ]
  /// The operations that move block payloads.
  static let transferOps = ["get", "put"]
  /// Block size buckets: 4 KiB to 64 MiB, by powers of 4.
  public static let blockBytesBuckets: [Double] = (0...7).map { Double(4096 << (2 * $0)) }

  public static let ops = ["hello", "lookup", "get", "put", "delete", "stat", "ring", "verify"]
  public static let verifyOutcomes = ["confirmed", "intact", "absent"]
  public static let damagedReadBackOutcomes = ["read_back", "not_found", "left_out"]
  public static let transports = ["tcp", "rdma", "shm"]
  public static let evictionReasons = ["capacity", "clean", "admission", "admin", "corrupt", "quota"]
  public static let authFailureReasons = ["unknown_token", "no_token", "peer_refused"]
  public static let quotaNames = ["connections", "inflight_bytes", "requests_per_second", "leases"]
  public static let probeLimitNames = ["lookup_keys_per_second", "misses_per_second"]
  public static let replicationDropReasons = [
    "queue_full", "peer_unavailable", "no_credentials", "gone", "refused", "corrupt",
  ]
  public static let tlsModes = ["kernel", "user"]
  public static let tlsRefusalReasons = ["handshake", "plaintext"]

  /// Every metric, with its meaning; the names are a contract (dashboards and alerts use them).
  public static let catalog: [MetricInfo] = [
    .init(
      name: "strata_tier_blocks", kind: .gauge, labels: ["tier", "namespace"],
      help: "Blocks held, by tier and namespace."),
    .init(
      name: "strata_tier_bytes", kind: .gauge, labels: ["tier", "namespace"],
      help: "Bytes held (RAM: slot sizes; NVMe: record sizes), by tier and namespace."),
    .init(name: "strata_tier_capacity_bytes", kind: .gauge, labels: ["tier"], help: "Capacity of each tier in bytes."),
    .init(name: "strata_leases_active", kind: .gauge, labels: [], help: "Leases (pins on blocks) held now."),
    .init(
      name: "strata_connections_open", kind: .gauge, labels: ["transport"], help: "Data-plane connections open now."),
    .init(
      name: "strata_inflight_bytes", kind: .gauge, labels: [], help: "Payload bytes of requests being transferred now."),
    .init(name: "strata_ring_epoch", kind: .gauge, labels: [], help: "Epoch of the ring this node uses (0 alone)."),
    .init(
      name: "strata_ring_members", kind: .gauge, labels: ["state"], help: "Ring members by state (active, draining)."),
    .init(
      name: "strata_etcd_session_up", kind: .gauge, labels: [], help: "1 while the etcd session is alive; 0 otherwise."),
    .init(
      name: "strata_replication_queue_depth", kind: .gauge, labels: [], help: "Blocks waiting to be sent to replicas."),
    .init(
      name: "strata_repair_backlog_blocks", kind: .gauge, labels: [],
      help: "Blocks the running repair pass has yet to offer to their other owners (0 when none runs)."),
    .init(
      name: "strata_drain_unplaced_blocks", kind: .gauge, labels: [],
      help: "Blocks this node's drain could not place on all their owners at its latest attempt (0 without a drain)."),
    .init(
      name: "strata_under_replicated_blocks", kind: .gauge, labels: [],
      help:
        "Blocks this node holds whose copy to another owner failed and has not been made since (by a copy, the replicator or repair); at most 65,536 are tracked."
    ),
    .init(
      name: "strata_damaged_blocks_waiting", kind: .gauge, labels: [],
      help:
        "Blocks this node owns and dropped as damaged (disk or RAM) that wait to be read back from their other owners; at most 65,536."
    ),
    .init(name: "strata_uptime_seconds", kind: .gauge, labels: [], help: "Seconds since the node started."),
    .init(
      name: "strata_starting", kind: .gauge, labels: [],
      help:
        "1 while the node starts (reading its NVMe tier, faulting in its RAM arena, starting its services); 0 once it serves."
    ),
    .init(
      name: "strata_nvme_recovery_regions_read", kind: .gauge, labels: [],
      help: "NVMe regions the recovery at start has read (it keeps its final value once the node serves)."),
    .init(
      name: "strata_nvme_recovery_regions_total", kind: .gauge, labels: [],
      help: "NVMe regions the recovery at start reads in all (0 until it has counted them)."),
    .init(
      name: "strata_nvme_recovery_records_found", kind: .gauge, labels: [],
      help: "Sound records the recovery at start has found so far (superseded copies not yet told apart)."),
    .init(name: "strata_build_info", kind: .gauge, labels: ["version"], help: "1, labelled with the build's version."),
    .init(
      name: "strata_verify_running", kind: .gauge, labels: [],
      help: "1 while a verify (scrub of RAM copies and NVMe records) runs."),
    .init(
      name: "strata_verify_last_finished_timestamp_seconds", kind: .gauge, labels: [],
      help: "When the latest verify finished (seconds since 1970); 0 before the first one."),
    .init(name: "strata_hits_total", kind: .counter, labels: ["tier"], help: "Blocks found, by the tier they were in."),
    .init(name: "strata_misses_total", kind: .counter, labels: [], help: "Blocks asked for and not found."),
    .init(
      name: "strata_onboard_bytes_total", kind: .counter, labels: [], help: "Bytes promoted from NVMe into RAM."),
    .init(
      name: "strata_offload_bytes_total", kind: .counter, labels: [], help: "Bytes demoted from RAM to NVMe."),
    .init(
      name: "strata_onboard_blocks_total", kind: .counter, labels: [], help: "Blocks promoted from NVMe into RAM."),
    .init(
      name: "strata_offload_blocks_total", kind: .counter, labels: [], help: "Blocks demoted from RAM to NVMe."),
    .init(
      name: "strata_evictions_total", kind: .counter, labels: ["tier", "reason"],
      help: "Blocks that left a tier, by reason (capacity, clean, admission, admin, corrupt, quota)."),
    .init(
      name: "strata_writeback_lag_seconds", kind: .gauge, labels: [],
      help: "How long the oldest block not yet written behind to NVMe has waited since its acknowledgement (0: none)."),
    .init(
      name: "strata_writeback_pending_blocks", kind: .gauge, labels: [],
      help: "Blocks in RAM not yet written behind to NVMe."),
    .init(
      name: "strata_writeback_pending_bytes", kind: .gauge, labels: [],
      help: "Payload bytes of the blocks in RAM not yet written behind to NVMe."),
    .init(
      name: "strata_writeback_blocks_total", kind: .counter, labels: [],
      help: "Blocks written behind to NVMe (RAM copy kept)."),
    .init(
      name: "strata_writeback_bytes_total", kind: .counter, labels: [],
      help: "Payload bytes written behind to NVMe."),
    .init(
      name: "strata_writeback_late_blocks_total", kind: .counter, labels: [],
      help: "Blocks written behind later than nvme.writeback_window after their acknowledgement."),
    .init(
      name: "strata_writeback_failed_blocks_total", kind: .counter, labels: [],
      help: "Write-behind writes that failed; the block stays in RAM and is written again once its retry is due."),
    .init(
      name: "strata_writeback_retry_blocks", kind: .gauge, labels: [],
      help:
        "Blocks whose write-behind failed, waiting in RAM for their retry (1 s, doubling to 30 s while the disk keeps failing)."
    ),
    .init(
      name: "strata_nvme_device_writes_total", kind: .counter, labels: [],
      help: "Device writes of block records to the NVMe tier (a batch writes a run of records in one)."),
    .init(
      name: "strata_nvme_records_written_total", kind: .counter, labels: [],
      help: "Block records written to the NVMe tier."),
    .init(
      name: "strata_nvme_masked_records_written_total", kind: .counter, labels: [],
      help: "NVMe records written masked: their bytes held the record magic where the device is aligned."),
    .init(
      name: "strata_nvme_reclaim_waits_total", kind: .counter, labels: [],
      help: "NVMe writes that found no free region while another write reclaimed one, and waited for it."),
    .init(
      name: "strata_nvme_reclaimed_regions_total", kind: .counter, labels: [],
      help: "NVMe regions emptied for reuse when the log came round to them."),
    .init(
      name: "strata_nvme_reinserted_blocks_total", kind: .counter, labels: [],
      help: "Live blocks a reclaim rewrote ahead instead of evicting (hot ones; cold ones while there is dead space)."),
    .init(
      name: "strata_promotions_without_room_total", kind: .counter, labels: [],
      help: "Blocks on NVMe answered as missing because no RAM could be freed to read them into (every block pinned)."),
    .init(
      name: "strata_copy_nvme_reads_total", kind: .counter, labels: [],
      help:
        "Blocks a copy to another node (replication, repair, drain, VERIFY) read from NVMe into a buffer of its own, not promoted into RAM."
    ),
    .init(
      name: "strata_copy_buffer_bytes", kind: .gauge, labels: [],
      help: "Bytes of NVMe blocks held in copies' own buffers now (at most an eighth of the RAM tier, 256 MiB)."),
    .init(
      name: "strata_etcd_watch_resyncs_total", kind: .counter, labels: [],
      help: "Times a relist of the members' prefix found the etcd watch behind, and resynced."),
    .init(
      name: "strata_io_queue_jobs", kind: .gauge, labels: [],
      help: "Disk reads and writes in the I/O pool: waiting for one of its threads or running."),
    .init(
      name: "strata_io_queue_refused_total", kind: .counter, labels: [],
      help:
        "Disk reads and writes refused because the I/O pool's queue was full, in all or for the requesting namespace."),
    .init(
      name: "strata_nvme_admissions_refused_total", kind: .counter, labels: [],
      help: "NVMe writes refused: no region was freed in time (the block stays in RAM only)."),
    .init(
      name: "strata_nvme_io_errors_total", kind: .counter, labels: [],
      help: "NVMe device reads, writes and syncs that failed (a failing disk); none returned bad bytes."),
    .init(
      name: "strata_nvme_stalled_operations", kind: .gauge, labels: [],
      help: "NVMe device reads, writes and syncs in flight for 30 s or longer (a disk that stopped answering)."),
    .init(
      name: "strata_nvme_oldest_operation_seconds", kind: .gauge, labels: [],
      help: "How long the oldest NVMe device operation in flight has been waiting (0: none in flight)."),
    .init(
      name: "strata_auth_failures_total", kind: .counter, labels: ["reason"],
      help: "HELLOs and admin calls refused for their credentials (unknown_token, no_token, peer_refused)."),
    .init(
      name: "strata_scope_refusals_total", kind: .counter, labels: ["scope"],
      help: "Requests and admin calls refused because the token lacks a scope (read, write, delete, operator)."),
    .init(
      name: "strata_quota_refusals_total", kind: .counter, labels: ["namespace", "quota"],
      help: "Requests refused by a namespace's quota (connections, inflight_bytes, requests_per_second, leases)."),
    .init(
      name: "strata_probe_limit_hits_total", kind: .counter, labels: ["namespace", "limit"],
      help: "LOOKUPs and GETs refused by a namespace's probe limit (lookup_keys_per_second, misses_per_second)."),
    .init(
      name: "strata_sessions_revoked_total", kind: .counter, labels: [],
      help: "Sessions closed because a configuration reload removed or narrowed their token."),
    .init(
      name: "strata_audit_lines_suppressed_total", kind: .counter, labels: [],
      help: "Audit log lines left out by their rate limit (the events are still counted)."),
    .init(
      name: "strata_transfer_bytes_total", kind: .counter, labels: ["op", "transport"],
      help: "Payload bytes sent (get) and stored (put), by transport."),
    .init(
      name: "strata_requests_total", kind: .counter, labels: ["op"], help: "Data-plane requests answered, by operation."
    ),
    .init(
      name: "strata_errors_total", kind: .counter, labels: ["code"], help: "Requests answered with an error, by code."),
    .init(
      name: "strata_connections_total", kind: .counter, labels: ["transport"], help: "Data-plane connections accepted."),
    .init(
      name: "strata_tls_handshakes_total", kind: .counter, labels: ["transport", "tls_mode"],
      help: "TLS handshakes completed on the data plane, by where records are encrypted (kernel, user)."),
    .init(
      name: "strata_tls_refused_total", kind: .counter, labels: ["reason"],
      help: "Connections to the TLS port refused, by reason (handshake, plaintext)."),
    .init(
      name: "strata_handshakes_pending", kind: .gauge, labels: [],
      help: "Data-plane connections waiting for their HELLO now (no thread each)."),
    .init(
      name: "strata_transfer_pins", kind: .gauge, labels: [], help: "Transfers in progress holding pins on blocks."),
    .init(
      name: "strata_connections_refused_total", kind: .counter, labels: [],
      help: "HELLOs refused for a connection limit (node, source address or namespace)."),
    .init(
      name: "strata_connections_closed_total", kind: .counter, labels: ["reason"],
      help:
        "Data-plane connections the node closed, by reason (deadline, idle, malformed, handshake_timeout, handshake_evicted, region_refused)."
    ),
    .init(
      name: "strata_checksum_failures_total", kind: .counter, labels: ["tier"],
      help: "Checksum failures: RAM (PUT payloads refused, promotions failed) and NVMe (records failing verification)."),
    .init(
      name: "strata_replication_sent_blocks_total", kind: .counter, labels: [], help: "Blocks sent to replicas."),
    .init(
      name: "strata_replication_dropped_total", kind: .counter, labels: ["reason"],
      help: "Blocks not replicated, by reason."),
    .init(
      name: "strata_member_records_rejected_total", kind: .counter, labels: ["reason"],
      help:
        "Distinct etcd member records the ring did not honour, by reason (malformed, missing, unreadable, untrusted, expired, not_yet_valid, wrong_identity, address_taken)."
    ),
    .init(
      name: "strata_member_records_rejected", kind: .gauge, labels: [],
      help:
        "etcd member records present now that the ring does not honour (no certificate of the cluster CA for their id, or another record written later claims their address)."
    ),
    .init(
      name: "strata_copy_corrupt_blocks_total", kind: .counter, labels: [],
      help:
        "Blocks that replication, drain or repair refused to copy because their RAM bytes failed their stored checksum (each removed from the node)."
    ),
    .init(
      name: "strata_verify_reports_total", kind: .counter, labels: ["outcome"],
      help:
        "Blocks clients reported damaged on receipt (VERIFY), by what the node found: confirmed (its copy failed its stored checksum and was removed), intact (kept), absent."
    ),
    .init(
      name: "strata_damaged_read_back_total", kind: .counter, labels: ["outcome"],
      help:
        "Blocks this node owns and dropped as damaged (disk or RAM), by outcome: read_back (from another owner), not_found (no other owner gave it back in 12 tries over about 18 minutes), left_out (65,536 already waited)."
    ),
    .init(
      name: "strata_readthrough_blocks_total", kind: .counter, labels: [],
      help: "Blocks fetched from a peer on a miss (read-through)."),
    .init(
      name: "strata_repair_copied_blocks_total", kind: .counter, labels: [],
      help: "Blocks copied to their other owners by repair passes (after members left the ring, or a peer came back)."),
    .init(
      name: "strata_repair_released_blocks_total", kind: .counter, labels: [],
      help: "Blocks this node held without owning them, placed on all their owners by repair passes and dropped here."),
    .init(
      name: "strata_write_quorum_copied_blocks_total", kind: .counter, labels: [],
      help: "Blocks copied to another owner before a client's PUT was answered (write quorum)."),
    .init(
      name: "strata_write_quorum_missed_blocks_total", kind: .counter, labels: [],
      help: "Blocks of client PUTs answered quorum_not_reached (not acknowledged)."),
    .init(
      name: "strata_under_replicated_writes_total", kind: .counter, labels: [],
      help:
        "Blocks of client PUTs answered while fewer than R of their owners held them (acknowledged or not); the missing copies are queued."
    ),
    .init(
      name: "strata_under_replicated_overflow_total", kind: .counter, labels: [],
      help: "Failed copies not tracked in strata_under_replicated_blocks because its set was full."),
    .init(
      name: "strata_demotion_failures_total", kind: .counter, labels: ["outcome"],
      help:
        "Blocks whose NVMe write failed during demotion: dropped (in a cluster, only when another owner holds it on NVMe) or kept in RAM (writes needing the room are refused)."
    ),
    .init(
      name: "strata_verify_corrupt_blocks_total", kind: .counter, labels: [],
      help: "Corrupt copies found (and dropped) by verify, in RAM and on NVMe."),
    .init(
      name: "strata_admin_connections_open", kind: .gauge, labels: [], help: "Admin API connections open now."),
    .init(
      name: "strata_admin_refused_total", kind: .counter, labels: ["reason"],
      help:
        "Admin requests refused before a handler ran: malformed (4xx from the parser), timeout (not whole within admin.request_timeout), evicted (closed to make room at admin.connections), busy (worker queue full)."
    ),
    .init(
      name: "strata_request_duration_seconds", kind: .histogram, labels: ["op", "transport"],
      help: "Data-plane request latency, from the request's header to its response written."),
    .init(
      name: "strata_transfer_block_bytes", kind: .histogram, labels: ["op"],
      help: "Sizes of the blocks moved by get and put."),
  ]

  public let registry: PrometheusCollectorRegistry
  private let help: [String: String]
  private let startedAt = DispatchTime.now().uptimeNanoseconds
  /// Last values seen of the cumulative counters read from stats (to increment by the difference).
  private let baselines = Mutex<[String: Int]>([:])
  private let namespaces: Mutex<Set<Namespace>>
  private let errors = Mutex<[String: Int]>([:])
  private let requestCounters: [String: Counter]
  private let durations: [String: [String: ValueHistogram]]
  private let blockSizes: [String: ValueHistogram]

  /// A registry with every metric present (at zero), the tier gauges for `namespaces`.
  public init(namespaces: [Namespace] = [.embeddedDefault], registry: PrometheusCollectorRegistry = .init()) {
    self.registry = registry
    help = Dictionary(NodeMetrics.catalog.map { ($0.name, $0.help) }, uniquingKeysWith: { first, _ in first })
    self.namespaces = Mutex(Set(namespaces))
    var requestCounters: [String: Counter] = [:]
    var durations: [String: [String: ValueHistogram]] = [:]
    var blockSizes: [String: ValueHistogram] = [:]
    for op in NodeMetrics.ops {
      requestCounters[op] = registry.makeCounter(
        descriptor: describe("strata_requests_total", help), labels: [("op", op)])
      for transport in NodeMetrics.transports {
        durations[op, default: [:]][transport] = Self.durationHistogram(registry, help, op: op, transport: transport)
      }
    }
    for op in NodeMetrics.transferOps { blockSizes[op] = Self.blockSizeHistogram(registry, help, op: op) }
    self.requestCounters = requestCounters
    self.durations = durations
    self.blockSizes = blockSizes
    createEverySeries()
  }

  /// A swift-metrics factory recording into this registry (for modules that use swift-metrics'
  /// Counter, Gauge and Timer types; pass it as their `factory:` or bootstrap MetricsSystem with it).
  public var factory: PrometheusMetricsFactory { PrometheusMetricsFactory(registry: registry) }

  /// The Prometheus text exposition (format 0.0.4).
  public func render() -> [UInt8] { registry.emitToBuffer() }

  /// The content type of `render()`'s bytes.
  public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

  /// Sets the start's gauges: `strata_starting` 1 and the NVMe recovery's progress.
  public func recordStart(_ progress: StartProgress) {
    gauge("strata_starting").set(1.0)
    gauge("strata_nvme_recovery_regions_read").set(Double(progress.recovery.regionsRead))
    gauge("strata_nvme_recovery_regions_total").set(Double(progress.recovery.regionsTotal))
    gauge("strata_nvme_recovery_records_found").set(Double(progress.recovery.recordsFound))
  }

  /// The node serves: `strata_starting` 0.
  public func recordServing() { gauge("strata_starting").set(0.0) }

  // MARK: Recording

  public func requestFinished(_ event: RequestEvent) {
    // Every request finds its series in dictionaries made at start; an op not listed there
    // (goodbye, once per connection) has its series looked up in the registry.
    (requestCounters[event.op] ?? counter("strata_requests_total", [("op", event.op)])).increment()
    let histogram =
      durations[event.op]?[event.transport]
      ?? Self.durationHistogram(registry, help, op: event.op, transport: event.transport)
    histogram.record(event.seconds)
    if let code = event.error {
      counter("strata_errors_total", [("code", code.name)]).increment()
      errors.withLock { $0[code.name, default: 0] += 1 }
    } else if !event.blockBytes.isEmpty {
      let sizes = blockSizes[event.op] ?? Self.blockSizeHistogram(registry, help, op: event.op)
      for bytes in event.blockBytes { sizes.record(Double(bytes)) }
    }
  }

  /// Requests answered with an error since start, by error code name.
  public var errorCounts: [String: Int] { errors.withLock { $0 } }

  /// Counts an admin eviction.
  public func recordAdminEviction(_ report: EvictionReport) {
    counter("strata_evictions_total", [("tier", "ram"), ("reason", "admin")]).increment(by: Int64(report.ramBlocks))
    counter("strata_evictions_total", [("tier", "nvme"), ("reason", "admin")]).increment(by: Int64(report.nvmeBlocks))
  }

  // MARK: For the cluster module

  /// Sets the ring gauges.
  public func setRing(epoch: UInt64, active: Int, draining: Int) {
    gauge("strata_ring_epoch").set(Double(epoch))
    gauge("strata_ring_members", [("state", "active")]).set(Double(active))
    gauge("strata_ring_members", [("state", "draining")]).set(Double(draining))
  }

  public func setEtcdSessionUp(_ up: Bool) { gauge("strata_etcd_session_up").set(up ? 1.0 : 0.0) }

  public func setReplicationQueueDepth(_ blocks: Int) {
    gauge("strata_replication_queue_depth").set(Double(blocks))
  }

  public func setRepairBacklog(_ blocks: Int) {
    gauge("strata_repair_backlog_blocks").set(Double(blocks))
  }

  public func setDrainUnplaced(_ blocks: Int) {
    gauge("strata_drain_unplaced_blocks").set(Double(blocks))
  }

  public func setUnderReplicated(_ blocks: Int) {
    gauge("strata_under_replicated_blocks").set(Double(blocks))
  }

  public func setDamagedBlocksWaiting(_ blocks: Int) {
    gauge("strata_damaged_blocks_waiting").set(Double(blocks))
  }

  public func setMemberRecordsRejected(_ records: Int) {
    gauge("strata_member_records_rejected").set(Double(records))
  }

  // MARK: Scrape-time refresh

  /// Reads the tiers, the data plane and the verifier into the gauges and counters; call before
  /// `render()`. O(namespaces): the tiers keep per-namespace usage as blocks come and go.
  public func refresh(tiers: TierManager, server: NodeServer?, verifier: StorageVerifier?) {
    let stats = tiers.stats
    let nvme = tiers.nvme?.statistics
    let usage = tiers.usageByNamespace()
    let known = namespaces.withLock { known in
      known.formUnion(usage.ram.keys)
      known.formUnion(usage.nvme.keys)
      return known
    }
    for namespace in known {
      for (tier, perNamespace) in [("ram", usage.ram), ("nvme", usage.nvme)] {
        let labels = [("tier", tier), ("namespace", namespace.name)]
        gauge("strata_tier_blocks", labels).set(Double(perNamespace[namespace]?.blocks ?? 0))
        gauge("strata_tier_bytes", labels).set(Double(perNamespace[namespace]?.bytes ?? 0))
      }
    }
    gauge("strata_tier_capacity_bytes", [("tier", "ram")]).set(Double(stats.ramCapacityBytes))
    gauge("strata_tier_capacity_bytes", [("tier", "nvme")]).set(Double(stats.nvmeCapacityBytes))
    gauge("strata_leases_active").set(Double(stats.leasesActive))
    gauge("strata_uptime_seconds").set(Double(DispatchTime.now().uptimeNanoseconds - startedAt) / 1e9)
    gauge("strata_verify_running").set(verifier?.isRunning == true ? 1.0 : 0.0)
    gauge("strata_verify_last_finished_timestamp_seconds").set(verifier?.lastFinishedAt ?? 0)

    advance("strata_hits_total", [("tier", "ram")], to: stats.hitsRAM)
    advance("strata_hits_total", [("tier", "nvme")], to: stats.hitsNVMe)
    advance("strata_misses_total", [], to: stats.misses)
    advance("strata_onboard_bytes_total", [], to: stats.promotedBytes)
    advance("strata_onboard_blocks_total", [], to: stats.promotedBlocks)
    advance("strata_offload_bytes_total", [], to: stats.demotedBytes)
    advance("strata_offload_blocks_total", [], to: stats.demotedBlocks)
    advance("strata_evictions_total", [("tier", "ram"), ("reason", "capacity")], to: stats.demotedBlocks)
    advance("strata_evictions_total", [("tier", "ram"), ("reason", "admission")], to: stats.droppedBlocks)
    advance("strata_evictions_total", [("tier", "ram"), ("reason", "quota")], to: stats.quotaEvictedBlocks)
    advance("strata_evictions_total", [("tier", "ram"), ("reason", "clean")], to: stats.cleanEvictedBlocks)
    gauge("strata_writeback_lag_seconds").set(Double(stats.writebackLagMilliseconds) / 1000)
    gauge("strata_writeback_pending_blocks").set(Double(stats.writebackPendingBlocks))
    gauge("strata_writeback_pending_bytes").set(Double(stats.writebackPendingBytes))
    advance("strata_writeback_blocks_total", [], to: stats.writebackBlocks)
    advance("strata_writeback_bytes_total", [], to: stats.writebackBytes)
    advance("strata_writeback_late_blocks_total", [], to: stats.writebackLateBlocks)
    advance("strata_writeback_failed_blocks_total", [], to: stats.writebackFailedBlocks)
    gauge("strata_writeback_retry_blocks").set(Double(stats.writebackRetryBlocks))
    advance("strata_checksum_failures_total", [("tier", "ram")], to: stats.checksumFailures)
    advance("strata_demotion_failures_total", [("outcome", "dropped")], to: stats.demotionFailedDropped)
    advance("strata_demotion_failures_total", [("outcome", "kept")], to: stats.demotionFailedKept)
    gauge("strata_transfer_pins").set(Double(stats.transferPins))
    gauge("strata_io_queue_jobs").set(Double(stats.ioQueueJobs))
    advance("strata_io_queue_refused_total", [], to: stats.ioQueueRefusals)
    advance("strata_promotions_without_room_total", [], to: stats.promotionsWithoutRoom)
    advance("strata_copy_nvme_reads_total", [], to: stats.copyReadsFromNVMe)
    gauge("strata_copy_buffer_bytes").set(Double(stats.copyBufferBytes))
    if let nvme {
      advance("strata_evictions_total", [("tier", "nvme"), ("reason", "capacity")], to: nvme.evictedBlocks)
      advance("strata_evictions_total", [("tier", "nvme"), ("reason", "corrupt")], to: nvme.corruptBlocksDetected)
      advance("strata_checksum_failures_total", [("tier", "nvme")], to: nvme.corruptBlocksDetected)
      advance("strata_nvme_device_writes_total", [], to: nvme.recordWrites)
      advance("strata_nvme_records_written_total", [], to: nvme.recordsWritten)
      advance("strata_nvme_reclaim_waits_total", [], to: nvme.reclaimWaits)
      advance("strata_nvme_reclaimed_regions_total", [], to: nvme.evictedRegions)
      advance("strata_nvme_reinserted_blocks_total", [], to: nvme.reinsertedBlocks)
      advance("strata_nvme_masked_records_written_total", [], to: nvme.maskedRecordsWritten)
      advance("strata_nvme_admissions_refused_total", [], to: nvme.admissionsRefused)
      advance("strata_nvme_io_errors_total", [], to: nvme.ioErrors)
      gauge("strata_nvme_stalled_operations").set(Double(stats.diskOperationsStalled))
      gauge("strata_nvme_oldest_operation_seconds").set(Double(stats.diskOldestOperationMilliseconds) / 1000)
    }
    if let verifier { advance("strata_verify_corrupt_blocks_total", [], to: verifier.corruptBlocksTotal) }
    if let server {
      let serverStats = server.stats
      // Same-host connections are counted apart ("shm"); the rest were accepted over TCP.
      gauge("strata_connections_open", [("transport", "tcp")]).set(
        Double(serverStats.connectionsOpen - serverStats.sameHostConnectionsOpen))
      gauge("strata_connections_open", [("transport", "shm")]).set(Double(serverStats.sameHostConnectionsOpen))
      gauge("strata_inflight_bytes").set(Double(serverStats.inflightBytes))
      advance(
        "strata_connections_total", [("transport", "tcp")],
        to: serverStats.connectionsAccepted - serverStats.sameHostConnectionsAccepted)
      advance("strata_connections_total", [("transport", "shm")], to: serverStats.sameHostConnectionsAccepted)
      gauge("strata_connections_open", [("transport", "rdma")]).set(Double(serverStats.connectionsRDMAOpen))
      advance("strata_connections_total", [("transport", "rdma")], to: serverStats.connectionsRDMA)
      for (outcome, total) in [
        ("confirmed", serverStats.verifyConfirmed), ("intact", serverStats.verifyIntact),
        ("absent", serverStats.verifyAbsent),
      ] {
        advance("strata_verify_reports_total", [("outcome", outcome)], to: total)
      }
      advance("strata_tls_handshakes_total", [("transport", "tcp"), ("tls_mode", "kernel")], to: serverStats.tlsKernel)
      advance("strata_tls_handshakes_total", [("transport", "tcp"), ("tls_mode", "user")], to: serverStats.tlsUser)
      advance("strata_tls_refused_total", [("reason", "handshake")], to: serverStats.tlsHandshakesFailed)
      advance("strata_tls_refused_total", [("reason", "plaintext")], to: serverStats.tlsPlaintextRefused)
      gauge("strata_handshakes_pending").set(Double(serverStats.handshakesPending))
      advance("strata_connections_refused_total", [], to: serverStats.connectionsRefused)
      for (reason, count) in [
        ("deadline", serverStats.deadlinesMissed), ("idle", serverStats.idleClosed),
        ("malformed", serverStats.malformedFrames), ("handshake_timeout", serverStats.handshakesTimedOut),
        ("handshake_evicted", serverStats.handshakesEvicted), ("region_refused", serverStats.sameHostRegionsRefused),
      ] {
        advance("strata_connections_closed_total", [("reason", reason)], to: count)
      }
      refreshAudit(server.auditCounters)
      for (transport, get, put) in [
        ("tcp", serverStats.tcpGetBytes, serverStats.tcpPutBytes),
        ("rdma", serverStats.rdmaGetBytes, serverStats.rdmaPutBytes),
        ("shm", serverStats.sameHostGetBytes, serverStats.sameHostPutBytes),
      ] {
        advance("strata_transfer_bytes_total", [("op", "get"), ("transport", transport)], to: get)
        advance("strata_transfer_bytes_total", [("op", "put"), ("transport", transport)], to: put)
      }
    }
  }

  /// Raises the tenant security counters to the node's audit counts.
  func refreshAudit(_ counters: AuditCounters) {
    var auth: [String: Int] = [:]
    var scopes: [String: Int] = [:]
    var quotas: [[String]: Int] = [:]
    var probes: [[String]: Int] = [:]
    var revoked = 0
    for (key, count) in counters.counts {
      switch key.event {
      case .authFailure: auth[key.detail, default: 0] += count
      case .scopeDenied: scopes[key.detail, default: 0] += count
      case .quotaRefused: quotas[[key.namespace, key.detail], default: 0] += count
      case .probeLimit: probes[[key.namespace, key.detail], default: 0] += count
      case .sessionRevoked: revoked += count
      }
    }
    for (reason, count) in auth { advance("strata_auth_failures_total", [("reason", reason)], to: count) }
    for (scope, count) in scopes { advance("strata_scope_refusals_total", [("scope", scope)], to: count) }
    for (key, count) in quotas {
      advance("strata_quota_refusals_total", [("namespace", key[0]), ("quota", key[1])], to: count)
    }
    for (key, count) in probes {
      advance("strata_probe_limit_hits_total", [("namespace", key[0]), ("limit", key[1])], to: count)
    }
    advance("strata_sessions_revoked_total", [], to: revoked)
    advance("strata_audit_lines_suppressed_total", [], to: counters.suppressedLines)
  }

  /// Sets the admin port's gauge and counters (the admin server counts them itself).
  public func refreshAdmin(_ stats: AdminConnectionStats) {
    gauge("strata_admin_connections_open").set(Double(stats.open))
    for (reason, count) in [
      ("malformed", stats.refusedMalformed), ("timeout", stats.refusedTimeout), ("evicted", stats.refusedEvicted),
      ("busy", stats.refusedBusy),
    ] {
      advance("strata_admin_refused_total", [("reason", reason)], to: count)
    }
  }

  // MARK: Internals

  private func createEverySeries() {
    for namespace in namespaces.withLock({ $0 }) {
      for tier in ["ram", "nvme"] {
        gauge("strata_tier_blocks", [("tier", tier), ("namespace", namespace.name)]).set(0.0)
        gauge("strata_tier_bytes", [("tier", tier), ("namespace", namespace.name)]).set(0.0)
      }
    }
    for tier in ["ram", "nvme"] {
      gauge("strata_tier_capacity_bytes", [("tier", tier)]).set(0.0)
      counter("strata_hits_total", [("tier", tier)]).increment(by: Int64(0))
      counter("strata_checksum_failures_total", [("tier", tier)]).increment(by: Int64(0))
      for reason in NodeMetrics.evictionReasons {
        counter("strata_evictions_total", [("tier", tier), ("reason", reason)]).increment(by: Int64(0))
      }
    }
    for transport in NodeMetrics.transports {
      gauge("strata_connections_open", [("transport", transport)]).set(0.0)
      counter("strata_connections_total", [("transport", transport)]).increment(by: Int64(0))
      for op in NodeMetrics.transferOps {
        counter("strata_transfer_bytes_total", [("op", op), ("transport", transport)]).increment(by: Int64(0))
      }
    }
    for code in StrataError.Code.all { counter("strata_errors_total", [("code", code.name)]).increment(by: Int64(0)) }
    for reason in NodeMetrics.authFailureReasons {
      counter("strata_auth_failures_total", [("reason", reason)]).increment(by: Int64(0))
    }
    for (scope, _) in TokenScopes.named {
      counter("strata_scope_refusals_total", [("scope", scope)]).increment(by: Int64(0))
    }
    for namespace in namespaces.withLock({ $0 }) {
      for quota in NodeMetrics.quotaNames {
        counter("strata_quota_refusals_total", [("namespace", namespace.name), ("quota", quota)]).increment(
          by: Int64(0))
      }
      for limit in NodeMetrics.probeLimitNames {
        counter("strata_probe_limit_hits_total", [("namespace", namespace.name), ("limit", limit)]).increment(
          by: Int64(0))
      }
    }
    for reason in ["malformed", "timeout", "evicted", "busy"] {
      counter("strata_admin_refused_total", [("reason", reason)]).increment(by: Int64(0))
    }
    for outcome in NodeMetrics.verifyOutcomes {
      counter("strata_verify_reports_total", [("outcome", outcome)]).increment(by: Int64(0))
    }
    for outcome in NodeMetrics.damagedReadBackOutcomes {
      counter("strata_damaged_read_back_total", [("outcome", outcome)]).increment(by: Int64(0))
    }
    gauge("strata_handshakes_pending").set(0.0)
    gauge("strata_transfer_pins").set(0.0)
    for reason in ["deadline", "idle", "malformed", "handshake_timeout", "handshake_evicted", "region_refused"] {
      counter("strata_connections_closed_total", [("reason", reason)]).increment(by: Int64(0))
    }
    for reason in NodeMetrics.replicationDropReasons {
      counter("strata_replication_dropped_total", [("reason", reason)]).increment(by: Int64(0))
    }
    for mode in NodeMetrics.tlsModes {
      counter("strata_tls_handshakes_total", [("transport", "tcp"), ("tls_mode", mode)]).increment(by: Int64(0))
    }
    for reason in NodeMetrics.tlsRefusalReasons {
      counter("strata_tls_refused_total", [("reason", reason)]).increment(by: Int64(0))
    }
    // Every counter without labels is exported from the start, at 0.
    for metric in NodeMetrics.catalog where metric.kind == .counter && metric.labels.isEmpty {
      counter(metric.name).increment(by: Int64(0))
    }
    for outcome in ["dropped", "kept"] {
      counter("strata_demotion_failures_total", [("outcome", outcome)]).increment(by: Int64(0))
    }
    // The reasons of ClusterNode.memberRejectionReasons (StrataCluster): a malformed record, its
    // certificate's, or another record at its address.
    for reason in ["malformed"] + CertificateRejection.allCases.map(\.rawValue) + ["address_taken"] {
      counter("strata_member_records_rejected_total", [("reason", reason)]).increment(by: Int64(0))
    }
    for name in [
      "strata_leases_active", "strata_inflight_bytes", "strata_uptime_seconds", "strata_verify_running",
      "strata_verify_last_finished_timestamp_seconds",
      "strata_etcd_session_up", "strata_replication_queue_depth", "strata_admin_connections_open",
      "strata_repair_backlog_blocks", "strata_drain_unplaced_blocks", "strata_under_replicated_blocks",
      "strata_damaged_blocks_waiting",
      "strata_writeback_lag_seconds", "strata_io_queue_jobs", "strata_copy_buffer_bytes",
      "strata_writeback_pending_blocks", "strata_writeback_pending_bytes", "strata_writeback_retry_blocks",
      "strata_member_records_rejected",
      "strata_starting", "strata_nvme_recovery_regions_read", "strata_nvme_recovery_regions_total",
      "strata_nvme_recovery_records_found", "strata_nvme_stalled_operations", "strata_nvme_oldest_operation_seconds",
    ] {
      gauge(name).set(0.0)
    }
    setRing(epoch: 0, active: 1, draining: 0)
    gauge("strata_build_info", [("version", StrataVersion.current)]).set(1.0)
  }

  private func counter(_ name: String, _ labels: [(String, String)] = []) -> Counter {
    labels.isEmpty
      ? registry.makeCounter(descriptor: describe(name, help))
      : registry.makeCounter(descriptor: describe(name, help), labels: labels)
  }

  private func gauge(_ name: String, _ labels: [(String, String)] = []) -> Gauge {
    labels.isEmpty
      ? registry.makeGauge(descriptor: describe(name, help))
      : registry.makeGauge(descriptor: describe(name, help), labels: labels)
  }

  /// Increments a counter by what a cumulative statistic grew since the last call.
  /// Raises the counter `name{labels}` to `value` (a cumulative count kept elsewhere); never lowers it.
  public func advance(_ name: String, _ labels: [(String, String)], to value: Int) {
    let key = name + labels.map { "|\($0.0)=\($0.1)" }.joined()
    let delta = baselines.withLock { baselines -> Int in
      let delta = value - (baselines[key] ?? 0)
      if delta > 0 { baselines[key] = value }
      return delta
    }
    if delta > 0 { counter(name, labels).increment(by: Int64(delta)) }
  }
}

extension NodeMetrics {
  /// The registry's `strata_request_duration_seconds` series of one op and transport (made on the
  /// first call, the same one after).
  fileprivate static func durationHistogram(
    _ registry: PrometheusCollectorRegistry, _ help: [String: String], op: String, transport: String
  ) -> ValueHistogram {
    registry.makeValueHistogram(
      descriptor: describe("strata_request_duration_seconds", help), labels: [("op", op), ("transport", transport)],
      buckets: NodeMetrics.durationBuckets)
  }

  /// The registry's `strata_transfer_block_bytes` series of one op.
  fileprivate static func blockSizeHistogram(
    _ registry: PrometheusCollectorRegistry, _ help: [String: String], op: String
  )
    -> ValueHistogram
  {
    registry.makeValueHistogram(
      descriptor: describe("strata_transfer_block_bytes", help), labels: [("op", op)],
      buckets: NodeMetrics.blockBytesBuckets)
  }
}

private func describe(_ name: String, _ help: [String: String]) -> MetricNameDescriptor {
  MetricNameDescriptor(metricName: name, unitName: "", helpText: help[name] ?? "")
}
