// The admin API of one node: health, readiness, metrics, status, evict, verify and config reload
// over the node's tier manager and data plane, on an AdminServer that other modules extend.

import Dispatch
import Foundation
public import Logging
public import StrataConfig
public import StrataCore
public import StrataNode
public import StrataStorage
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A node's admin API and its operations. Make it after the data plane, `start()` it, and
/// `beginStopping()` when the node starts to shut down (so /ready answers 503).
public final class NodeAdministration: Sendable {
  public let admin: AdminServer
  public let metrics: NodeMetrics
  public let verifier: StorageVerifier
  public let tiers: TierManager
  public let node: NodeServer
  public let nodeID: String
  private let logger: Logger
  private let configPath: String?
  private let machine: NodeConfiguration.Machine
  private let startedAt = DispatchTime.now().uptimeNanoseconds
  private let work = WorkerPool(label: "strata.admin.work")
  private struct State {
    /// The configuration file as last read (the baseline a reload compares against).
    var file: NodeConfiguration
    var serving = false
    var appliers: [ReloadApplier] = []
    var certificateReloaders: [CertificateReloader] = []
    var epoch: (@Sendable () -> UInt64)?
    var scrapeHooks: [@Sendable (NodeMetrics) -> Void] = []
  }
  private let state: Mutex<State>

  /// Registers the node's routes on `admin` (bound on `settings.admin.listen`, and maybe already
  /// answering while the node starts).
  /// - Parameters:
  ///   - configPath: the file `serve` read its settings from, which config reload reads again.
  public init(
    settings: NodeConfiguration, configPath: String?, nodeID: String, tiers: TierManager, node: NodeServer,
    verifier: StorageVerifier, metrics: NodeMetrics, machine: NodeConfiguration.Machine, admin: AdminServer,
    logger: Logger
  ) {
    // The admin port speaks TLS when the data plane does, with the same (reloadable) certificates.
    if node.tls != nil { admin.followTLS { [node] in node.tls } }
    self.admin = admin
    self.metrics = metrics
    self.verifier = verifier
    self.tiers = tiers
    self.node = node
    self.nodeID = nodeID
    self.logger = logger
    self.configPath = configPath
    self.machine = machine
    var file = NodeConfiguration()
    if let configPath, let text = try? readTextFile(configPath), let parsed = try? NodeConfiguration(yaml: text) {
      file = parsed
    }
    state = Mutex(State(file: file))
    onReload { [admin, node] _, new in
      admin.replaceTokens(new.auth.tokens)
      node.replaceTokens(new.auth.tokens)
      return ["auth.tokens"]
    }
    admin.onRefusal { [node] event, detail, message, fingerprint in
      node.recordAudit(event, detail: detail, source: "admin", message: message, fingerprint: fingerprint)
    }
    registerRoutes()
  }

  /// Where the admin API listens.
  public var address: HostPort { admin.address }

  /// The metrics URL, for the log line at start.
  public var metricsURL: String { "\(node.tls == nil ? "http" : "https")://\(address)/metrics" }

  /// Starts serving the admin API; /ready answers 200 from now until `beginStopping()`.
  public func start() {
    admin.start()
    metrics.recordServing()
    state.withLock { $0.serving = true }
    logger.info("admin API listening", metadata: ["address": "\(address)", "metrics_url": "\(metricsURL)"])
  }

  /// /ready answers 503 from now on.
  public func beginStopping() { state.withLock { $0.serving = false } }

  public func stop() {
    beginStopping()
    admin.stop()
  }

  /// Adds a config-reload applier (see `ReloadApplier`).
  public func onReload(_ applier: @escaping ReloadApplier) { state.withLock { $0.appliers.append(applier) } }

  /// Adds a reader of certificates for every config reload (see `CertificateReloader`).
  public func onCertificateReload(_ reloader: @escaping CertificateReloader) {
    state.withLock { $0.certificateReloaders.append(reloader) }
  }

  /// Where /v1/status reads the ring epoch (the cluster module sets it; 0 alone).
  public func epochProvider(_ provider: @escaping @Sendable () -> UInt64) { state.withLock { $0.epoch = provider } }

  /// Runs `hook` before every /metrics scrape, after the node's own refresh (the cluster module
  /// sets its gauges and counters there).
  public func beforeScrape(_ hook: @escaping @Sendable (NodeMetrics) -> Void) {
    state.withLock { $0.scrapeHooks.append(hook) }
  }

