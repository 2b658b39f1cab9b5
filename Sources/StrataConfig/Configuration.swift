// Node configuration: the typed settings of one node, their defaults (the embedded default),
// and validation that names the field and the reason. File format: docs/configuration.md.

public import StrataCore

/// How the NVMe tier decides which blocks evicted from RAM are worth writing to disk.
public enum AdmissionPolicy: String, Sendable, CaseIterable {
  /// Every evicted block is written.
  case always
  /// Only blocks that were read at least once more after their write (seen twice).
  case seenTwice = "seen_twice"
  /// Nothing goes to disk: a RAM-only node.
  case never
}

/// Compression of block payloads on the NVMe tier.
public enum CompressionCodec: String, Sendable, CaseIterable {
  case none
  case lz4
}

/// The least severe log lines a node writes (swift-log's levels, by the same names).
public enum LogLevel: String, Sendable, CaseIterable {
  case trace
  case debug
  case info
  case notice
  case warning
  case error
  case critical
}

/// How a node writes its log lines on standard error.
public enum LogFormat: String, Sendable, CaseIterable {
  /// `TIME LEVEL LABEL: key=value [module] message`, for people.
  case text
  /// One JSON object a line, for log collectors (docs/configuration.md, `log`).
  case json
}

/// How a node finds its peers.
public enum MembershipMode: String, Sendable {
  /// A single node with no peers: the embedded default.
  case single
  /// The peers listed in configuration.
  case staticPeers = "static"
  /// Registration and discovery through etcd.
  case etcd
}

/// One disk path of the NVMe tier and the bytes it may hold.
public struct NVMePath: Hashable, Sendable {
  public var path: String
  public var capacity: ByteSize

  public init(path: String, capacity: ByteSize) {
    self.path = path
    self.capacity = capacity
  }
}

/// Everything one node needs to start. `NodeConfiguration()` is the embedded default.
public struct NodeConfiguration: Hashable, Sendable {
  public struct Node: Hashable, Sendable {
    /// Stable identity in the ring; empty means "derive from the host name at start".
    public var id: String = ""
    /// Failure domain; replicas go to distinct zones where zones are set.
    public var zone: String = ""
  }

  public struct RAM: Hashable, Sendable {
    public var capacity: ByteSize = .gibibytes(1)
    /// mlock the arena; when false the node runs unlocked (and says so at start).
    public var lock: Bool = true
    /// Ask for transparent huge pages on the arena.
    public var hugePages: Bool = true
  }

  public struct NVMe: Hashable, Sendable {
    /// Empty means one path, `<data_dir>/nvme`, with `defaultCapacity`.
    public var paths: [NVMePath] = []
    public var defaultCapacity: ByteSize = .gibibytes(4)
    public var regionSize: ByteSize = .mebibytes(64)
    public var admission: AdmissionPolicy = .always
    public var compression: CompressionCodec = .none
    /// How soon after its acknowledgement a block is written behind to NVMe while the disk keeps
    /// up (RAM copy kept; docs/storage.md, "What an acknowledgement guarantees"); 0 turns
    /// write-behind off: blocks then reach NVMe only when demoted or flushed.
    public var writebackWindow = DurationSetting(milliseconds: 1000)
  }

