// A disk failing under a running node: the fault-injecting device (the seam `strata serve
// --fault-injection` uses) and what the tier manager does with a block whose demotion failed.

import Logging
import StrataCore
import StrataTestKit
import Synchronization
import Testing

@testable import StrataStorage

@Suite struct DiskFaultTests {
  /// Every failed operation of a wrapped device is logged at error level with the device's own
  /// message and where it failed, passed on unchanged to the caller; lines are limited to a burst
  /// of 10 and then one a second, and the next line written says how many were left out.
  @Test func aReportingDeviceLogsEachFailureAtItsRateLimit() throws {
    let faults = DiskFaultSwitch()
    let capture = LogCapture()
    let clock = ManualClock(milliseconds: 5_000)
    let device = ReportingBlockDevice(
      FaultInjectingBlockDevice(SimulatedBlockDevice(capacityBytes: 1 << 16), faults: faults),
      path: "/data/strata-nvme.dat", logger: Logger(label: "test") { _ in capture.handler() }, clock: clock)
    let page = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { page.deallocate() }
    page.initializeMemory(as: UInt8.self, repeating: 7)
    try device.write(at: 4096, from: UnsafeRawBufferPointer(page))
    try device.read(at: 4096, into: page)
    try device.sync()
    #expect(capture.records.withLock { $0.isEmpty }, "a healthy device logged")

    faults.set(DiskFaults(writes: .fail, reads: .fail))
    let failed = #expect(throws: StrataError.self) { try device.write(at: 8192, from: UnsafeRawBufferPointer(page)) }
    #expect(failed?.code == .ioError, "the error is passed on unchanged")
    #expect(throws: StrataError.self) { try device.read(at: 4096, into: page) }
    #expect(throws: StrataError.self) { try device.sync() }
    let first = capture.records.withLock { $0 }
    #expect(first.map(\.message) == Array(repeating: "storage: NVMe device error", count: 3))
    #expect(first.map { $0.metadata["operation"] } == ["write", "read", "sync"])
    #expect(first[0].metadata["offset"] == "8192" && first[0].metadata["bytes"] == "4096")
    #expect(first[0].metadata["path"] == "/data/strata-nvme.dat")
    #expect(first[0].metadata["error"] == failed?.message)
    #expect(first[2].metadata["offset"] == nil, "a sync has no offset")

    for _ in 0..<20 { _ = try? device.read(at: 0, into: page) }
    #expect(capture.records.withLock { $0.count } == DeviceErrorLineLimiter.burst, "a burst of 10 lines, then none")
    clock.advance(milliseconds: 1_000)
    _ = try? device.read(at: 0, into: page)
    let last = try #require(capture.records.withLock { $0.last })
    #expect(capture.records.withLock { $0.count } == DeviceErrorLineLimiter.burst + 1)
    #expect(last.metadata["lines_left_out"] == "13", "20 reads after 3 failures: 7 logged, 13 left out")
  }

  /// Healthy: every call passes through. Armed: writes and syncs fail with EIO and leave the
  /// device unchanged; reads fail, or return bytes with a bit of every sector inverted.
  @Test func theFaultInjectingDeviceFailsAndCorruptsFromTheMomentItIsArmed() throws {
    let base = SimulatedBlockDevice(capacityBytes: 1 << 16)
    let faults = DiskFaultSwitch()
    let device = FaultInjectingBlockDevice(base, faults: faults)
    let page = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { page.deallocate() }
    for index in 0..<4096 { page[index] = UInt8(truncatingIfNeeded: index &* 7) }
    let written = Array(page)
    try device.write(at: 0, from: UnsafeRawBufferPointer(page))
    page.initializeMemory(as: UInt8.self, repeating: 0)
    try device.read(at: 0, into: page)
    #expect(Array(page) == written)

    faults.set(DiskFaults(writes: .fail))
    let refused = #expect(throws: StrataError.self) { try device.write(at: 4096, from: UnsafeRawBufferPointer(page)) }
    #expect(refused?.code == .ioError)
    #expect(throws: StrataError.self) { try device.sync() }
    #expect(base.writeCount == 1, "a failed write reached the device")

    faults.set(DiskFaults(reads: .fail))
    #expect(throws: StrataError.self) { try device.read(at: 0, into: page) }
    faults.set(DiskFaults(reads: .corrupt))
    try device.read(at: 0, into: page)
    let differing = zip(Array(page), written).filter { $0 != $1 }.count
    #expect(differing == 8, "one byte of each of the 8 sectors differs; \(differing) did")
    #expect(base.snapshot()[0..<4096].elementsEqual(written), "a corrupt read changed the medium")
    let counts = faults.counts
    #expect(counts.failedWrites == 2 && counts.failedReads == 1 && counts.corruptedReads == 1)

    faults.set(DiskFaults())
    try device.read(at: 0, into: page)
    #expect(Array(page) == written)
  }

