// Opens a node's storage from its configuration: the RAM arena, and the NVMe tier recovered
// from its device files (warm restart), logging how long recovery took and what it found.

public import Logging
public import StrataConfig
public import StrataCore
import Synchronization

/// The device file of one NVMe path: the tier's regions live inside this one file.
public func nvmeDeviceFile(under path: String) -> String {
  (path.hasSuffix("/") ? path : path + "/") + "strata-nvme.dat"
}

/// A step of opening a node's storage, reported as it happens (`TierManager.open`), so that a
/// node can say how far its start has got before it serves.
public enum StorageOpeningStep: Sendable, Hashable {
  /// The NVMe tier is being recovered: once before any region is read (nothing known yet, not
  /// even `regionsTotal`), then after each region read.
  case recoveringNVMe(RecoveryProgress)
  /// The RAM arena of `bytes` is being faulted in (after the NVMe tier, if any, was recovered).
  case faultingInRAM(bytes: Int)
}

extension TierManager {
  /// How often a recovery that has not finished says how far it has got.
  static let recoveryProgressIntervalMilliseconds: UInt64 = 5_000

  /// The tiers of a node configured by `node`. Existing device files are scanned and their
  /// valid blocks indexed again; torn or corrupt records are dropped, never served. Every device's
  /// failures are logged (ReportingBlockDevice), and its operations that do not return for 30 s
  /// too, from the recovery on (the tier manager's `diskStalls`); with `faults` (`strata serve --fault-injection`
  /// only) every device is wrapped in a FaultInjectingBlockDevice inside that. `shouldStop` is
  /// asked before each region the recovery reads and each part of the RAM arena faulted in: once
  /// true (a stop signal while the node starts), the recovery ends at once, changing nothing on the
  /// disk, or the pre-fault does, and `open` fails with `cancelled`. `progress` hears each step
  /// (`StorageOpeningStep`).
  public static func open(
    _ node: NodeConfiguration, clock: any NodeClock = SystemClock(), faults: DiskFaultSwitch? = nil,
    logger: Logger, progress: (@Sendable (StorageOpeningStep) -> Void)? = nil, shouldStop: (@Sendable () -> Bool)? = nil
  ) throws(StrataError) -> (TierManager, RecoveryReport?) {
    let configuration = TierConfiguration(node)
    // The data folder holds more than the NVMe tier (the same-host socket by default): a node
    // with RAM only needs it too.
    try makeDirectory(node.dataDirectory)
    guard node.nvme.admission != .never else {
      logger.info("storage: RAM tier only (nvme.admission: never)")
      return (
        try tiers(
          configuration, nvme: nil, diskStalls: nil, clock: clock, logger: logger, progress: progress,
          shouldStop: shouldStop),
        nil
      )
    }
    let stalls = DiskStallMonitor(clock: clock, logger: logger)
    stalls.start()
    var devices: [any BlockDevice] = []
    for path in node.effectiveNVMePaths {
      try makeDirectory(path.path)
      let file = nvmeDeviceFile(under: path.path)
      let device = try FileBlockDevice(path: file, capacityBytes: Int(path.capacity.bytes))
      let faulty: any BlockDevice = faults.map { FaultInjectingBlockDevice(device, faults: $0) } ?? device
      devices.append(ReportingBlockDevice(faulty, path: file, logger: logger, clock: clock, stalls: stalls))
    }
    let capacity = ByteSize(bytes: node.effectiveNVMePaths.reduce(0) { $0 + $1.capacity.bytes })
    logger.info("storage: recovering the NVMe tier (\(capacity) on \(devices.count) path(s))")
    let schedule = Mutex(
      ProgressLogSchedule(
        startMilliseconds: clock.nowMilliseconds(), intervalMilliseconds: Self.recoveryProgressIntervalMilliseconds))
    progress?(.recoveringNVMe(RecoveryProgress()))
    let (nvme, report) = try NVMeTier.recover(
      devices: devices, regionBytes: Int(node.nvme.regionSize.bytes), compression: node.nvme.compression,
      blockBytesMax: configuration.blockBytesMax, stagingBufferCount: configuration.ioThreads * 2
    ) { read in
      progress?(.recoveringNVMe(read))
      guard schedule.withLock({ $0.isDue(nowMilliseconds: clock.nowMilliseconds()) }) else { return }
      let percent = read.regionsRead * 100 / max(1, read.regionsTotal)
      logger.info(
        "storage: recovering the NVMe tier: \(read.regionsRead) of \(read.regionsTotal) regions read (\(percent)%, \(ByteSize(bytes: UInt64(read.bytesRead)))), \(read.recordsFound) record(s) found"
      )
    } shouldStop: {
      shouldStop?() ?? false
    }
    logger.info(
      "storage: NVMe tier recovered",
      metadata: [
        "blocks": "\(report.blocksRecovered)", "corrupt_dropped": "\(report.corruptDropped)",
        "duplicates_dropped": "\(report.duplicatesDropped)", "regions": "\(report.regionsScanned)",
        "seconds": "\(report.durationSeconds)", "paths": "\(node.effectiveNVMePaths.map(\.path))",
      ])
    if report.corruptDropped > 0 {
      logger.warning("storage: dropped \(report.corruptDropped) torn or corrupt block(s) found at start")
    }
    if report.olderFormatRegions > 0 {
      logger.warning(
        "storage: \(report.olderFormatRegions) NVMe region(s) hold records of an older format version, which this build does not read (docs/nvme-format.md); their blocks are dropped and the regions reused"
      )
    }
    return (
      try tiers(
        configuration, nvme: nvme, diskStalls: stalls, clock: clock, logger: logger, progress: progress,
        shouldStop: shouldStop),
      report
    )
  }

