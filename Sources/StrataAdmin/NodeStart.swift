// What a node's admin port answers while the node starts, before its routes are in force:
// reading a large NVMe tier takes minutes, and probes, Prometheus and operators should see a node
// that is starting and how far it has got, not a node that is down.

import StrataCore
public import StrataStorage
import Synchronization

/// How far a node's start has got: a pure value, told each step.
public struct StartProgress: Sendable, Hashable {
  public enum Phase: String, Sendable, Hashable {
    case openingStorage = "opening_storage"
    case recoveringNVMe = "recovering_nvme"
    case faultingInRAM = "faulting_in_ram"
    /// Storage is open; the data plane, the cluster and the admin routes are being started.
    case startingServices = "starting_services"
  }

  public private(set) var phase = Phase.openingStorage
  /// The NVMe recovery's progress (all zero until it starts, its last report after).
  public private(set) var recovery = RecoveryProgress()
  /// The RAM arena's size, once it is being faulted in.
  public private(set) var ramBytes = 0

  public init() {}

  /// Takes in a step of opening storage. Recovery reports come from several reading threads and
  /// may arrive out of order: one that read fewer regions than already known is ignored.
  public mutating func record(_ step: StorageOpeningStep) {
    switch step {
    case .recoveringNVMe(let read):
      guard phase == .openingStorage || phase == .recoveringNVMe else { return }
      phase = .recoveringNVMe
      if read.regionsRead >= recovery.regionsRead { recovery = read }
    case .faultingInRAM(let bytes):
      phase = .faultingInRAM
      ramBytes = bytes
    }
  }

  /// Storage is open: the services are being started.
  public mutating func storageOpened() { phase = .startingServices }

  /// One line saying how far the start has got, for /ready and /health.
  public var summary: String {
    switch phase {
    case .openingStorage: return "opening storage"
    case .recoveringNVMe:
      guard recovery.regionsTotal > 0 else { return "reading the NVMe tier" }
      let percent = recovery.regionsRead * 100 / recovery.regionsTotal
      return
        "reading the NVMe tier: \(recovery.regionsRead) of \(recovery.regionsTotal) regions (\(percent)%, \(ByteSize(bytes: UInt64(recovery.bytesRead)))), \(recovery.recordsFound) record(s) found"
    case .faultingInRAM: return "faulting in the RAM arena (\(ByteSize(bytes: UInt64(ramBytes))))"
    case .startingServices: return "starting the data plane and the cluster"
    }
  }
}

/// A starting node's progress, kept as its storage opens, and the admin answers that report it
/// until the node serves (`AdminServer.startWhileStarting`):
/// - GET /health: 200, status `starting`: the process is alive and its start moves on (a
///   liveness probe must not kill a node reading a large NVMe tier);
/// - GET /ready: 503, status `starting`, the reason saying how far the start has got;
/// - GET /metrics: the node's metrics, `strata_starting` 1 and the recovery's progress;
/// - anything else: 503 `unavailable`, naming the step.
/// No token is checked: nothing is answered but the start's progress.
public final class NodeStart: Sendable {
  private let progress = Mutex(StartProgress())
  private let metrics: NodeMetrics
  private let notifier: ServiceNotifier?

  /// `notifier` (systemd's notify socket, when the node has one) hears each step too.
  public init(metrics: NodeMetrics, notifier: ServiceNotifier? = nil) {
    self.metrics = metrics
    self.notifier = notifier
    metrics.recordStart(StartProgress())
    notifier?.starting(StartProgress())
  }

  /// How far the start has got now.
  public var current: StartProgress { progress.withLock { $0 } }

  /// Takes in a step of opening storage (pass this to `TierManager.open`'s `progress`).
  @Sendable public func record(_ step: StorageOpeningStep) {
    let now = progress.withLock { progress in
      progress.record(step)
      return progress
    }
    metrics.recordStart(now)
    notifier?.starting(now)
  }

  /// Storage is open: the services are being started.
  public func storageOpened() {
    let now = progress.withLock { progress in
      progress.storageOpened()
      return progress
    }
    metrics.recordStart(now)
    notifier?.starting(now)
  }

  /// The answer to `request` while the node starts.
  @Sendable public func answer(_ request: AdminRequest) -> AdminResponse {
    let now = current
    guard request.method == "GET" || request.method == "HEAD" else { return refusal(now) }
    let progress = RecoveryProgressDocument(now.recovery)
    switch request.path {
    case "/health":
      return .json(
        ProbeDocument(status: "starting", reason: now.summary, phase: now.phase.rawValue, progress: progress))
    case "/ready":
      return .json(
        ProbeDocument(
          status: "starting", reason: "starting: \(now.summary)", phase: now.phase.rawValue, progress: progress),
        status: 503)
    case "/metrics":
      return AdminResponse(status: 200, contentType: NodeMetrics.contentType, body: metrics.render())
    default: return refusal(now)
    }
  }

  private func refusal(_ now: StartProgress) -> AdminResponse {
    .error(
      StrataError(
        .unavailable, "the node is starting (\(now.summary)); the admin API answers once the node listens"))
  }
}
