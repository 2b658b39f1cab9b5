// `strata serve`'s cluster side in the admin API: the cluster routes (members, ring, drain), the
// "cluster" section of /v1/status, readiness (a node is ready once it is in its ring), and the
// cluster's metrics, set at every scrape.

import StrataAdmin
import StrataCluster
import StrataCore
import StrataPlacement

/// Registers the cluster's routes, status section, readiness check and metrics on `administration`.
func attachCluster(_ cluster: ClusterNode, to administration: NodeAdministration) {
  let admin = administration.admin
  func ring(_ operation: RingCall.Operation) -> @Sendable (AdminRequest) async throws(StrataError) -> AdminResponse {
    { _ throws(StrataError) in
      let call = RingCall(operation, node: cluster.settings.me.id)
      return AdminResponse(
        status: 200, contentType: "application/json", body: try await cluster.answerRing(call, isAdmin: true))
    }
  }
  admin.route("GET", "/v1/cluster/members", handler: ring(.members))
  admin.route("GET", "/v1/cluster/ring", handler: ring(.ring))
  admin.route("POST", "/v1/drain", handler: ring(.drain))
  admin.route("GET", "/v1/drain", handler: ring(.drainStatus))
  admin.statusSection("cluster") { cluster.membersReport() }
  admin.readinessCheck("cluster") {
    let ring = cluster.ring
    return ring.member(id: cluster.settings.me.id) == nil ? "not in the ring yet (epoch \(ring.epoch))" : nil
  }
  administration.epochProvider { cluster.epoch }
  administration.beforeScrape { metrics in
    let ring = cluster.ring
    metrics.setRing(
      epoch: ring.epoch, active: ring.activeMembers.count,
      draining: ring.members.count - ring.activeMembers.count)
    if case .connected = cluster.serviceState {
      metrics.setEtcdSessionUp(true)
    } else {
      metrics.setEtcdSessionUp(false)
    }
    let replication = cluster.replicationStats
    metrics.setReplicationQueueDepth(replication.queued)
    metrics.advance("strata_replication_sent_blocks_total", [], to: replication.sentBlocks)
    for (reason, count) in [
      ("queue_full", replication.droppedQueueFull), ("peer_unavailable", replication.droppedUnreachable),
      ("no_credentials", replication.droppedNoCredentials), ("gone", replication.droppedGone),
      ("refused", replication.droppedRefused), ("corrupt", replication.droppedCorrupt),
    ] {
      metrics.advance("strata_replication_dropped_total", [("reason", reason)], to: count)
    }
    metrics.advance("strata_copy_corrupt_blocks_total", [], to: cluster.corruptCopyBlocks)
    metrics.advance("strata_readthrough_blocks_total", [], to: cluster.fillStats.filledBlocks)
    let repair = cluster.repairProgress
    metrics.advance("strata_repair_copied_blocks_total", [], to: repair.handedBlocksTotal + repair.handedBlocks)
    metrics.setRepairBacklog(repair.phase == .running ? max(0, repair.totalBlocks - repair.processedBlocks) : 0)
    let quorum = cluster.writeQuorumStats
    metrics.advance("strata_write_quorum_copied_blocks_total", [], to: quorum.syncCopiedBlocks)
    metrics.advance("strata_write_quorum_missed_blocks_total", [], to: quorum.missedBlocks)
    metrics.advance("strata_under_replicated_writes_total", [], to: quorum.underReplicatedWrites)
    let under = cluster.underReplicatedCounts
    metrics.setUnderReplicated(under.blocks)
    metrics.advance("strata_under_replicated_overflow_total", [], to: under.overflowed)
  }
}