  /// The NVMe tier over a disk that starts corrupting reads: the block is never returned with
  /// wrong bytes; it is dropped and the read is a miss, counted as a checksum failure.
  @Test func corruptReadsAreCaughtAndNeverServed() async throws {
    let base = SimulatedBlockDevice(capacityBytes: 16 << 20)
    let faults = DiskFaultSwitch()
    let nvme = try NVMeTier(
      devices: [FaultInjectingBlockDevice(base, faults: faults)], regionBytes: 1 << 20, compression: .none,
      blockBytesMax: 256 << 10)
    let tiers = try TierManager(
      configuration: TierConfiguration(
        ramBytes: 1 << 20, blockBytesMax: 256 << 10, lockMemory: false, hugePages: false),
      nvme: nvme)
    for n in 0..<12 { #expect(try await put(tiers, n, bytes: 200_000) == .stored) }
    let onDisk = (0..<12).filter { tiers.lookup([testBlockID($0)]) == [.nvme] }
    try #require(onDisk.count >= 4, "blocks were demoted")
    faults.set(DiskFaults(reads: .corrupt))
    for n in onDisk {
      #expect(try await read(tiers, testBlockID(n)) == nil, "block \(n) was served from a corrupt read")
    }
    #expect(tiers.stats.checksumFailures == onDisk.count)
    faults.set(DiskFaults(reads: .fail))
    for n in 0..<12 where !onDisk.contains(n) {
      let bytes = try await read(tiers, testBlockID(n))
      #expect(bytes == nil || bytes == testPayload(n, bytes: 200_000))
    }
  }

  /// With a handler that answers `keep`, a block whose demotion failed stays in RAM, readable,
  /// and the PUT needing its room is refused with `io_error`; with `drop` it leaves RAM (the
  /// single-node behaviour), and both are counted.
  @Test func aFailedDemotionKeepsOrDropsTheBlockAsTheHandlerSays() async throws {
    for verdict in [DemotionFailureVerdict.keep, .drop] {
      let fixture = try TierFixture(ramBytes: 1 << 20, admission: .always)
      let asked = Mutex<[BlockID]>([])
      fixture.tiers.setDemotionFailureHandler { block, error in
        #expect(error.code == .ioError)
        #expect(CRC32C.checksum(block.bytes) == block.checksum, "the handler sees the block's bytes")
        asked.withLock { $0.append(block.id) }
        return verdict
      }
      for n in 0..<4 { #expect(try await put(fixture.tiers, n, bytes: 200_000) == .stored) }
      fixture.device.failNextWrites(1000)
      var refused: StrataError?
      for n in 4..<12 {
        do {
          _ = try await put(fixture.tiers, n, bytes: 200_000)
        } catch {
          refused = error as? StrataError
          break
        }
      }
      let stats = fixture.tiers.stats
      let victims = asked.withLock { $0 }
      try #require(!victims.isEmpty, "no demotion failed")
      switch verdict {
      case .keep:
        #expect(refused?.code == .ioError, "\(String(describing: refused))")
        #expect(refused?.message.contains("stays in RAM") == true)
        #expect(stats.demotionFailedKept >= 1 && stats.demotionFailedDropped == 0)
        for id in victims {
          #expect(fixture.tiers.lookup([id]) == [.ram], "kept block \(id) left RAM")
          let n = try #require((0..<12).first { testBlockID($0) == id })
          #expect(try await read(fixture.tiers, id) == testPayload(n, bytes: 200_000))
        }
      case .drop:
        #expect(refused == nil, "a drop verdict refused a PUT: \(String(describing: refused))")
        #expect(stats.demotionFailedDropped == victims.count && stats.demotionFailedKept == 0)
        for id in victims { #expect(fixture.tiers.lookup([id]) == [.absent]) }
      }
    }
  }
}