  /// Registers POST /v1/debug/flip-bit, which flips one bit of a RAM-resident block without
  /// touching its stored checksum (a memory fault), and, with `disk`, POST /v1/debug/disk-fault,
  /// which makes the node's disk fail writes and fail or corrupt reads from now on, for
  /// fault-injection tests. Only for a node started with `strata serve --fault-injection`; call
  /// before `start()`. Needs an admin token.
  public func enableFaultInjection(disk: DiskFaultSwitch? = nil) {
    if let disk { enableDiskFaults(disk) }
    admin.route("POST", "/v1/debug/flip-bit") { [tiers] request throws(StrataError) in
      let body = try request.jsonBody()
      guard let keyText = body["key"]?.stringValue, let key = BlockKey(hex: keyText) else {
        throw StrataError(.invalidArgument, "key: 64 hex digits expected")
      }
      let namespace = try Namespace(body["namespace"]?.stringValue ?? Namespace.embeddedDefault.name)
      let byte = body["byte"]?.intValue ?? 0
      guard tiers.flipBitInRAMForTesting(BlockID(namespace: namespace, key: key), byte: byte) else {
        throw StrataError(.notFound, "block \(key) of namespace \(namespace.name) is not in RAM")
      }
      return .json(FlipBitDocument(flipped: true))
    }
  }

  private func enableDiskFaults(_ disk: DiskFaultSwitch) {
    admin.route("POST", "/v1/debug/disk-fault") { [logger] request throws(StrataError) in
      let body = try request.jsonBody()
      let writesChoices = DiskFaults.Writes.allCases.map(\.rawValue).joined(separator: ", ")
      let readsChoices = DiskFaults.Reads.allCases.map(\.rawValue).joined(separator: ", ")
      for key in body.keys where !["writes", "reads"].contains(key) {
        throw StrataError(
          .invalidArgument, "unknown field '\(key)'; known: writes (\(writesChoices)), reads (\(readsChoices))")
      }
      var faults = disk.faults
      if let value = body["writes"] {
        guard let text = value.stringValue, let writes = DiskFaults.Writes(rawValue: text) else {
          throw StrataError(.invalidArgument, "writes: one of \(writesChoices)")
        }
        faults.writes = writes
      }
      if let value = body["reads"] {
        guard let text = value.stringValue, let reads = DiskFaults.Reads(rawValue: text) else {
          throw StrataError(.invalidArgument, "reads: one of \(readsChoices)")
        }
        faults.reads = reads
      }
      disk.set(faults)
      logger.warning(
        "injected disk faults", metadata: ["writes": "\(faults.writes.rawValue)", "reads": "\(faults.reads.rawValue)"])
      return .json(DiskFaultDocument(faults: faults, counts: disk.counts))
    }
  }

  // MARK: Routes

  private func registerRoutes() {
    // Liveness: the process answers, and its data plane still accepts connections (an accept
    // loop that stopped going round is a node to restart; the admin port answering proves nothing
    // about the data plane).
    admin.route("GET", "/health", requiresToken: false) { [node] _ throws(StrataError) in
      let problems = node.livenessProblems()
      guard problems.isEmpty else {
        return .json(ProbeDocument(status: "unhealthy", reason: problems.joined(separator: "; ")), status: 503)
      }
      return .json(ProbeDocument(status: "ok"))
    }
    admin.route("GET", "/ready", requiresToken: false) { [self] _ throws(StrataError) in
      let reasons = notReadyReasons()
      guard reasons.isEmpty else {
        return .json(ProbeDocument(status: "not_ready", reason: reasons.joined(separator: "; ")), status: 503)
      }
      return .json(ProbeDocument(status: "ready"))
    }
    admin.route("GET", "/metrics", requiresToken: false) { [self] _ throws(StrataError) in
      metrics.refresh(tiers: tiers, server: node, verifier: verifier)
      metrics.refreshAdmin(admin.connectionStats)
      for hook in state.withLock({ $0.scrapeHooks }) { hook(metrics) }
      return AdminResponse(status: 200, contentType: NodeMetrics.contentType, body: metrics.render())
    }
    admin.route("GET", "/v1/status") { [self] _ throws(StrataError) in .json(status()) }
    admin.route("POST", "/v1/evict") { [self] request throws(StrataError) in
      let selector = try evictionSelector(try request.jsonBody())
      let report = try await onWorkQueue { [tiers] () throws(StrataError) in try tiers.evict(selector) }
      metrics.recordAdminEviction(report)
      logger.info(
        "evicted blocks",
        metadata: [
          "request_id": "\(request.requestID)", "blocks": "\(report.blocks)", "bytes": "\(report.bytes)",
          "ram_blocks": "\(report.ramBlocks)", "nvme_blocks": "\(report.nvmeBlocks)",
        ])
      return .json(EvictionDocument(report))
    }
    admin.route("POST", "/v1/verify") { [self] request throws(StrataError) in
      let rate = try verifyRate(try request.jsonBody())
      guard verifier.start(maxBytesPerSecond: rate) else {
        throw StrataError(.alreadyExists, "a verify is running already; GET /v1/verify shows its progress")
      }
      logger.info(
        "verify started",
        metadata: [
          "request_id": "\(request.requestID)",
          "max_rate_per_second": "\(rate == 0 ? "unlimited" : ByteSize(bytes: rate).description)",
        ])
      return .json(JobDocument(job: "verify", state: "running"))
    }
    admin.route("GET", "/v1/verify") { [self] _ throws(StrataError) in
      .json(VerifyDocument(progress: verifier.progress))
    }
    admin.route("POST", "/v1/config/reload") { [self] request throws(StrataError) in
      let report = try await onWorkQueue { [self] () throws(StrataError) in try reload() }
      logger.info(
        "config reload",
        metadata: [
          "request_id": "\(request.requestID)", "applied": "\(report.applied)",
          "needs_restart": "\(report.needsRestart)", "rejected": "\(report.rejected.count)",
        ])
      return .json(report)
    }
  }