  public struct Limits: Hashable, Sendable {
    public var blockBytesMax: ByteSize = .mebibytes(32)
    public var connectionsMax: Int = 256
    public var inflightBytesPerConnectionMax: ByteSize = .mebibytes(256)
    public var inflightBytesMax: ByteSize = .gibibytes(1)
    public var leasesMax: Int = 65536
    /// The longest lease a client may hold; longer requests are cut to this (and told so).
    public var leaseDuration: DurationSetting = DurationSetting(milliseconds: 30_000)
    // What one tenant, one source address or one unauthenticated socket may take (docs/security.md).
    /// Authenticated connections from one source address.
    public var connectionsPerSourceMax: Int = 64
    /// Authenticated connections of one namespace.
    public var connectionsPerNamespaceMax: Int = 128
    /// Connections still waiting for their HELLO; beyond it the oldest waiting is closed.
    public var handshakesMax: Int = 4096
    /// How long a new connection has to complete HELLO.
    public var handshakeTimeout = DurationSetting(milliseconds: 5_000)
    /// How long an authenticated connection may wait between requests.
    public var idleTimeout = DurationSetting(milliseconds: 120_000)
    /// Once a frame has begun, its body and payload must arrive (or its response be taken) within
    /// `request_timeout` plus the time `min_transfer_rate` needs for its bytes.
    public var requestTimeout = DurationSetting(milliseconds: 10_000)
    public var minTransferRate: ByteSize = .mebibytes(1)
    /// In-flight payload bytes of one namespace, across its connections.
    public var inflightBytesPerNamespaceMax: ByteSize = .mebibytes(512)
    /// Leases (LOOKUP pins) held by one connection and by one namespace.
    public var leasesPerConnectionMax: Int = 1024
    public var leasesPerNamespaceMax: Int = 16384
    /// RAM one namespace may pin through leases; nil means half of `ram.capacity`.
    public var pinnedBytesPerNamespaceMax: ByteSize? = nil
    // Quotas of every namespace (docs/security.md, "Tenants"); nil means no limit. `namespaces:`
    // overrides them for a namespace by name.
    /// RAM-tier bytes one namespace's blocks may take; past it the namespace evicts its own blocks.
    public var ramBytesPerNamespaceMax: ByteSize? = nil
    /// NVMe-tier bytes one namespace's blocks may take; past it its blocks leaving RAM are dropped.
    public var nvmeBytesPerNamespaceMax: ByteSize? = nil
    /// Requests per second of one namespace (a token bucket of one second's worth).
    public var requestsPerSecondPerNamespace: Int? = nil
    /// LOOKUP keys per second of one namespace (probe limit).
    public var lookupKeysPerSecondPerNamespace: Int? = nil
    /// Misses (LOOKUP keys absent, GET items missing) per second of one namespace (probe limit).
    public var missesPerSecondPerNamespace: Int? = nil
  }

  /// One namespace's own quotas (`namespaces:` in the file); a field left nil takes the
  /// `limits.*_per_namespace` default.
  public struct NamespaceSettings: Hashable, Sendable {
    public var namespace: Namespace
    public var ramBytesMax: ByteSize?
    public var nvmeBytesMax: ByteSize?
    public var pinnedBytesMax: ByteSize?
    public var inflightBytesMax: ByteSize?
    public var requestsPerSecond: Int?
    public var lookupKeysPerSecond: Int?
    public var missesPerSecond: Int?

    public init(namespace: Namespace) { self.namespace = namespace }
  }

  /// Credentials: each token names the namespace its connections act in and what they may do.
  /// No tokens means the embedded default: one open namespace, `default`, with every scope.
  public struct Auth: Hashable, Sendable {
    public struct Token: Hashable, Sendable {
      /// SHA-256 of the secret: all the node keeps (the file may give `sha256:<hex>` or, for
      /// development, the plain secret, which is hashed when read).
      public var digest: TokenDigest
      /// Whether the file gave the plain secret rather than its digest (the node warns at start).
      public var givenInPlain: Bool
      /// Bytes of the plain secret when given (validation asks for at least 16); 0 for a digest.
      public var plainLength: Int
      public var namespace: Namespace
      public var scopes: TokenScopes

      /// A token from its plain secret; `admin` grants every scope (`TokenScopes.all`), else
      /// `read` and `write`.
      public init(token: String, namespace: Namespace, admin: Bool = false) {
        self.init(token: token, namespace: namespace, scopes: admin ? .all : .tenantDefault)
      }

      public init(token: String, namespace: Namespace, scopes: TokenScopes) {
        digest = TokenDigest(secret: token)
        givenInPlain = true
        plainLength = token.utf8.count
        self.namespace = namespace
        self.scopes = scopes
      }

      public init(digest: TokenDigest, namespace: Namespace, scopes: TokenScopes) {
        self.digest = digest
        givenInPlain = false
        plainLength = 0
        self.namespace = namespace
        self.scopes = scopes
      }

      /// Whether the token may use the admin API (the `operator` scope).
      public var admin: Bool { scopes.contains(.operator) }
    }

    public var tokens: [Token] = []

