// The scrub ("verify"): on a thread of its own, checks every RAM copy against its stored checksum
// and reads every NVMe record back, checking every checksum, and drops the blocks that fail, so a
// block damaged in memory or decayed on disk is found before a reader meets it (in a cluster the
// node then reads it back from its other owners: `TierManager.setDamagedHandler`).

import Foundation
public import Logging
public import StrataCore
import Synchronization

/// Where a scrub stands: the state, counters and the first corrupt blocks found.
public struct VerifyProgress: Sendable, Hashable {
  public enum State: String, Sendable {
    case idle
    case running
    case done
  }

  /// At most this many corrupt blocks are listed by id.
  public static let corruptListMax = 100

  public var state = State.idle
  /// Copies checked, RAM and NVMe (a block in both tiers counts twice), and to check.
  public var scannedBlocks = 0
  public var totalBlocks = 0
  /// Of those, the RAM copies (checked first).
  public var ramBlocks = 0
  /// Payload bytes of the blocks read back whole.
  public var scannedBytes = 0
  /// Copies that failed their checksum (RAM or NVMe) or NVMe records that could not be read.
  public var corruptBlocks = 0
  /// Corrupt copies taken out (a RAM copy that fails is removed, leaving an NVMe copy to be
  /// checked in its turn; an NVMe record from the NVMe index, unless the block was rewritten
  /// meanwhile).
  public var droppedBlocks = 0
  /// Of the corrupt blocks, those the device failed to read (EIO) rather than mismatched.
  public var unreadableBlocks = 0
  public var corrupt: [BlockID] = []
  /// Seconds since 1970.
  public var startedAt: Double?
  public var finishedAt: Double?
  public var rateBytesPerSecond = 0.0
  /// The most bytes per second it checks (a scheduled scrub); 0: as fast as it can (an operator's).
  public var maxRateBytesPerSecond: UInt64 = 0

  public init() {}
}

/// Runs one scrub at a time over a tier manager's NVMe tier.
public final class StorageVerifier: Sendable {
  private struct State {
    var progress = VerifyProgress()
    var startedMonotonic = 0.0
    /// Corrupt blocks found by every scrub of this process, for the metrics counter.
    var corruptTotal = 0
    /// When the latest scrub finished (seconds since 1970).
    var lastFinishedAt: Double?
    /// `stop()` was called: no scrub starts, the one in progress ends at its next block.
    var stopped = false
  }

  public let tiers: TierManager
  private let logger: Logger?
  private let state = Mutex(State())
  private let finished = Mutex<DispatchSemaphore?>(nil)
  /// Ends the schedule's thread (`startSchedule`), when one runs.
  private let scheduleStop = Mutex<DispatchSemaphore?>(nil)
  /// Wakes a paced scrub waiting for its rate (`stop()`).
  private let paceWake = DispatchSemaphore(value: 0)

  /// `logger` (when given) hears when each scrub ends, and what it found.
  public init(tiers: TierManager, logger: Logger? = nil) {
    self.tiers = tiers
    self.logger = logger
  }

  /// Starts a scrub every `interval` (the first one an interval from now) at `maxRate` per
  /// second, on a thread of its own, unless one runs already (then that turn is
  /// skipped, and logged), until `stop()`. The node runs it whether or not its admin API is
  /// enabled (`verify.interval`).
  public func startSchedule(every interval: DurationSetting, maxRate: ByteSize) {
    let stop = DispatchSemaphore(value: 0)
    let previous = scheduleStop.withLock { current in
      defer { current = stop }
      return current
    }
    previous?.signal()
    let thread = Thread { [self] in
      while stop.wait(timeout: .now() + .milliseconds(Int(interval.milliseconds))) == .timedOut {
        guard start(maxBytesPerSecond: maxRate.bytes) else {
          logger?.info("scheduled verify skipped: one is running")
          continue
        }
        logger?.info(
          "scheduled verify started",
          metadata: [
            "max_rate_per_second": "\(maxRate)", "every": "\(interval)",
          ])
      }
    }
    thread.name = "strata-verify-schedule"
    thread.start()
  }

  /// Ends the schedule and the scrub in progress (at the block it is checking: within one block's
  /// read, however it is paced), and waits for it: a node stops it before its storage. No scrub
  /// starts after it.
  public func stop() {
    state.withLock { $0.stopped = true }
    scheduleStop.withLock { $0 }?.signal()
    paceWake.signal()
    waitUntilFinished()
  }

  private var isStopped: Bool { state.withLock { $0.stopped } }

  public var progress: VerifyProgress {
    state.withLock { state in
      var progress = state.progress
      if progress.state == .running {
        let elapsed = monotonicSeconds() - state.startedMonotonic
        progress.rateBytesPerSecond = elapsed > 0 ? Double(progress.scannedBytes) / elapsed : 0
      }
      return progress
    }
  }

  /// Corrupt blocks found by every scrub since this verifier was made.
  public var corruptBlocksTotal: Int { state.withLock { $0.corruptTotal } }

  public var isRunning: Bool { state.withLock { $0.progress.state == .running } }

  /// When the latest scrub finished (seconds since 1970); nil before the first.
  public var lastFinishedAt: Double? { state.withLock { $0.lastFinishedAt } }

