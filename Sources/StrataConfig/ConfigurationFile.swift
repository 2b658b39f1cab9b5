// Reads a node configuration from YAML: every key is known or reported, every value is typed
// and checked, and each problem names its field (e.g. `nvme.paths[1].capacity`) and line.

public import StrataCore
import Yams

extension NodeConfiguration {
  /// Parses YAML text over the embedded defaults. Throws `invalidConfiguration` listing every
  /// problem found (unknown fields, wrong types, bad units); does not run `validate(on:)`.
  public init(yaml text: String) throws(StrataError) {
    self.init()
    let root: Yams.Node?
    do {
      root = try Yams.compose(yaml: text)
    } catch {
      throw StrataError(.invalidConfiguration, "not valid YAML: \(error)")
    }
    var reader = ConfigurationReader()
    if let root { reader.read(root, into: &self) }
    guard reader.problems.isEmpty else {
      throw StrataError(.invalidConfiguration, reader.problems.map(\.description).joined(separator: "\n"))
    }
  }

  /// The configuration as YAML, in the same shape that `init(yaml:)` reads.
  public var yaml: String {
    var lines: [String] = []
    lines.append("node:")
    lines.append("  id: \(quoted(node.id))")
    lines.append("  zone: \(quoted(node.zone))")
    lines.append("listen: \(quoted(listen.description))")
    lines.append("data_dir: \(quoted(dataDirectory))")
    lines.append("ram:")
    lines.append("  capacity: \(ram.capacity)")
    lines.append("  lock: \(ram.lock)")
    lines.append("  huge_pages: \(ram.hugePages)")
    lines.append("nvme:")
    lines.append("  paths:")
    for path in effectiveNVMePaths {
      lines.append("    - path: \(quoted(path.path))")
      lines.append("      capacity: \(path.capacity)")
    }
    lines.append("  region_size: \(nvme.regionSize)")
    lines.append("  admission: \(nvme.admission.rawValue)")
    lines.append("  compression: \(nvme.compression.rawValue)")
    lines.append("  writeback_window: \(nvme.writebackWindow)")
    lines.append("limits:")
    lines.append("  max_block_size: \(limits.blockBytesMax)")
    lines.append("  max_connections: \(limits.connectionsMax)")
    lines.append("  max_inflight_bytes_per_connection: \(limits.inflightBytesPerConnectionMax)")
    lines.append("  max_inflight_bytes: \(limits.inflightBytesMax)")
    lines.append("  max_leases: \(limits.leasesMax)")
    lines.append("  lease_duration: \(limits.leaseDuration)")
    lines.append("  max_connections_per_source: \(limits.connectionsPerSourceMax)")
    lines.append("  max_connections_per_namespace: \(limits.connectionsPerNamespaceMax)")
    lines.append("  max_handshakes: \(limits.handshakesMax)")
    lines.append("  handshake_timeout: \(limits.handshakeTimeout)")
    lines.append("  idle_timeout: \(limits.idleTimeout)")
    lines.append("  request_timeout: \(limits.requestTimeout)")
    lines.append("  min_transfer_rate: \(limits.minTransferRate)")
    lines.append("  max_inflight_bytes_per_namespace: \(limits.inflightBytesPerNamespaceMax)")
    lines.append("  max_leases_per_connection: \(limits.leasesPerConnectionMax)")
    lines.append("  max_leases_per_namespace: \(limits.leasesPerNamespaceMax)")
    lines.append("  max_pinned_bytes_per_namespace: \(limits.pinnedBytesPerNamespaceMax.map { "\($0)" } ?? "auto")")
    lines.append("  max_ram_bytes_per_namespace: \(limits.ramBytesPerNamespaceMax.map { "\($0)" } ?? "unlimited")")
    lines.append("  max_nvme_bytes_per_namespace: \(limits.nvmeBytesPerNamespaceMax.map { "\($0)" } ?? "unlimited")")
    lines.append(
      "  requests_per_second_per_namespace: \(limits.requestsPerSecondPerNamespace.map(String.init) ?? "unlimited")")
    lines.append(
      "  lookup_keys_per_second_per_namespace: \(limits.lookupKeysPerSecondPerNamespace.map(String.init) ?? "unlimited")"
    )
    lines.append(
      "  misses_per_second_per_namespace: \(limits.missesPerSecondPerNamespace.map(String.init) ?? "unlimited")")
    lines.append("cluster:")
    lines.append("  peers: [\(cluster.peers.map { quoted($0.description) }.joined(separator: ", "))]")
    lines.append("  etcd: \(quoted(cluster.etcd))")
    lines.append("  replicas: \(cluster.replicas.map(String.init) ?? "auto")")
    lines.append("  write_quorum: \(cluster.writeQuorum.map(String.init) ?? "auto")")
    lines.append("  advertise: \(quoted(cluster.advertise?.description ?? ""))")
    lines.append("  etcd_prefix: \(quoted(cluster.etcdPrefix))")
    lines.append("  lease_ttl: \(cluster.leaseTTL)")
    lines.append("  replication_queue: \(cluster.replicationQueueMax)")
    lines.append("  fill_window: \(cluster.fillWindow)")
    lines.append("  probe_interval: \(cluster.probeInterval)")
    lines.append("  token: \(quoted(cluster.token))")
    lines.append("  etcd_ca: \(quoted(cluster.etcdCA))")
    lines.append("  etcd_cert: \(quoted(cluster.etcdCertificate))")
    lines.append("  etcd_key: \(quoted(cluster.etcdKey))")
    lines.append("  etcd_user: \(quoted(cluster.etcdUser))")
    lines.append("  etcd_password: \(quoted(cluster.etcdPassword))")
    lines.append("auth:")
    lines.append("  tokens:\(auth.tokens.isEmpty ? " []" : "")")
    for token in auth.tokens {
      // Only the digest is ever written: a printed configuration holds no secret.
      lines.append("    - token: \(quoted(token.digest.description))")
      lines.append("      namespace: \(quoted(token.namespace.name))")
      lines.append("      scopes: [\(token.scopes.names.joined(separator: ", "))]")
    }
    lines.append("namespaces:\(namespaces.isEmpty ? " []" : "")")
    for entry in namespaces {
      lines.append("  - namespace: \(quoted(entry.namespace.name))")
      for (name, value) in [
        ("ram", entry.ramBytesMax), ("nvme", entry.nvmeBytesMax), ("pinned", entry.pinnedBytesMax),
        ("inflight", entry.inflightBytesMax),
      ] {
        if let value { lines.append("    \(name): \(value)") }
      }
      for (name, value) in [
        ("requests_per_second", entry.requestsPerSecond), ("lookup_keys_per_second", entry.lookupKeysPerSecond),
        ("misses_per_second", entry.missesPerSecond),
      ] {
        if let value { lines.append("    \(name): \(value)") }
      }
    }
    lines.append("admin:")
    lines.append("  listen: \(quoted(admin.listen.description))")
    lines.append("  enabled: \(admin.enabled)")
    lines.append("  connections: \(admin.connectionsMax)")
    lines.append("  request_timeout: \(admin.requestTimeout)")
    lines.append("same_host:")
    lines.append("  enabled: \(sameHost.enabled)")
    lines.append("  socket: \(quoted(sameHost.socket))")
    lines.append("  max_region_size: \(sameHost.maxRegionSize)")
    lines.append("tls:")
    lines.append("  cert: \(quoted(tls.certificate))")
    lines.append("  key: \(quoted(tls.key))")
    lines.append("  ca: \(quoted(tls.clusterCA))")
    lines.append("  client_ca: \(quoted(tls.clientCA))")
    lines.append("  require_client_cert: \(tls.requireClientCertificate)")
    lines.append("  kernel: \(tls.kernel)")
    lines.append("insecure: \(insecure)")
    return lines.joined(separator: "\n") + "\n"
  }

