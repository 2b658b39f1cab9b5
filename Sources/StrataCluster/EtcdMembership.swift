// etcd membership: this node registers its Member record (JSON) under
// `cluster.etcd_prefix + "members/" + node id` with a lease of cluster.lease_ttl, keeps it alive
// and watches the prefix (EtcdSession). Every change of the member map becomes a ring whose
// epoch is the etcd revision of that change; with TLS only records whose certificate the cluster
// CA signed for their id count (MemberRecord.swift). The record also carries the process's `instance`
// (STAT's): a node killed and restarted within its lease TTL keeps its key and the ring, but its
// record changes, and the others repair toward it (it lost its RAM blocks, maybe its disk). While etcd is unreachable the node keeps serving
// with the last ring and reports the condition; when etcd answers again it re-registers.

import Dispatch
import Foundation
import StrataCore
import StrataEtcd
import StrataPlacement
import Synchronization

final class EtcdMembership: MembershipSource {
  private let node: ClusterNode
  private let session: EtcdSession
  private let client: EtcdClient
  private let me: Mutex<Member>
  private let firstRing: DispatchSemaphore

  init(node: ClusterNode) throws(StrataError) {
    self.node = node
    let endpoints = try node.settings.etcd.split(separator: ",").map { text throws(StrataError) in
      try EtcdEndpoint(parsing: String(text))
    }
    let client = EtcdClient(
      endpoints: endpoints, timeoutMilliseconds: 2_000, tls: node.settings.etcdTLS, user: node.settings.etcdUser,
      password: node.settings.etcdPassword)
    self.client = client
    let me = node.settings.me
    self.me = Mutex(me)
    let logger = node.logger
    let firstRing = DispatchSemaphore(value: 0)
    self.firstRing = firstRing
    session = EtcdSession(
      client: client, prefix: node.settings.etcdPrefix + "members/", memberID: me.id,
      value: node.memberRecord(me).bytes, ttlSeconds: node.settings.leaseTTLSeconds,
      logger: logger, clock: node.settings.clock,
      onMembers: { [node] records, written, revision in
        // Every record is checked again on every change, against the time now: a certificate that
        // expired since the last change takes its member out of the ring at the next one.
        let admission = MemberAdmission(
          records: records, authority: node.memberAuthority, now: node.settings.clock.wallMilliseconds() / 1000)
        node.noteRejectedMembers(admission.rejected, records: records)
        node.adopt(
          members: admission.members, epoch: UInt64(max(0, revision)),
          written: written.mapValues { UInt64(max(0, $0)) })
        node.noteInstances(admission.instances)
        firstRing.signal()
      },
      onState: { [node] state in
        switch state {
        case .connecting: node.setService(.connecting)
        case .connected:
          node.setService(.connected)
          logger.info("etcd: registered", metadata: ["endpoint": "\(node.settings.etcd)"])
        case .disconnected(let reason):
          if case .disconnected = node.serviceState {
          } else {
            logger.warning(
              "etcd: unreachable; serving with the last known ring", metadata: ["reason": "\(reason)"])
          }
          node.setService(.disconnected(reason: reason, since: node.settings.clock.date))
        case .stopped: node.setService(.notUsed)
        }
      })
  }

  /// Registers and waits (up to one lease TTL) for the first member map, so the node starts
  /// serving with the cluster's ring; without etcd it starts alone and keeps trying.
  func start() {
    node.setService(.connecting)
    session.start()
    if firstRing.wait(timeout: .now() + .seconds(Int(node.settings.leaseTTLSeconds))) == .timedOut {
      node.logger.warning(
        "etcd: no member map yet; serving alone until etcd answers", metadata: ["endpoint": "\(node.settings.etcd)"])
    }
  }

  func announceDraining() {
    let record = me.withLock { member -> [UInt8] in
      member.state = .draining
      return node.memberRecord(member).bytes
    }
    session.update(value: record)
  }

  /// New etcd connections use the reloaded client certificate; the record is written again with
  /// the reloaded certificate chain.
  func reloadCredentials() {
    client.replaceTLS(node.settings.etcdTLS)
    session.update(value: me.withLock { node.memberRecord($0).bytes })
  }

  func stop(deregister: Bool) {
    session.stop(deregister: deregister)
  }

  var watchResyncs: Int { session.watchResyncs }
}
