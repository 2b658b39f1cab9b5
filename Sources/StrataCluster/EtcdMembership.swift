// etcd membership: this node registers its Member record (JSON) under
// `cluster.etcd_prefix + "members/" + node id` with a lease of cluster.lease_ttl, keeps it alive
// and watches the prefix (EtcdSession). Every change of the member map becomes a ring whose
// epoch is the etcd revision of that change. The record also carries the process's `instance`
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
    let me = node.settings.me
    self.me = Mutex(me)
    let logger = node.logger
    let firstRing = DispatchSemaphore(value: 0)
    self.firstRing = firstRing
    session = EtcdSession(
      client: client, prefix: node.settings.etcdPrefix + "members/", memberID: me.id,
      value: Self.encode(me, instance: node.settings.instance), ttlSeconds: node.settings.leaseTTLSeconds,
      logger: logger,
      onMembers: { [node] records, revision in
        var members: [Member] = []
        var instances: [String: Int] = [:]
        for (id, value) in records.sorted(by: { $0.key < $1.key }) {
          guard let member = try? JSONCoding.decode(Member.self, from: value), member.id == id else {
            logger.warning("etcd: ignoring a member record that does not decode", metadata: ["key": "\(id)"])
            continue
          }
          members.append(member)
          instances[id] = Self.instance(in: value)
        }
        node.adopt(members: members, epoch: UInt64(max(0, revision)))
        node.noteInstances(instances)
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
          node.setService(.disconnected(reason: reason, since: Date()))
        case .stopped: node.setService(.notUsed)
        }
      })
  }

  /// The member record: the Member's JSON plus `"instance"` (0 is left out). Nodes that do not
  /// know the field ignore it.
  static func encode(_ member: Member, instance: Int) -> [UInt8] {
    (try? JSONCoding.encode(MemberRecord(member: member, instance: instance == 0 ? nil : instance))) ?? []
  }

  /// The `instance` of a member record; 0 when it has none (a node that does not write it).
  static func instance(in record: [UInt8]) -> Int {
    (try? JSONCoding.decode(InstanceField.self, from: record))?.instance ?? 0
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
      return Self.encode(member, instance: node.settings.instance)
    }
    session.update(value: record)
  }

  func stop(deregister: Bool) {
    session.stop(deregister: deregister)
  }
}

/// An etcd member record: the Member's fields and `instance` beside them.
struct MemberRecord: Encodable {
  var member: Member
  var instance: Int?

  private enum CodingKeys: String, CodingKey { case instance }

  func encode(to encoder: any Encoder) throws {
    try member.encode(to: encoder)
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encodeIfPresent(instance, forKey: .instance)
  }
}
