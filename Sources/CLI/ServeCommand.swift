// `strata serve`: run a node. Resolves and validates the configuration (defaults ← file ←
// flags), opens the admin port (answering how far the start has got, as systemd's notify socket
// is told), opens the storage tiers (recovering the NVMe tier's blocks), serves the data plane
// over TCP until SIGTERM or SIGINT, then stops its services in the reverse of their start order
// (`nodeServices`: requests in progress finish, RAM blocks are written to NVMe so a restart is
// warm) and exits 0.

public import ArgumentParser
import Dispatch
import Logging
import StrataAdmin
import StrataCluster
import StrataConfig
import StrataCore
import StrataNode
import StrataStorage
import StrataTCP
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a node (embedded default: one node, RAM + NVMe tier under ./strata-data).",
    discussion: """
      Logs one line with the address it listens on when ready. SIGTERM or SIGINT stops it \
      gracefully: requests in progress finish, RAM blocks are written to NVMe, exit code 0.
      """)

  @Option(help: "A YAML configuration file (docs/configuration.md).")
  var config: String?

  @Option(help: "Data folder; the NVMe tier defaults to DIR/nvme.")
  var dataDir: String?

  @Option(help: "Address to listen on, HOST:PORT.")
  var listen: String?

  @Option(help: "Address of the admin API and metrics, HOST:PORT (port 0: any free port).")
  var admin: String?

  @Option(help: "RAM tier size, like 512MiB or 4GiB.")
  var ram: String?

  @Option(help: "NVMe tier size of the default path, like 8GiB.")
  var nvme: String?

  @Flag(help: "Do not lock the RAM arena in memory (no CAP_IPC_LOCK needed; it may be swapped).")
  var ramUnlocked = false

  @Option(help: "Static cluster: the members' data-plane addresses, HOST:PORT,HOST:PORT…")
  var peers: String?

  @Option(help: "etcd membership: the etcd endpoint, http://HOST:PORT.")
  var etcd: String?

  @Option(help: "Replication factor (default: 2 with at least two nodes, else 1).")
  var replicas: Int?

  @Option(help: "Owners that must hold a block before a PUT is acknowledged (default: all that are up, at least 2).")
  var writeQuorum: Int?

  @Option(help: "This node's failure domain; replicas go to distinct zones.")
  var zone: String?

  @Option(help: "This node's id (default: the host name; with --peers, the address it advertises, its member id).")
  var nodeId: String?

  @Option(help: "The data-plane HOST:PORT peers and clients reach this node at (default: the listen address).")
  var advertise: String?

  @Option(help: ArgumentHelp("TLS: this node's certificate chain (PEM); with --tls-key.", valueName: "file"))
  var tlsCert: String?

  @Option(help: ArgumentHelp("TLS: the private key of --tls-cert (PEM).", valueName: "file"))
  var tlsKey: String?

  @Option(
    help: ArgumentHelp(
      "TLS: the cluster CA (PEM): node certificates chain to it; peers must present one.", valueName: "file"))
  var tlsCa: String?

  @Flag(help: "Listen beyond loopback even without tokens or TLS (refused otherwise).")
  var insecure = false

  @Option(help: "Least severe log lines written (default: info).")
  var logLevel: LogLevel?

  @Option(help: "Log lines as text (for people) or json (one object a line, for log collectors).")
  var logFormat: LogFormat?

  @Flag(help: "Print the resolved configuration and exit without opening storage.")
  var dryRun = false

  // Tests only: POST /v1/debug/flip-bit on the admin API corrupts a RAM block, and
  // POST /v1/debug/disk-fault makes the NVMe devices fail or corrupt I/O (docs/admin.md).
  @Flag(help: .hidden)
  var faultInjection = false

  func run() async throws {
    do throws(StrataError) {
      let settings = try resolvedConfiguration()
      print("# resolved configuration")
      print(settings.yaml, terminator: "")
      if dryRun { return }
      let signals = TerminationSignals()
      let logLevel = NodeLogLevel(settings.log.level)
      LoggingSystem.bootstrap(NodeLogHandler.factory(format: settings.log.format, level: logLevel))
      let logger = Logger(label: "strata.node")
      let diskFaults = faultInjection ? DiskFaultSwitch() : nil
      let metrics = NodeMetrics(namespaces: metricNamespaces(settings))
      let notifier = ServiceNotifier(socketPath: getenv("NOTIFY_SOCKET").map { String(cString: $0) }, logger: logger)
      let start = NodeStart(metrics: metrics, notifier: notifier)
      let admin = try openAdminWhileStarting(settings, start: start, logger: logger)
      func stopWhileStarting(reason: String) async {
        let signal = await signals.wait()
        notifier?.stopping("stopped while starting (\(signal))")
        admin?.stop()
        logger.info("stopped while starting", metadata: ["signal": "\(signal)", "reason": "\(reason)"])
      }
      let tiers: TierManager
      let recovery: RecoveryReport?
      do throws(StrataError) {
        (tiers, recovery) = try TierManager.open(settings, faults: diskFaults, logger: logger, progress: start.record) {
          signals.isTriggered
        }
      } catch  where error.code == .cancelled && signals.isTriggered {
        // A stop while the NVMe tier is read (minutes for a large tier) ends the start at once.
        return await stopWhileStarting(reason: error.message)
      }
      if signals.isTriggered { return await stopWhileStarting(reason: "before serving") }
      start.storageOpened()
      let stats = tiers.stats
      print(
        "storage ready: RAM \(ByteSize(bytes: UInt64(stats.ramCapacityBytes))) "
          + "(\(tiers.arena.isLocked ? "locked" : "not locked")), NVMe \(ByteSize(bytes: UInt64(stats.nvmeCapacityBytes))) "
          + "holding \(recovery?.blocksRecovered ?? 0) block(s)")
      let nodeID = settings.node.id.isEmpty ? defaultNodeID(settings) : settings.node.id
      let server = try NodeServer(
        configuration: ServerConfiguration(settings, nodeID: nodeID), tiers: tiers, logger: logger, observer: metrics)
      var cluster: ClusterNode?
      if settings.cluster.mode != .single {
        let advertised = settings.cluster.advertise ?? server.address
        guard !advertised.isUnspecified else {
          throw StrataError(
            .invalidConfiguration,
            "cluster.advertise: \(advertised) is no address peers and clients can reach (the node listens on \(server.address)); give the one they reach it at (--advertise HOST:PORT)"
          )
        }
        var clusterSettings = ClusterNode.Settings(
          configuration: settings, nodeID: nodeID, advertise: advertised,
          capacityBytes: UInt64(stats.ramCapacityBytes + stats.nvmeCapacityBytes))
        let credentials = try ClusterTLS(settings, memberID: clusterSettings.me.id)
        clusterSettings.peerTLS = credentials.peer
        clusterSettings.etcdTLS = credentials.etcd
        clusterSettings.memberCertificate = credentials.memberCertificate
        clusterSettings.memberAuthority = credentials.memberAuthority
        clusterSettings.instance = server.instance
        let node = ClusterNode(settings: clusterSettings, tiers: tiers, logger: logger)
        node.setOnDrained { signals.trigger("drained") }
        server.cluster = node
        cluster = node
      }
      // The scrub: an operator's through the admin API, a scheduled one with or without it.
      let verifier = StorageVerifier(tiers: tiers, logger: logger)
      let administration = makeAdmin(
        settings, configPath: config, nodeID: nodeID, tiers: tiers, server: server, verifier: verifier,
        metrics: metrics, cluster: cluster, faultInjection: faultInjection, diskFaults: diskFaults, admin: admin,
        logLevel: logLevel, logger: logger)
      let lifecycle = Lifecycle()
      do throws(LifecycleFailure) {
        for service in nodeServices(
          settings, tiers: tiers, server: server, cluster: cluster, verifier: verifier, administration: administration,
          notifier: notifier, logger: logger)
        {
          try await lifecycle.start(service)
        }
      } catch {
        throw error.error
      }
      let security = server.tls == nil ? "plaintext" : "TLS 1.3"
      logger.info(
        "listening", metadata: ["address": "\(server.address)", "node_id": "\(nodeID)", "security": "\(security)"])
      if settings.insecure && !settings.listen.isLoopback {
        logger.warning(
          "insecure: true: listening beyond loopback\(settings.auth.tokens.isEmpty ? " without tokens" : "")\(server.tls == nil ? " without TLS" : "")"
        )
      }
      if let path = server.sameHostPath {
        // Local only (socket mode 0660, node id checked): plaintext even when the TCP port speaks TLS.
        logger.info("same-host path listening", metadata: ["socket": "\(path)", "security": "plaintext"])
      }
      for advisory in settings.advisories() { logger.warning("\(advisory)") }
      print("strata node \(nodeID) listening on \(server.address)")
      fflush(nil)
      notifier?.ready("serving on \(server.address)")
      let environment = ["WATCHDOG_USEC", "WATCHDOG_PID"].reduce(into: [String: String]()) {
        $0[$1] = getenv($1).map { String(cString: $0) }
      }
      let watchdog = notifier.flatMap { notifier in
        ServiceNotifier.watchdogMilliseconds(environment, pid: getpid()).map {
          ServiceWatchdog(notifier: notifier, intervalMilliseconds: $0, logger: logger) { server.livenessProblems() }
        }
      }
      defer { watchdog?.stop() }
      let signal = await signals.wait()
      notifier?.stopping("stopping (\(signal)): finishing requests, writing RAM blocks to NVMe")
      logger.info("stopping", metadata: ["signal": "\(signal)", "order": "\(Array(lifecycle.started.reversed()))"])
      let report = await lifecycle.stop()
      for failure in report.failures { logger.error("stopping", metadata: ["failure": "\(failure)"]) }
      if let failure = report.failures.first { throw failure.error }
      logger.info("stopped", metadata: ["services": "\(report.stopped)"])
    } catch {
      throw report(error)
    }
  }

  private func resolvedConfiguration() throws(StrataError) -> NodeConfiguration {
    var settings =
      try config.map { path throws(StrataError) in
        try NodeConfiguration(yaml: try readText(path, what: "configuration file"))
      } ?? NodeConfiguration()
    if let dataDir { settings.dataDirectory = dataDir }
    if let listen {
      settings.listen = try flag("--listen") { () throws(StrataError) in
        try HostPort(parsing: listen, allowAnyPort: true)
      }
    }
    if let admin {
      settings.admin.listen = try flag("--admin") { () throws(StrataError) in
        try HostPort(parsing: admin, allowAnyPort: true)
      }
    }
    if let ram { settings.ram.capacity = try flag("--ram") { () throws(StrataError) in try ByteSize(parsing: ram) } }
    if let nvme {
      settings.nvme.defaultCapacity = try flag("--nvme") { () throws(StrataError) in try ByteSize(parsing: nvme) }
    }
    if ramUnlocked { settings.ram.lock = false }
    if let logLevel { settings.log.level = logLevel }
    if let logFormat { settings.log.format = logFormat }
    if let peers { settings.cluster.peers = try parseSeeds(peers, flag: "--peers") }
    if let etcd { settings.cluster.etcd = etcd }
    if let replicas { settings.cluster.replicas = replicas }
    if let writeQuorum { settings.cluster.writeQuorum = writeQuorum }
    if let zone { settings.node.zone = zone }
    if let nodeId { settings.node.id = nodeId }
    if let tlsCert { settings.tls.certificate = tlsCert }
    if let tlsKey { settings.tls.key = tlsKey }
    if let tlsCa { settings.tls.clusterCA = tlsCa }
    if insecure { settings.insecure = true }
    if let advertise {
      settings.cluster.advertise = try flag("--advertise") { () throws(StrataError) in try HostPort(parsing: advertise)
      }
    }
    try settings.validate(on: thisMachine())
    return settings
  }

  private func flag<T>(_ name: String, _ parse: () throws(StrataError) -> T) throws(StrataError) -> T {
    do {
      return try parse()
    } catch {
      throw StrataError(.invalidArgument, "\(name): \(error.message)")
    }
  }
}

