import StrataConfig
import StrataCore
import Testing

@Suite struct ConfigurationTests {
  let machine = NodeConfiguration.Machine(physicalMemoryBytes: 24 << 30)

  func problems(_ yaml: String) -> [String] {
    do {
      let config = try NodeConfiguration(yaml: yaml)
      return config.problems(on: machine).map(\.description)
    } catch {
      return error.message.split(separator: "\n").map(String.init)
    }
  }

  @Test func embeddedDefaultIsValid() throws {
    let config = NodeConfiguration()
    #expect(config.problems(on: machine).isEmpty)
    #expect(config.cluster.mode == .single)
    #expect(config.effectiveNVMePaths == [NVMePath(path: "./strata-data/nvme", capacity: .gibibytes(4))])
    #expect(config.listen.description == "127.0.0.1:7400")
  }

  /// An NVMe tier smaller than the RAM tier is valid, but write-behind then writes blocks twice:
  /// the node and `config check` say so; not when the NVMe tier is large enough or write-behind off.
  @Test func anNVMeTierSmallerThanRAMIsAdvisedAgainst() throws {
    var config = NodeConfiguration()
    config.ram.capacity = .gibibytes(3)
    config.nvme.defaultCapacity = .mebibytes(256)
    #expect(config.advisories().count == 1)
    #expect(config.advisories().first?.hasPrefix("nvme capacity (256MiB) is smaller than ram.capacity (3GiB)") == true)
    config.nvme.writebackWindow = DurationSetting(milliseconds: 0)
    #expect(config.advisories().isEmpty)
    config.nvme.writebackWindow = DurationSetting(milliseconds: 1000)
    config.nvme.defaultCapacity = .gibibytes(3)
    #expect(config.advisories().isEmpty)
    #expect(NodeConfiguration().advisories().isEmpty)
  }

