// Who may hold what on a node: authenticated connections (globally, per source address, per
// namespace) and in-flight payload bytes (globally and per namespace). A pure value: the node
// keeps one under its lock, tests drive it directly. Every refusal names the limit that said no,
// so one tenant or one address can use up only its own share.

public import StrataCore

/// The limits `Admission` enforces (from `NodeConfiguration.limits`).
public struct AdmissionLimits: Hashable, Sendable {
  public var connectionsMax: Int
  public var connectionsPerSourceMax: Int
  public var connectionsPerNamespaceMax: Int
  public var inflightBytesMax: Int
  public var inflightBytesPerNamespaceMax: Int

  public init(
    connectionsMax: Int, connectionsPerSourceMax: Int, connectionsPerNamespaceMax: Int, inflightBytesMax: Int,
    inflightBytesPerNamespaceMax: Int
  ) {
    precondition(connectionsMax > 0 && connectionsPerSourceMax > 0 && connectionsPerNamespaceMax > 0)
    precondition(inflightBytesMax > 0 && inflightBytesPerNamespaceMax > 0)
    self.connectionsMax = connectionsMax
    self.connectionsPerSourceMax = connectionsPerSourceMax
    self.connectionsPerNamespaceMax = connectionsPerNamespaceMax
    self.inflightBytesMax = inflightBytesMax
    self.inflightBytesPerNamespaceMax = inflightBytesPerNamespaceMax
  }

  public init(_ limits: NodeConfiguration.Limits) {
    self.init(
      connectionsMax: limits.connectionsMax, connectionsPerSourceMax: limits.connectionsPerSourceMax,
      connectionsPerNamespaceMax: limits.connectionsPerNamespaceMax,
      inflightBytesMax: Int(limits.inflightBytesMax.bytes),
      inflightBytesPerNamespaceMax: Int(limits.inflightBytesPerNamespaceMax.bytes))
  }
}

/// Why `Admission` said no.
public enum AdmissionRefusal: Error, Hashable, Sendable {
  case connections(limit: Int)
  case sourceConnections(source: String, limit: Int)
  case namespaceConnections(namespace: Namespace, limit: Int)
  case inflight(limit: Int)
  case namespaceInflight(namespace: Namespace, limit: Int)

  /// The error a client is answered with: `resourceExhausted`, naming the setting.
  public var error: StrataError {
    switch self {
    case .connections(let limit):
      StrataError(.resourceExhausted, "connection limit reached (\(limit), limits.max_connections)")
    case .sourceConnections(let source, let limit):
      StrataError(
        .resourceExhausted,
        "\(source) holds \(limit) connections, its limit (limits.max_connections_per_source)")
    case .namespaceConnections(let namespace, let limit):
      StrataError(
        .resourceExhausted,
        "namespace '\(namespace.name)' holds \(limit) connections, its limit (limits.max_connections_per_namespace)")
    case .inflight(let limit):
      StrataError(
        .resourceExhausted, "the node is at its in-flight byte limit (\(limit), limits.max_inflight_bytes); retry")
    case .namespaceInflight(let namespace, let limit):
      StrataError(
        .resourceExhausted,
        "namespace '\(namespace.name)' is at its in-flight byte limit (\(limit), limits.max_inflight_bytes_per_namespace); retry"
      )
    }
  }
}

public struct Admission: Sendable {
  public let limits: AdmissionLimits
  public private(set) var connections = 0
  public private(set) var inflightBytes = 0
  private var connectionsBySource: [String: Int] = [:]
  private var connectionsByNamespace: [Namespace: Int] = [:]
  private var inflightByNamespace: [Namespace: Int] = [:]

  public init(limits: AdmissionLimits) { self.limits = limits }

  /// Counts an authenticated connection from `source` in `namespace`, or says which limit is full.
  public mutating func admit(source: String, namespace: Namespace) throws(AdmissionRefusal) {
    guard connections < limits.connectionsMax else { throw .connections(limit: limits.connectionsMax) }
    guard connectionsBySource[source, default: 0] < limits.connectionsPerSourceMax else {
      throw .sourceConnections(source: source, limit: limits.connectionsPerSourceMax)
    }
    guard connectionsByNamespace[namespace, default: 0] < limits.connectionsPerNamespaceMax else {
      throw .namespaceConnections(namespace: namespace, limit: limits.connectionsPerNamespaceMax)
    }
    connections += 1
    connectionsBySource[source, default: 0] += 1
    connectionsByNamespace[namespace, default: 0] += 1
  }

  /// Forgets a connection `admit` counted.
  public mutating func leave(source: String, namespace: Namespace) {
    precondition(connections > 0, "Admission.leave without a matching admit")
    connections -= 1
    Self.decrement(&connectionsBySource, source, by: 1)
    Self.decrement(&connectionsByNamespace, namespace, by: 1)
  }

  public func connections(of namespace: Namespace) -> Int { connectionsByNamespace[namespace, default: 0] }
  public func inflightBytes(of namespace: Namespace) -> Int { inflightByNamespace[namespace, default: 0] }

  /// Takes `bytes` of the node's and the namespace's in-flight budgets, or says which is full.
  public mutating func reserve(_ bytes: Int, for namespace: Namespace) throws(AdmissionRefusal) {
    guard bytes > 0 else { return }
    guard inflightBytes + bytes <= limits.inflightBytesMax else { throw .inflight(limit: limits.inflightBytesMax) }
    guard inflightByNamespace[namespace, default: 0] + bytes <= limits.inflightBytesPerNamespaceMax else {
      throw .namespaceInflight(namespace: namespace, limit: limits.inflightBytesPerNamespaceMax)
    }
    inflightBytes += bytes
    inflightByNamespace[namespace, default: 0] += bytes
  }

  /// Returns what `reserve` took.
  public mutating func release(_ bytes: Int, for namespace: Namespace) {
    guard bytes > 0 else { return }
    precondition(inflightBytes >= bytes, "Admission.release of more in-flight bytes than reserved")
    inflightBytes -= bytes
    Self.decrement(&inflightByNamespace, namespace, by: bytes)
  }

  private static func decrement<Key: Hashable>(_ table: inout [Key: Int], _ key: Key, by amount: Int) {
    let left = table[key, default: 0] - amount
    precondition(left >= 0, "Admission: a count went below zero")
    table[key] = left == 0 ? nil : left
  }
}
