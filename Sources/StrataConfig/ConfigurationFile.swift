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

  /// The configuration as YAML, in the same shape that `init(yaml:)` reads: both walk
  /// `ConfigurationField.schema`.
  public var yaml: String {
    ConfigurationField.schema.compactMap { $0.printed(self, indent: "") }.joined(separator: "\n") + "\n"
  }

  /// The fields (as written in the file: `limits.max_leases`, `auth.tokens`) whose values differ
  /// between `self` and `other`, in the file's order. Walks the same schema, so every field the
  /// file can hold is compared: a reload never leaves a changed setting unreported.
  public func changedFields(comparedTo other: NodeConfiguration) -> [String] {
    ConfigurationField.schema.flatMap { $0.changes(from: self, to: other, prefix: "") }
  }
}

/// One field of the YAML file: its name, how it is read into a `Root` (reporting problems by field
/// and line) and how it is printed. The file's whole shape is `schema`, written once: `init(yaml:)`
/// and `yaml` both walk it, so no field can be readable but unprinted, or printed under another name.
private struct ConfigurationField<Root> {
  let name: String
  let read: (inout ConfigurationReader, Yams.Node, _ field: String, inout Root) -> Void
  /// The text after `name:`: the value on the same line (with its leading space), or the lines of
  /// a mapping or list after it. nil: not printed.
  let print: (Root, _ indent: String) -> String?
  /// Whether a value or a list differs between two roots; nil for a section.
  var differs: ((Root, Root) -> Bool)? = nil
  /// A section's fields; nil for a value or a list.
  var children: [ConfigurationField]? = nil

  func printed(_ root: Root, indent: String) -> String? {
    print(root, indent).map { indent + name + ":" + $0 }
  }

  /// The dotted names of the values and lists under this field that differ between `a` and `b`.
  func changes(from a: Root, to b: Root, prefix: String) -> [String] {
    let path = prefix + name
    if let children { return children.flatMap { $0.changes(from: a, to: b, prefix: path + ".") } }
    return differs?(a, b) == true ? [path] : []
  }

  /// A mapping of fields.
  static func section(_ name: String, _ fields: [ConfigurationField]) -> ConfigurationField {
    ConfigurationField(
      name: name,
      read: { reader, node, field, root in reader.read(node, field, fields, into: &root) },
      print: { root, indent in
        "\n" + fields.compactMap { $0.printed(root, indent: indent + "  ") }.joined(separator: "\n")
      }, children: fields)
  }

  /// A scalar: `parse` reads it (nil after reporting a problem), `format` prints it.
  static func value<T: Equatable>(
    _ name: String, _ path: WritableKeyPath<Root, T>,
    parse: @escaping (inout ConfigurationReader, Yams.Node, String) -> T?, format: @escaping (T) -> String?
  ) -> ConfigurationField {
    ConfigurationField(
      name: name,
      read: { reader, node, field, root in
        if let value = parse(&reader, node, field) { root[keyPath: path] = value }
      },
      print: { root, _ in format(root[keyPath: path]).map { " " + $0 } },
      differs: { $0[keyPath: path] != $1[keyPath: path] })
  }

  /// A scalar that may be unset: spelt `none` (`auto`, `unlimited`), or left out when `none` is nil.
  static func optional<T: Equatable>(
    _ name: String, _ path: WritableKeyPath<Root, T?>, none: String?,
    parse: @escaping (inout ConfigurationReader, Yams.Node, String) -> T?
  ) -> ConfigurationField {
    value(
      name, path,
      parse: { reader, node, field -> T?? in
        if let none, case .scalar(let scalar) = node, scalar.string == none { return .some(nil) }
        return parse(&reader, node, field).map { .some($0) }
      },
      format: { $0.map { "\($0)" } ?? none })
  }

  static func string(_ name: String, _ path: WritableKeyPath<Root, String>) -> ConfigurationField {
    value(name, path, parse: { $0.string($1, $2) }, format: quoted)
  }

  static func bool(_ name: String, _ path: WritableKeyPath<Root, Bool>) -> ConfigurationField {
    value(name, path, parse: { $0.bool($1, $2) }, format: { "\($0)" })
  }

  static func int(_ name: String, _ path: WritableKeyPath<Root, Int>) -> ConfigurationField {
    value(name, path, parse: { $0.int($1, $2) }, format: { "\($0)" })
  }

  static func size(_ name: String, _ path: WritableKeyPath<Root, ByteSize>) -> ConfigurationField {
    value(name, path, parse: { $0.size($1, $2) }, format: { "\($0)" })
  }

  static func duration(_ name: String, _ path: WritableKeyPath<Root, DurationSetting>) -> ConfigurationField {
    value(name, path, parse: { $0.parsed($1, $2, DurationSetting.init(parsing:)) }, format: { "\($0)" })
  }