  /// More bytes in flight than RAM holds is advised against: the GETs in flight stage their
  /// blocks from NVMe in RAM. Not without an NVMe tier, nor at the defaults (1 GiB each).
  @Test func moreBytesInFlightThanRAMIsAdvisedAgainst() throws {
    var config = NodeConfiguration()
    config.ram.capacity = .mebibytes(64)
    #expect(config.advisories().count == 1)
    #expect(
      config.advisories().first?.hasPrefix("limits.max_inflight_bytes (1GiB) is more than ram.capacity (64MiB)")
        == true)
    config.limits.inflightBytesMax = .mebibytes(64)
    config.limits.inflightBytesPerConnectionMax = .mebibytes(64)
    #expect(config.advisories().isEmpty)
    config.limits.inflightBytesMax = .gibibytes(1)
    config.nvme.admission = .never
    #expect(config.advisories().isEmpty)
  }

  /// A plain token is advised against; its digest is shown to `config check` only, never logged.
  @Test func aPlainTokenIsAdvisedAgainstWithoutItsDigestInLogs() throws {
    let secret = "a-plain-secret-of-24-chars"
    let config = try NodeConfiguration(yaml: "auth:\n  tokens:\n    - {token: \(secret), namespace: t1}\n")
    let digest = "\(TokenDigest(secret: secret))"
    let logged = config.advisories()
    let shown = config.advisories(showingDigests: true)
    #expect(logged.count == 1 && logged[0].hasPrefix("auth.tokens[0].token is a plain secret"))
    #expect(!logged[0].contains(digest) && !logged[0].contains(secret))
    #expect(shown.count == 1 && shown[0].contains(digest) && !shown[0].contains(secret))
  }

  @Test func emptyFileMeansDefaults() throws {
    #expect(try NodeConfiguration(yaml: "") == NodeConfiguration())
    #expect(try NodeConfiguration(yaml: "# nothing\n") == NodeConfiguration())
  }

  @Test func fullFileIsReadField1ByField() throws {
    let config = try NodeConfiguration(
      yaml: """
        node: {id: n1, zone: z1}
        listen: "[::1]:7500"
        data_dir: /var/lib/strata
        ram: {capacity: 2GiB, lock: false, huge_pages: false}
        nvme:
          paths:
            - {path: /mnt/nvme0, capacity: 100GiB}
            - {path: /mnt/nvme1, capacity: 50GB}
          region_size: 16MiB
          admission: always
          compression: lz4
        limits:
          max_block_size: 8MiB
          max_connections: 1_000
          max_inflight_bytes_per_connection: 64MiB
          max_inflight_bytes: 512MiB
          max_leases: 100
          lease_duration: 250ms
        cluster:
          peers: ["10.0.0.2:7400", "node3:7400"]
          replicas: 2
          write_quorum: 2
          token: "cluster-secret-00000001"
        auth:
          tokens:
            - {token: "tenant-a-secret-0001", namespace: tenant-a}
            - {token: "operator-secret-0002", namespace: ops, admin: true}
        """)
    #expect(config.node.id == "n1" && config.node.zone == "z1")
    #expect(config.listen == HostPort(host: "::1", port: 7500))
    #expect(config.ram.capacity == .gibibytes(2) && !config.ram.lock && !config.ram.hugePages)
    #expect(config.nvme.paths.count == 2 && config.nvme.paths[1].capacity.bytes == 50_000_000_000)
    #expect(config.nvme.admission == .always && config.nvme.compression == .lz4)
    #expect(config.limits.connectionsMax == 1000 && config.limits.leaseDuration.milliseconds == 250)
    #expect(config.cluster.mode == .staticPeers && config.cluster.replicas == 2)
    #expect(config.cluster.writeQuorum == 2 && NodeConfiguration().cluster.writeQuorum == nil)
    #expect(try NodeConfiguration(yaml: config.yaml).cluster.writeQuorum == 2)
    #expect(config.auth.tokens.count == 2 && config.auth.tokens[1].admin && !config.auth.tokens[0].admin)
    #expect(config.problems(on: machine).isEmpty)
    // What `config check --print` writes reads back to the same configuration.
    #expect(try NodeConfiguration(yaml: config.yaml).admin == config.admin)
  }

  @Test(arguments: [
    ("ram: {capacity: 0}", "ram.capacity: must be greater than zero"),
    ("ram: {capacity: 64TiB}", "ram.capacity: 64TiB is more than this machine's memory"),
    ("ram: {capacity: 4gigs}", "ram.capacity: '4gigs' has unknown unit 'gigs'"),
    ("ram: {capacity: 4Gb}", "ram.capacity: '4Gb' has unknown unit 'Gb'"),
    ("ram: {capacity: -1GiB}", "ram.capacity: '-1GiB' is not a size"),
    ("ram: {lock: maybe}", "ram.lock: 'maybe' is not true or false"),
    ("ram: {capactiy: 1GiB}", "ram.capactiy: unknown field (did you mean capacity?)"),
    ("rma: {capacity: 1GiB}", "rma: unknown field (did you mean ram?)"),
    ("nvme: {region_size: 1000}", "nvme.region_size: 1000B is not a multiple of 4KiB"),
    ("nvme: {region_size: 8MiB}", "nvme.region_size: 8MiB cannot hold one block"),
    ("nvme: {capacity: 64MiB}", "nvme.capacity: 64MiB holds fewer than two regions"),
    ("nvme: {admission: sometimes}", "nvme.admission: 'sometimes' is not one of always, seen_twice, never"),
    ("nvme: {compression: zstd}", "nvme.compression: 'zstd' is not one of none, lz4"),
    ("nvme: {paths: [{path: /a}]}", "nvme.paths[0]: needs both path and capacity"),
    ("nvme: {paths: [{path: /a, capacity: 1GiB}, {path: /a, capacity: 1GiB}]}", "nvme.paths: a path is listed twice"),
    ("listen: localhost", "listen: 'localhost' is not HOST:PORT"),
    ("listen: 'h:70000'", "listen: 'h:70000' has port '70000'"),
    ("cluster: {peers: ['h:0']}", "cluster.peers[0]: 'h:0' has port '0', expected 1 to 65535"),
    ("limits: {max_connections: 0}", "limits.max_connections: must be at least 1"),
    ("limits: {max_connections: lots}", "limits.max_connections: 'lots' is not a whole number"),
    ("limits: {lease_duration: 30}", "limits.lease_duration: '30' has unknown or missing unit"),
    ("limits: {max_block_size: 0}", "limits.max_block_size: must be greater than zero"),
    ("limits: {max_inflight_bytes: 1MiB}", "limits.max_inflight_bytes: 1MiB is below"),
    ("cluster: {replicas: 3}", "cluster.replicas: 3 replicas need at least 3 nodes"),
    ("cluster: {write_quorum: 0}", "cluster.write_quorum: must be 1 to 255, or auto"),
    ("cluster: {write_quorum: most}", "cluster.write_quorum: 'most' is not a whole number"),
    ("cluster: {etcd: 'localhost:2379'}", "cluster.etcd: 'localhost:2379' is not an http:// or https:// URL"),
    ("cluster: {peers: 'a:1'}", "cluster.peers: expected a list of HOST:PORT"),
    (
      "cluster: {peers: ['a:1']}\nauth: {tokens: [{token: 0123456789abcdef, namespace: a}]}",
      "cluster.token: a cluster with auth.tokens needs cluster.token"
    ),
    ("cluster: {token: short}", "cluster.token: 16 to 4096 characters"),
    ("limits: {max_handshakes: 0}", "limits.max_handshakes: must be at least 1"),
    ("limits: {idle_timeout: 1ms}", "limits.idle_timeout: must be at least 10ms"),
    ("same_host: {copy_threads: -1}", "same_host.copy_threads: must be 0 (every core) to 1024"),
    ("ram: 5", "ram: expected a mapping"),
    ("auth: {tokens: [{token: short, namespace: a}]}", "auth.tokens[0].token: at least 16 characters"),
    ("auth: {tokens: [{token: 0123456789abcdef, namespace: Bad}]}", "auth.tokens[0].namespace: namespace 'Bad'"),
    ("auth: {tokens: [{token: 0123456789abcdef}]}", "auth.tokens[0]: needs both token and namespace"),
    ("- a\n- b", "(top level): expected a mapping"),
    ("ram: {capacity: 1GiB, capacity: 2GiB}", "not valid YAML"),
    ("admin: {listen: nowhere}", "admin.listen: 'nowhere' is not HOST:PORT"),
    ("admin: {enabled: sometimes}", "admin.enabled: 'sometimes' is not true or false"),
    ("admin: {listn: '127.0.0.1:1'}", "admin.listn: unknown field (did you mean listen?)"),
    ("listen: '127.0.0.1:7401'", "admin.listen: 127.0.0.1:7401 is the data plane's address too"),
  ])
  func badValuesAreReportedByField(yaml: String, expected: String) {
    let found = problems(yaml)
    #expect(found.contains { $0.hasPrefix(expected) || $0.contains(expected) }, "got \(found)")
  }

  @Test func adminSectionIsReadAndWritten() throws {
    #expect(NodeConfiguration().admin.listen.description == "127.0.0.1:7401" && NodeConfiguration().admin.enabled)
    let config = try NodeConfiguration(yaml: "admin: {listen: '0.0.0.0:0', enabled: false}\n")
    #expect(config.admin.listen == HostPort(host: "0.0.0.0", port: 0) && !config.admin.enabled)
    #expect(try NodeConfiguration(yaml: config.yaml).admin == config.admin)
    // A disabled admin API may share nothing, so its address is not checked against listen.
    #expect(
      try NodeConfiguration(yaml: "listen: '127.0.0.1:7401'\nadmin: {enabled: false}\n").problems(on: machine).isEmpty)
  }

  @Test func everyProblemIsReportedAtOnce() {
    let found = problems("ram: {capacity: 4gigs, lock: maybe}\nnvme: {admission: x}\nbogus: 1\n")
    #expect(found.count == 4, "got \(found)")
  }

  @Test func problemLinesPointIntoTheFile() {
    let found = problems("ram:\n  capacity: 1GiB\n  lock: maybe\n")
    #expect(found == ["ram.lock: 'maybe' is not true or false (line 3)"])
  }

  @Test func validateThrowsInvalidConfiguration() {
    var config = NodeConfiguration()
    config.ram.capacity = ByteSize(bytes: 0)
    #expect {
      try config.validate(on: machine)
    } throws: { error in
      (error as? StrataError)?.code == .invalidConfiguration
    }
  }
}