    /// The token whose digest matches `secret`'s, compared in constant time against every token
    /// (no early exit), or nil.
    public static func match(secret: [UInt8], in tokens: [Token]) -> Token? {
      let presented = TokenDigest(secret: secret)
      var found: Token?
      for token in tokens where token.digest.constantTimeEquals(presented) && found == nil { found = token }
      return found
    }
  }

  public struct Cluster: Hashable, Sendable {
    public var peers: [HostPort] = []
    /// etcd endpoint URL (`http://HOST:PORT`); empty means no etcd.
    public var etcd: String = ""
    /// Replication factor; nil means the default (2 with at least two nodes, else 1).
    public var replicas: Int? = nil
    /// How many of a block's owners must hold it before a client's PUT is acknowledged (above R
    /// counts as R). nil ("auto"): every owner that is up, and at least min(R, 2) (docs/cluster.md).
    public var writeQuorum: Int? = nil
    /// The data-plane address peers and clients use to reach this node; nil means `listen`.
    public var advertise: HostPort? = nil
    /// The etcd key prefix under which members register (one prefix per cluster).
    public var etcdPrefix: String = "/strata/default/"
    /// How long a member stays registered in etcd after it stops renewing its lease.
    public var leaseTTL = DurationSetting(milliseconds: 10_000)
    /// The most blocks waiting to be copied to replicas; further ones are dropped and counted.
    public var replicationQueueMax: Int = 65_536
    /// How long after a ring change a miss is read through from the key's previous owners.
    public var fillWindow = DurationSetting(milliseconds: 600_000)
    /// How often static peers are probed for health.
    public var probeInterval = DurationSetting(milliseconds: 1_000)
    /// The secret nodes present to each other: only a connection with it is granted the `peer`
    /// capability (replication, read-through, handoff). Required with `auth.tokens` in a cluster.
    public var token: String = ""
    /// With an `https://` etcd: the CA that signed etcd's certificate (empty: `tls.ca`), and the
    /// client certificate and key presented to etcd (empty: none).
    public var etcdCA: String = ""
    public var etcdCertificate: String = ""
    public var etcdKey: String = ""
    /// etcd user and password (etcd's `auth enable`); empty user: no etcd authentication.
    public var etcdUser: String = ""
    public var etcdPassword: String = ""

    public var mode: MembershipMode {
      if !etcd.isEmpty { return .etcd }
      return peers.isEmpty ? .single : .staticPeers
    }
  }

  /// The admin HTTP API (docs/admin.md): status, metrics, evict, verify, config reload.
  public struct Admin: Hashable, Sendable {
    /// Where the admin API listens; loopback by default, since without tokens it is open.
    public var listen = HostPort(host: "127.0.0.1", port: NodeConfiguration.defaultAdminPort)
    public var enabled = true
    /// Admin connections open at once; at the limit the oldest one not being answered is closed.
    public var connectionsMax = 64
    /// A request must arrive whole within this (from the connection's start or the previous response).
    public var requestTimeout = DurationSetting(milliseconds: 10_000)
  }

  /// The node's log (standard error).
  public struct Log: Hashable, Sendable {
    /// Lines below this level are not written; a config reload changes it while the node runs.
    public var level = LogLevel.info
    public var format = LogFormat.text
  }

  /// The scrub (`strata verify`, docs/admin.md): besides an operator's, one on a schedule, at a
  /// bounded rate so that it never takes the disk or a core from the tenants.
  public struct Verify: Hashable, Sendable {
    /// Between the starts of scheduled scrubs (the first one interval after the node starts); 0:
    /// none, only `strata verify`.
    public var interval = DurationSetting(milliseconds: 86_400_000)
    /// Bytes per second a scheduled scrub checks at most (RAM copies and NVMe records together).
    /// An operator's `strata verify` runs at full speed.
    public var maxRate: ByteSize = .mebibytes(256)
  }