  private func quoted(_ text: String) -> String {
    "\"" + text.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"") + "\""
  }
}

/// Walks the YAML tree, collecting problems instead of stopping at the first.
private struct ConfigurationReader {
  var problems: [ConfigurationProblem] = []

  mutating func read(_ root: Yams.Node, into config: inout NodeConfiguration) {
    let top = fields(
      root, "",
      known: [
        "node", "listen", "data_dir", "ram", "nvme", "limits", "cluster", "auth", "admin", "namespaces", "same_host",
        "tls", "insecure",
      ])
    if let value = top["insecure"].flatMap({ bool($0, "insecure") }) { config.insecure = value }
    if let tls = top["tls"] {
      let fields = fields(
        tls, "tls", known: ["cert", "key", "ca", "client_ca", "require_client_cert", "kernel"])
      if let value = fields["cert"].flatMap({ string($0, "tls.cert") }) { config.tls.certificate = value }
      if let value = fields["key"].flatMap({ string($0, "tls.key") }) { config.tls.key = value }
      if let value = fields["ca"].flatMap({ string($0, "tls.ca") }) { config.tls.clusterCA = value }
      if let value = fields["client_ca"].flatMap({ string($0, "tls.client_ca") }) { config.tls.clientCA = value }
      if let value = fields["require_client_cert"].flatMap({ bool($0, "tls.require_client_cert") }) {
        config.tls.requireClientCertificate = value
      }
      if let value = fields["kernel"].flatMap({ bool($0, "tls.kernel") }) { config.tls.kernel = value }
    }
    if let node = top["node"] {
      let fields = fields(node, "node", known: ["id", "zone"])
      if let value = fields["id"].flatMap({ string($0, "node.id") }) { config.node.id = value }
      if let value = fields["zone"].flatMap({ string($0, "node.zone") }) { config.node.zone = value }
    }
    if let value = top["listen"].flatMap({
      parsed($0, "listen") { (text: String) throws(StrataError) in try HostPort(parsing: text, allowAnyPort: true) }
    }) {
      config.listen = value
    }
    if let value = top["data_dir"].flatMap({ string($0, "data_dir") }) { config.dataDirectory = value }
    if let ram = top["ram"] {
      let fields = fields(ram, "ram", known: ["capacity", "lock", "huge_pages"])
      if let value = fields["capacity"].flatMap({ size($0, "ram.capacity") }) { config.ram.capacity = value }
      if let value = fields["lock"].flatMap({ bool($0, "ram.lock") }) { config.ram.lock = value }
      if let value = fields["huge_pages"].flatMap({ bool($0, "ram.huge_pages") }) { config.ram.hugePages = value }
    }
    if let nvme = top["nvme"] {
      let fields = fields(
        nvme, "nvme", known: ["paths", "capacity", "region_size", "admission", "compression", "writeback_window"])
      if let paths = fields["paths"] { config.nvme.paths = nvmePaths(paths) }
      if let value = fields["capacity"].flatMap({ size($0, "nvme.capacity") }) { config.nvme.defaultCapacity = value }
      if let value = fields["region_size"].flatMap({ size($0, "nvme.region_size") }) { config.nvme.regionSize = value }
      if let value = fields["admission"].flatMap({ choice($0, "nvme.admission", AdmissionPolicy.self) }) {
        config.nvme.admission = value
      }
      if let value = fields["compression"].flatMap({ choice($0, "nvme.compression", CompressionCodec.self) }) {
        config.nvme.compression = value
      }
      if let value = fields["writeback_window"].flatMap({
        parsed($0, "nvme.writeback_window", DurationSetting.init(parsing:))
      }) {
        config.nvme.writebackWindow = value
      }
    }
    var limitFields: [String: Yams.Node] = [:]
    if let limits = top["limits"] {
      let fields = fields(
        limits, "limits",
        known: [
          "max_block_size", "max_connections", "max_inflight_bytes_per_connection", "max_inflight_bytes",
          "max_leases", "lease_duration", "max_connections_per_source", "max_connections_per_namespace",
          "max_handshakes", "handshake_timeout", "idle_timeout", "request_timeout", "min_transfer_rate",
          "max_inflight_bytes_per_namespace", "max_leases_per_connection", "max_leases_per_namespace",
          "max_pinned_bytes_per_namespace", "max_ram_bytes_per_namespace", "max_nvme_bytes_per_namespace",
          "requests_per_second_per_namespace", "lookup_keys_per_second_per_namespace",
          "misses_per_second_per_namespace",
        ])
      if let value = fields["max_block_size"].flatMap({ size($0, "limits.max_block_size") }) {
        config.limits.blockBytesMax = value
      }
      if let value = fields["max_connections"].flatMap({ int($0, "limits.max_connections") }) {
        config.limits.connectionsMax = value
      }
      if let value = fields["max_inflight_bytes_per_connection"].flatMap({
        size($0, "limits.max_inflight_bytes_per_connection")
      }) {
        config.limits.inflightBytesPerConnectionMax = value
      }
      if let value = fields["max_inflight_bytes"].flatMap({ size($0, "limits.max_inflight_bytes") }) {
        config.limits.inflightBytesMax = value
      }
      if let value = fields["max_leases"].flatMap({ int($0, "limits.max_leases") }) { config.limits.leasesMax = value }
      if let value = fields["lease_duration"].flatMap({
        parsed($0, "limits.lease_duration", DurationSetting.init(parsing:))
      }) {
        config.limits.leaseDuration = value
      }
      if let value = fields["max_connections_per_source"].flatMap({ int($0, "limits.max_connections_per_source") }) {
        config.limits.connectionsPerSourceMax = value
      }
      if let value = fields["max_connections_per_namespace"].flatMap({
        int($0, "limits.max_connections_per_namespace")
      }) {
        config.limits.connectionsPerNamespaceMax = value
      }
      if let value = fields["max_handshakes"].flatMap({ int($0, "limits.max_handshakes") }) {
        config.limits.handshakesMax = value
      }
      for (name, path) in [
        ("handshake_timeout", \NodeConfiguration.Limits.handshakeTimeout),
        ("idle_timeout", \NodeConfiguration.Limits.idleTimeout),
        ("request_timeout", \NodeConfiguration.Limits.requestTimeout),
      ] {
        if let value = fields[name].flatMap({ parsed($0, "limits.\(name)", DurationSetting.init(parsing:)) }) {
          config.limits[keyPath: path] = value
        }
      }
      if let value = fields["min_transfer_rate"].flatMap({ size($0, "limits.min_transfer_rate") }) {
        config.limits.minTransferRate = value
      }
      if let value = fields["max_inflight_bytes_per_namespace"].flatMap({
        size($0, "limits.max_inflight_bytes_per_namespace")
      }) {
        config.limits.inflightBytesPerNamespaceMax = value
      }
      if let value = fields["max_leases_per_connection"].flatMap({ int($0, "limits.max_leases_per_connection") }) {
        config.limits.leasesPerConnectionMax = value
      }
      if let value = fields["max_leases_per_namespace"].flatMap({ int($0, "limits.max_leases_per_namespace") }) {
        config.limits.leasesPerNamespaceMax = value
      }
      limitFields = fields
      if let node = fields["max_pinned_bytes_per_namespace"] {
        if case .scalar(let scalar) = node, scalar.string == "auto" {
          config.limits.pinnedBytesPerNamespaceMax = nil
        } else if let value = size(node, "limits.max_pinned_bytes_per_namespace") {
          config.limits.pinnedBytesPerNamespaceMax = value
        }
      }
    }
    for (name, path) in [
      ("max_ram_bytes_per_namespace", \NodeConfiguration.Limits.ramBytesPerNamespaceMax),
      ("max_nvme_bytes_per_namespace", \NodeConfiguration.Limits.nvmeBytesPerNamespaceMax),
    ] {
      if let node = limitFields[name], let value = optionalSize(node, "limits.\(name)") {
        config.limits[keyPath: path] = value
      }
    }
    for (name, path) in [
      ("requests_per_second_per_namespace", \NodeConfiguration.Limits.requestsPerSecondPerNamespace),
      ("lookup_keys_per_second_per_namespace", \NodeConfiguration.Limits.lookupKeysPerSecondPerNamespace),
      ("misses_per_second_per_namespace", \NodeConfiguration.Limits.missesPerSecondPerNamespace),
    ] {
      if let node = limitFields[name], let value = optionalInt(node, "limits.\(name)") {
        config.limits[keyPath: path] = value
      }
    }
    if let namespaces = top["namespaces"] { config.namespaces = namespaceSettings(namespaces) }
    if let auth = top["auth"] {
      let fields = fields(auth, "auth", known: ["tokens"])
      if let tokens = fields["tokens"] {
        if case .sequence(let items) = tokens {
          for (index, item) in items.enumerated() {
            let field = "auth.tokens[\(index)]"
            let entry = self.fields(item, field, known: ["token", "namespace", "admin", "scopes"])
            guard let tokenNode = entry["token"], let namespaceNode = entry["namespace"] else {
              if case .mapping = item { problem(field, item, "needs both token and namespace") }
              continue
            }
            var scopes: TokenScopes? = nil
            if let scopesNode = entry["scopes"] {
              if entry["admin"] != nil {
                problem("\(field).admin", entry["admin"], "give scopes or admin, not both (admin: true is every scope)")
              }
              scopes = tokenScopes(scopesNode, "\(field).scopes")
            } else {
              let admin = entry["admin"].flatMap { bool($0, "\(field).admin") } ?? false
              scopes = admin ? .all : .tenantDefault
            }
            guard let scopes, let text = string(tokenNode, "\(field).token"),
              let namespace = parsed(
                namespaceNode, "\(field).namespace",
                { (text: String) throws(StrataError) in
                  try Namespace(text)
                })
            else { continue }
            if TokenDigest.isDigestForm(text) {
              if let digest = parsed(tokenNode, "\(field).token", TokenDigest.init(parsing:)) {
                config.auth.tokens.append(.init(digest: digest, namespace: namespace, scopes: scopes))
              }
            } else {
              config.auth.tokens.append(.init(token: text, namespace: namespace, scopes: scopes))
            }
          }
        } else {
          problem("auth.tokens", tokens, "expected a list of {token, namespace, scopes}")
        }
      }
    }
    if let sameHost = top["same_host"] {
      let fields = fields(sameHost, "same_host", known: ["enabled", "socket", "max_region_size"])
      if let value = fields["enabled"].flatMap({ bool($0, "same_host.enabled") }) { config.sameHost.enabled = value }
      if let value = fields["socket"].flatMap({ string($0, "same_host.socket") }) { config.sameHost.socket = value }
      if let value = fields["max_region_size"].flatMap({ size($0, "same_host.max_region_size") }) {
        config.sameHost.maxRegionSize = value
      }
    }
    if let admin = top["admin"] {
      let fields = fields(admin, "admin", known: ["listen", "enabled", "connections", "request_timeout"])
      if let value = fields["listen"].flatMap({
        parsed($0, "admin.listen") { (text: String) throws(StrataError) in
          try HostPort(parsing: text, allowAnyPort: true)
        }
      }) {
        config.admin.listen = value
      }
      if let value = fields["enabled"].flatMap({ bool($0, "admin.enabled") }) { config.admin.enabled = value }
      if let value = fields["connections"].flatMap({ int($0, "admin.connections") }) {
        config.admin.connectionsMax = value
      }
      if let value = fields["request_timeout"].flatMap({
        parsed($0, "admin.request_timeout", DurationSetting.init(parsing:))
      }) {
        config.admin.requestTimeout = value
      }
    }
    if let cluster = top["cluster"] {
      let fields = fields(
        cluster, "cluster",
        known: [
          "peers", "etcd", "replicas", "advertise", "etcd_prefix", "lease_ttl", "replication_queue", "fill_window",
          "probe_interval", "token", "write_quorum", "etcd_ca", "etcd_cert", "etcd_key", "etcd_user",
          "etcd_password",
        ])
      if let value = fields["token"].flatMap({ string($0, "cluster.token") }) { config.cluster.token = value }
      if let value = fields["etcd_ca"].flatMap({ string($0, "cluster.etcd_ca") }) { config.cluster.etcdCA = value }
      if let value = fields["etcd_cert"].flatMap({ string($0, "cluster.etcd_cert") }) {
        config.cluster.etcdCertificate = value
      }
      if let value = fields["etcd_key"].flatMap({ string($0, "cluster.etcd_key") }) { config.cluster.etcdKey = value }
      if let value = fields["etcd_user"].flatMap({ string($0, "cluster.etcd_user") }) {
        config.cluster.etcdUser = value
      }
      if let value = fields["etcd_password"].flatMap({ string($0, "cluster.etcd_password") }) {
        config.cluster.etcdPassword = value
      }
      if let peers = fields["peers"] {
        if case .sequence(let items) = peers {
          config.cluster.peers = items.enumerated().compactMap { index, item in
            parsed(
              item, "cluster.peers[\(index)]", { (text: String) throws(StrataError) in try HostPort(parsing: text) })
          }
        } else {
          problem("cluster.peers", peers, "expected a list of HOST:PORT")
        }
      }
      if let value = fields["etcd"].flatMap({ string($0, "cluster.etcd") }) { config.cluster.etcd = value }
      if let replicas = fields["replicas"] {
        if replicas.string == "auto" {
          config.cluster.replicas = nil
        } else if let value = int(replicas, "cluster.replicas") {
          config.cluster.replicas = value
        }
      }
      if let quorum = fields["write_quorum"] {
        if quorum.string == "auto" {
          config.cluster.writeQuorum = nil
        } else if let value = int(quorum, "cluster.write_quorum") {
          config.cluster.writeQuorum = value
        }
      }
      if let node = fields["advertise"], let text = string(node, "cluster.advertise"), !text.isEmpty {
        config.cluster.advertise = parsed(
          node, "cluster.advertise", { (text: String) throws(StrataError) in try HostPort(parsing: text) })
      }
      if let value = fields["etcd_prefix"].flatMap({ string($0, "cluster.etcd_prefix") }) {
        config.cluster.etcdPrefix = value
      }
      if let value = fields["lease_ttl"].flatMap({ parsed($0, "cluster.lease_ttl", DurationSetting.init(parsing:)) }) {
        config.cluster.leaseTTL = value
      }
      if let value = fields["replication_queue"].flatMap({ int($0, "cluster.replication_queue") }) {
        config.cluster.replicationQueueMax = value
      }
      if let value = fields["fill_window"].flatMap({ parsed($0, "cluster.fill_window", DurationSetting.init(parsing:)) }
      ) {
        config.cluster.fillWindow = value
      }
      if let value = fields["probe_interval"].flatMap({
        parsed($0, "cluster.probe_interval", DurationSetting.init(parsing:))
      }) {
        config.cluster.probeInterval = value
      }
    }
  }