@Suite struct UnitTests {
  @Test(arguments: [
    ("0", UInt64(0)), ("512", 512), ("4KiB", 4096), ("512MiB", 512 << 20), ("4GiB", 4 << 30), ("1TiB", 1 << 40),
    ("4KB", 4000), ("3MB", 3_000_000), ("2GB", 2_000_000_000), ("10B", 10), (" 8 MiB ", 8 << 20),
  ])
  func parsesSizes(text: String, bytes: UInt64) throws {
    #expect(try ByteSize(parsing: text).bytes == bytes)
  }

  @Test(arguments: ["", "MiB", "4 gigs", "4mib", "4Mb", "1.5GiB", "-1", "99999999999TiB", "4GiBs"])
  func rejectsBadSizes(text: String) {
    #expect(throws: StrataError.self) { try ByteSize(parsing: text) }
  }

  @Test func sizesPrintInTheLargestExactUnit() {
    #expect(ByteSize.mebibytes(512).description == "512MiB")
    #expect(ByteSize(bytes: 1536 << 10).description == "1536KiB")
    #expect(ByteSize(bytes: 100).description == "100B")
  }

  @Test func parsesDurations() throws {
    #expect(try DurationSetting(parsing: "250ms").milliseconds == 250)
    #expect(try DurationSetting(parsing: "30s").milliseconds == 30_000)
    #expect(try DurationSetting(parsing: "5m").milliseconds == 300_000)
    #expect(try DurationSetting(parsing: "1h").description == "1h")
    #expect(throws: StrataError.self) { try DurationSetting(parsing: "30") }
    #expect(throws: StrataError.self) { try DurationSetting(parsing: "3d") }
  }