  /// The same-host path (docs/protocol.md): a Unix-domain socket for clients on this machine,
  /// whose GET and PUT payloads move through a shared-memory region each client passes.
  public struct SameHost: Hashable, Sendable {
    public var enabled = true
    /// The socket's path; empty means `<data_dir>/strata.sock`. Created with permissions 0660
    /// (the node's user and group may connect); an explicitly configured path that cannot be
    /// bound stops the node, the default one only logs and leaves the path off.
    public var socket = ""
    /// The largest region one connection may pass (the node maps it, it costs no node memory).
    public var maxRegionSize: ByteSize = .gibibytes(64)
    /// How many threads one request's copies through a region are spread over: 0, one per core
    /// (the global pool's width); 1, the connection's thread alone (a host whose cores are busy
    /// feeding accelerators may want that).
    public var copyThreads = 0
  }

  /// TLS 1.3 on the data plane, the admin API and between nodes (docs/security.md).
  public struct TLS: Hashable, Sendable {
    /// The node's certificate chain and key (PEM): presented to clients, admin clients and peers.
    /// Empty: no TLS.
    public var certificate: String = ""
    public var key: String = ""
    /// The cluster CA (PEM): node certificates chain to it, and name their node id (common name or
    /// DNS alternative name). Nodes verify each other with it; only a connection whose certificate
    /// chains to it and names a ring member is granted the `peer` capability.
    public var clusterCA: String = ""
    /// The CA that signs client certificates (PEM), when clients present any.
    public var clientCA: String = ""
    /// Refuse, in the handshake, a client that presents no certificate signed by `client_ca` or `ca`.
    public var requireClientCertificate = false
    /// Hand record encryption to the kernel (`SSL_OP_ENABLE_KTLS`) when the `tls` ULP is there.
    public var kernel = true

    public var enabled: Bool { !certificate.isEmpty }

    public init() {}
  }

  public static let defaultPort: UInt16 = 7400
  public static let defaultAdminPort: UInt16 = 7401

  public var node = Node()
  public var listen = HostPort(host: "127.0.0.1", port: NodeConfiguration.defaultPort)
  public var dataDirectory = "./strata-data"
  public var ram = RAM()
  public var nvme = NVMe()
  public var limits = Limits()

  /// RAM one namespace may pin through leases.
  public var pinnedBytesPerNamespaceMax: Int {
    Int(limits.pinnedBytesPerNamespaceMax?.bytes ?? ram.capacity.bytes / 2)
  }
  public var cluster = Cluster()
  public var auth = Auth()
  public var admin = Admin()
  public var verify = Verify()
  public var log = Log()
  public var sameHost = SameHost()
  public var tls = TLS()
  /// Allows listening beyond loopback without tokens or without TLS (refused otherwise).
  public var insecure = false
  /// Per-namespace quota overrides.
  public var namespaces: [NamespaceSettings] = []

  /// Every namespace's quota: the `limits.*_per_namespace` defaults, overridden by `namespaces:`.
  public var quotas: NamespaceQuotas {
    let defaults = NamespaceQuota(
      ramBytesMax: limits.ramBytesPerNamespaceMax.map { Int($0.bytes) },
      nvmeBytesMax: limits.nvmeBytesPerNamespaceMax.map { Int($0.bytes) },
      pinnedBytesMax: pinnedBytesPerNamespaceMax, inflightBytesMax: Int(limits.inflightBytesPerNamespaceMax.bytes),
      requestsPerSecond: limits.requestsPerSecondPerNamespace,
      lookupKeysPerSecond: limits.lookupKeysPerSecondPerNamespace, missesPerSecond: limits.missesPerSecondPerNamespace)
    var overrides: [Namespace: NamespaceQuota] = [:]
    for entry in namespaces {
      overrides[entry.namespace] = NamespaceQuota(
        ramBytesMax: entry.ramBytesMax.map { Int($0.bytes) } ?? defaults.ramBytesMax,
        nvmeBytesMax: entry.nvmeBytesMax.map { Int($0.bytes) } ?? defaults.nvmeBytesMax,
        pinnedBytesMax: entry.pinnedBytesMax.map { Int($0.bytes) } ?? defaults.pinnedBytesMax,
        inflightBytesMax: entry.inflightBytesMax.map { Int($0.bytes) } ?? defaults.inflightBytesMax,
        requestsPerSecond: entry.requestsPerSecond ?? defaults.requestsPerSecond,
        lookupKeysPerSecond: entry.lookupKeysPerSecond ?? defaults.lookupKeysPerSecond,
        missesPerSecond: entry.missesPerSecond ?? defaults.missesPerSecond)
    }
    return NamespaceQuotas(defaults: defaults, overrides: overrides)
  }