  private mutating func tokenScopes(_ node: Yams.Node, _ field: String) -> TokenScopes? {
    guard case .sequence(let items) = node else {
      problem(field, node, "expected a list of scopes: read, write, delete, operator")
      return nil
    }
    var scopes: TokenScopes = []
    for item in items {
      guard let name = string(item, field) else { return nil }
      guard let scope = TokenScopes(name: name) else {
        problem(field, item, "'\(name)' is not a scope; known: read, write, delete, operator")
        return nil
      }
      scopes.insert(scope)
    }
    return scopes
  }

  /// A size, or nil for `unlimited` (as `.some(nil)`); nil when the value is wrong.
  private mutating func optionalSize(_ node: Yams.Node, _ field: String) -> ByteSize?? {
    if case .scalar(let scalar) = node, scalar.string == "unlimited" { return .some(nil) }
    return size(node, field).map { .some($0) }
  }

  private mutating func optionalInt(_ node: Yams.Node, _ field: String) -> Int?? {
    if case .scalar(let scalar) = node, scalar.string == "unlimited" { return .some(nil) }
    return int(node, field).map { .some($0) }
  }

  private mutating func namespaceSettings(_ node: Yams.Node) -> [NodeConfiguration.NamespaceSettings] {
    guard case .sequence(let items) = node else {
      problem("namespaces", node, "expected a list of {namespace, ram, nvme, pinned, inflight, ...}")
      return []
    }
    var result: [NodeConfiguration.NamespaceSettings] = []
    for (index, item) in items.enumerated() {
      let field = "namespaces[\(index)]"
      let entry = fields(
        item, field,
        known: [
          "namespace", "ram", "nvme", "pinned", "inflight", "requests_per_second", "lookup_keys_per_second",
          "misses_per_second",
        ])
      guard let nameNode = entry["namespace"] else {
        if case .mapping = item { problem(field, item, "needs a namespace") }
        continue
      }
      guard
        let namespace = parsed(
          nameNode, "\(field).namespace", { (text: String) throws(StrataError) in try Namespace(text) })
      else { continue }
      var settings = NodeConfiguration.NamespaceSettings(namespace: namespace)
      settings.ramBytesMax = entry["ram"].flatMap { size($0, "\(field).ram") }
      settings.nvmeBytesMax = entry["nvme"].flatMap { size($0, "\(field).nvme") }
      settings.pinnedBytesMax = entry["pinned"].flatMap { size($0, "\(field).pinned") }
      settings.inflightBytesMax = entry["inflight"].flatMap { size($0, "\(field).inflight") }
      settings.requestsPerSecond = entry["requests_per_second"].flatMap { int($0, "\(field).requests_per_second") }
      settings.lookupKeysPerSecond = entry["lookup_keys_per_second"].flatMap {
        int($0, "\(field).lookup_keys_per_second")
      }
      settings.missesPerSecond = entry["misses_per_second"].flatMap { int($0, "\(field).misses_per_second") }
      result.append(settings)
    }
    return result
  }

