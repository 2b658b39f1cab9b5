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

/// The admin API when `admin.enabled` (not started: `nodeServices` starts it last), nil when
/// disabled.
func makeAdmin(
  _ settings: NodeConfiguration, configPath: String?, nodeID: String, tiers: TierManager, server: NodeServer,
  verifier: StorageVerifier, metrics: NodeMetrics, cluster: ClusterNode?, faultInjection: Bool = false,
  diskFaults: DiskFaultSwitch? = nil,
  logger: Logger
) throws(StrataError) -> NodeAdministration? {
  guard settings.admin.enabled else {
    logger.info("admin API disabled (admin.enabled: false)")
    return nil
  }
  let administration = try NodeAdministration(
    settings: settings, configPath: configPath, nodeID: nodeID, tiers: tiers, node: server, verifier: verifier,
    metrics: metrics, machine: thisMachine(), logger: logger)
  if let cluster { attachCluster(cluster, to: administration) }
  if faultInjection {
    administration.enableFaultInjection(disk: diskFaults)
    logger.warning(
      "fault injection on: POST /v1/debug/flip-bit corrupts RAM blocks, POST /v1/debug/disk-fault fails the disk (tests only)"
    )
  }
  return administration
}