  @Test func parsesHostPorts() throws {
    #expect(try HostPort(parsing: "127.0.0.1:7400") == HostPort(host: "127.0.0.1", port: 7400))
    #expect(try HostPort(parsing: "[::1]:80").description == "[::1]:80")
    for bad in ["", ":80", "h:", "h:70000", "::1:80", "[::1]80"] {
      #expect(throws: StrataError.self, "\(bad)") { try HostPort(parsing: bad) }
    }
  }
}

@Suite struct ErrorTests {
  @Test func codesAreUniqueAndStable() {
    let numbers = StrataError.Code.all.map(\.number)
    #expect(Set(numbers).count == numbers.count)
    #expect(Set(StrataError.Code.all.map(\.name)).count == numbers.count)
    // Numbers travel on the wire: these must never change.
    #expect(StrataError.Code.notFound.number == 3)
    #expect(StrataError.Code.checksumMismatch.number == 5)
    #expect(StrataError.Code(number: 5) == .checksumMismatch)
    #expect(StrataError.Code(number: 999) == nil)
  }

  @Test func descriptionCarriesCodeAndCause() {
    let cause = StrataError(.ioError, "disk gone")
    let error = StrataError(.unavailable, "node n1 unreachable", cause: cause)
    #expect(error.description == "node n1 unreachable (unavailable; cause: disk gone (io_error))")
  }

  @Test func namespacesAreValidated() throws {
    #expect(try Namespace("tenant-a.prod_1").name == "tenant-a.prod_1")
    for bad in ["", "Upper", "has space", String(repeating: "a", count: 65), "slash/"] {
      #expect(throws: StrataError.self, "\(bad)") { try Namespace(bad) }
    }
  }