  private mutating func nvmePaths(_ node: Yams.Node) -> [NVMePath] {
    guard case .sequence(let items) = node else {
      problem("nvme.paths", node, "expected a list of {path, capacity}")
      return []
    }
    var paths: [NVMePath] = []
    for (index, item) in items.enumerated() {
      let field = "nvme.paths[\(index)]"
      let entry = fields(item, field, known: ["path", "capacity"])
      guard let pathNode = entry["path"], let capacityNode = entry["capacity"] else {
        if case .mapping = item { problem(field, item, "needs both path and capacity") }
        continue
      }
      if let path = string(pathNode, "\(field).path"), let capacity = size(capacityNode, "\(field).capacity") {
        paths.append(NVMePath(path: path, capacity: capacity))
      }
    }
    return paths
  }

  private mutating func problem(_ field: String, _ node: Yams.Node?, _ reason: String) {
    let line = node?.mark.map { " (line \($0.line))" } ?? ""
    problems.append(ConfigurationProblem(field: field.isEmpty ? "(top level)" : field, reason: reason + line))
  }

  /// The fields of a mapping; reports non-mappings, unknown keys (with a suggestion) and repeats.
  private mutating func fields(_ node: Yams.Node, _ path: String, known: [String]) -> [String: Yams.Node] {
    guard case .mapping(let mapping) = node else {
      problem(path, node, "expected a mapping with fields \(known.joined(separator: ", "))")
      return [:]
    }
    var result: [String: Yams.Node] = [:]
    for (keyNode, value) in mapping {
      let name = keyNode.string ?? ""
      let field = path.isEmpty ? name : "\(path).\(name)"
      guard known.contains(name) else {
        let suggestion = known.min(by: { editDistance($0, name) < editDistance($1, name) })
        let hint = suggestion.flatMap { editDistance($0, name) <= 2 ? " (did you mean \($0)?)" : nil } ?? ""
        problem(field, keyNode, "unknown field\(hint); known fields here: \(known.joined(separator: ", "))")
        continue
      }
      guard result[name] == nil else {
        problem(field, keyNode, "given twice")
        continue
      }
      result[name] = value
    }
    return result
  }