  public init() {}

  /// The same-host socket's path in force: the configured one, or the default under `data_dir`.
  public var effectiveSameHostSocket: String {
    if !sameHost.socket.isEmpty { return sameHost.socket }
    let base = dataDirectory.hasSuffix("/") ? String(dataDirectory.dropLast()) : dataDirectory
    return base + "/strata.sock"
  }

  /// Settings that are valid but that a deployment should not keep, each naming its field:
  /// printed by `strata config check` (to the operator at a terminal, with the digests to store
  /// for plain tokens), logged as warnings by `strata serve` (without them: a digest in a log
  /// invites guessing).
  public func advisories(showingDigests: Bool = false) -> [String] {
    var notes: [String] = []
    for (index, token) in auth.tokens.enumerated() where token.givenInPlain {
      let digest = showingDigests ? "\(token.digest)" : "its sha256: digest"
      notes.append("auth.tokens[\(index)].token is a plain secret; store \(digest) instead (strata token hash)")
    }
    let nvmeBytes = effectiveNVMePaths.reduce(UInt64(0)) { $0 + $1.capacity.bytes }
    if nvme.writebackWindow.milliseconds > 0, nvmeBytes > 0, nvmeBytes < ram.capacity.bytes {
      notes.append(
        "nvme capacity (\(ByteSize(bytes: nvmeBytes))) is smaller than ram.capacity (\(ram.capacity)): write-behind "
          + "cannot keep every RAM block on NVMe; blocks are written behind, reclaimed there, and written again "
          + "when RAM evicts them. Give the NVMe tier at least the RAM tier's size")
    }
    if nvme.admission != .never, nvmeBytes > 0, limits.inflightBytesMax.bytes > ram.capacity.bytes {
      notes.append(
        "limits.max_inflight_bytes (\(limits.inflightBytesMax)) is more than ram.capacity (\(ram.capacity)): the GETs "
          + "in flight read their blocks from NVMe into RAM and can need more than there is; blocks that find no room "
          + "are answered as missing (strata_promotions_without_room_total). Keep limits.max_inflight_bytes at most "
          + "ram.capacity")
    }
    return notes
  }

  /// The NVMe paths in force: the configured ones, or the default under the data directory.
  public var effectiveNVMePaths: [NVMePath] {
    if !nvme.paths.isEmpty { return nvme.paths }
    let base = dataDirectory.hasSuffix("/") ? String(dataDirectory.dropLast()) : dataDirectory
    return [NVMePath(path: base + "/nvme", capacity: nvme.defaultCapacity)]
  }

  /// Facts about the machine that validation checks against (injected, so validation stays pure).
  public struct Machine: Sendable {
    public var physicalMemoryBytes: UInt64
    public init(physicalMemoryBytes: UInt64) { self.physicalMemoryBytes = physicalMemoryBytes }
  }

