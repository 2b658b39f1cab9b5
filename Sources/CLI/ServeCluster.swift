// `strata serve`'s cluster side in the admin API: the cluster routes (members, ring, drain), the
// "cluster" section of /v1/status, readiness (a node is ready once it is in its ring), and the
// cluster's metrics, set at every scrape.

import Foundation
import StrataAdmin
import StrataCluster
import StrataConfig
import StrataCore
import StrataPlacement
import StrataTCP

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
  // Outgoing peer and etcd connections, and the etcd member record, take renewed certificates.
  administration.onCertificateReload { [cluster] new throws(StrataError) in
    guard new.tls.enabled == (cluster.settings.peerTLS != nil) else { return {} }
    let credentials = try ClusterTLS(new, memberID: cluster.settings.me.id)
    return {
      cluster.reloadCredentials(
        peerTLS: credentials.peer, etcdTLS: credentials.etcd, memberCertificate: credentials.memberCertificate,
        memberAuthority: credentials.memberAuthority)
    }
  }
  // The paths the reader above took from the new file are in force once it ran (it runs first).
  administration.onReload { [cluster] _, new in
    new.tls.enabled == (cluster.settings.peerTLS != nil)
      ? ["cluster.etcd_ca", "cluster.etcd_cert", "cluster.etcd_key"] : []
  }
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
      ("unreadable", replication.droppedUnreadable), ("refused", replication.droppedRefused),
      ("corrupt", replication.droppedCorrupt),
    ] {
      metrics.advance("strata_replication_dropped_total", [("reason", reason)], to: count)
    }
    metrics.advance("strata_copy_corrupt_blocks_total", [], to: cluster.corruptCopyBlocks)
    metrics.advance("strata_etcd_watch_resyncs_total", [], to: cluster.membershipWatchResyncs)
    metrics.advance("strata_readthrough_blocks_total", [], to: cluster.fillStats.filledBlocks)
    let repair = cluster.repairProgress
    metrics.advance("strata_repair_copied_blocks_total", [], to: repair.handedBlocksTotal + repair.handedBlocks)
    metrics.setRepairBacklog(repair.phase == .running ? max(0, repair.totalBlocks - repair.processedBlocks) : 0)
    metrics.advance(
      "strata_repair_released_blocks_total", [], to: repair.releasedBlocksTotal + repair.releasedBlocks)
    metrics.setDrainUnplaced(cluster.drainProgress.failedBlocks)
    let quorum = cluster.writeQuorumStats
    metrics.advance("strata_write_quorum_copied_blocks_total", [], to: quorum.syncCopiedBlocks)
    metrics.advance("strata_write_quorum_missed_blocks_total", [], to: quorum.missedBlocks)
    metrics.advance("strata_under_replicated_writes_total", [], to: quorum.underReplicatedWrites)
    let under = cluster.underReplicatedCounts
    metrics.setUnderReplicated(under.blocks)
    metrics.advance("strata_under_replicated_overflow_total", [], to: under.overflowed)
    let damaged = cluster.damagedReadBack
    metrics.setDamagedBlocksWaiting(damaged.waiting)
    for (outcome, count) in zip(
      NodeMetrics.damagedReadBackOutcomes, [damaged.readBack, damaged.notFound, damaged.leftOut])
    {
      metrics.advance("strata_damaged_read_back_total", [("outcome", outcome)], to: count)
    }
    let rejections = cluster.memberRejections
    for reason in ClusterNode.memberRejectionReasons {
      metrics.advance("strata_member_records_rejected_total", [("reason", reason)], to: rejections.totals[reason] ?? 0)
    }
    metrics.setMemberRecordsRejected(rejections.now)
  }
}

/// The cluster's TLS material, read from the files the configuration names: at start and again
/// on every config reload (a renewal usually rewrites the same files).
struct ClusterTLS {
  /// Peers are reached over TLS with this node's certificate, verified with the cluster CA.
  var peer: TLSContext?
  /// An `https://` etcd: its CA (`cluster.etcd_ca`, else `tls.ca`) and client certificate.
  var etcd: TLSContext?
  /// The node's certificate chain for its etcd member record, and the CA the records of every
  /// member must chain to (MemberRecord.swift).
  var memberCertificate = ""
  var memberAuthority: CertificateAuthority?

  /// In etcd mode with TLS, the node's own certificate must pass the check every member applies
  /// to its record (chain to the cluster CA, name `memberID`), or no member would count it.
  init(_ settings: NodeConfiguration, memberID: String) throws(StrataError) {
    if settings.tls.enabled {
      peer = try TLSContext.client(
        TLSFiles(
          certificate: settings.tls.certificate, key: settings.tls.key, trusted: settings.tls.clusterCA,
          kernel: settings.tls.kernel))
      memberCertificate = CertificateCheck.certificatesOnly(try readPEMFile(settings.tls.certificate))
      let authority = try CertificateAuthority(file: settings.tls.clusterCA)
      memberAuthority = authority
      if settings.cluster.mode == .etcd {
        let verdict = CertificateCheck.verify(
          pem: memberCertificate, naming: memberID, authority: authority, now: Int64(Date().timeIntervalSince1970))
        if case .rejected(let reason, let words) = verdict {
          throw StrataError(
            .invalidConfiguration,
            "tls.cert: the other members would not honour this node's etcd record (certificate \(reason.rawValue): \(words)); "
              + "it must chain to tls.ca and name the node id '\(memberID)'")
        }
      }
    }
    if settings.cluster.etcd.lowercased().contains("https://") {
      let ca = settings.cluster.etcdCA.isEmpty ? settings.tls.clusterCA : settings.cluster.etcdCA
      etcd = try TLSContext.client(
        TLSFiles(
          certificate: settings.cluster.etcdCertificate, key: settings.cluster.etcdKey, trusted: ca, kernel: false))
    }
  }
}