  private func notReadyReasons() -> [String] {
    var reasons: [String] = []
    if !state.withLock({ $0.serving }) { reasons.append("the node is starting or stopping") }
    return reasons + admin.notReadyReasons()
  }

  /// The document of GET /v1/status.
  func status() -> NodeStatusDocument {
    let stats = tiers.stats
    let server = node.stats
    let lookups = stats.hitsRAM + stats.hitsNVMe + stats.misses
    func share(_ count: Int) -> Double { lookups == 0 ? 0 : Double(count) / Double(lookups) }
    let errors = metrics.errorCounts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(5)
    let reasons = notReadyReasons()
    let problems = node.livenessProblems()
    var warnings = problems
    if stats.diskOperationsStalled > 0 {
      warnings.append(
        "\(stats.diskOperationsStalled) NVMe operation(s) have not returned for \(DiskStallMonitor.stallMilliseconds / 1000) s or more (the oldest for \(stats.diskOldestOperationMilliseconds / 1000) s): the disk may have stopped answering; requests that need it fail at their deadline"
      )
    }
    let health = !problems.isEmpty ? "unhealthy" : reasons.isEmpty ? "ok" : "not_ready"
    return NodeStatusDocument(
      nodeID: nodeID, version: StrataVersion.current,
      uptimeSeconds: Double(DispatchTime.now().uptimeNanoseconds - startedAt) / 1e9,
      health: health, epoch: Int(state.withLock { $0.epoch }?() ?? 0),
      tiers: .init(
        ram: .init(used: stats.ramUsedBytes, capacity: stats.ramCapacityBytes, blocks: stats.ramBlocks),
        nvme: .init(used: stats.nvmeUsedBytes, capacity: stats.nvmeCapacityBytes, blocks: stats.nvmeBlocks)),
      hitRate: .init(ram: share(stats.hitsRAM), nvme: share(stats.hitsNVMe), miss: share(stats.misses)),
      transfers: .init(
        tcp: .init(getBytes: server.tcpGetBytes, putBytes: server.tcpPutBytes),
        rdma: .init(getBytes: server.rdmaGetBytes, putBytes: server.rdmaPutBytes),
        shm: .init(getBytes: server.sameHostGetBytes, putBytes: server.sameHostPutBytes)),
      topErrors: errors.map { .init(code: $0.key, count: $0.value) },
      connections: .init(open: server.connectionsOpen, accepted: server.connectionsAccepted),
      leasesActive: stats.leasesActive, verify: verifier.progress.state.rawValue,
      notReady: reasons.isEmpty ? nil : reasons, warnings: warnings.isEmpty ? nil : warnings,
      sections: admin.statusSections())
  }

  /// POST /v1/verify's optional body: `{"max_rate": "64MiB"}` (bytes per second, at least 1MiB),
  /// or none for full speed. Returns 0 for full speed.
  private func verifyRate(_ body: [String: JSONValue]) throws(StrataError) -> UInt64 {
    for key in body.keys where key != "max_rate" {
      throw StrataError(.invalidArgument, "unknown field '\(key)'; known: max_rate")
    }
    guard let value = body["max_rate"], value != .null else { return 0 }
    guard let text = value.stringValue else {
      throw StrataError(.invalidArgument, "max_rate must be a size per second, such as \"64MiB\"")
    }
    let rate = try ByteSize(parsing: text)
    guard rate.bytes >= 1 << 20 else {
      throw StrataError(.invalidArgument, "max_rate must be at least 1MiB (per second); \(text) is less")
    }
    return rate.bytes
  }