  /// Every problem with the settings, each naming its field; empty when the configuration is usable.
  public func problems(on machine: Machine) -> [ConfigurationProblem] {
    var problems: [ConfigurationProblem] = []
    func check(_ condition: Bool, _ field: String, _ reason: @autoclosure () -> String) {
      if !condition { problems.append(ConfigurationProblem(field: field, reason: reason())) }
    }
    check(node.id.utf8.count <= 128, "node.id", "at most 128 bytes")
    check(!dataDirectory.isEmpty, "data_dir", "must not be empty")
    check(ram.capacity.bytes > 0, "ram.capacity", "must be greater than zero")
    check(
      ram.capacity.bytes <= machine.physicalMemoryBytes, "ram.capacity",
      "\(ram.capacity) is more than this machine's memory (\(ByteSize(bytes: machine.physicalMemoryBytes)))")
    check(
      ram.capacity.bytes == 0 || ram.capacity >= limits.blockBytesMax, "ram.capacity",
      "\(ram.capacity) cannot hold one block of limits.max_block_size (\(limits.blockBytesMax))")
    check(limits.blockBytesMax.bytes > 0, "limits.max_block_size", "must be greater than zero")
    check(
      limits.blockBytesMax.bytes <= 1 << 30, "limits.max_block_size",
      "\(limits.blockBytesMax) is above the 1GiB ceiling of one block")
    check(nvme.regionSize.bytes > 0, "nvme.region_size", "must be greater than zero")
    check(nvme.regionSize.bytes % 4096 == 0, "nvme.region_size", "\(nvme.regionSize) is not a multiple of 4KiB")
    check(
      nvme.regionSize.bytes == 0 || nvme.regionSize.bytes >= limits.blockBytesMax.bytes + 4096,
      "nvme.region_size",
      "\(nvme.regionSize) cannot hold one block of limits.max_block_size (\(limits.blockBytesMax)) and its header")
    if nvme.admission != .never {
      for (index, path) in effectiveNVMePaths.enumerated() {
        let field = nvme.paths.isEmpty ? "nvme.capacity" : "nvme.paths[\(index)].capacity"
        check(!path.path.isEmpty, "nvme.paths[\(index)].path", "must not be empty")
        check(path.capacity.bytes > 0, field, "must be greater than zero")
        check(
          path.capacity.bytes == 0 || nvme.regionSize.bytes == 0 || path.capacity.bytes >= nvme.regionSize.bytes * 2,
          field, "\(path.capacity) holds fewer than two regions of nvme.region_size (\(nvme.regionSize))")
      }
      let unique = Set(effectiveNVMePaths.map(\.path))
      check(unique.count == effectiveNVMePaths.count, "nvme.paths", "a path is listed twice")
    }
    check(limits.connectionsMax >= 1, "limits.max_connections", "must be at least 1")
    check(
      limits.inflightBytesPerConnectionMax >= limits.blockBytesMax, "limits.max_inflight_bytes_per_connection",
      "\(limits.inflightBytesPerConnectionMax) is below limits.max_block_size (\(limits.blockBytesMax))")
    check(
      limits.inflightBytesMax >= limits.inflightBytesPerConnectionMax, "limits.max_inflight_bytes",
      "\(limits.inflightBytesMax) is below limits.max_inflight_bytes_per_connection (\(limits.inflightBytesPerConnectionMax))"
    )
    check(limits.leasesMax >= 1, "limits.max_leases", "must be at least 1")
    check(limits.leaseDuration.milliseconds >= 1, "limits.lease_duration", "must be greater than zero")
    check(
      limits.leaseDuration.milliseconds <= 3_600_000, "limits.lease_duration",
      "\(limits.leaseDuration) is longer than the 1h ceiling")
    if let replicas = cluster.replicas {
      check(replicas >= 1, "cluster.replicas", "must be at least 1")
      if cluster.mode != .etcd {
        check(
          replicas <= cluster.peers.count + 1, "cluster.replicas",
          "\(replicas) replicas need at least \(replicas) nodes; \(cluster.peers.count + 1) configured")
      }
    }
    check(
      cluster.leaseTTL.milliseconds >= 2000 && cluster.leaseTTL.milliseconds % 1000 == 0, "cluster.lease_ttl",
      "\(cluster.leaseTTL) must be whole seconds, at least 2s (etcd leases count seconds)")
    check(cluster.replicationQueueMax >= 1, "cluster.replication_queue", "must be at least 1")
    if let quorum = cluster.writeQuorum {
      check((1...255).contains(quorum), "cluster.write_quorum", "must be 1 to 255, or auto")
    }
    check(
      cluster.etcdPrefix.hasPrefix("/") && cluster.etcdPrefix.hasSuffix("/") && cluster.etcdPrefix.count >= 2,
      "cluster.etcd_prefix", "'\(cluster.etcdPrefix)' must start and end with '/' (like /strata/prod/)")
    check(cluster.probeInterval.milliseconds >= 50, "cluster.probe_interval", "must be at least 50ms")
    if let advertise = cluster.advertise {
      check(advertise.port != 0, "cluster.advertise", "needs a port other than 0")
    }
    check((2...4096).contains(admin.connectionsMax), "admin.connections", "must be 2 to 4096")
    check(
      verify.interval.milliseconds == 0 || verify.interval.milliseconds >= 1_000, "verify.interval",
      "must be 0 (no scheduled scrub) or at least 1s")
    check(verify.maxRate.bytes >= 1 << 20, "verify.max_rate", "must be at least 1MiB (per second)")
    check(
      (100...600_000).contains(admin.requestTimeout.milliseconds), "admin.request_timeout", "must be 100ms to 10m")
    if admin.enabled, admin.listen.port != 0 {
      check(
        admin.listen != listen, "admin.listen",
        "\(admin.listen) is the data plane's address too (listen); give the admin API a port of its own")
    }
    check(sameHost.maxRegionSize.bytes >= 4096, "same_host.max_region_size", "must be at least 4KiB")
    check((0...1024).contains(sameHost.copyThreads), "same_host.copy_threads", "must be 0 (every core) to 1024")
    check(sameHost.socket.utf8.count <= 107, "same_host.socket", "at most 107 bytes (a Unix socket path)")
    check(limits.connectionsPerSourceMax >= 1, "limits.max_connections_per_source", "must be at least 1")
    check(limits.connectionsPerNamespaceMax >= 1, "limits.max_connections_per_namespace", "must be at least 1")
    check(limits.handshakesMax >= 1, "limits.max_handshakes", "must be at least 1")
    check(limits.handshakeTimeout.milliseconds >= 10, "limits.handshake_timeout", "must be at least 10ms")
    check(limits.idleTimeout.milliseconds >= 10, "limits.idle_timeout", "must be at least 10ms")
    check(limits.requestTimeout.milliseconds >= 10, "limits.request_timeout", "must be at least 10ms")
    check(limits.minTransferRate.bytes >= 1024, "limits.min_transfer_rate", "must be at least 1KiB (per second)")
    check(limits.inflightBytesPerNamespaceMax.bytes >= 1, "limits.max_inflight_bytes_per_namespace", "must be positive")
    check(limits.leasesPerConnectionMax >= 1, "limits.max_leases_per_connection", "must be at least 1")
    check(limits.leasesPerNamespaceMax >= 1, "limits.max_leases_per_namespace", "must be at least 1")
    let digests = auth.tokens.map(\.digest)
    check(Set(digests).count == digests.count, "auth.tokens", "a token is listed twice")
    if !cluster.token.isEmpty {
      check(
        cluster.token.utf8.count >= 16 && cluster.token.utf8.count <= 4096, "cluster.token",
        "16 to 4096 characters (a guessable token is no credential)")
      check(
        !digests.contains(TokenDigest(secret: cluster.token)), "cluster.token",
        "must differ from every auth.tokens token")
    } else if cluster.mode != .single && !auth.tokens.isEmpty && tls.clusterCA.isEmpty {
      check(
        false, "cluster.token",
        "a cluster with auth.tokens needs cluster.token or tls.ca: only nodes presenting it (or a node certificate) may replicate to each other"
      )
    }
    for (index, token) in auth.tokens.enumerated() where token.givenInPlain {
      check(
        token.plainLength >= 16, "auth.tokens[\(index)].token",
        "at least 16 characters (a guessable token is no credential)")
      check(token.plainLength <= 4096, "auth.tokens[\(index)].token", "at most 4096 bytes")
    }
    for (index, token) in auth.tokens.enumerated() {
      check(!token.scopes.isEmpty, "auth.tokens[\(index)].scopes", "a token with no scope can do nothing")
    }
    for (name, value) in [
      ("limits.requests_per_second_per_namespace", limits.requestsPerSecondPerNamespace),
      ("limits.lookup_keys_per_second_per_namespace", limits.lookupKeysPerSecondPerNamespace),
      ("limits.misses_per_second_per_namespace", limits.missesPerSecondPerNamespace),
    ] {
      if let value { check((1...100_000_000).contains(value), name, "must be 1 to 100000000, or unlimited") }
    }
    for (name, value) in [
      ("limits.max_ram_bytes_per_namespace", limits.ramBytesPerNamespaceMax),
      ("limits.max_nvme_bytes_per_namespace", limits.nvmeBytesPerNamespaceMax),
    ] {
      if let value {
        check(value >= limits.blockBytesMax, name, "\(value) cannot hold one block of limits.max_block_size")
      }
    }
    let named = namespaces.map(\.namespace)
    check(Set(named).count == named.count, "namespaces", "a namespace is listed twice")
    for (index, entry) in namespaces.enumerated() {
      for (name, value) in [
        ("requests_per_second", entry.requestsPerSecond), ("lookup_keys_per_second", entry.lookupKeysPerSecond),
        ("misses_per_second", entry.missesPerSecond),
      ] {
        if let value {
          check((1...100_000_000).contains(value), "namespaces[\(index)].\(name)", "must be 1 to 100000000")
        }
      }
      for (name, value) in [("ram", entry.ramBytesMax), ("nvme", entry.nvmeBytesMax)] {
        if let value {
          check(
            value >= limits.blockBytesMax, "namespaces[\(index)].\(name)",
            "cannot hold one block of limits.max_block_size")
        }
      }
      for (name, value) in [("pinned", entry.pinnedBytesMax), ("inflight", entry.inflightBytesMax)] {
        if let value { check(value.bytes >= 1, "namespaces[\(index)].\(name)", "must be positive") }
      }
    }
    check(tls.certificate.isEmpty == tls.key.isEmpty, "tls.key", "tls.cert and tls.key go together")
    if tls.enabled && cluster.mode != .single {
      check(
        !tls.clusterCA.isEmpty, "tls.ca",
        "a cluster with TLS needs the cluster CA: nodes verify each other's certificates with it")
    }
    check(
      !tls.requireClientCertificate || !(tls.clientCA.isEmpty && tls.clusterCA.isEmpty), "tls.require_client_cert",
      "needs tls.client_ca (or tls.ca) to verify client certificates with")
    check(
      tls.enabled || (tls.clusterCA.isEmpty && tls.clientCA.isEmpty), "tls.cert",
      "tls.ca and tls.client_ca need the node's own certificate (tls.cert, tls.key)")
    check(
      cluster.etcdUser.isEmpty == cluster.etcdPassword.isEmpty, "cluster.etcd_password",
      "cluster.etcd_user and cluster.etcd_password go together")
    check(
      cluster.etcdCertificate.isEmpty == cluster.etcdKey.isEmpty, "cluster.etcd_key",
      "cluster.etcd_cert and cluster.etcd_key go together")
    if !insecure {
      let exposed = [("listen", listen)] + (admin.enabled ? [("admin.listen", admin.listen)] : [])
      for (field, address) in exposed where !address.isLoopback {
        if auth.tokens.isEmpty {
          check(
            false, field,
            "\(address) is reachable beyond this machine and auth.tokens is empty: anyone could read and write "
              + "every block. Add tokens (and TLS), or set insecure: true to accept that")
        } else if !tls.enabled {
          check(
            false, field,
            "\(address) is reachable beyond this machine without TLS: tokens and blocks would cross the network "
              + "in clear. Set tls.cert and tls.key, or set insecure: true to accept that")
        }
      }
    }
    if !cluster.etcd.isEmpty {
      check(
        cluster.etcd.hasPrefix("http://") || cluster.etcd.hasPrefix("https://"), "cluster.etcd",
        "'\(cluster.etcd)' is not an http:// or https:// URL")
      check(cluster.peers.isEmpty, "cluster.peers", "give either static peers or etcd, not both")
    }
    return problems
  }

  /// Throws `invalidConfiguration` listing every problem, or returns when there is none.
  public func validate(on machine: Machine) throws(StrataError) {
    let problems = problems(on: machine)
    guard problems.isEmpty else {
      throw StrataError(.invalidConfiguration, problems.map(\.description).joined(separator: "\n"))
    }
  }
}

/// One thing wrong with a configuration: the field (as written in the file) and the reason.
public struct ConfigurationProblem: Hashable, Sendable, CustomStringConvertible {
  public var field: String
  public var reason: String

  public init(field: String, reason: String) {
    self.field = field
    self.reason = reason
  }

  public var description: String { "\(field): \(reason)" }
}
