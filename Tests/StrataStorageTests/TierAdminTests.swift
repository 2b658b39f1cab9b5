// Operator actions on the tiers: eviction by namespace, key prefix and age from every tier, usage
// per namespace, and the NVMe scrub (verify) finding, reporting and dropping a corrupt record.

import StrataCore
import Synchronization
import Testing

@testable import StrataStorage

/// A block id with a chosen first key byte, for prefix tests.
private func prefixedID(_ first: UInt8, _ n: Int, namespace: String = "test") -> BlockID {
  var bytes = [UInt8](repeating: 0, count: 32)
  bytes[0] = first
  bytes[31] = UInt8(n)
  return BlockID(namespace: try! Namespace(namespace), key: BlockKey(bytes: bytes)!)
}

@Suite struct TierAdminTests {
  @Test func evictByNamespaceTakesThatNamespaceFromEveryTier() async throws {
    let fixture = try TierFixture()
    for n in 0..<6 {
      for namespace in ["tenant-a", "tenant-b"] {
        let id = testBlockID(n, namespace: namespace)
        try await fixture.tiers.put(id, bytes: testPayload(n, bytes: 10_000))
        if n % 2 == 0 { try await fixture.tiers.persist(id) }
      }
    }
    let usage = fixture.tiers.usageByNamespace()
    #expect(usage.ram[try Namespace("tenant-a")]?.blocks == 6)
    #expect(usage.nvme[try Namespace("tenant-b")]?.blocks == 3)
    let report = try fixture.tiers.evict(EvictionSelector(namespace: try Namespace("tenant-a")))
    #expect(report.blocks == 6 && report.ramBlocks == 6 && report.nvmeBlocks == 3 && report.bytes == 60_000)
    for n in 0..<6 {
      #expect(fixture.tiers.lookup([testBlockID(n, namespace: "tenant-a")]) == [.absent])
      #expect(fixture.tiers.lookup([testBlockID(n, namespace: "tenant-b")]) == [.ram])
    }
    #expect(fixture.tiers.usageByNamespace().ram[try Namespace("tenant-a")] == nil)
  }

  @Test func evictByKeyPrefixMatchesWholeAndHalfBytes() async throws {
    let fixture = try TierFixture()
    let ids = [prefixedID(0xab, 1), prefixedID(0xac, 2), prefixedID(0xbb, 3), prefixedID(0xab, 4)]
    for (n, id) in ids.enumerated() { try await fixture.tiers.put(id, bytes: testPayload(n, bytes: 1000)) }
    #expect(try KeyPrefix(hex: "AB").matches(ids[0].key))
    #expect(try !KeyPrefix(hex: "ab").matches(ids[1].key))
    #expect(try KeyPrefix(hex: "a").matches(ids[1].key))
    #expect(throws: StrataError.self) { try KeyPrefix(hex: "xyz") }
    #expect(throws: StrataError.self) { try KeyPrefix(hex: "") }
    let report = try fixture.tiers.evict(EvictionSelector(keyPrefixes: [try KeyPrefix(hex: "ab")]))
    #expect(report.blocks == 2)
    #expect(fixture.tiers.lookup(ids) == [.absent, .ram, .ram, .absent])
    let second = try fixture.tiers.evict(
      EvictionSelector(keyPrefixes: [try KeyPrefix(hex: "a"), try KeyPrefix(hex: "b")]))
    #expect(second.blocks == 2)
    #expect(fixture.tiers.lookup(ids) == [.absent, .absent, .absent, .absent])
    #expect(throws: StrataError.self) { try fixture.tiers.evict(EvictionSelector()) }
  }

  @Test func evictByAgeTakesOnlyBlocksStoredLongEnoughAgo() async throws {
    let fixture = try TierFixture()
    let old = testBlockID(1)
    let young = testBlockID(2)
    try await fixture.tiers.put(old, bytes: testPayload(1, bytes: 5000))
    try await fixture.tiers.persist(old)
    fixture.clock.advance(milliseconds: 60_000)
    try await fixture.tiers.put(young, bytes: testPayload(2, bytes: 5000))
    try await fixture.tiers.persist(young)
    fixture.clock.advance(milliseconds: 10_000)
    // Neither is 2 minutes old; only the first is 30 seconds old.
    #expect(try fixture.tiers.evict(EvictionSelector(olderThanMilliseconds: 120_000)).blocks == 0)
    let report = try fixture.tiers.evict(EvictionSelector(olderThanMilliseconds: 30_000))
    #expect(report.blocks == 1 && report.ramBlocks == 1 && report.nvmeBlocks == 1)
    #expect(fixture.tiers.lookup([old, young]) == [.absent, .ram])
    #expect(fixture.nvme.contains(young))
  }