  private mutating func scalar(_ node: Yams.Node, _ field: String, _ expected: String) -> String? {
    guard case .scalar(let scalar) = node else {
      problem(field, node, "expected \(expected)")
      return nil
    }
    return scalar.string
  }

  private mutating func string(_ node: Yams.Node, _ field: String) -> String? {
    scalar(node, field, "a string")
  }

  private mutating func bool(_ node: Yams.Node, _ field: String) -> Bool? {
    guard let text = scalar(node, field, "true or false") else { return nil }
    switch text {
    case "true": return true
    case "false": return false
    default:
      problem(field, node, "'\(text)' is not true or false")
      return nil
    }
  }

  private mutating func int(_ node: Yams.Node, _ field: String) -> Int? {
    guard let text = scalar(node, field, "a whole number") else { return nil }
    guard let value = Int(text.replacingAll("_", with: "")) else {
      problem(field, node, "'\(text)' is not a whole number")
      return nil
    }
    return value
  }

  private mutating func size(_ node: Yams.Node, _ field: String) -> ByteSize? {
    parsed(node, field, ByteSize.init(parsing:))
  }

  private mutating func parsed<T>(
    _ node: Yams.Node, _ field: String, _ parse: (String) throws(StrataError) -> T
  ) -> T? {
    guard let text = scalar(node, field, "a value") else { return nil }
    do {
      return try parse(text)
    } catch {
      problem(field, node, error.message)
      return nil
    }
  }

  private mutating func choice<T: RawRepresentable & CaseIterable>(
    _ node: Yams.Node, _ field: String, _ type: T.Type
  ) -> T? where T.RawValue == String {
    guard let text = scalar(node, field, "one of \(T.allCases.map(\.rawValue).joined(separator: ", "))") else {
      return nil
    }
    guard let value = T(rawValue: text) else {
      problem(field, node, "'\(text)' is not one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
      return nil
    }
    return value
  }
}

/// Levenshtein distance, for "did you mean" hints on misspelt field names.
private func editDistance(_ a: String, _ b: String) -> Int {
  let a = Array(a.utf8)
  let b = Array(b.utf8)
  guard !a.isEmpty else { return b.count }
  guard !b.isEmpty else { return a.count }
  var previous = Array(0...b.count)
  var current = [Int](repeating: 0, count: b.count + 1)
  for i in 1...a.count {
    current[0] = i
    for j in 1...b.count {
      current[j] = Swift.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
    }
    swap(&previous, &current)
  }
  return previous[b.count]
}

extension String {
  func replacingAll(_ target: Character, with replacement: String) -> String {
    split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
  }
}
