// Connections from this node to its peers, for replication, read-through and handoff: one
// channel per (peer, namespace), each saying HELLO as a peer with the cluster token and naming the
// namespace it acts in, so a copied block lands in the namespace it came from. Tenant tokens
// never travel between nodes. The cluster layer speaks to a peer only through `PeerChannel`: over
// TCP (a `StrataClient`) on a node, over in-memory connections in the simulator
// (`Settings.peerTransport`).

import Foundation
import StrataClient
public import StrataCore
public import StrataStorage
import StrataTCP
import Synchronization

/// What the cluster layer asks of one peer, acting in one namespace. Every call is bounded by its
/// deadline and by the channel's timeout, and fails with a typed error.
public protocol PeerChannel: Sendable {
  /// Where each of `keys` is held on the peer (`absent` where it is not), and the ring epoch it
  /// answered at.
  func lookup(_ keys: [BlockKey], deadline: Deadline) async throws(StrataError) -> PeerHoldings
  /// Copies `blocks` (arena memory, with their stored checksums) to the peer, with no write quorum
  /// of their own; one outcome per block.
  func put(copies blocks: [LeasedBlock], deadline: Deadline) async throws(StrataError) -> [PutOutcome]
  /// Reads `key` into `destination`; its length, or nil when the peer does not hold it (or it does
  /// not fit).
  func get(_ key: BlockKey, into destination: UnsafeMutableRawBufferPointer, deadline: Deadline)
    async throws(StrataError) -> Int?
  /// The peer's STAT body (JSON).
  func stat(deadline: Deadline) async throws(StrataError) -> String
  /// Ends the channel's connections.
  func close()
  /// Ends the channel's connections once the calls already begun on them are over.
  func closeWhenIdle()
}

extension PeerChannel {
  public func closeWhenIdle() { close() }
}

/// A peer's answer to LOOKUP. The pipeline reads its epoch before it looks at its tiers, so a
/// block reported held was still held when the peer already worked at `ringEpoch`: a repair pass
/// relies on that to count a holder that will not drop the block under an older ring (Repair.swift).
public struct PeerHoldings: Sendable, Hashable {
  public var tiers: [BlockTier]
  /// 0 from a node outside a cluster.
  public var ringEpoch: UInt64

  public init(tiers: [BlockTier], ringEpoch: UInt64) {
    self.tiers = tiers
    self.ringEpoch = ringEpoch
  }
}

/// Makes channels to peers: `PeerClients` asks it for each (peer, namespace) it needs.
public protocol PeerTransport: Sendable {
  func channel(to peer: HostPort, namespace: Namespace, timeoutMilliseconds: UInt64) -> any PeerChannel
}

/// A peer over TCP (TLS when configured): a `StrataClient` with the peer capability.
struct TCPPeerChannel: PeerChannel {
  let client: StrataClient
  let address: HostPort

  func lookup(_ keys: [BlockKey], deadline: Deadline) async throws(StrataError) -> PeerHoldings {
    let result = try await client.lookup(keys, deadline: deadline)
    return PeerHoldings(tiers: result.tiers, ringEpoch: result.ringEpoch)
  }

  func put(copies blocks: [LeasedBlock], deadline: Deadline) async throws(StrataError) -> [PutOutcome] {
    var items: [StrataClient.PutItem] = []
    items.reserveCapacity(blocks.count)
    for block in blocks {
      // Sent straight from arena memory, with the stored checksum.
      let region = client.register(UnsafeMutableRawBufferPointer(mutating: block.bytes))
      items.append(
        StrataClient.PutItem(
          key: block.id.key, source: try region.slice(length: block.bytes.count), checksum: block.checksum))
    }
    return try await client.put(items, writeQuorum: 0, deadline: deadline)
  }

  func get(_ key: BlockKey, into destination: UnsafeMutableRawBufferPointer, deadline: Deadline)
    async throws(StrataError) -> Int?
  {
    let region = client.register(destination)
    let result = try await client.get(
      [StrataClient.GetItem(key: key, destination: try region.slice(length: destination.count))], deadline: deadline)
    guard case .ok(let length) = result[0] else { return nil }
    return length
  }

  func stat(deadline: Deadline) async throws(StrataError) -> String {
    try await client.stat(node: address, deadline: deadline)
  }

  func close() { client.close() }

  func closeWhenIdle() { client.closeWhenIdle() }
}

final class PeerClients: Sendable {
  private struct Key: Hashable {
    var address: HostPort
    var namespace: Namespace
  }

  /// The namespaces of the configured tokens; empty on an open node.
  private let namespaces: [Namespace]
  private let clusterToken: String
  private let timeoutMilliseconds: UInt64
  private let connections: Int
  /// Each client with the credentials generation it was made with.
  private let clients = Mutex<[Key: (channel: any PeerChannel, generation: Int)]>([:])
  /// Channels made with credentials a reload replaced: closed once calls begun on them are over.
  private let retired = Mutex<[Int: any PeerChannel]>([:])
  private let retiredNext = Mutex(0)
  /// Where channels come from; nil: TCP.
  private let transport: (any PeerTransport)?
  let nodeID: String
  private let credentials: ClusterCredentials
  private let isStatic: Bool
  private let identities: MemberIdentities