  static func address(_ name: String, _ path: WritableKeyPath<Root, HostPort>) -> ConfigurationField {
    value(
      name, path,
      parse: { reader, node, field in
        reader.parsed(node, field) { (text: String) throws(StrataError) in
          try HostPort(parsing: text, allowAnyPort: true)
        }
      }, format: { quoted($0.description) })
  }

  static func choice<T: RawRepresentable & CaseIterable & Equatable>(
    _ name: String, _ path: WritableKeyPath<Root, T>
  ) -> ConfigurationField where T.RawValue == String {
    value(name, path, parse: { $0.choice($1, $2, T.self) }, format: \.rawValue)
  }

  /// A list of mappings (`of` names their fields), each read with `entry` (nil after reporting a
  /// problem) and printed with `describe` as `- ` and its lines.
  static func list<T: Equatable>(
    _ name: String, of: String, _ path: WritableKeyPath<Root, [T]>, printed: KeyPath<Root, [T]>? = nil,
    entry: @escaping (inout ConfigurationReader, Yams.Node, String) -> T?, describe: @escaping (T) -> [String]
  ) -> ConfigurationField {
    ConfigurationField(
      name: name,
      read: { reader, node, field, root in
        guard case .sequence(let items) = node else {
          reader.problem(field, node, "expected a list of {\(of)}")
          return
        }
        root[keyPath: path] = items.enumerated().compactMap { index, item in entry(&reader, item, "\(field)[\(index)]")
        }
      },
      print: { root, indent in
        let items = root[keyPath: printed ?? path]
        guard !items.isEmpty else { return " []" }
        return items.map { item in
          describe(item).enumerated().map { "\n\(indent)  \($0.offset == 0 ? "-" : " ") \($0.element)" }.joined()
        }.joined()
      },
      differs: { $0[keyPath: path] != $1[keyPath: path] })
  }
}

