// Restarts cost the NVMe tier no space: recovery keeps appending to the region that was open at
// the crash, right after its last sound record, so a tier restarted many times over a few blocks
// never runs out of free regions and never evicts a live block.

import StrataCore
import Synchronization
import Testing

@testable import StrataStorage

@Suite struct NVMeRestartTests {
  static let regionBytes = 64 << 10
  static let blockBytesMax = 32 << 10

  static func recover(_ device: SimulatedBlockDevice) throws -> (SimulatedBlockDevice, NVMeTier, RecoveryReport) {
    let restarted = device.crashed()
    let (tier, report) = try NVMeTier.recover(
      devices: [restarted], regionBytes: regionBytes, compression: .none, blockBytesMax: blockBytesMax)
    return (restarted, tier, report)
  }

  /// One small record each (a 4 KiB block on disk).
  static func payload(_ number: Int) -> [UInt8] { testPayload(number, bytes: 3000) }

  /// Eight regions, twelve lives of two blocks each, every life ended by a crash: 96 KiB of
  /// records in a 512 KiB tier. Sealing the open region at each recovery used a fresh region per
  /// life, so the eighth life reclaimed the first region and evicted the first life's blocks.
  @Test func repeatedCrashesNeitherUseUpRegionsNorEvictLiveBlocks() throws {
    var device = SimulatedBlockDevice(capacityBytes: 8 * Self.regionBytes)
    var tier = try NVMeTier(
      devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax)
    let lives = 12
    for life in 0..<lives {
      for number in [2 * life, 2 * life + 1] { try nvmeWrite(tier, nvmeID(number), Self.payload(number)) }
      let statistics = tier.statistics
      #expect(statistics.evictedBlocks == 0, "life \(life): \(statistics.evictedBlocks) blocks evicted")
      // Sixteen 4 KiB records fill a region: the lives share the regions their records fill.
      let used = (2 * (life + 1) + 15) / 16
      #expect(statistics.freeRegionCount == 8 - used, "life \(life): \(statistics.freeRegionCount) regions free")
      let report: RecoveryReport
      (device, tier, report) = try Self.recover(device)
      #expect(report.blocksRecovered == 2 * (life + 1) && report.corruptDropped == 0, "life \(life): \(report)")
    }
    for number in 0..<(2 * lives) {
      #expect(try nvmeRead(tier, nvmeID(number)) == Self.payload(number), "block \(number)")
    }
  }

  /// A crash that tore a record of the open region: recovery drops it (counted) and keeps the
  /// sound record after it (the walk goes on past a bad header), the next life's first record is
  /// written right after that last sound record, and the restart after that reads every adopted
  /// record of both lives, passing the torn one (its space is reclaimed with the region).
  @Test func theNextLifeAppendsAfterTheRecordPastTheTornOne() throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    let tier = try NVMeTier(
      devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax)
    for number in 0..<3 { try nvmeWrite(tier, nvmeID(number), Self.payload(number)) }
    device.tearNextWrite(keepingBytes: 40)  // block 3's header, torn (its key never written)
    try nvmeWrite(tier, nvmeID(3), Self.payload(3))
    try nvmeWrite(tier, nvmeID(4), Self.payload(4))
    let tornAt = try #require(tier.recordLocation(of: nvmeID(3))).offset
    let lastSoundAt = try #require(tier.recordLocation(of: nvmeID(2))).offset
    #expect(tornAt == lastSoundAt + 4096)

