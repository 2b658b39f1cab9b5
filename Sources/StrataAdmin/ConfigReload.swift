// Config reload: which settings changed between two readings of a node's configuration file,
// and which of them a running node can take without a restart.

public import StrataConfig
public import StrataCore

/// The outcome of `POST /v1/config/reload`.
public struct ReloadReport: Sendable, Hashable {
  /// Changed settings now in force.
  public var applied: [String] = []
  /// Changed settings that take effect at the next start.
  public var needsRestart: [String] = []
  /// Problems that kept the new file from being used at all (nothing was applied).
  public var rejected: [String] = []

  public init() {}

  public var json: JSONValue {
    .object([
      "applied": .array(applied.map(JSONValue.string)),
      "needs_restart": .array(needsRestart.map(JSONValue.string)),
      "rejected": .array(rejected.map(JSONValue.string)),
    ])
  }
}

extension NodeConfiguration {
  /// The fields (as written in the file) whose values differ between `self` and `other`.
  public func changedFields(comparedTo other: NodeConfiguration) -> [String] {
    var changed: [String] = []
    func compare<T: Equatable>(_ field: String, _ path: KeyPath<NodeConfiguration, T>) {
      if self[keyPath: path] != other[keyPath: path] { changed.append(field) }
    }
    compare("node.id", \.node.id)
    compare("node.zone", \.node.zone)
    compare("listen", \.listen)
    compare("data_dir", \.dataDirectory)
    compare("ram.capacity", \.ram.capacity)
    compare("ram.lock", \.ram.lock)
    compare("ram.huge_pages", \.ram.hugePages)
    compare("nvme.paths", \.nvme.paths)
    compare("nvme.capacity", \.nvme.defaultCapacity)
    compare("nvme.region_size", \.nvme.regionSize)
    compare("nvme.admission", \.nvme.admission)
    compare("nvme.compression", \.nvme.compression)
    compare("limits.max_block_size", \.limits.blockBytesMax)
    compare("limits.max_connections", \.limits.connectionsMax)
    compare("limits.max_inflight_bytes_per_connection", \.limits.inflightBytesPerConnectionMax)
    compare("limits.max_inflight_bytes", \.limits.inflightBytesMax)
    compare("limits.max_leases", \.limits.leasesMax)
    compare("limits.lease_duration", \.limits.leaseDuration)
    compare("cluster.peers", \.cluster.peers)
    compare("cluster.etcd", \.cluster.etcd)
    compare("cluster.replicas", \.cluster.replicas)
    compare("limits.max_inflight_bytes_per_namespace", \.limits.inflightBytesPerNamespaceMax)
    compare("limits.max_pinned_bytes_per_namespace", \.limits.pinnedBytesPerNamespaceMax)
    compare("limits.max_ram_bytes_per_namespace", \.limits.ramBytesPerNamespaceMax)
    compare("limits.max_nvme_bytes_per_namespace", \.limits.nvmeBytesPerNamespaceMax)
    compare("limits.requests_per_second_per_namespace", \.limits.requestsPerSecondPerNamespace)
    compare("limits.lookup_keys_per_second_per_namespace", \.limits.lookupKeysPerSecondPerNamespace)
    compare("limits.misses_per_second_per_namespace", \.limits.missesPerSecondPerNamespace)
    compare("namespaces", \.namespaces)
    compare("auth.tokens", \.auth.tokens)
    compare("admin.listen", \.admin.listen)
    compare("admin.enabled", \.admin.enabled)
    compare("admin.connections", \.admin.connectionsMax)
    compare("admin.request_timeout", \.admin.requestTimeout)
    compare("tls.cert", \.tls.certificate)
    compare("tls.key", \.tls.key)
    compare("tls.ca", \.tls.clusterCA)
    compare("tls.client_ca", \.tls.clientCA)
    compare("tls.require_client_cert", \.tls.requireClientCertificate)
    compare("tls.kernel", \.tls.kernel)
    compare("insecure", \.insecure)
    return changed
  }
}

/// Applies the safe part of a new configuration; returns the fields it put in force. Appliers are
/// registered by modules (the node registers one for auth.tokens; the cluster module may add its own).
public typealias ReloadApplier = @Sendable (_ old: NodeConfiguration, _ new: NodeConfiguration) -> [String]