  /// Beyond loopback a node needs tokens and TLS, or `insecure: true`; loopback needs neither.
  @Test func exposedListenersNeedTokensAndTLS() throws {
    let machine = NodeConfiguration.Machine(physicalMemoryBytes: 64 << 30)
    var config = NodeConfiguration()
    #expect(config.problems(on: machine).isEmpty)
    config.listen = HostPort(host: "0.0.0.0", port: 7400)
    #expect(config.problems(on: machine).map(\.field) == ["listen"])
    config.auth.tokens = [.init(token: "a-token-of-16-chars", namespace: .embeddedDefault, admin: false)]
    #expect(config.problems(on: machine).first?.reason.contains("without TLS") == true)
    config.tls.certificate = "/etc/strata/tls/node.pem"
    config.tls.key = "/etc/strata/tls/node.key"
    #expect(config.problems(on: machine).isEmpty)
    config.admin.listen = HostPort(host: "10.0.0.1", port: 7401)
    #expect(config.problems(on: machine).isEmpty)
    config.tls = .init()
    config.insecure = true
    #expect(config.problems(on: machine).isEmpty)
    let parsed = try NodeConfiguration(
      yaml: "insecure: true\ntls: {cert: a.pem, key: a.key, ca: ca.pem, kernel: false}\n")
    #expect(parsed.insecure && parsed.tls.clusterCA == "ca.pem" && !parsed.tls.kernel)
  }
}

/// What `config check --print` writes reads back to the same configuration, for every field: each
/// one is set away from its default here, so a field the printer leaves out or names differently
/// from the reader fails the comparison.
@Suite struct ConfigurationPrintingTests {
  func ms(_ value: UInt64) -> DurationSetting { DurationSetting(milliseconds: value) }