    let (first, recovered, report) = try Self.recover(device)
    #expect(report.corruptDropped == 1 && report.blocksRecovered == 4, "\(report)")
    #expect(!recovered.contains(nvmeID(3)) && recovered.contains(nvmeID(4)))
    try nvmeWrite(recovered, nvmeID(5), Self.payload(5))
    #expect(
      recovered.recordLocation(of: nvmeID(5))?.offset == tornAt + 2 * 4096, "not appended after the last sound record")

    let (_, again, secondReport) = try Self.recover(first)
    #expect(secondReport.corruptDropped == 1 && secondReport.blocksRecovered == 5, "\(secondReport)")
    for number in [0, 1, 2, 4, 5] {
      #expect(try nvmeRead(again, nvmeID(number)) == Self.payload(number), "block \(number)")
    }
    #expect(!again.contains(nvmeID(3)))
    #expect(again.statistics.freeRegionCount == 3, "both lives share one region")
  }

  /// The region open at the crash is resumed, not any other: an older sealed region stays sealed
  /// (evicted first when space runs out) and a region with no live block is freed.
  @Test func onlyTheNewestRegionIsResumed() throws {
    let device = SimulatedBlockDevice(capacityBytes: 4 * Self.regionBytes)
    let tier = try NVMeTier(
      devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax)
    // 16 records of 4 KiB fill the first region; the 17th opens the second.
    for number in 0..<17 { try nvmeWrite(tier, nvmeID(number), Self.payload(number)) }
    let (_, recovered, _) = try Self.recover(device)
    try nvmeWrite(recovered, nvmeID(17), Self.payload(17))
    let regions = try [0, 16, 17].map { try #require(recovered.regionAndGeneration(of: nvmeID($0))).region }
    #expect(regions[0] != regions[1] && regions[1] == regions[2], "regions \(regions)")
    #expect(recovered.statistics.freeRegionCount == 2)
  }

  /// Recovery reports after each region, one report at a time: regions and bytes read count up to
  /// the tier's, and the records found add up to the blocks written (two readers share the regions).
  @Test func recoveryReportsEachRegionItReads() throws {
    let device = SimulatedBlockDevice(capacityBytes: 6 * Self.regionBytes)
    let tier = try NVMeTier(
      devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax)
    // 16 records of 4 KiB fill a region: 40 fill two and part of a third.
    for number in 0..<40 { try nvmeWrite(tier, nvmeID(number), Self.payload(number)) }
    let reports = Mutex<[RecoveryProgress]>([])
    let (_, report) = try NVMeTier.recover(
      devices: [device.crashed()], regionBytes: Self.regionBytes, compression: .none,
      blockBytesMax: Self.blockBytesMax
    ) { read in reports.withLock { $0.append(read) } }
    let heard = reports.withLock { $0 }
    #expect(report.blocksRecovered == 40)
    #expect(heard.map(\.regionsRead) == Array(1...6))
    #expect(heard.allSatisfy { $0.regionsTotal == 6 && $0.bytesRead == $0.regionsRead * Self.regionBytes })
    #expect(zip(heard, heard.dropFirst()).allSatisfy { $0.recordsFound <= $1.recordsFound })
    #expect(heard.last?.recordsFound == 40)
  }

  /// A stop asked for while the tier is read (a signal while the node starts) ends the recovery
  /// after the regions already being read, failing with `cancelled`; the disk is left as it was,
  /// so the next start recovers every block.
  @Test func aRecoveryAskedToStopReadsNoFurtherRegionAndLeavesTheDiskAsItWas() throws {
    let device = SimulatedBlockDevice(capacityBytes: 6 * Self.regionBytes)
    let tier = try NVMeTier(
      devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax)
    for number in 0..<40 { try nvmeWrite(tier, nvmeID(number), Self.payload(number)) }
    let stop = Atomic<Bool>(false)
    let reports = Mutex<[RecoveryProgress]>([])
    let stopped = #expect(throws: StrataError.self) {
      try NVMeTier.recover(
        devices: [device.crashed()], regionBytes: Self.regionBytes, compression: .none,
        blockBytesMax: Self.blockBytesMax
      ) { read in
        reports.withLock { $0.append(read) }
        if read.regionsRead == 2 { stop.store(true, ordering: .relaxed) }
      } shouldStop: {
        stop.load(ordering: .relaxed)
      }
    }
    #expect(stopped?.code == .cancelled)
    #expect(stopped?.message.contains("of 6 region(s)") == true, "\(String(describing: stopped))")
    // Two readers: besides the two regions read, at most the one the other reader held.
    let heard = reports.withLock { $0.map(\.regionsRead) }
    #expect(heard.count >= 2 && heard.count <= 3, "\(heard)")
    let (_, report) = try NVMeTier.recover(
      devices: [device.crashed()], regionBytes: Self.regionBytes, compression: .none,
      blockBytesMax: Self.blockBytesMax)
    #expect(report.blocksRecovered == 40)
  }
}