  /// NVMe-only blocks are aged by their region's latest write: a block is never taken for older than it is.
  @Test func nvmeAgesAreConservative() async throws {
    let fixture = try TierFixture(ramBytes: 1 << 20)
    for n in 0..<12 { _ = try await put(fixture.tiers, n, bytes: 200_000) }
    let onNVMeOnly = (0..<12).filter { fixture.tiers.lookup([testBlockID($0)]) == [.nvme] }
    #expect(!onNVMeOnly.isEmpty)
    fixture.clock.advance(milliseconds: 5000)
    // Stored 5 s ago at most: none is 6 s old; all are 4 s old.
    #expect(try fixture.tiers.evict(EvictionSelector(olderThanMilliseconds: 6000)).blocks == 0)
    let report = try fixture.tiers.evict(EvictionSelector(olderThanMilliseconds: 4000))
    #expect(report.blocks == 12)
  }

  @Test func verifyFindsReportsAndDropsACorruptRecord() async throws {
    let fixture = try TierFixture()
    var ids: [BlockID] = []
    for n in 0..<10 {
      let id = testBlockID(n)
      let payload = testPayload(n, bytes: 50_000)
      // Written to the NVMe tier alone: reads must come from disk.
      try payload.withUnsafeBytes { try fixture.nvme.write(id, payload: $0, checksum: CRC32C.checksum($0)) }
      ids.append(id)
    }
    let victim = ids[4]
    let location = try #require(fixture.nvme.recordLocation(of: victim))
    fixture.device.flipBit(
      atByte: location.offset + BlockRecordHeader.bodyOffset(storedBytes: location.storedBytes, alignmentBytes: 4096)
        + 777, bit: 5)
    let verifier = StorageVerifier(tiers: fixture.tiers)
    #expect(verifier.progress.state == .idle)
    #expect(verifier.start())
    verifier.waitUntilFinished()
    let progress = verifier.progress
    #expect(progress.state == .done)
    #expect(progress.totalBlocks == 10 && progress.scannedBlocks == 10)
    #expect(progress.corruptBlocks == 1 && progress.droppedBlocks == 1 && progress.corrupt == [victim])
    #expect(progress.scannedBytes == 9 * 50_000)
    #expect(verifier.corruptBlocksTotal == 1)
    // Never served: the block is gone; every other block reads back intact.
    #expect(!fixture.nvme.contains(victim))
    #expect(try await read(fixture.tiers, victim) == nil)
    for (n, id) in ids.enumerated() where id != victim {
      #expect(try await read(fixture.tiers, id) == testPayload(n, bytes: 50_000))
    }
    // A second run finds nothing more.
    #expect(verifier.start())
    verifier.waitUntilFinished()
    // (The reads above brought the nine blocks into RAM: both copies of each are checked.)
    #expect(verifier.progress.corruptBlocks == 0 && verifier.progress.totalBlocks == 9 + verifier.progress.ramBlocks)
    #expect(verifier.corruptBlocksTotal == 1)
  }

  /// `stop()` ends a paced scrub at the block it is checking, however long its pace would have it
  /// wait, and no scrub starts after it (the node stops it before its storage).
  @Test func stopEndsAPacedScrubAtOnceAndNoneStartsAfter() throws {
    let fixture = try TierFixture()
    for n in 0..<10 {
      let payload = testPayload(n, bytes: 50_000)
      try payload.withUnsafeBytes {
        try fixture.nvme.write(testBlockID(n), payload: $0, checksum: CRC32C.checksum($0))
      }
    }
    let verifier = StorageVerifier(tiers: fixture.tiers)
    // 1 KiB/s: after its first block (50 KB) the scrub would wait ~49 s before the second.
    #expect(verifier.start(maxBytesPerSecond: 1_024))
    let began = ContinuousClock.now
    verifier.stop()
    #expect(ContinuousClock.now - began < .seconds(10), "stop waited for the pace")
    let progress = verifier.progress
    #expect(progress.state == .done && progress.scannedBlocks < progress.totalBlocks, "\(progress)")
    #expect(!verifier.start())
  }