extension ConfigurationField where Root == NodeConfiguration {
  static var schema: [ConfigurationField] {
    [
      section("node", [string("id", \.node.id), string("zone", \.node.zone)]),
      address("listen", \.listen),
      string("data_dir", \.dataDirectory),
      section(
        "ram", [size("capacity", \.ram.capacity), bool("lock", \.ram.lock), bool("huge_pages", \.ram.hugePages)]),
      section(
        "nvme",
        [
          list(
            "paths", of: "path, capacity", \.nvme.paths, printed: \.effectiveNVMePaths,
            entry: { reader, node, field in
              var path = NVMePath(path: "", capacity: ByteSize(bytes: 0))
              return reader.read(
                node, field, [.string("path", \.path), .size("capacity", \.capacity)], into: &path,
                required: ["path", "capacity"])
                ? path : nil
            }, describe: { ["path: \(quoted($0.path))", "capacity: \($0.capacity)"] }),
          // Not printed: `paths` prints the one path it stands for.
          value("capacity", \.nvme.defaultCapacity, parse: { $0.size($1, $2) }, format: { _ in nil }),
          size("region_size", \.nvme.regionSize),
          choice("admission", \.nvme.admission),
          choice("compression", \.nvme.compression),
          duration("writeback_window", \.nvme.writebackWindow),
        ]),
      section(
        "limits",
        [
          size("max_block_size", \.limits.blockBytesMax),
          int("max_connections", \.limits.connectionsMax),
          size("max_inflight_bytes_per_connection", \.limits.inflightBytesPerConnectionMax),
          size("max_inflight_bytes", \.limits.inflightBytesMax),
          int("max_leases", \.limits.leasesMax),
          duration("lease_duration", \.limits.leaseDuration),
          int("max_connections_per_source", \.limits.connectionsPerSourceMax),
          int("max_connections_per_namespace", \.limits.connectionsPerNamespaceMax),
          int("max_handshakes", \.limits.handshakesMax),
          duration("handshake_timeout", \.limits.handshakeTimeout),
          duration("idle_timeout", \.limits.idleTimeout),
          duration("request_timeout", \.limits.requestTimeout),
          size("min_transfer_rate", \.limits.minTransferRate),
          size("max_inflight_bytes_per_namespace", \.limits.inflightBytesPerNamespaceMax),
          int("max_leases_per_connection", \.limits.leasesPerConnectionMax),
          int("max_leases_per_namespace", \.limits.leasesPerNamespaceMax),
          optional("max_pinned_bytes_per_namespace", \.limits.pinnedBytesPerNamespaceMax, none: "auto") {
            $0.size($1, $2)
          },
          optional("max_ram_bytes_per_namespace", \.limits.ramBytesPerNamespaceMax, none: "unlimited") {
            $0.size($1, $2)
          },
          optional("max_nvme_bytes_per_namespace", \.limits.nvmeBytesPerNamespaceMax, none: "unlimited") {
            $0.size($1, $2)
          },
          optional("requests_per_second_per_namespace", \.limits.requestsPerSecondPerNamespace, none: "unlimited") {
            $0.int($1, $2)
          },
          optional(
            "lookup_keys_per_second_per_namespace", \.limits.lookupKeysPerSecondPerNamespace, none: "unlimited"
          ) { $0.int($1, $2) },
          optional("misses_per_second_per_namespace", \.limits.missesPerSecondPerNamespace, none: "unlimited") {
            $0.int($1, $2)
          },
        ]),
      section(
        "cluster",
        [
          value(
            "peers", \.cluster.peers,
            parse: { reader, node, field in
              guard case .sequence(let items) = node else {
                reader.problem(field, node, "expected a list of HOST:PORT")
                return nil
              }
              return items.enumerated().compactMap { index, item in
                reader.parsed(item, "\(field)[\(index)]") { (text: String) throws(StrataError) in
                  try HostPort(parsing: text)
                }
              }
            }, format: { "[\($0.map { quoted($0.description) }.joined(separator: ", "))]" }),
          string("etcd", \.cluster.etcd),
          optional("replicas", \.cluster.replicas, none: "auto") { $0.int($1, $2) },
          optional("write_quorum", \.cluster.writeQuorum, none: "auto") { $0.int($1, $2) },
          // An empty string means none.
          value(
            "advertise", \.cluster.advertise,
            parse: { reader, node, field in
              guard let text = reader.string(node, field), !text.isEmpty else { return nil }
              return reader.parsed(node, field) { (text: String) throws(StrataError) in try HostPort(parsing: text) }
            }, format: { quoted($0?.description ?? "") }),
          string("etcd_prefix", \.cluster.etcdPrefix),
          duration("lease_ttl", \.cluster.leaseTTL),
          int("replication_queue", \.cluster.replicationQueueMax),
          duration("fill_window", \.cluster.fillWindow),
          duration("probe_interval", \.cluster.probeInterval),
          string("token", \.cluster.token),
          string("etcd_ca", \.cluster.etcdCA),
          string("etcd_cert", \.cluster.etcdCertificate),
          string("etcd_key", \.cluster.etcdKey),
          string("etcd_user", \.cluster.etcdUser),
          string("etcd_password", \.cluster.etcdPassword),
        ]),
      // Only a token's digest is ever printed: a printed configuration holds no secret.
      section(
        "auth",
        [
          list(
            "tokens", of: "token, namespace, scopes", \.auth.tokens, entry: { $0.token($1, $2) },
            describe: {
              [
                "token: \(quoted($0.digest.description))", "namespace: \(quoted($0.namespace.name))",
                "scopes: [\($0.scopes.names.joined(separator: ", "))]",
              ]
            })
        ]),
      list(
        "namespaces", of: "namespace, ram, nvme, pinned, inflight, ...", \.namespaces,
        entry: { reader, node, field in
          var settings = NodeConfiguration.NamespaceSettings(namespace: .embeddedDefault)
          return reader.read(
            node, field, NodeConfiguration.NamespaceSettings.fields, into: &settings, required: ["namespace"])
            ? settings : nil
        },
        describe: { entry in
          NodeConfiguration.NamespaceSettings.fields.compactMap { field in
            field.print(entry, "").map { field.name + ":" + $0 }
          }
        }),
      section(
        "admin",
        [
          address("listen", \.admin.listen), bool("enabled", \.admin.enabled),
          int("connections", \.admin.connectionsMax), duration("request_timeout", \.admin.requestTimeout),
        ]),
      section("verify", [duration("interval", \.verify.interval), size("max_rate", \.verify.maxRate)]),
      section("log", [choice("level", \.log.level), choice("format", \.log.format)]),
      section(
        "same_host",
        [
          bool("enabled", \.sameHost.enabled), string("socket", \.sameHost.socket),
          size("max_region_size", \.sameHost.maxRegionSize), int("copy_threads", \.sameHost.copyThreads),
        ]),
      section(
        "tls",
        [
          string("cert", \.tls.certificate), string("key", \.tls.key), string("ca", \.tls.clusterCA),
          string("client_ca", \.tls.clientCA), bool("require_client_cert", \.tls.requireClientCertificate),
          bool("kernel", \.tls.kernel),
        ]),
      bool("insecure", \.insecure),
    ]
  }
}