/// SIGTERM and SIGINT, caught from the moment this is made (so a signal that arrives while the
/// node starts is not lost); `wait()` returns the first one's name.
final class TerminationSignals: @unchecked Sendable {
  // @unchecked: `sources` is written once in init and only kept alive afterwards; the stream is Sendable.
  private let received: AsyncStream<String>
  private let sources: [any DispatchSourceSignal]
  private let continuation: AsyncStream<String>.Continuation

  private final class Flag: Sendable { let value = Atomic<Bool>(false) }
  private let triggered = Flag()

  /// Ends `wait()` as a signal would (a drained node stops itself this way).
  func trigger(_ reason: String) {
    triggered.value.store(true, ordering: .relaxed)
    continuation.yield(reason)
  }

  /// Whether a signal (or `trigger`) has come: long work before `wait()` asks it to stop early.
  var isTriggered: Bool { triggered.value.load(ordering: .relaxed) }

  init() {
    let (stream, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingOldest(1))
    received = stream
    self.continuation = continuation
    let queue = DispatchQueue(label: "strata.signals")
    let triggered = self.triggered
    sources = [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")].map { number, name in
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
      source.setEventHandler {
        triggered.value.store(true, ordering: .relaxed)
        continuation.yield(name)
      }
      source.resume()
      return source
    }
  }

  func wait() async -> String {
    for await name in received { return name }
    return "end of signals"
  }
}

/// A node's id when none is configured: in a static cluster its member id, the address it
/// advertises (when known before it listens), so that its status, logs and peers name it as the
/// ring does, and several nodes on one host differ; otherwise the host name.
func defaultNodeID(_ settings: NodeConfiguration) -> String {
  let advertised = settings.cluster.advertise ?? settings.listen
  guard settings.cluster.mode == .staticPeers, advertised.port != 0, !advertised.isUnspecified else {
    return hostName()
  }
  return advertised.description
}

func hostName() -> String {
  var buffer = [CChar](repeating: 0, count: 256)
  guard gethostname(&buffer, buffer.count) == 0 else { return "strata-node" }
  return String(nulTerminated: buffer)
}

// The configuration's choices as options: ArgumentParser checks the value and lists the choices in --help.
extension LogLevel: ExpressibleByArgument {}
extension LogFormat: ExpressibleByArgument {}
