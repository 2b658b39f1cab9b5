// Where the ring's members come from. Static: the configured peers plus this node, all equal in
// weight, ids = addresses, epoch 1; peers are probed and a peer that stops answering is marked
// down (skipped for copies) until it answers again; the probes run as an owned task of the node,
// on its clock. etcd: EtcdMembership.swift.

import StrataCore
import StrataPlacement
import Synchronization

/// A source of ring members for a ClusterNode: it calls the node's `adopt` with each new ring
/// (and `noteInstances` with the members' process instances, where it knows them).
public protocol MembershipSource: Sendable {
  func start()
  /// Tells the cluster this node is draining (it stops owning keys).
  func announceDraining()
  func stop(deregister: Bool)
  /// Takes the TLS material of a config reload (`ClusterNode.reloadCredentials`).
  func reloadCredentials()
  /// Times a relist found the membership watch behind and resynced (etcd; 0 for the others).
  var watchResyncs: Int { get }
}

extension MembershipSource {
  public func reloadCredentials() {}
  public var watchResyncs: Int { 0 }
}

final class StaticMembership: MembershipSource {
  private let node: ClusterNode
  private let members: [Member]
  private let stopped = Mutex(false)
  /// Probe connections, with a short timeout of their own (a hung peer is found in seconds).
  private let probes: PeerClients
  /// The probe connections' timeout, and each probe's deadline.
  private let probeTimeoutMilliseconds: UInt64

  init(node: ClusterNode) {
    self.node = node
    probeTimeoutMilliseconds = max(1_000, 2 * node.settings.probeIntervalMilliseconds)
    probes = PeerClients(settings: node.settings, timeoutMilliseconds: probeTimeoutMilliseconds)
    var members = [node.settings.me]
    for peer in node.settings.staticPeers where peer.description != node.settings.me.id {
      members.append(Member(id: peer.description, address: peer.description))
    }
    self.members = members
  }

  func start() {
    node.adopt(members: members, epoch: 1)
    guard members.count > 1 else { return }
    node.tasks.start { [self] in await probeLoop() }
  }

  func announceDraining() {
    // Static peers keep their configured list: they find this node down once it exits, and its
    // blocks are with the next owners by then (the drain hands them over first).
    var draining = members
    if let index = draining.firstIndex(where: { $0.id == node.settings.me.id }) { draining[index].state = .draining }
    // Epoch 1 still: static epochs are all 1, so peers count this node's answers (Handoff's
    // `holdersFrom`) and clients that heard it do not fetch the ring on every call.
    node.adopt(members: draining, epoch: 1)
  }

  /// Ends the probes: the loop stops at its next round (at once when the node's stop cancels it).
  func stop(deregister: Bool) {
    stopped.withLock { $0 = true }
    probes.closeAll()
  }

  /// Probes every peer with a STAT each `cluster.probe_interval` on the node's clock; a failed
  /// probe marks it down. An owned task of the node, cancelled at its stop.
  private func probeLoop() async {
    let interval = node.settings.probeIntervalMilliseconds
    while !stopped.withLock({ $0 }) && !Task.isCancelled {
      for member in members where member.id != node.settings.me.id {
        guard let address = try? HostPort(parsing: member.address), let client = probes.anyClient(address) else {
          continue
        }
        let instance = await Self.probe(client, deadline: .after(milliseconds: probeTimeoutMilliseconds))
        guard !stopped.withLock({ $0 }) && !Task.isCancelled else { return }
        node.setHealth(member.id, instance == nil ? .down : .up, instance: instance)
      }
      await node.settings.clock.sleep(milliseconds: interval)
    }
  }

  /// The peer's process instance (STAT `instance`; 0 from a node that does not report one), or
  /// nil when the probe failed.
  private static func probe(_ client: any PeerChannel, deadline: Deadline) async -> Int? {
    guard let json = try? await client.stat(deadline: deadline) else { return nil }
    return (try? JSONCoding.decode(InstanceField.self, from: Array(json.utf8)))?.instance ?? 0
  }
}

/// The `instance` field of a STAT body or an etcd member record (nil in one that has none).
struct InstanceField: Decodable {
  var instance: Int?
}