  /// Starts a scrub on a thread of its own; false (and nothing started) when one is running, or
  /// after `stop()`.
  /// `maxBytesPerSecond` (0: no limit) paces it: after each block it waits until the bytes
  /// checked so far are within the rate since it started (`ScrubPace`).
  @discardableResult
  public func start(maxBytesPerSecond: UInt64 = 0) -> Bool {
    let semaphore = DispatchSemaphore(value: 0)
    let started = state.withLock { state -> Bool in
      guard state.progress.state != .running, !state.stopped else { return false }
      state.progress = VerifyProgress()
      state.progress.state = .running
      state.progress.maxRateBytesPerSecond = maxBytesPerSecond
      state.progress.startedAt = Double(wallClockNanoseconds()) / 1e9
      state.startedMonotonic = monotonicSeconds()
      return true
    }
    guard started else { return false }
    finished.withLock { $0 = semaphore }
    let thread = Thread { [self] in
      scrub()
      logFinished()
      semaphore.signal()
    }
    thread.name = "strata-verify"
    thread.start()
    return true
  }

  /// Blocks the calling thread until the scrub in progress (if any) ends.
  public func waitUntilFinished() {
    guard let semaphore = finished.withLock({ $0 }) else { return }
    semaphore.wait()
    semaphore.signal()
  }

  private func scrub() {
    let inRAM = tiers.ramBlockIDs()
    let ids = tiers.nvme?.blockIDs() ?? []
    state.withLock {
      $0.progress.totalBlocks = inRAM.count + ids.count
      $0.progress.ramBlocks = inRAM.count
    }
    for id in inRAM where !isStopped {
      checkRAM(id)
      pace()
    }
    if let nvme = tiers.nvme {
      let buffer = UnsafeMutableRawBufferPointer.allocate(
        byteCount: max(tiers.configuration.blockBytesMax, 1), alignment: 4096)
      defer { buffer.deallocate() }
      for id in ids where !isStopped {
        check(id, nvme, buffer)
        pace()
      }
    }
    state.withLock { state in
      let elapsed = monotonicSeconds() - state.startedMonotonic
      state.progress.rateBytesPerSecond = elapsed > 0 ? Double(state.progress.scannedBytes) / elapsed : 0
      state.progress.finishedAt = Double(wallClockNanoseconds()) / 1e9
      state.lastFinishedAt = state.progress.finishedAt
      state.progress.state = .done
    }
  }

  private func logFinished() {
    guard let logger else { return }
    let progress = progress
    let metadata: Logger.Metadata = [
      "scanned_blocks": "\(progress.scannedBlocks)", "corrupt_blocks": "\(progress.corruptBlocks)",
      "dropped_blocks": "\(progress.droppedBlocks)", "scanned_bytes": "\(progress.scannedBytes)",
    ]
    if progress.corruptBlocks > 0 {
      logger.warning("verify found corrupt blocks and dropped them", metadata: metadata)
    } else if progress.scannedBlocks < progress.totalBlocks && isStopped {
      logger.info("verify stopped before its end: the node is stopping", metadata: metadata)
    } else {
      logger.info("verify finished", metadata: metadata)
    }
  }

  /// Waits, on the scrub's thread, until the bytes checked so far are within its rate.
  private func pace() {
    let (bytes, limit, started) = state.withLock {
      ($0.progress.scannedBytes, $0.progress.maxRateBytesPerSecond, $0.startedMonotonic)
    }
    let wait = ScrubPace.wait(bytes: bytes, maxBytesPerSecond: limit, elapsedSeconds: monotonicSeconds() - started)
    if wait > 0 { _ = paceWake.wait(timeout: .now() + .milliseconds(Int(min(wait, 60) * 1000))) }
  }

  private func checkRAM(_ id: BlockID) {
    let check = tiers.scrubRAM(id)
    state.withLock { state in
      state.progress.scannedBlocks += 1
      guard let check else { return }  // evicted or removed since the listing
      state.progress.scannedBytes += check.bytes
      guard !check.intact else { return }
      state.progress.corruptBlocks += 1
      state.progress.droppedBlocks += 1
      state.corruptTotal += 1
      if state.progress.corrupt.count < VerifyProgress.corruptListMax { state.progress.corrupt.append(id) }
    }
  }

  private func check(_ id: BlockID, _ nvme: NVMeTier, _ buffer: UnsafeMutableRawBufferPointer) {
    var bytes = 0
    var failure: StrataError.Code?
    var dropped = false
    do {
      bytes = try nvme.read(id, into: buffer)
    } catch {
      switch error.code {
      case .checksumMismatch, .ioError:
        failure = error.code
        // `read` dropped the block unless another thread rewrote it meanwhile.
        dropped = !nvme.contains(id)
      default:
        break  // evicted or removed since the listing: nothing to check
      }
    }
    state.withLock { state in
      state.progress.scannedBlocks += 1
      state.progress.scannedBytes += bytes
      guard let failure else { return }
      state.progress.corruptBlocks += 1
      state.corruptTotal += 1
      if failure == .ioError { state.progress.unreadableBlocks += 1 }
      if dropped { state.progress.droppedBlocks += 1 }
      if state.progress.corrupt.count < VerifyProgress.corruptListMax { state.progress.corrupt.append(id) }
    }
  }
}

/// How long a paced scrub waits: the time `bytes` take at `maxBytesPerSecond`, less the time
/// it has run. 0 without a limit.
public enum ScrubPace {
  public static func wait(bytes: Int, maxBytesPerSecond: UInt64, elapsedSeconds: Double) -> Double {
    guard maxBytesPerSecond > 0 else { return 0 }
    return max(0, Double(bytes) / Double(maxBytesPerSecond) - elapsedSeconds)
  }
}

func monotonicSeconds() -> Double {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}
