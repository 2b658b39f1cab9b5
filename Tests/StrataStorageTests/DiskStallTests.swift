// Disk operations that never return (a disk that stopped answering): each one in flight for 30 s
// is named in a warning line once, its return is logged, and the tier manager's statistics (the
// metrics) count the stalled ones and the oldest one's age, while the NVMe tier is recovered and
// while the node serves.

import Foundation
import Logging
import StrataConfig
import StrataCore
import StrataTestKit
import Testing

@testable import StrataStorage

@Suite struct DiskStallTests {
  private let read = DiskOperation(.read, path: "/nvme/strata-nvme.dat", offset: 4096, bytes: 8192)
  private let sync = DiskOperation(.sync, path: "/nvme/strata-nvme.dat")

  @Test func anOperationIsNamedOnceWhenItReachesTheThresholdAndAgainWhenItReturns() {
    var watch = DiskOperationWatch(stallMilliseconds: 30_000)
    let first = watch.begin(read, now: 1_000)
    let second = watch.begin(sync, now: 11_000)
    let quick = watch.begin(read, now: 12_000)
    #expect(watch.end(quick, now: 12_005) == nil)
    #expect(watch.count == 2)
    #expect(watch.newlyStalled(now: 30_999).isEmpty)
    #expect(watch.stalledCount(now: 30_999) == 0)
    #expect(watch.newlyStalled(now: 31_000) == [.init(operation: read, milliseconds: 30_000)])
    #expect(watch.newlyStalled(now: 35_000).isEmpty)
    #expect(watch.stalledCount(now: 35_000) == 1)
    #expect(watch.newlyStalled(now: 45_000) == [.init(operation: sync, milliseconds: 34_000)])
    #expect(watch.stalledCount(now: 45_000) == 2)
    #expect(watch.oldestMilliseconds(now: 45_000) == 44_000)
    #expect(watch.end(first, now: 50_000) == .init(operation: read, milliseconds: 49_000))
    #expect(watch.oldestMilliseconds(now: 50_000) == 39_000)
    #expect(watch.end(second, now: 50_000) == .init(operation: sync, milliseconds: 39_000))
    #expect(watch.count == 0 && watch.oldestMilliseconds(now: 60_000) == 0)
    // An end already seen, or of a token never given, says nothing.
    #expect(watch.end(first, now: 60_000) == nil)
  }

  @Test func severalOperationsStalledAtOnceAreNamedOldestFirst() {
    var watch = DiskOperationWatch(stallMilliseconds: 100)
    _ = watch.begin(sync, now: 20)
    _ = watch.begin(read, now: 10)
    #expect(watch.newlyStalled(now: 500).map(\.operation) == [read, sync])
  }

  /// A recovery whose disk stops answering, then a read while the node serves: the warning comes
  /// at 30 s on the node's clock (not at 25), once per operation, and the return is logged.
  @Test func aStalledDiskIsNamedDuringRecoveryAndWhileServing() async throws {
    let scratch = try NVMeScratchDirectory()
    let settings = NodeConfiguration.small(in: scratch.path, ram: .mebibytes(8))
    let quiet = Logger.quiet("disk-stall-test")
    let ids = (0..<8).map { BlockID(namespace: .embeddedDefault, key: SHA256.digest(Array("stall-\($0)".utf8))) }
    let payload = { (index: Int) in [UInt8](repeating: UInt8(index + 1), count: 100 << 10) }
    do {
      let (tiers, _) = try TierManager.open(settings, logger: quiet)
      for (index, id) in ids.enumerated() { _ = try await tiers.put(id, bytes: payload(index)) }
      #expect(try await tiers.flush() == ids.count)
    }

    let clock = ManualClock()
    let faults = DiskFaultSwitch()
    faults.set(DiskFaults(reads: .stall))
    let logs = LogCapture()
    var logger = Logger(label: "disk-stall-test") { _ in logs.handler() }
    logger.logLevel = .info
    let lines = { (prefix: String) in logs.records.withLock { $0.filter { $0.message.hasPrefix(prefix) } } }
    let stalledLine = "storage: a disk read has not returned for "
    let returnedLine = "storage: a stalled disk read returned after "
    let (node, log) = (settings, logger)
    async let opened = onNewThread { () throws(StrataError) -> TierManager in
      try TierManager.open(node, clock: clock, faults: faults, logger: log).0
    }
    // The recovery holds a read, and the monitor sleeps until its first check.
    #expect(try await eventually(within: 10) { faults.operationsHeld >= 1 && clock.sleepers == 1 })
    clock.advance(milliseconds: 25_000)
    #expect(try await eventually(within: 10) { clock.sleepers == 1 })
    #expect(lines(stalledLine).isEmpty)
    clock.advance(milliseconds: 5_000)
    #expect(try await eventually(within: 10) { !lines(stalledLine).isEmpty })
    let named = lines(stalledLine)
    #expect(named.allSatisfy { $0.message.hasPrefix(stalledLine + "30 s") && $0.metadata["operation"] == "read" })
    #expect(named.allSatisfy { $0.metadata["path"]?.hasSuffix("strata-nvme.dat") == true })
    #expect(named.count <= faults.operationsHeld)
    // The next check names nothing again.
    #expect(try await eventually(within: 10) { clock.sleepers == 1 })
    clock.advance(milliseconds: 5_000)
    #expect(try await eventually(within: 10) { clock.sleepers == 1 })
    #expect(lines(stalledLine).count == named.count)

    faults.set(DiskFaults())
    let tiers = try await opened
    let returned = lines(returnedLine)
    #expect(returned.count == named.count && returned.allSatisfy { $0.message.hasPrefix(returnedLine + "35 s") })
    #expect(tiers.stats.nvmeBlocks == ids.count)
    #expect(tiers.stats.diskOperationsStalled == 0 && tiers.stats.diskOldestOperationMilliseconds == 0)

    // Serving: a read of an NVMe-only block waits on the stalled disk; the statistics count it.
    faults.set(DiskFaults(reads: .stall))
    async let readBack = tiers.read(ids[3])
    #expect(try await eventually(within: 10) { faults.operationsHeld == 1 })
    clock.advance(milliseconds: 29_000)
    #expect(tiers.stats.diskOperationsStalled == 0 && tiers.stats.diskOldestOperationMilliseconds == 29_000)
    clock.advance(milliseconds: 1_000)
    #expect(tiers.stats.diskOperationsStalled == 1 && tiers.stats.diskOldestOperationMilliseconds == 30_000)
    faults.set(DiskFaults())
    #expect(try await readBack == payload(3))
    #expect(tiers.stats.diskOperationsStalled == 0)
  }
}
