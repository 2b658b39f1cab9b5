// Who may hold and ask what on a node: authenticated connections (globally, per source address,
// per namespace), in-flight payload bytes (globally and per namespace), and each namespace's
// request rate and probe budgets (LOOKUP keys and misses per second, token buckets). A pure value
// with time passed in: the node keeps one under its lock, tests drive it directly. Every refusal
// names the limit that said no, so one tenant or one address can use up only its own share.

public import StrataConfig
public import StrataCore

/// The limits `Admission` enforces (from `NodeConfiguration.limits`).
public struct AdmissionLimits: Hashable, Sendable {
  public var connectionsMax: Int
  public var connectionsPerSourceMax: Int
  public var connectionsPerNamespaceMax: Int
  public var inflightBytesMax: Int
  /// Each namespace's in-flight bytes, request rate and probe budgets.
  public var quotas: NamespaceQuotas
  /// The in-flight bytes of a namespace without an override.
  public var inflightBytesPerNamespaceMax: Int { quotas.defaults.inflightBytesMax }

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
    quotas = NamespaceQuotas(defaults: NamespaceQuota(inflightBytesMax: inflightBytesPerNamespaceMax))
  }

  /// The limits of a node configuration, with every namespace's quota (`limits.*_per_namespace`,
  /// `namespaces:`).
  public init(_ node: NodeConfiguration) {
    self.init(node.limits)
    quotas = node.quotas
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
  /// `setting`: where the limit is configured (`NamespaceQuotas.setting`), named in the error.
  case namespaceInflight(namespace: Namespace, limit: Int, setting: String)
  case requestRate(namespace: Namespace, limit: Int, setting: String)
  case lookupKeys(namespace: Namespace, limit: Int, asked: Int, setting: String)
  case misses(namespace: Namespace, limit: Int, setting: String)

  /// The quota or probe limit that refused, for metrics and audit lines; nil for node-wide limits.
  public var namespaceLimit: (namespace: Namespace, name: String, isProbe: Bool)? {
    switch self {
    case .namespaceConnections(let namespace, _): (namespace, "connections", false)
    case .namespaceInflight(let namespace, _, _): (namespace, "inflight_bytes", false)
    case .requestRate(let namespace, _, _): (namespace, "requests_per_second", false)
    case .lookupKeys(let namespace, _, _, _): (namespace, "lookup_keys_per_second", true)
    case .misses(let namespace, _, _): (namespace, "misses_per_second", true)
    case .connections, .sourceConnections, .inflight: nil
    }
  }

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
    case .namespaceInflight(let namespace, let limit, let setting):
      StrataError(
        .resourceExhausted, "namespace '\(namespace.name)' is at its in-flight byte limit (\(limit), \(setting)); retry"
      )
    case .requestRate(let namespace, let limit, let setting):
      StrataError(
        .resourceExhausted,
        "namespace '\(namespace.name)' is over its request rate (\(limit)/s, \(setting)); retry later")
    case .lookupKeys(let namespace, let limit, let asked, let setting):
      StrataError(
        .resourceExhausted,
        "probe limit: namespace '\(namespace.name)' may look up \(limit) keys a second (\(setting)); this LOOKUP asks \(asked); retry later"
      )
    case .misses(let namespace, let limit, let setting):
      StrataError(
        .resourceExhausted,
        "probe limit: namespace '\(namespace.name)' had more than \(limit) misses a second (\(setting)); retry later")
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
  /// Rate buckets of namespaces with a rate limit; one entry per namespace that made a request
  /// (namespaces come from configured tokens, so these stay few).
  private var requestBuckets: [Namespace: TokenBucket] = [:]
  private var lookupBuckets: [Namespace: TokenBucket] = [:]
  private var missBuckets: [Namespace: TokenBucket] = [:]

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
    let namespaceMax = limits.quotas[namespace].inflightBytesMax
    guard inflightByNamespace[namespace, default: 0] + bytes <= namespaceMax else {
      throw .namespaceInflight(
        namespace: namespace, limit: namespaceMax,
        setting: limits.quotas.setting(
          \.inflightBytesMax, of: namespace, entry: "inflight", default: "limits.max_inflight_bytes_per_namespace"))
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

  /// Takes one request of `namespace`'s rate (`now` in nanoseconds), or refuses.
  public mutating func admitRequest(for namespace: Namespace, now: UInt64) throws(AdmissionRefusal) {
    guard let rate = limits.quotas[namespace].requestsPerSecond else { return }
    guard Self.take(&requestBuckets, namespace, rate: rate, count: 1, now: now) else {
      throw .requestRate(
        namespace: namespace, limit: rate,
        setting: limits.quotas.setting(
          \.requestsPerSecond, of: namespace, entry: "requests_per_second",
          default: "limits.requests_per_second_per_namespace"))
    }
  }

  /// Before a LOOKUP of `keys` keys or a GET (`keys` 0): takes the keys from the namespace's probe
  /// budget and refuses while its misses are over their budget.
  public mutating func admitProbe(keys: Int, for namespace: Namespace, now: UInt64) throws(AdmissionRefusal) {
    let quota = limits.quotas[namespace]
    if let rate = quota.missesPerSecond {
      var bucket = missBuckets[namespace] ?? TokenBucket(ratePerSecond: rate, now: now)
      let credit = bucket.hasCredit(now: now)
      missBuckets[namespace] = bucket
      guard credit else {
        throw .misses(
          namespace: namespace, limit: rate,
          setting: limits.quotas.setting(
            \.missesPerSecond, of: namespace, entry: "misses_per_second",
            default: "limits.misses_per_second_per_namespace"))
      }
    }
    if keys > 0, let rate = quota.lookupKeysPerSecond {
      guard Self.take(&lookupBuckets, namespace, rate: rate, count: keys, now: now) else {
        throw .lookupKeys(
          namespace: namespace, limit: rate, asked: keys,
          setting: limits.quotas.setting(
            \.lookupKeysPerSecond, of: namespace, entry: "lookup_keys_per_second",
            default: "limits.lookup_keys_per_second_per_namespace"))
      }
    }
  }

  /// Charges `misses` (absent LOOKUP keys, missing GET items) to the namespace's miss budget.
  public mutating func chargeMisses(_ misses: Int, for namespace: Namespace, now: UInt64) {
    guard misses > 0, let rate = limits.quotas[namespace].missesPerSecond else { return }
    var bucket = missBuckets[namespace] ?? TokenBucket(ratePerSecond: rate, now: now)
    bucket.charge(misses, now: now)
    missBuckets[namespace] = bucket
  }

  private static func take(
    _ buckets: inout [Namespace: TokenBucket], _ namespace: Namespace, rate: Int, count: Int, now: UInt64
  ) -> Bool {
    var bucket = buckets[namespace] ?? TokenBucket(ratePerSecond: rate, now: now)
    defer { buckets[namespace] = bucket }
    return bucket.take(count, now: now)
  }

  private static func decrement<Key: Hashable>(_ table: inout [Key: Int], _ key: Key, by amount: Int) {
    let left = table[key, default: 0] - amount
    precondition(left >= 0, "Admission: a count went below zero")
    table[key] = left == 0 ? nil : left
  }
}
