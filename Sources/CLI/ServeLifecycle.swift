// `strata serve`'s services in the order they start; they stop in the reverse order, each within
// its deadline (StrataNode's `Lifecycle`; docs/architecture.md, "Lifecycle").

import Logging
import StrataAdmin
import StrataCluster
import StrataConfig
import StrataCore
import StrataNode
import StrataStorage
import Synchronization

/// The node's services, first to start first. Stopping runs the list backwards:
/// 1. readiness: /ready answers 503 first, so load balancers move away while requests finish;
/// 2. data plane: no new connections, requests in progress finish (each under its own deadline);
/// 3. cluster: replication copies already queued go out (for up to 10 s), then membership,
///    replication and peer connections stop, once no request can need them;
/// 4. admin API: stops after the data plane, so /metrics and /ready answer while it drains;
/// 5. verify: no scrub starts (the schedule, `verify.interval`, runs with or without the admin
///    API), and one in progress ends at the block it is checking, before storage stops under it;
/// 6. storage: the demotion loop ends and RAM blocks are written to NVMe (a warm restart), for as
///    long as the writes move on (each 10% logged; systemd told, and asked for more time).
func nodeServices(
  _ settings: NodeConfiguration, tiers: TierManager, server: NodeServer, cluster: ClusterNode?,
  verifier: StorageVerifier, administration: NodeAdministration?, notifier: ServiceNotifier?, logger: Logger
) -> [LifecycleService] {
  let demotion = DemotionLoop(tiers)
  var services = [
    LifecycleService(
      "storage", stopWithin: .seconds(120), start: { demotion.start() },
      stop: { () throws(StrataError) in
        let written = try await demotion.stopAndFlush { progress in
          notifier?.flushing(progress)
          guard progress.percent / 10 != demotion.loggedDecile.exchange(progress.percent / 10, ordering: .relaxed)
          else { return }
          logger.info("storage: \(progress.summary)")
        }
        logger.info("storage stopped", metadata: ["blocks_written_to_nvme": "\(written)"])
      },
      progress: { demotion.flushed.load(ordering: .relaxed) })
  ]
  let requestTimeout = Duration.milliseconds(settings.limits.requestTimeout.milliseconds)
  services.append(
    LifecycleService(
      "verify", stopWithin: .seconds(5),
      start: {
        guard settings.verify.interval.milliseconds > 0 else { return }
        verifier.startSchedule(every: settings.verify.interval, maxRate: settings.verify.maxRate)
      },
      stop: { verifier.stop() }))
  if let administration {
    // Nothing to start here: the admin port answers from before storage opens (NodeStart), and
    // its routes take over once the node is ready (the last service).
    services.append(
      LifecycleService(
        "admin API", stopWithin: .milliseconds(settings.admin.requestTimeout.milliseconds) + .seconds(5),
        stop: { administration.stop() }))
  }
  if let cluster {
    services.append(
      LifecycleService(
        "cluster", stopWithin: .seconds(15), start: { () throws(StrataError) in try cluster.start() },
        stop: {
          let queued = cluster.replicationStats.queued
          if queued > 0 {
            logger.info(
              "sending queued replication copies before stopping", metadata: ["copies": "\(queued)", "within": "10s"])
          }
          let left = await cluster.finishReplication(withinMilliseconds: 10_000)
          if left.queued > 0 || left.failed > 0 {
            logger.warning(
              "stopping with replication copies still queued or failed: their blocks stay short of their owners until a repair pass",
              metadata: ["copies": "\(left.queued)", "failed_blocks": "\(left.failed)"])
          }
          cluster.stop(deregister: false)
        }))
  }
  services.append(
    LifecycleService(
      "data plane", stopWithin: requestTimeout * 2 + .seconds(10), start: { server.start() },
      stop: { server.stop() }))
  if let administration {
    services.append(
      LifecycleService(
        "readiness", stopWithin: .seconds(1),
        start: {
          administration.start()
          print(
            "strata admin API at \(server.tls == nil ? "http" : "https")://\(administration.address) (metrics: \(administration.metricsURL))"
          )
        },
        stop: { administration.beginStopping() }))
  }
  return services
}

/// The tier manager's demotion loop, run as a task from `start` until `stopAndFlush`.
private final class DemotionLoop: Sendable {
  private let tiers: TierManager
  private let task = Mutex<Task<Void, Never>?>(nil)
  /// Blocks the stop's flush has written so far: its progress, for the lifecycle's deadline.
  let flushed = Atomic<Int>(0)
  /// The last tenth of the flush logged (-1: none yet).
  let loggedDecile = Atomic<Int>(-1)

  init(_ tiers: TierManager) { self.tiers = tiers }

  func start() {
    let tiers = self.tiers
    task.withLock { $0 = Task { await tiers.run() } }
  }

  /// Ends the loop, waits for it, then writes RAM blocks to NVMe, telling `progress` how far it has
  /// got; returns how many were written.
  func stopAndFlush(progress: @escaping @Sendable (FlushProgress) -> Void) async throws(StrataError) -> Int {
    tiers.shutdown()
    await task.withLock { $0 }?.value
    return try await tiers.flush { [self] now in
      flushed.store(now.blocksWritten, ordering: .relaxed)
      progress(now)
    }
  }
}
