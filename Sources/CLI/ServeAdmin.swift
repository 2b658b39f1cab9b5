// `strata serve`'s admin side: the admin API and metrics next to the data plane (docs/admin.md).

import Logging
import StrataAdmin
import StrataCluster
import StrataConfig
import StrataCore
import StrataNode
import StrataStorage

#if canImport(Glibc)
  import Glibc
#endif

/// The namespaces whose tier gauges are exported from the start: the configured tenants', or
/// the embedded default's.
func metricNamespaces(_ settings: NodeConfiguration) -> [Namespace] {
  settings.auth.tokens.isEmpty ? [.embeddedDefault] : Array(Set(settings.auth.tokens.map(\.namespace)))
}

/// The admin port when `admin.enabled`, bound before storage opens and answering how far the
/// start has got (`start`) until the node serves; nil when disabled. A port already taken, or TLS
/// files that do not load, fail the start at once rather than after minutes of NVMe recovery.
func openAdminWhileStarting(_ settings: NodeConfiguration, start: NodeStart, logger: Logger) throws(StrataError)
  -> AdminServer?
{
  guard settings.admin.enabled else { return nil }
  var configuration = AdminServer.Configuration(settings)
  // The data plane's certificates; the admin port follows that server's (reloadable) ones once it exists.
  if let tls = try NodeServer.makeTLS(settings.tls) { configuration.tls = { tls } }
  let admin = try AdminServer(configuration: configuration, logger: logger)
  admin.startWhileStarting(start.answer)
  logger.info("admin API answering while the node starts", metadata: ["address": "\(admin.address)"])
  return admin
}

/// The admin API on `admin` (not started: `nodeServices` starts it last), nil when disabled.
func makeAdmin(
  _ settings: NodeConfiguration, configPath: String?, nodeID: String, tiers: TierManager, server: NodeServer,
  verifier: StorageVerifier, metrics: NodeMetrics, cluster: ClusterNode?, faultInjection: Bool = false,
  diskFaults: DiskFaultSwitch? = nil, admin: AdminServer?, logLevel: NodeLogLevel,
  logger: Logger
) -> NodeAdministration? {
  guard let admin else {
    logger.info("admin API disabled (admin.enabled: false)")
    return nil
  }
  let administration = NodeAdministration(
    settings: settings, configPath: configPath, nodeID: nodeID, tiers: tiers, node: server, verifier: verifier,
    metrics: metrics, machine: thisMachine(), admin: admin, logger: logger)
  if let cluster { attachCluster(cluster, to: administration) }
  administration.onReload { [logger] old, new in
    guard old.log.level != new.log.level else { return [] }
    logLevel.set(new.log.level)
    logger.notice("log level now \(new.log.level.rawValue) (config reload)")
    return ["log.level"]
  }
  if faultInjection {
    administration.enableFaultInjection(disk: diskFaults)
    logger.warning(
      "fault injection on: POST /v1/debug/flip-bit corrupts RAM blocks, POST /v1/debug/disk-fault fails the disk (tests only)"
    )
  }
  return administration
}
