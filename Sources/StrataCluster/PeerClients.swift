// Connections from this node to its peers, for replication, read-through and handoff: one client
// per (peer, namespace), each saying HELLO as a peer with a token of that namespace (every node of
// a cluster has the same auth.tokens), so a copied block lands in the namespace it came from.

import Foundation
import StrataClient
public import StrataCore
import Synchronization

final class PeerClients: Sendable {
  private struct Key: Hashable {
    var address: HostPort
    var namespace: Namespace
  }

  private let tokens: [Namespace: String]
  private let timeoutMilliseconds: UInt64
  private let clients = Mutex<[Key: StrataClient]>([:])
  let nodeID: String

  init(tokens: [Namespace: String], timeoutMilliseconds: UInt64, nodeID: String) {
    self.tokens = tokens
    self.timeoutMilliseconds = timeoutMilliseconds
    self.nodeID = nodeID
  }

  /// The client for `namespace` at `address`; nil when no configured token maps to the namespace.
  func client(_ address: HostPort, _ namespace: Namespace) -> StrataClient? {
    let token: String
    if tokens.isEmpty {
      guard namespace == .embeddedDefault else { return nil }
      token = ""
    } else {
      guard let mapped = tokens[namespace] else { return nil }
      token = mapped
    }
    return clients.withLock { clients in
      let key = Key(address: address, namespace: namespace)
      if let client = clients[key] { return client }
      var configuration = StrataClient.Configuration(node: address)
      configuration.token = token
      configuration.isPeer = true
      configuration.connections = 2
      configuration.retries = 1
      configuration.timeoutMilliseconds = timeoutMilliseconds
      configuration.clientName = "strata-peer-\(nodeID)"
      let client = StrataClient(configuration)
      clients[key] = client
      return client
    }
  }

  /// A client with any namespace's credentials, for probes and RING calls.
  func anyClient(_ address: HostPort) -> StrataClient? {
    client(address, tokens.keys.sorted { $0.name < $1.name }.first ?? .embeddedDefault)
  }

  func closeAll() {
    let all = clients.withLock { clients -> [StrataClient] in
      defer { clients.removeAll() }
      return Array(clients.values)
    }
    for client in all { client.close() }
  }
}