  private func evictionSelector(_ body: [String: JSONValue]) throws(StrataError) -> EvictionSelector {
    var selector = EvictionSelector()
    for key in body.keys where !["namespace", "key_prefixes", "older_than_seconds"].contains(key) {
      throw StrataError(.invalidArgument, "unknown field '\(key)'; known: namespace, key_prefixes, older_than_seconds")
    }
    if let value = body["namespace"], value != .null {
      guard let name = value.stringValue else { throw StrataError(.invalidArgument, "namespace must be a string") }
      selector.namespace = try Namespace(name)
    }
    if let value = body["key_prefixes"], value != .null {
      guard let items = value.arrayValue else {
        throw StrataError(.invalidArgument, "key_prefixes must be a list of hex strings")
      }
      for item in items {
        guard let text = item.stringValue else {
          throw StrataError(.invalidArgument, "key_prefixes must be a list of hex strings")
        }
        selector.keyPrefixes.append(try KeyPrefix(hex: text))
      }
      guard !selector.keyPrefixes.isEmpty else {
        throw StrataError(.invalidArgument, "key_prefixes is empty: give at least one prefix or leave it out")
      }
    }
    if let value = body["older_than_seconds"], value != .null {
      guard let seconds = value.intValue, seconds >= 0, seconds < Int(UInt32.max) else {
        throw StrataError(.invalidArgument, "older_than_seconds must be a whole number of seconds, 0 or more")
      }
      selector.olderThanMilliseconds = UInt64(seconds) * 1000
    }
    guard !selector.isEmpty else {
      throw StrataError(.invalidArgument, "give at least one of namespace, key_prefixes, older_than_seconds")
    }
    return selector
  }

  private func reload() throws(StrataError) -> ReloadReport {
    guard let configPath else {
      throw StrataError(.invalidArgument, "this node was started without --config: there is no file to reload")
    }
    var report = ReloadReport()
    let new: NodeConfiguration
    do {
      new = try NodeConfiguration(yaml: try readTextFile(configPath))
    } catch {
      report.rejected = error.message.split(separator: "\n").map(String.init)
      return report
    }
    let problems = new.problems(on: machine)
    guard problems.isEmpty else {
      report.rejected = problems.map(\.description)
      return report
    }
    let (old, appliers, reloaders) = state.withLock { ($0.file, $0.appliers, $0.certificateReloaders) }
    let changed = old.changedFields(comparedTo: new)
    var applied = Set<String>()
    // Certificates are read again on every reload, changed paths or not (a renewal usually
    // rewrites the same files): new handshakes use them; open connections keep theirs. Every
    // file is read before any is put in force.
    var pending: [@Sendable () -> Void] = []
    for reloader in reloaders {
      do throws(StrataError) {
        pending.append(try reloader(new))
      } catch {
        report.rejected = [error.message]
        return report
      }
    }
    defer { for apply in pending { apply() } }
    if new.tls.enabled == (node.tls != nil) {
      do throws(StrataError) {
        try node.reloadTLS(new.tls)
        if new.tls.enabled { logger.info("TLS certificates reloaded", metadata: ["cert": "\(new.tls.certificate)"]) }
        applied.formUnion(["tls.cert", "tls.key", "tls.ca", "tls.client_ca", "tls.require_client_cert", "tls.kernel"])
      } catch {
        pending = []
        report.rejected = [error.message]
        return report
      }
    }
    if !changed.isEmpty {
      for applier in appliers { applied.formUnion(applier(old, new).filter(changed.contains)) }
    }
    report.applied = changed.filter(applied.contains)
    report.needsRestart = changed.filter { !applied.contains($0) }
    // The baseline moves to the new file for the settings in force; the rest still await a restart.
    state.withLock { state in
      if applied.contains("auth.tokens") { state.file.auth = new.auth }
      if applied.contains("tls.cert") { state.file.tls = new.tls }
      if changed.allSatisfy(applied.contains) { state.file = new }
    }
    return report
  }

  private func onWorkQueue<T: Sendable>(
    _ body: @escaping @Sendable () throws(StrataError) -> T
  ) async throws(StrataError) -> T {
    try await work.run(body)
  }
}

/// Reads a whole text file.
func readTextFile(_ path: String) throws(StrataError) -> String {
  guard let handle = fopen(path, "r") else {
    throw StrataError(.invalidArgument, "cannot open configuration file '\(path)': \(String(cString: strerror(errno)))")
  }
  defer { fclose(handle) }
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 65536)
  while true {
    let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, handle) }
    if count == 0 { break }
    bytes.append(contentsOf: chunk[0..<count])
  }
  return String(decoding: bytes, as: UTF8.self)
}
