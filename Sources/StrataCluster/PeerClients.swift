// Connections from this node to its peers, for replication, read-through and handoff: one client
// per (peer, namespace), each saying HELLO as a peer with the cluster token and naming the
// namespace it acts in, so a copied block lands in the namespace it came from. Tenant tokens
// never travel between nodes.

import Foundation
import StrataClient
import StrataCore
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
  /// Each client with the credentials generation it was made with.
  private let clients = Mutex<[Key: (client: StrataClient, generation: Int)]>([:])
  /// Clients made with credentials a reload replaced: closed once calls begun on them are over.
  private let retired = Mutex<[ObjectIdentifier: StrataClient]>([:])
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
    let credentials = self.credentials.current
    var replaced: StrataClient?
    defer { if let replaced { retire(replaced) } }
    return clients.withLock { clients in
      let key = Key(address: address, namespace: namespace)
      if let entry = clients[key] {
        if entry.generation == credentials.generation { return entry.client }
        replaced = entry.client
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
      let client = StrataClient(configuration)
      clients[key] = (client, credentials.generation)
      return client
    }
  }

  /// Closes a client whose credentials were replaced, after the longest a call begun on it can
  /// still take (its timeout, once retried), so reloading certificates fails no call in progress.
  private func retire(_ client: StrataClient) {
    let id = ObjectIdentifier(client)
    retired.withLock { $0[id] = client }
    let grace = Int(2 * timeoutMilliseconds) + 1_000
    DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(grace)) { [self] in
      self.retired.withLock { $0.removeValue(forKey: id) }?.close()
    }
  }

  /// A client with any namespace's credentials, for probes and RING calls.
  func anyClient(_ address: HostPort) -> StrataClient? {
    client(address, namespaces.first ?? .embeddedDefault)
  }

  func closeAll() {
    let all = clients.withLock { clients -> [StrataClient] in
      defer { clients.removeAll() }
      return clients.values.map(\.client)
    }
    let old = retired.withLock { retired -> [StrataClient] in
      defer { retired.removeAll() }
      return Array(retired.values)
    }
    for client in all + old { client.close() }
  }
}