  /// The tier manager over a new arena, logging before and after the arena's pre-fault, which takes
  /// about a second per 16 GiB of `ram.capacity` (far longer where a VM's host must first hand the
  /// memory back), and may be stopped as the recovery may.
  private static func tiers(
    _ configuration: TierConfiguration, nvme: NVMeTier?, diskStalls: DiskStallMonitor?, clock: any NodeClock,
    logger: Logger, progress: (@Sendable (StorageOpeningStep) -> Void)?, shouldStop: (@Sendable () -> Bool)?
  ) throws(StrataError) -> TierManager {
    progress?(.faultingInRAM(bytes: configuration.ramBytes))
    let ram = ByteSize(bytes: UInt64(configuration.ramBytes))
    logger.info("storage: faulting in the RAM arena (\(ram)) on \(RAMArena.prefaultThreads) thread(s)")
    let start = ContinuousClock.now
    let tiers = try TierManager(
      configuration: configuration, nvme: nvme, clock: clock, diskStalls: diskStalls, shouldStop: shouldStop)
    let elapsed = ContinuousClock.now - start
    logger.info(
      "storage: RAM arena ready",
      metadata: [
        "bytes": "\(configuration.ramBytes)", "locked": "\(tiers.arena.isLocked)",
        "huge_pages_advised": "\(tiers.arena.hugePagesAdvised)",
        "seconds": "\(elapsed.inSeconds)",
      ])
    if let advice = SlabAllocator.fewPagesAdvice(
      capacityBytes: configuration.ramBytes, blockBytesMax: configuration.blockBytesMax)
    {
      logger.warning("storage: \(advice)")
    }
    return tiers
  }
}

#if canImport(Glibc)
  import Glibc
#endif

/// mkdir -p, with errors that name the path.
func makeDirectory(_ path: String) throws(StrataError) {
  var built = path.hasPrefix("/") ? "" : "."
  for component in path.split(separator: "/") {
    built += "/" + component
    if mkdir(built, 0o755) != 0 && errno != EEXIST {
      throw StrataError(.ioError, "cannot create data folder '\(built)': \(String(cString: strerror(errno)))")
    }
  }
}