  /// A PUT of a block held already is acknowledged by the copy here only if that copy is intact:
  /// one damaged in RAM since it was stored is removed (reported as damaged) and the PUT's bytes
  /// stored in its place, so the acknowledgement never rests on a damaged copy.
  @Test func aPutOfABlockDamagedInRAMReplacesItsCopy() async throws {
    let fixture = try TierFixture()
    let id = testBlockID(1)
    let payload = testPayload(1, bytes: 20_000)
    #expect(try await fixture.tiers.put(id, bytes: payload) == .stored)
    #expect(try await fixture.tiers.put(id, bytes: payload) == .alreadyPresent)
    #expect(fixture.tiers.flipBitInRAMForTesting(id, byte: 4_321, bit: 1))
    let reported = Mutex<[BlockID]>([])
    fixture.tiers.setDamagedHandler { damaged in reported.withLock { $0 += damaged } }
    #expect(try await fixture.tiers.put(id, bytes: payload) == .stored)
    #expect(reported.withLock { $0 } == [id])
    #expect(try await read(fixture.tiers, id) == payload)
    #expect(fixture.tiers.scrubRAM(id)?.intact == true)
    #expect(try await fixture.tiers.put(id, bytes: payload) == .alreadyPresent)
  }

  /// A paced scrub (a scheduled one) checks no faster than its rate: the pause is the time the
  /// bytes take at the rate less the time already spent, and 0 without a rate.
  @Test func aPacedScrubKeepsToItsRate() async throws {
    #expect(ScrubPace.wait(bytes: 2_000_000, maxBytesPerSecond: 1_000_000, elapsedSeconds: 0.5) == 1.5)
    #expect(ScrubPace.wait(bytes: 2_000_000, maxBytesPerSecond: 1_000_000, elapsedSeconds: 3) == 0)
    #expect(ScrubPace.wait(bytes: 2_000_000, maxBytesPerSecond: 0, elapsedSeconds: 0) == 0)
    let fixture = try TierFixture()
    for n in 0..<8 { try await fixture.tiers.put(testBlockID(n), bytes: testPayload(n, bytes: 100_000)) }
    let verifier = StorageVerifier(tiers: fixture.tiers)
    let started = ContinuousClock.now
    #expect(verifier.start(maxBytesPerSecond: 1_000_000))
    verifier.waitUntilFinished()
    let elapsed = ContinuousClock.now - started
    #expect(verifier.progress.scannedBytes == 800_000 && verifier.progress.maxRateBytesPerSecond == 1_000_000)
    // 800 KB at 1 MB/s: at least 0.8 s (a lower bound only; the scrub may be slower, never faster).
    #expect(elapsed >= .milliseconds(790), "\(elapsed)")
  }

  /// The scrub checks RAM copies too: one whose bytes no longer match its stored checksum (a
  /// memory fault) is found, removed from every tier and reported to the damaged-block handler,
  /// without counting the scrub's reads as hits.
  @Test func verifyFindsAndRemovesABlockDamagedInRAM() async throws {
    let fixture = try TierFixture()
    var ids: [BlockID] = []
    for n in 0..<10 {
      let id = testBlockID(n)
      try await fixture.tiers.put(id, bytes: testPayload(n, bytes: 30_000))
      ids.append(id)
    }
    // One block on disk as well: both its copies are checked.
    try await fixture.tiers.persist(ids[7])
    let victim = ids[3]
    #expect(fixture.tiers.flipBitInRAMForTesting(victim, byte: 12_345, bit: 2))
    let reported = Mutex<[BlockID]>([])
    fixture.tiers.setDamagedHandler { damaged in reported.withLock { $0 += damaged } }
    let hitsBefore = fixture.tiers.stats.hitsRAM
    let verifier = StorageVerifier(tiers: fixture.tiers)
    #expect(verifier.start())
    verifier.waitUntilFinished()
    let progress = verifier.progress
    #expect(progress.state == .done)
    #expect(progress.ramBlocks == 10 && progress.totalBlocks == 11 && progress.scannedBlocks == 11)
    #expect(progress.corruptBlocks == 1 && progress.droppedBlocks == 1 && progress.corrupt == [victim])
    // Every copy is read whole: ten in RAM (the damaged one too), one on disk.
    #expect(progress.scannedBytes == 11 * 30_000)
    #expect(reported.withLock { $0 } == [victim])
    #expect(fixture.tiers.stats.hitsRAM == hitsBefore, "the scrub counted its reads as hits")
    #expect(fixture.tiers.stats.transferPins == 0)
    #expect(fixture.tiers.lookup([victim]) == [.absent])
    for (n, id) in ids.enumerated() where id != victim {
      #expect(try await read(fixture.tiers, id) == testPayload(n, bytes: 30_000))
    }
  }
}