extension NodeConfiguration.NamespaceSettings {
  /// An entry of `namespaces:`; a limit left out is unset (the `limits:` default applies).
  fileprivate static var fields: [ConfigurationField<Self>] {
    func count(_ name: String, _ path: WritableKeyPath<Self, Int?>) -> ConfigurationField<Self> {
      .optional(name, path, none: nil) { $0.int($1, $2) }
    }
    func size(_ name: String, _ path: WritableKeyPath<Self, ByteSize?>) -> ConfigurationField<Self> {
      .optional(name, path, none: nil) { $0.size($1, $2) }
    }
    return [
      .value(
        "namespace", \.namespace,
        parse: { reader, node, field in
          reader.parsed(node, field) { (text: String) throws(StrataError) in try Namespace(text) }
        }, format: { quoted($0.name) }),
      size("ram", \.ramBytesMax), size("nvme", \.nvmeBytesMax), size("pinned", \.pinnedBytesMax),
      size("inflight", \.inflightBytesMax), count("requests_per_second", \.requestsPerSecond),
      count("lookup_keys_per_second", \.lookupKeysPerSecond), count("misses_per_second", \.missesPerSecond),
    ]
  }
}

private func quoted(_ text: String) -> String {
  "\"" + text.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"") + "\""
}

/// Walks the YAML tree, collecting problems instead of stopping at the first.
private struct ConfigurationReader {
  var problems: [ConfigurationProblem] = []

  mutating func read(_ root: Yams.Node, into config: inout NodeConfiguration) {
    read(root, "", ConfigurationField.schema, into: &config)
  }

  /// Reads a mapping of `fields` into `root`. False when a `required` field is missing (reported)
  /// or one of them was not valid.
  @discardableResult
  mutating func read<Root>(
    _ node: Yams.Node, _ path: String, _ fields: [ConfigurationField<Root>], into root: inout Root,
    required: [String] = []
  ) -> Bool {
    let given = self.fields(node, path, known: fields.map(\.name))
    let missing = required.filter { given[$0] == nil }
    if !missing.isEmpty {
      if case .mapping = node {
        problem(path, node, "needs \(required.count == 1 ? "a" : "both") \(required.joined(separator: " and "))")
      }
      return false
    }
    let before = problems.count
    for field in fields {
      if let value = given[field.name] {
        field.read(&self, value, path.isEmpty ? field.name : "\(path).\(field.name)", &root)
      }
    }
    return required.isEmpty || problems.count == before
  }

  mutating func token(_ item: Yams.Node, _ field: String) -> NodeConfiguration.Auth.Token? {
    let entry = fields(item, field, known: ["token", "namespace", "admin", "scopes"])
    guard let tokenNode = entry["token"], let namespaceNode = entry["namespace"] else {
      if case .mapping = item { problem(field, item, "needs both token and namespace") }
      return nil
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
        namespaceNode, "\(field).namespace", { (text: String) throws(StrataError) in try Namespace(text) })
    else { return nil }
    guard TokenDigest.isDigestForm(text) else { return .init(token: text, namespace: namespace, scopes: scopes) }
    return parsed(tokenNode, "\(field).token", TokenDigest.init(parsing:)).map {
      .init(digest: $0, namespace: namespace, scopes: scopes)
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

  mutating func problem(_ field: String, _ node: Yams.Node?, _ reason: String) {
    let line = node?.mark.map { " (line \($0.line))" } ?? ""
    problems.append(ConfigurationProblem(field: field.isEmpty ? "(top level)" : field, reason: reason + line))
  }

  /// The fields of a mapping; reports non-mappings, unknown keys (with a suggestion) and repeats.
  mutating func fields(_ node: Yams.Node, _ path: String, known: [String]) -> [String: Yams.Node] {
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

  mutating func scalar(_ node: Yams.Node, _ field: String, _ expected: String) -> String? {
    guard case .scalar(let scalar) = node else {
      problem(field, node, "expected \(expected)")
      return nil
    }
    return scalar.string
  }

  mutating func string(_ node: Yams.Node, _ field: String) -> String? {
    scalar(node, field, "a string")
  }

  mutating func bool(_ node: Yams.Node, _ field: String) -> Bool? {
    guard let text = scalar(node, field, "true or false") else { return nil }
    switch text {
    case "true": return true
    case "false": return false
    default:
      problem(field, node, "'\(text)' is not true or false")
      return nil
    }
  }

  mutating func int(_ node: Yams.Node, _ field: String) -> Int? {
    guard let text = scalar(node, field, "a whole number") else { return nil }
    guard let value = Int(text.replacingAll("_", with: "")) else {
      problem(field, node, "'\(text)' is not a whole number")
      return nil
    }
    return value
  }

  mutating func size(_ node: Yams.Node, _ field: String) -> ByteSize? {
    parsed(node, field, ByteSize.init(parsing:))
  }

  mutating func parsed<T>(
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

  mutating func choice<T: RawRepresentable & CaseIterable>(
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