  @Test func everyFieldSurvivesPrintingAndReadingBack() throws {
    var c = NodeConfiguration()
    c.node.id = "n\"1\\"
    c.node.zone = "z1"
    c.listen = HostPort(host: "::1", port: 7500)
    c.dataDirectory = "/var/lib/strata"
    c.ram.capacity = .gibibytes(2)
    c.ram.lock = false
    c.ram.hugePages = false
    c.nvme.paths = [
      NVMePath(path: "/mnt/a", capacity: .gibibytes(8)), NVMePath(path: "/mnt/b", capacity: .gibibytes(9)),
    ]
    c.nvme.regionSize = .mebibytes(16)
    c.nvme.admission = .seenTwice
    c.nvme.compression = .lz4
    c.nvme.writebackWindow = ms(250)
    c.limits.blockBytesMax = .mebibytes(8)
    c.limits.connectionsMax = 9
    c.limits.inflightBytesPerConnectionMax = .mebibytes(64)
    c.limits.inflightBytesMax = .mebibytes(512)
    c.limits.leasesMax = 99
    c.limits.leaseDuration = ms(250)
    c.limits.connectionsPerSourceMax = 7
    c.limits.connectionsPerNamespaceMax = 8
    c.limits.handshakesMax = 11
    c.limits.handshakeTimeout = ms(1_500)
    c.limits.idleTimeout = ms(60_000)
    c.limits.requestTimeout = ms(2_000)
    c.limits.minTransferRate = .mebibytes(2)
    c.limits.inflightBytesPerNamespaceMax = .mebibytes(128)
    c.limits.leasesPerConnectionMax = 12
    c.limits.leasesPerNamespaceMax = 13
    c.limits.pinnedBytesPerNamespaceMax = .mebibytes(32)
    c.limits.ramBytesPerNamespaceMax = .mebibytes(33)
    c.limits.nvmeBytesPerNamespaceMax = .mebibytes(34)
    c.limits.requestsPerSecondPerNamespace = 100
    c.limits.lookupKeysPerSecondPerNamespace = 200
    c.limits.missesPerSecondPerNamespace = 300
    c.cluster.peers = [HostPort(host: "10.0.0.2", port: 7400), HostPort(host: "node3", port: 7401)]
    c.cluster.etcd = "http://127.0.0.1:2379"
    c.cluster.replicas = 2
    c.cluster.writeQuorum = 1
    c.cluster.advertise = HostPort(host: "10.0.0.1", port: 7400)
    c.cluster.etcdPrefix = "/strata/x/"
    c.cluster.leaseTTL = ms(5_000)
    c.cluster.replicationQueueMax = 77
    c.cluster.fillWindow = ms(60_000)
    c.cluster.probeInterval = ms(2_000)
    c.cluster.token = "cluster-secret-00000001"
    c.cluster.etcdCA = "ca.pem"
    c.cluster.etcdCertificate = "c.pem"
    c.cluster.etcdKey = "c.key"
    c.cluster.etcdUser = "u"
    c.cluster.etcdPassword = "p"
    c.auth.tokens = [
      .init(digest: TokenDigest(secret: "tenant-secret-0000001"), namespace: try Namespace("t1"), scopes: [.read]),
      .init(digest: TokenDigest(secret: "operator-secret-00001"), namespace: try Namespace("ops"), scopes: .all),
    ]
    var tenant = NodeConfiguration.NamespaceSettings(namespace: try Namespace("t1"))
    tenant.ramBytesMax = .mebibytes(10)
    tenant.nvmeBytesMax = .mebibytes(11)
    tenant.pinnedBytesMax = .mebibytes(12)
    tenant.inflightBytesMax = .mebibytes(13)
    tenant.requestsPerSecond = 14
    tenant.lookupKeysPerSecond = 15
    tenant.missesPerSecond = 16
    c.namespaces = [tenant, NodeConfiguration.NamespaceSettings(namespace: try Namespace("t2"))]
    c.admin.listen = HostPort(host: "0.0.0.0", port: 9100)
    c.admin.enabled = false
    c.admin.connectionsMax = 5
    c.admin.requestTimeout = ms(3_000)
    c.sameHost.enabled = false
    c.sameHost.socket = "/run/s.sock"
    c.sameHost.maxRegionSize = .gibibytes(2)
    c.sameHost.copyThreads = 3
    c.tls.certificate = "n.pem"
    c.tls.key = "n.key"
    c.tls.clusterCA = "ca.pem"
    c.tls.clientCA = "cca.pem"
    c.tls.requireClientCertificate = true
    c.tls.kernel = false
    c.insecure = true
    let printed = c.yaml
    #expect(try NodeConfiguration(yaml: printed) == c, "printed:\n\(printed)")
    // Unset optionals print as their keywords (auto, unlimited) and read back unset.
    var defaults = NodeConfiguration()
    defaults.nvme.paths = defaults.effectiveNVMePaths
    #expect(try NodeConfiguration(yaml: defaults.yaml) == defaults)
  }

  /// A reload compares every field the file can hold (the same schema the reader walks), named as
  /// written and in the file's order: settings a hand-kept list once left out (a new write-behind
  /// window, cluster token, idle timeout or same-host switch) are reported too, never ignored.
  @Test func everyChangedFieldIsNamed() throws {
    let old = try NodeConfiguration(yaml: "cluster: {token: a}")
    let new = try NodeConfiguration(
      yaml: """
        node: {zone: z1}
        nvme: {capacity: 8GiB, writeback_window: 2s}
        limits: {idle_timeout: 30s}
        cluster: {token: b, write_quorum: 1, probe_interval: 2s}
        same_host: {enabled: false}
        """)
    #expect(
      old.changedFields(comparedTo: new) == [
        "node.zone", "nvme.capacity", "nvme.writeback_window", "limits.idle_timeout", "cluster.write_quorum",
        "cluster.probe_interval", "cluster.token", "same_host.enabled",
      ])
    #expect(new.changedFields(comparedTo: new).isEmpty && old.changedFields(comparedTo: old).isEmpty)
  }
}
