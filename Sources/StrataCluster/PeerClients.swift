// Connections from this node to its peers, for replication, read-through and handoff: one client
// per (peer, namespace), each saying HELLO as a peer with the cluster token and naming the
// namespace it acts in, so a copied block lands in the namespace it came from. Tenant tokens
// never travel between nodes.

import Foundation
import StrataClient
public import StrataCore
import StrataStorage
import StrataTCP
import Synchronization

extension StrataClient {
  /// PUT items for copies of leased blocks: sent straight from arena memory, with their stored checksums.
  func copyItems(_ blocks: [LeasedBlock]) throws(StrataError) -> [PutItem] {
    var items: [PutItem] = []
    items.reserveCapacity(blocks.count)
    for block in blocks {
      let region = register(UnsafeMutableRawBufferPointer(mutating: block.bytes))
      items.append(
        PutItem(key: block.id.key, source: try region.slice(length: block.bytes.count), checksum: block.checksum))
    }
    return items
  }
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
  private let clients = Mutex<[Key: StrataClient]>([:])
  let nodeID: String
  private let tls: TLSContext?
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
    tls = settings.peerTLS
    isStatic = settings.mode != .etcd
    identities = settings.identities
  }

  /// What the certificate of the peer at `address` must name: its member id (etcd: the identity
  /// its record names), or in static mode (ids are addresses) the address's host.
  private func identity(of address: HostPort) -> TLSServerIdentity {
    if isStatic { return .anyOf([address.host, address.description]) }
    let ids = identities.ids(at: address)
    return ids.isEmpty ? .anyOf([address.description]) : .anyOf(ids)
  }

  /// The client for `namespace` at `address`; nil when this node cannot act in it on a peer (a
  /// node with tenant tokens but no cluster token, which configuration validation refuses).
  func client(_ address: HostPort, _ namespace: Namespace) -> StrataClient? {
    if clusterToken.isEmpty && !(namespaces.isEmpty && namespace == .embeddedDefault) { return nil }
    return clients.withLock { clients in
      let key = Key(address: address, namespace: namespace)
      if let client = clients[key] { return client }
      var configuration = StrataClient.Configuration(node: address)
      configuration.token = clusterToken
      configuration.isPeer = true
      configuration.peerNamespace = namespace.name
      configuration.connections = connections
      configuration.retries = 1
      configuration.timeoutMilliseconds = timeoutMilliseconds
      configuration.clientName = "strata-peer-\(nodeID)"
      configuration.tls = tls
      configuration.tlsIdentity = identity(of: address)
      let client = StrataClient(configuration)
      clients[key] = client
      return client
    }
  }

  /// A client with any namespace's credentials, for probes and RING calls.
  func anyClient(_ address: HostPort) -> StrataClient? {
    client(address, namespaces.first ?? .embeddedDefault)
  }

  func closeAll() {
    let all = clients.withLock { clients -> [StrataClient] in
      defer { clients.removeAll() }
      return Array(clients.values)
    }
    for client in all { client.close() }
  }
}