  /// Connections per (peer, namespace) of the pool that write-quorum copies use.
  static let syncConnections = 4

  init(settings: ClusterNode.Settings, timeoutMilliseconds: UInt64, connections: Int = 2) {
    namespaces = settings.namespaces
    clusterToken = settings.clusterToken
    self.timeoutMilliseconds = timeoutMilliseconds
    self.connections = connections
    nodeID = settings.nodeID
    credentials = settings.credentials
    isStatic = settings.mode != .etcd
    identities = settings.identities
    transport = settings.peerTransport
  }

  /// What the certificate of the peer at `address` must name: its member id (etcd: the identity
  /// its record names), or in static mode (ids are addresses) the address's host.
  private func identity(of address: HostPort) -> TLSServerIdentity {
    if isStatic { return .anyOf([address.host, address.description]) }
    let ids = identities.ids(at: address)
    return ids.isEmpty ? .anyOf([address.description]) : .anyOf(ids)
  }

  /// The channel for `namespace` at `address`; nil when this node has no credential to act in it
  /// on a peer: neither the cluster token nor a node certificate (`tls.ca`: the peer grants the
  /// capability to a certificate of a ring member, and no token is sent), in a node with tenant
  /// tokens (configuration validation refuses that combination).
  func client(_ address: HostPort, _ namespace: Namespace) -> (any PeerChannel)? {
    let credentials = self.credentials.current
    if clusterToken.isEmpty && credentials.peerTLS == nil && !(namespaces.isEmpty && namespace == .embeddedDefault) {
      return nil
    }
    var replaced: (any PeerChannel)?
    defer { if let replaced { retire(replaced) } }
    return clients.withLock { clients in
      let key = Key(address: address, namespace: namespace)
      if let entry = clients[key] {
        if entry.generation == credentials.generation { return entry.channel }
        replaced = entry.channel
      }
      if let transport {
        let channel = transport.channel(
          to: address, namespace: namespace, timeoutMilliseconds: timeoutMilliseconds)
        clients[key] = (channel, credentials.generation)
        return channel
      }
      var configuration = StrataClient.Configuration(node: address)
      configuration.token = clusterToken
      configuration.isPeer = true
      configuration.peerNamespace = namespace.name
      configuration.connections = connections
      configuration.retries = 1
      configuration.timeoutMilliseconds = timeoutMilliseconds
      configuration.clientName = "strata-peer-\(nodeID)"
      configuration.tls = credentials.peerTLS
      configuration.tlsIdentity = identity(of: address)
      let channel = TCPPeerChannel(client: StrataClient(configuration), address: address)
      clients[key] = (channel, credentials.generation)
      return channel
    }
  }

  /// Closes a client whose credentials were replaced, after the longest a call begun on it can
  /// still take (its timeout, once retried), so reloading certificates fails no call in progress.
  private func retire(_ channel: any PeerChannel) {
    let id = retiredNext.withLock { next -> Int in
      defer { next += 1 }
      return next
    }
    retired.withLock { $0[id] = channel }
    let grace = Int(2 * timeoutMilliseconds) + 1_000
    DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(grace)) { [self] in
      self.retired.withLock { $0.removeValue(forKey: id) }?.close()
    }
  }

  /// Drops the channels to addresses outside `members` (peers that left the ring), each closed
  /// once the calls already begun on it are over (none is interrupted). Without it a node whose
  /// peers come and go at new addresses would keep a channel, and its sockets, for every address
  /// it ever copied to.
  func keep(only members: Set<HostPort>) {
    let departed = clients.withLock { clients -> [any PeerChannel] in
      let gone = clients.keys.filter { !members.contains($0.address) }
      return gone.compactMap { clients.removeValue(forKey: $0)?.channel }
    }
    // The simulator's in-memory channels hold nothing of the system's, and closing one would end
    // a simulated call still in flight on it: they are only dropped.
    guard transport == nil else { return }
    for channel in departed { channel.closeWhenIdle() }
  }

  /// A channel with any namespace's credentials, for probes.
  func anyClient(_ address: HostPort) -> (any PeerChannel)? {
    client(address, namespaces.first ?? .embeddedDefault)
  }

  func closeAll() {
    let all = clients.withLock { clients -> [any PeerChannel] in
      defer { clients.removeAll() }
      return clients.values.map(\.channel)
    }
    let old = retired.withLock { retired -> [any PeerChannel] in
      defer { retired.removeAll() }
      return Array(retired.values)
    }
    for client in all + old { client.close() }
  }
}

/// Work grouped per (peer, namespace), flattened in a fixed order (by `peer`'s name, then
/// namespace): what a node sends, and what it logs, does not depend on dictionary order, so a
/// simulated run repeats exactly.
func inPeerOrder<Peer, Work>(_ groups: [Peer: [Namespace: Work]], by name: (Peer) -> String) -> [(
  Peer, Namespace, Work
)] {
  groups.flatMap { peer, byNamespace in byNamespace.map { (peer, $0.key, $0.value) } }
    .sorted { (name($0.0), $0.1.name) < (name($1.0), $1.1.name) }
}
