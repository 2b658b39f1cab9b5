// The tier manager end to end over a real arena and a simulated disk: placement, dedup,
// admission, demotion and promotion, leases, faults, warm restart, and a model-checked random run.

import Dispatch
import Foundation
import StrataConfig
import StrataCore
import StrataTestKit
import Synchronization
import Testing

@testable import StrataStorage

struct TierFixture {
  let device: SimulatedBlockDevice
  let nvme: NVMeTier
  let tiers: TierManager
  let clock: ManualClock
  let report: RecoveryReport?

  static let regionBytes = 1 << 20
  static let blockBytesMax = 256 << 10

  /// A fresh node; with `recovering`, a node restarted over that device's bytes (RAM starts
  /// empty, the NVMe index is rebuilt from the record headers).
  init(
    ramBytes: Int = 4 << 20, nvmeBytes: Int = 16 << 20, admission: AdmissionPolicy = .always,
    leasesMax: Int = 1024, leasesPerNamespaceMax: Int? = nil, pinnedBytesPerNamespaceMax: Int = .max,
    recovering: SimulatedBlockDevice? = nil, writebackWindowMilliseconds: UInt64 = 0
  ) throws {
    clock = ManualClock(milliseconds: 1000)
    if let recovering {
      device = SimulatedBlockDevice(restoring: recovering.snapshot())
      (nvme, report) = try NVMeTier.recover(
        devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax)
    } else {
      device = SimulatedBlockDevice(capacityBytes: nvmeBytes)
      nvme = try NVMeTier(
        devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax)
      report = nil
    }
    tiers = try TierManager(
      configuration: TierConfiguration(
        ramBytes: ramBytes, blockBytesMax: Self.blockBytesMax, lockMemory: false, hugePages: false,
        admission: admission, leasesMax: leasesMax, leaseDurationMilliseconds: 5000,
        leasesPerNamespaceMax: leasesPerNamespaceMax, pinnedBytesPerNamespaceMax: pinnedBytesPerNamespaceMax,
        ioThreads: 2, writebackWindowMilliseconds: writebackWindowMilliseconds),
      nvme: nvme, clock: clock)
  }

  /// A restart over what the disk holds now, with the same settings.
  func restarted() throws -> TierFixture {
    try TierFixture(
      ramBytes: tiers.configuration.ramBytes, admission: tiers.configuration.admission,
      leasesMax: tiers.configuration.leasesMax, recovering: device,
      writebackWindowMilliseconds: tiers.configuration.writebackWindowMilliseconds)
  }
}

func put(_ tiers: TierManager, _ n: Int, bytes: Int) async throws -> PutOutcome {
  try await tiers.put(testBlockID(n), bytes: testPayload(n, bytes: bytes))
}

func read(_ tiers: TierManager, _ id: BlockID) async throws -> [UInt8]? {
  try await tiers.read(id)
}

@Suite struct TierManagerTests {
  @Test func putThenReadIsByteExactAndDeduplicated() async throws {
    let fixture = try TierFixture()
    #expect(try await put(fixture.tiers, 1, bytes: 100_000) == .stored)
    #expect(try await put(fixture.tiers, 1, bytes: 100_000) == .alreadyPresent)
    #expect(try await read(fixture.tiers, testBlockID(1)) == testPayload(1, bytes: 100_000))
    #expect(try await read(fixture.tiers, testBlockID(2)) == nil)
    #expect(fixture.tiers.lookup([testBlockID(1), testBlockID(2)]) == [.ram, .absent])
    let stats = fixture.tiers.stats
    #expect(stats.puts == 1 && stats.duplicatePuts == 1 && stats.hitsRAM == 1 && stats.misses == 1)
  }

  /// `reserveNow` reserves without waiting while the arena has room, says `present` for a block
  /// held or being written, and `needsRoom` once only an eviction would make room (which `reserve`
  /// then does, demoting to NVMe).
  @Test func reserveNowTakesFreeRoomAndLeavesEvictionToReserve() async throws {
    let fixture = try TierFixture(ramBytes: 1 << 20)
    let tiers = fixture.tiers
    var reserved: [PutReservation] = []
    var n = 0
    while case .reserved(let reservation) = try tiers.reserveNow(testBlockID(n), bytes: 128 << 10) {
      reserved.append(reservation)
      n += 1
      try #require(n < 100, "a 1 MiB arena took \(n) blocks of 128 KiB")
    }
    #expect(reserved.count >= 4, "only \(reserved.count) blocks of 128 KiB fit a 1 MiB arena")
    guard case .present = try tiers.reserveNow(testBlockID(0), bytes: 128 << 10) else {
      Issue.record("a block being written was reserved again")
      return
    }
    for reservation in reserved {
      testPayload(7, bytes: 128 << 10).withUnsafeBytes { reservation.buffer.copyMemory(from: $0) }
      try tiers.commit(reservation, expectedChecksum: nil)
    }
    guard case .needsRoom = try tiers.reserveNow(testBlockID(n), bytes: 128 << 10) else {
      Issue.record("a full arena reserved without evicting")
      return
    }
    let made = try #require(try await tiers.reserve(testBlockID(n), bytes: 128 << 10), "reserve did not evict")
    tiers.abort(made)
    #expect(tiers.stats.demotedBlocks + tiers.stats.cleanEvictedBlocks >= 1, "\(tiers.stats)")
    #expect(throws: StrataError.self) { try tiers.reserveNow(testBlockID(999), bytes: 0) }
  }

  /// Leases of batches that live on NVMe, taken concurrently in a full RAM tier: promoting one
  /// batch's blocks must not evict blocks another batch (or the same one) promoted a moment ago
  /// and has not pinned yet (each would then be a miss, though the tiers hold every block).
  @Test func concurrentBatchesPromotedIntoAFullRAMTierAreWhole() async throws {
    let fixture = try TierFixture(ramBytes: 4 << 20, nvmeBytes: 32 << 20)
    let bytes = 256 << 10  // 16 blocks fill the RAM tier
    for n in 0..<64 { #expect(try await put(fixture.tiers, n, bytes: bytes) == .stored) }
    let tiers = fixture.tiers
    var missing = 0
    for round in 0..<6 {
      // Two batches of 7 blocks each, from blocks now on NVMe, leased at the same time.
      let onNVMe = (0..<64).filter { tiers.lookup([testBlockID($0)]) == [.nvme] }
      #expect(onNVMe.count >= 14, "round \(round): \(onNVMe.count) blocks on NVMe")
      let first = Array(onNVMe.prefix(7))
      let second = Array(onNVMe.dropFirst(7).prefix(7))
      async let leaseA = tiers.lease(first.map { testBlockID($0) })
      async let leaseB = tiers.lease(second.map { testBlockID($0) })
      let (a, b) = try await (leaseA, leaseB)
      for (n, block) in zip(first + second, a.blocks + b.blocks) {
        guard let block else {
          missing += 1
          continue
        }
        #expect(Array(block.bytes) == testPayload(n, bytes: bytes))
      }
      tiers.release(a)
      tiers.release(b)
    }
    #expect(missing == 0, "\(missing) blocks of batches held by the tiers were reported missing")
  }

  /// Leases of one NVMe block asked for at the same time (a client's GET racing a repair's copy):
  /// one call reads it into RAM, the others wait for that read, and every one finds the block.
  @Test func concurrentLeasesOfOneNVMeBlockAllFindIt() async throws {
    let fixture = try TierFixture(ramBytes: 4 << 20, nvmeBytes: 32 << 20)
    let bytes = 256 << 10
    for n in 0..<32 { #expect(try await put(fixture.tiers, n, bytes: bytes) == .stored) }
    let tiers = fixture.tiers
    var missing = 0
    var rounds = 0
    for n in 0..<32 where tiers.lookup([testBlockID(n)]) == [.nvme] {
      rounds += 1
      let leases = try await withThrowingTaskGroup(of: BlockLease.self) { group in
        for _ in 0..<6 { group.addTask { try await tiers.lease([testBlockID(n)]) } }
        return try await group.reduce(into: [BlockLease]()) { $0.append($1) }
      }
      for lease in leases {
        if let block = lease.blocks[0] {
          #expect(Array(block.bytes) == testPayload(n, bytes: bytes))
        } else {
          missing += 1
        }
        tiers.release(lease)
      }
      if rounds == 8 { break }
    }
    #expect(rounds == 8, "blocks on NVMe to lease: \(rounds)")
    #expect(missing == 0, "\(missing) leases of a block the NVMe tier held reported it missing")
    // Each block was read from NVMe once, whatever the number of callers.
    #expect(tiers.stats.promotedBlocks == rounds)
  }

  @Test func namespacesSeparateEqualKeys() async throws {
    let fixture = try TierFixture()
    let a = testBlockID(7, namespace: "tenant-a")
    let b = testBlockID(7, namespace: "tenant-b")
    try await fixture.tiers.put(a, bytes: [UInt8](repeating: 1, count: 5000))
    #expect(fixture.tiers.lookup([a, b]) == [.ram, .absent])
  }

  @Test func badChecksumStoresNothing() async throws {
    let fixture = try TierFixture()
    let data = testPayload(3, bytes: 8192)
    let good = CRC32C.checksum(data)
    await #expect(throws: StrataError.self) {
      try await fixture.tiers.put(testBlockID(3), bytes: data, expectedChecksum: good ^ 1)
    }
    #expect(fixture.tiers.lookup([testBlockID(3)]) == [.absent])
    #expect(fixture.tiers.stats.ramUsedBytes == 0)
    // The right checksum is accepted afterwards.
    #expect(
      try await fixture.tiers.put(testBlockID(3), bytes: data, expectedChecksum: good) == .stored)
  }

  @Test func rejectsEmptyAndOversizedBlocks() async throws {
    let fixture = try TierFixture()
    await #expect(throws: StrataError.self) { _ = try await fixture.tiers.reserve(testBlockID(1), bytes: 0) }
    await #expect(throws: StrataError.self) {
      _ = try await fixture.tiers.reserve(testBlockID(1), bytes: TierFixture.blockBytesMax + 1)
    }
  }

  @Test func reserveCommitAndAbort() async throws {
    let fixture = try TierFixture()
    let reservation = try #require(try await fixture.tiers.reserve(testBlockID(1), bytes: 4096))
    // A second writer of the same block while the first is in flight does nothing.
    #expect(try await fixture.tiers.reserve(testBlockID(1), bytes: 4096) == nil)
    fixture.tiers.abort(reservation)
    #expect(fixture.tiers.lookup([testBlockID(1)]) == [.absent])
    let second = try #require(try await fixture.tiers.reserve(testBlockID(1), bytes: 4096))
    for index in 0..<4096 { second.buffer[index] = UInt8(index % 251) }
    try fixture.tiers.commit(second, expectedChecksum: nil)
    #expect(try await read(fixture.tiers, testBlockID(1)) == (0..<4096).map { UInt8($0 % 251) })
  }

  /// A checksum computed as the bytes landed is the one the commit checks and stores: the slot is
  /// not read again (a landed checksum that disagrees with the sender refuses the block even
  /// though the slot's bytes match the sender's checksum).
  @Test func aLandedChecksumStandsInForReadingTheSlotAgain() async throws {
    let fixture = try TierFixture()
    let bytes = testPayload(7, bytes: 8192)
    let checksum = CRC32C.checksum(bytes)
    for (number, landed, stored) in [(1, checksum, true), (2, checksum ^ 0x10, false)] {
      let reservation = try #require(try await fixture.tiers.reserve(testBlockID(number), bytes: bytes.count))
      bytes.withUnsafeBytes { reservation.buffer.copyMemory(from: $0) }
      do {
        try fixture.tiers.commit(reservation, expectedChecksum: checksum, landedChecksum: landed)
        #expect(stored, "block \(number) was stored with a landed checksum the sender's disagrees with")
      } catch {
        #expect(!stored && error.code == .checksumMismatch, "block \(number): \(error)")
      }
    }
    #expect(try await read(fixture.tiers, testBlockID(1)) == bytes)
    #expect(fixture.tiers.lookup([testBlockID(2)]) == [.absent])
    #expect(fixture.tiers.stats.checksumFailures == 1)
  }

  /// A read-through that met a concurrent write of its block waits for that write to end, woken
  /// by its commit or abort rather than polling.
  @Test func waitingForWritesEndsAtTheirCommitOrAbort() async throws {
    let fixture = try TierFixture()
    let tiers = fixture.tiers
    let first = try #require(try await tiers.reserve(testBlockID(1), bytes: 4096))
    let second = try #require(try await tiers.reserve(testBlockID(2), bytes: 4096))
    #expect(!tiers.waitForWrites(of: [testBlockID(1)], until: .after(milliseconds: 5)))
    #expect(tiers.waitForWrites(of: [testBlockID(3)], until: Deadline(nanoseconds: 0)))
    for (id, end) in [
      (testBlockID(1), { try tiers.commit(first, expectedChecksum: nil) }), (testBlockID(2), { tiers.abort(second) }),
    ] {
      let done = DispatchSemaphore(value: 0)
      let ended = Atomic<Bool>(false)
      Thread.detachNewThread {
        ended.store(tiers.waitForWrites(of: [id], until: .after(milliseconds: 60_000)), ordering: .releasing)
        done.signal()
      }
      // The waiter is waiting before the write ends, so the end must wake it.
      while tiers.reservationsEnded.blockedCount == 0 { sched_yield() }
      try end()
      #expect(done.wait(timeout: .now() + .seconds(30)) == .success)
      let waitEnded = ended.load(ordering: .acquiring)
      #expect(waitEnded)
    }
    #expect(tiers.lookup([testBlockID(1), testBlockID(2)]) == [.ram, .absent])
  }

  @Test func evictedBlocksAreDemotedAndPromotedBack() async throws {
    let fixture = try TierFixture(ramBytes: 4 << 20, admission: .always)
    let count = 64  // 64 × 200 KB ≈ 12.8 MB through a 4 MiB RAM tier
    for n in 0..<count { #expect(try await put(fixture.tiers, n, bytes: 200_000) == .stored) }
    var stats = fixture.tiers.stats
    #expect(stats.ramUsedBytes <= 4 << 20)
    #expect(stats.demotedBlocks > 0)
    #expect(stats.nvmeBlocks == stats.demotedBlocks)
    for n in 0..<count {
      #expect(try await read(fixture.tiers, testBlockID(n)) == testPayload(n, bytes: 200_000), "block \(n)")
    }
    stats = fixture.tiers.stats
    #expect(stats.promotedBlocks > 0 && stats.hitsNVMe == stats.promotedBlocks)
    #expect(stats.misses == 0)
  }

  @Test func seenTwiceAdmitsOnlyBlocksReadAgain() async throws {
    let fixture = try TierFixture(ramBytes: 1 << 20, admission: .seenTwice)
    _ = try await put(fixture.tiers, 0, bytes: 200_000)
    _ = try await read(fixture.tiers, testBlockID(0))  // block 0 is reused
    _ = try await put(fixture.tiers, 1, bytes: 200_000)  // block 1 is a one-hit wonder
    for n in 2..<12 { _ = try await put(fixture.tiers, n, bytes: 200_000) }
    #expect(fixture.nvme.contains(testBlockID(0)))
    #expect(!fixture.nvme.contains(testBlockID(1)))
    #expect(fixture.tiers.stats.droppedBlocks > 0)
  }

  /// A copy to a peer (replication after every PUT, repair, drain) is the node's own work, not a
  /// reader: it counts no hit and no read. Before, the copy that follows each PUT counted as the
  /// block's second sighting, so `seen_twice` admitted every replicated block to NVMe.
  @Test func aCopyToAPeerIsNotARead() async throws {
    let fixture = try TierFixture(ramBytes: 1 << 20, admission: .seenTwice)
    _ = try await put(fixture.tiers, 1, bytes: 200_000)
    let copy = try await fixture.tiers.leaseForCopy([testBlockID(1)])
    #expect(copy.blocks[0] != nil)
    fixture.tiers.release(copy)
    let counted = fixture.tiers.stats
    #expect(counted.hitsRAM == 0 && counted.misses == 0)
    for n in 2..<12 { _ = try await put(fixture.tiers, n, bytes: 200_000) }
    #expect(!fixture.nvme.contains(testBlockID(1)), "a block only copied was admitted as seen twice")
    #expect(fixture.tiers.lookup([testBlockID(1)]) == [.absent])
  }

  /// A copy to another node reads a block that lives only on NVMe into a buffer of its own: RAM
  /// is left as it was (no promotion, nothing evicted), the bytes are the block's, and the buffers
  /// are freed at release. Past `copyBufferBytesMax` the rest of a batch is promoted, as before.
  @Test func aCopyReadsNVMeOnlyBlocksWithoutPromotingThem() async throws {
    let fixture = try TierFixture()  // 4 MiB of RAM: a copy budget of 512 KiB
    #expect(fixture.tiers.copyBufferBytesMax == 512 << 10)
    for n in 0..<40 { _ = try await put(fixture.tiers, n, bytes: 100_000) }
    let onNVMe = (0..<40).filter { fixture.tiers.lookup([testBlockID($0)]) == [.nvme] }
    try #require(onNVMe.count >= 8)
    let ramBefore = Set(fixture.tiers.ramBlockIDs())
    let before = fixture.tiers.stats
    let few = Array(onNVMe.prefix(4))
    let copy = try await fixture.tiers.leaseForCopy(few.map { testBlockID($0) })
    for (n, block) in zip(few, copy.blocks) {
      #expect(block.map { Array($0.bytes) } == testPayload(n, bytes: 100_000))
      #expect(block?.foundIn == .nvme)
    }
    #expect(fixture.tiers.stats.copyBufferBytes == 400_000)
    fixture.tiers.release(copy)
    let after = fixture.tiers.stats
    #expect(after.promotedBlocks == before.promotedBlocks, "a copy promoted NVMe blocks into RAM")
    #expect(after.copyReadsFromNVMe == before.copyReadsFromNVMe + 4 && after.copyBufferBytes == 0)
    #expect(Set(fixture.tiers.ramBlockIDs()) == ramBefore)
    #expect(few.allSatisfy { fixture.tiers.lookup([testBlockID($0)]) == [.nvme] })
    // 800 KB against the 512 KiB budget: five blocks read into buffers, three promoted.
    let eight = Array(onNVMe.prefix(8))
    let batch = try await fixture.tiers.leaseForCopy(eight.map { testBlockID($0) })
    for (n, block) in zip(eight, batch.blocks) {
      #expect(block.map { Array($0.bytes) } == testPayload(n, bytes: 100_000))
    }
    fixture.tiers.release(batch)
    let last = fixture.tiers.stats
    #expect(last.copyReadsFromNVMe == after.copyReadsFromNVMe + 5)
    #expect(last.promotedBlocks == after.promotedBlocks + 3)
    #expect(last.copyBufferBytes == 0)
  }

  @Test func neverAdmissionKeepsEverythingInRAM() async throws {
    let fixture = try TierFixture(ramBytes: 1 << 20, admission: .never)
    for n in 0..<12 {
      _ = try await put(fixture.tiers, n, bytes: 200_000)
      _ = try await read(fixture.tiers, testBlockID(n))
    }
    #expect(fixture.nvme.blockCount == 0)
    #expect(fixture.tiers.stats.droppedBlocks >= 7)
  }

  @Test func leasesPinBlocksUntilReleasedOrExpired() async throws {
    let fixture = try TierFixture(ramBytes: 1 << 20, admission: .never)
    // Fill RAM with four 256 KiB blocks and pin them all.
    for n in 0..<4 { _ = try await put(fixture.tiers, n, bytes: 256 << 10) }
    let lease = try await fixture.tiers.lease((0..<4).map { testBlockID($0) }, clientLease(60_000))
    #expect(lease.leadingRunCount == 4)
    #expect(lease.grantedMilliseconds == 5000, "a lease asked for longer than the configured duration is cut to it")
    #expect(fixture.tiers.stats.pinnedBlocks == 4)
    // Nothing can be evicted: a new block is refused, and the pinned bytes are intact.
    await #expect(throws: StrataError.self) { _ = try await put(fixture.tiers, 9, bytes: 256 << 10) }
    for (n, block) in lease.blocks.enumerated() {
      #expect(Array(try #require(block).bytes) == testPayload(n, bytes: 256 << 10))
    }
    // After expiry the blocks are evictable again.
    fixture.clock.advance(milliseconds: 5001)
    #expect(try await put(fixture.tiers, 9, bytes: 256 << 10) == .stored)
    #expect(fixture.tiers.stats.leasesActive == 0)
  }

  /// The synchronous lease of RAM-resident blocks (a GET's fast path): same pins and counters as
  /// `lease`, and nil (take the async path) as soon as one block would need a promotion.
  @Test func residentLeasesPinWithoutWaitingAndDeferNVMeBlocks() async throws {
    let fixture = try TierFixture(ramBytes: 1 << 20, admission: .always)
    for n in 0..<12 { _ = try await put(fixture.tiers, n, bytes: 200_000) }
    let onNVMe = try #require((0..<12).first { fixture.tiers.lookup([testBlockID($0)]) == [.nvme] })
    let inRAM = (0..<12).filter { fixture.tiers.lookup([testBlockID($0)]) == [.ram] }
    try #require(inRAM.count >= 2)
    #expect(try fixture.tiers.leaseResident([testBlockID(inRAM[0]), testBlockID(onNVMe)]) == nil)
    let before = fixture.tiers.stats
    let ids = [testBlockID(inRAM[0]), testBlockID(99), testBlockID(inRAM[1])]
    let lease = try #require(try fixture.tiers.leaseResident(ids))
    #expect(lease.blocks.map { $0 != nil } == [true, false, true])
    #expect(lease.blocks[0].map { Array($0.bytes) } == testPayload(inRAM[0], bytes: 200_000))
    #expect(lease.blocks[0]?.checksum == CRC32C.checksum(testPayload(inRAM[0], bytes: 200_000)))
    let after = fixture.tiers.stats
    #expect(after.hitsRAM == before.hitsRAM + 2 && after.misses == before.misses + 1)
    #expect(after.transferPins == 1)
    // Pinned: filling RAM with new blocks evicts neither leased block.
    for n in 100..<110 { _ = try await put(fixture.tiers, n, bytes: 200_000) }
    #expect(fixture.tiers.lookup([ids[0], ids[2]]) == [.ram, .ram])
    fixture.tiers.release(lease)
    #expect(fixture.tiers.stats.transferPins == 0)
  }

  @Test func leadingRunStopsAtTheFirstMiss() async throws {
    let fixture = try TierFixture()
    for n in [0, 1, 3] { _ = try await put(fixture.tiers, n, bytes: 4096) }
    let lease = try await fixture.tiers.lease((0..<4).map { testBlockID($0) })
    defer { fixture.tiers.release(lease) }
    #expect(lease.leadingRunCount == 2)
    #expect(lease.blocks.map { $0 != nil } == [true, true, false, true])
  }

  @Test func removingAPinnedBlockKeepsItsBytesUntilRelease() async throws {
    let fixture = try TierFixture(ramBytes: 1 << 20, admission: .never)
    _ = try await put(fixture.tiers, 1, bytes: 256 << 10)
    let lease = try await fixture.tiers.lease([testBlockID(1)])
    fixture.tiers.remove(testBlockID(1))
    #expect(fixture.tiers.lookup([testBlockID(1)]) == [.absent])
    // Fill the rest of RAM and pin it: the removed block's slot must not be handed out while pinned.
    for n in 2..<5 { _ = try await put(fixture.tiers, n, bytes: 256 << 10) }
    let others = try await fixture.tiers.lease((2..<5).map { testBlockID($0) })
    await #expect(throws: StrataError.self) { _ = try await put(fixture.tiers, 5, bytes: 256 << 10) }
    #expect(Array(try #require(lease.blocks[0]).bytes) == testPayload(1, bytes: 256 << 10))
    fixture.tiers.release(lease)
    #expect(try await put(fixture.tiers, 5, bytes: 256 << 10) == .stored)
    fixture.tiers.release(others)
  }

  @Test func leaseLimitIsEnforced() async throws {
    let fixture = try TierFixture(leasesMax: 2)
    _ = try await put(fixture.tiers, 1, bytes: 4096)
    let first = try await fixture.tiers.lease([testBlockID(1)], clientLease(1000))
    let second = try await fixture.tiers.lease([testBlockID(1)], clientLease(1000))
    await #expect(throws: StrataError.self) { _ = try await fixture.tiers.lease([testBlockID(1)], clientLease(1000)) }
    // A transfer's pins are never refused for lease limits (a GET must not fail because of leases).
    let transfer = try await fixture.tiers.lease([testBlockID(1)], .transfer)
    #expect(transfer.blocks[0] != nil)
    fixture.tiers.release(transfer)
    fixture.tiers.release(first)
    fixture.tiers.release(second)
    fixture.tiers.release(second)  // twice: harmless
    _ = try await fixture.tiers.lease([testBlockID(1)], clientLease(1000))
  }

  @Test func oneNamespaceCannotTakeAnothersLeasesOrPinMoreThanItsBytes() async throws {
    let fixture = try TierFixture(
      ramBytes: 4 << 20, leasesMax: 8, leasesPerNamespaceMax: 3, pinnedBytesPerNamespaceMax: 64 << 10)
    _ = try await put(fixture.tiers, 1, bytes: 4096)
    let hog = try Namespace("hog")
    for _ in 0..<3 {
      _ = try await fixture.tiers.lease([testBlockID(1)], .client(namespace: hog, durationMilliseconds: 1000))
    }
    await #expect(throws: StrataError.self) {
      _ = try await fixture.tiers.lease([], .client(namespace: hog, durationMilliseconds: 1000))
    }
    // Another namespace still gets its leases.
    let other = try await fixture.tiers.lease(
      [], .client(namespace: try Namespace("other"), durationMilliseconds: 1000))
    fixture.tiers.release(other)
    // Pinned bytes: 16 leases of 4 KiB would pass 64 KiB; the namespace is told at the limit.
    let pinner = try Namespace("pinner")
    let big = try TierFixture(ramBytes: 4 << 20, leasesMax: 64, pinnedBytesPerNamespaceMax: 64 << 10)
    _ = try await put(big.tiers, 1, bytes: 16 << 10)
    for _ in 0..<4 {
      _ = try await big.tiers.lease([testBlockID(1)], .client(namespace: pinner, durationMilliseconds: 1000))
    }
    await #expect(throws: StrataError.self) {
      _ = try await big.tiers.lease([testBlockID(1)], .client(namespace: pinner, durationMilliseconds: 1000))
    }
    // Expiry returns the namespace's budget.
    big.clock.advance(milliseconds: 1001)
    _ = try await big.tiers.lease([testBlockID(1)], .client(namespace: pinner, durationMilliseconds: 1000))
  }

  @Test func corruptNVMeDataIsDetectedAndNeverReturned() async throws {
    let fixture = try TierFixture(ramBytes: 1 << 20, admission: .always)
    for n in 0..<12 { _ = try await put(fixture.tiers, n, bytes: 200_000) }
    let victim = try #require((0..<12).first { fixture.tiers.lookup([testBlockID($0)]) == [.nvme] })
    let location = try #require(fixture.nvme.recordLocation(of: testBlockID(victim)))
    fixture.device.flipBit(
      atByte: location.offset + BlockRecordHeader.bodyOffset(storedBytes: location.storedBytes, alignmentBytes: 4096)
        + 1000, bit: 3)
    #expect(try await read(fixture.tiers, testBlockID(victim)) == nil)
    #expect(fixture.tiers.stats.checksumFailures == 1)
    #expect(fixture.tiers.lookup([testBlockID(victim)]) == [.absent])
    // Every other block still reads back intact.
    for n in 0..<12 where n != victim {
      #expect(try await read(fixture.tiers, testBlockID(n)) == testPayload(n, bytes: 200_000))
    }
  }

  @Test func diskWriteErrorsLeaveTheNodeServingFromRAM() async throws {
    let fixture = try TierFixture(ramBytes: 1 << 20, admission: .always)
    fixture.device.failNextWrites(1000)
    for n in 0..<12 { #expect(try await put(fixture.tiers, n, bytes: 200_000) == .stored) }
    let stats = fixture.tiers.stats
    #expect(stats.ioErrors > 0)
    #expect(stats.nvmeBlocks == 0)
    // The newest blocks are still served from RAM.
    #expect(try await read(fixture.tiers, testBlockID(11)) == testPayload(11, bytes: 200_000))
  }

  @Test func warmRestartRecoversFlushedBlocks() async throws {
    let fixture = try TierFixture(ramBytes: 2 << 20, admission: .always)
    #expect(fixture.tiers.holdsNoBlocks)
    for n in 0..<20 { _ = try await put(fixture.tiers, n, bytes: 100_000 + n) }
    #expect(!fixture.tiers.holdsNoBlocks)
    let inRAM = fixture.tiers.stats.ramBlocks
    let reports = Mutex<[FlushProgress]>([])
    let written = try await fixture.tiers.flush { progress in reports.withLock { $0.append(progress) } }
    #expect(written > 0)
    // The flush says what it will write, then each block written, up to all of it.
    let heard = reports.withLock { $0 }
    #expect(heard.count == written + 1 && heard.first?.blocksWritten == 0 && heard.first?.blocksToWrite == inRAM)
    #expect(heard.last?.blocksWritten == written && heard.last?.percent == 100 && heard.last?.blocksToWrite == written)
    let restarted = try fixture.restarted()
    // Its blocks are on its disk only, and it holds them.
    #expect(restarted.tiers.stats.ramBlocks == 0 && !restarted.tiers.holdsNoBlocks)
    let report = try #require(restarted.report)
    #expect(report.blocksRecovered == 20)
    #expect(report.corruptDropped == 0)
    for n in 0..<20 {
      #expect(try await read(restarted.tiers, testBlockID(n)) == testPayload(n, bytes: 100_000 + n), "block \(n)")
    }
  }

  @Test func backgroundServiceDemotesAboveTheHighWatermark() async throws {
    let fixture = try TierFixture(ramBytes: 4 << 20, admission: .always)
    for n in 0..<15 { _ = try await put(fixture.tiers, n, bytes: 256 << 10) }
    #expect(fixture.tiers.stats.ramUsedBytes > Int(0.85 * Double(4 << 20)))
    try await fixture.tiers.relievePressure()
    #expect(fixture.tiers.stats.ramUsedBytes <= Int(0.85 * Double(4 << 20)))
    #expect(fixture.tiers.stats.demotedBlocks > 0)
  }

  /// Random puts, reads, removes, persists and restarts against a model: every block returned
  /// equals what was written, byte for byte; removed blocks stay removed, also across restarts;
  /// capacity limits hold throughout. Block n always has the same bytes (content addressing).
  @Test(arguments: [UInt64(1), 2])
  func randomOperationsAgreeWithAModel(seed: UInt64) async throws {
    var random = SplitMix64(seed: seed)
    let sizes = [4096, 10_000, 65536, 200_000, 256 << 10]
    let blocks = (0..<40).map { testPayload($0, bytes: sizes[$0 % sizes.count]) }
    var fixture = try TierFixture(ramBytes: 2 << 20, nvmeBytes: 8 << 20, admission: .always)
    var model = Set<Int>()  // blocks written and not removed since
    for step in 0..<400 {
      let n = Int(random.next() % UInt64(blocks.count))
      let tiers = fixture.tiers
      let context = "seed \(seed) step \(step) block \(n)"
      switch random.next() % 100 {
      case 0..<45:
        let outcome = try await tiers.put(testBlockID(n), bytes: blocks[n])
        if !model.contains(n) { #expect(outcome == .stored, "\(context)") }
        model.insert(n)
      case 45..<85:
        if let bytes = try await tiers.read(testBlockID(n)) {
          #expect(model.contains(n), "\(context): returned but not written (or removed)")
          #expect(bytes == blocks[n], "\(context): bytes differ")
        }
      case 85..<92:
        tiers.remove(testBlockID(n))
        model.remove(n)
      case 92..<97:
        if model.contains(n) {
          let onDisk = try await tiers.persist(testBlockID(n))
          #expect(onDisk == fixture.nvme.contains(testBlockID(n)), "\(context)")
        }
      default:
        // Restart: RAM is lost, the NVMe index is rebuilt from the device. Nothing wrong may come back.
        _ = try await tiers.flush()
        fixture = try fixture.restarted()
        #expect(fixture.report?.corruptDropped == 0, "\(context)")
        for block in 0..<blocks.count {
          let bytes = try await fixture.tiers.read(testBlockID(block))
          if let bytes {
            #expect(model.contains(block), "seed \(seed) step \(step): removed block \(block) came back")
            #expect(bytes == blocks[block], "seed \(seed) step \(step): block \(block) differs after restart")
          } else {
            model.remove(block)  // gone with RAM or an evicted region: allowed for a cache
          }
        }
      }
      let stats = fixture.tiers.stats
      #expect(stats.ramUsedBytes <= 2 << 20)
      #expect(stats.nvmeUsedBytes <= stats.nvmeCapacityBytes)
    }
  }
}

/// A client lease in the namespace test blocks live in.
func clientLease(_ milliseconds: UInt64) -> LeaseKind {
  .client(namespace: testBlockID(0).namespace, durationMilliseconds: milliseconds)
}

@Suite struct PromotionConcurrencyTests {
  static let blockBytes = 100_000

  /// A tier manager with 1 MiB of RAM over `device` that has stored blocks 0..<`blocks` of
  /// `blockBytes` (RAM keeps at most 10 of them), and the ids of those that live only on NVMe.
  static func tiers(
    on device: some BlockDevice, ioThreads: Int, ioQueueDepthMax: Int = 1024, blocks: Int,
    after first: [(BlockID, [UInt8])] = []
  ) async throws -> (TierManager, [BlockID]) {
    let nvme = try NVMeTier(
      devices: [device], regionBytes: TierFixture.regionBytes, compression: .none,
      blockBytesMax: TierFixture.blockBytesMax)
    let tiers = try TierManager(
      configuration: TierConfiguration(
        ramBytes: 1 << 20, blockBytesMax: TierFixture.blockBytesMax, lockMemory: false, hugePages: false,
        admission: .always, ioThreads: ioThreads, ioQueueDepthMax: ioQueueDepthMax),
      nvme: nvme, clock: ManualClock(milliseconds: 1_000))
    for (id, bytes) in first { #expect(try await tiers.put(id, bytes: bytes) == .stored) }
    for n in 0..<blocks { #expect(try await put(tiers, n, bytes: blockBytes) == .stored) }
    return (tiers, (0..<blocks).map { testBlockID($0) }.filter { tiers.lookup([$0]) == [.nvme] })
  }

  /// A GET of four blocks that live only on NVMe keeps four disk reads in flight (one per I/O
  /// thread), not one after the other: the device holds each read until four have arrived (a
  /// minute at most, so a one-at-a-time promotion fails the test instead of hanging it), and every block
  /// is leased with its bytes.
  @Test func aBatchsNVMeReadsAreInFlightTogether() async throws {
    let device = ReadBarrierDevice(SimulatedBlockDevice(capacityBytes: 16 << 20))
    let (tiers, onNVMe) = try await Self.tiers(on: device, ioThreads: 4, blocks: 24)
    let bytes = Self.blockBytes
    try #require(onNVMe.count >= 4, "the RAM tier of 1 MiB holds at most 10 of the 24 blocks")
    let batch = Array(onNVMe.prefix(4))
    device.holdReads(until: 4)
    let lease = try await tiers.lease(batch)
    defer { tiers.release(lease) }
    #expect(device.mostInFlight == 4, "the batch's promotions read one at a time (\(device.mostInFlight) in flight)")
    for (id, block) in zip(batch, lease.blocks) {
      let n = (0..<24).first { testBlockID($0) == id }!
      #expect(block.map { Array($0.bytes) } == testPayload(n, bytes: bytes))
    }
  }
}

extension PromotionConcurrencyTests {
  /// A batch of NVMe-only blocks larger than the RAM tier can hold pinned at once: room goes to
  /// the batch's blocks in order, so what is leased is a leading run (what a worker loads), never
  /// a scattering of later blocks, although the reads run four at a time.
  @Test func aBatchLargerThanRAMGetsItsLeadingBlocks() async throws {
    let (tiers, batch) = try await Self.tiers(
      on: SimulatedBlockDevice(capacityBytes: 16 << 20), ioThreads: 4, blocks: 40)
    try #require(batch.count >= 20, "the RAM tier of 1 MiB holds at most 10 of the 40 blocks")
    let lease = try await tiers.lease(batch)
    defer { tiers.release(lease) }
    let present = lease.blocks.map { $0 != nil }
    let leading = present.firstIndex(of: false) ?? present.count
    #expect(leading > 0 && leading < batch.count, "\(leading) of \(batch.count) leased")
    #expect(!present[leading...].contains(true), "blocks after a miss were leased: \(present)")
    // Each block missed for want of room is counted as such, apart from blocks not stored.
    #expect(tiers.stats.promotionsWithoutRoom == batch.count - leading)
  }
}

extension PromotionConcurrencyTests {
  /// A GET cancelled while its second block's read waits for the I/O pool's only thread: that
  /// read never runs, the block is a miss, and nothing counts it as a disk error.
  @Test func aCancelledPromotionIsNoIOError() async throws {
    let device = ReadBarrierDevice(SimulatedBlockDevice(capacityBytes: 16 << 20))
    let (tiers, onNVMe) = try await Self.tiers(on: device, ioThreads: 1, blocks: 24)
    let batch = Array(onNVMe.prefix(2))
    try #require(batch.count == 2)
    let errorsBefore = tiers.stats.ioErrors
    device.holdReads(until: 2)  // the first read holds the only thread until released
    let get = Task { try await tiers.lease(batch) }
    #expect(try await eventually(within: 120) { device.arrivedReads == 1 })
    get.cancel()
    device.releaseReads()
    let lease = try await get.value
    defer { tiers.release(lease) }
    #expect(lease.blocks.map { $0 != nil } == [true, false])
    #expect(device.arrivedReads == 1, "the cancelled read ran")
    #expect(tiers.stats.ioErrors == errorsBefore, "a cancelled read was counted as a disk error")
  }
}

extension PromotionConcurrencyTests {
  /// One namespace's backlog of disk reads delays another namespace's read by one read of its
  /// own, not by the backlog: with the I/O pool's only thread held by a read of namespace `test`
  /// and five more of its reads queued, a read of namespace `other` queued after them runs third
  /// (the held read, the backlog's oldest, then it). Taken in call order, it ran seventh. RAM is
  /// flushed to NVMe first, so that making room for the promotions writes nothing.
  @Test func aNamespacesBacklogDelaysAnothersReadByOneRead() async throws {
    let device = ReadBarrierDevice(SimulatedBlockDevice(capacityBytes: 16 << 20))
    let other = testBlockID(0, namespace: "other")
    let marked = [UInt8](repeating: ReadBarrierDevice.marker, count: Self.blockBytes)
    let (tiers, onNVMe) = try await Self.tiers(on: device, ioThreads: 1, blocks: 24, after: [(other, marked)])
    try #require(tiers.lookup([other]) == [.nvme] && onNVMe.count >= 6)
    try await tiers.flush()
    device.meterReads()
    let backlog = onNVMe.prefix(6).map { id in Task { try await tiers.lease([id]) } }
    #expect(try await eventually(within: 120) { tiers.stats.ioQueueJobs == 6 && device.arrivedReads == 1 })
    let reader = Task { try await tiers.lease([other]) }
    #expect(try await eventually(within: 120) { tiers.stats.ioQueueJobs == 7 })
    device.grantReads(3)
    let lease = try await reader.value
    #expect(device.markedReads == [false, false, true], "reads done by the other namespace's: \(device.markedReads)")
    #expect(lease.blocks[0].map { Array($0.bytes) } == marked)
    tiers.release(lease)
    device.releaseReads()
    for task in backlog { tiers.release(try await task.value) }
    #expect(tiers.stats.ioQueueJobs == 0)
  }
}

extension PromotionConcurrencyTests {
  /// A demotion the I/O pool has no room for (its namespace's share of the queue is taken) is not
  /// a disk fault: the victim stays in RAM, nothing is dropped, and the PUT that needed the room
  /// is refused with `resource_exhausted`. (Treated as a failed write, the victim was dropped.)
  @Test func aDemotionRefusedByAFullQueueKeepsItsBlock() async throws {
    let device = ReadBarrierDevice(SimulatedBlockDevice(capacityBytes: 16 << 20))
    // A queue of 4 jobs gives one namespace's requests 1.
    let (tiers, onNVMe) = try await Self.tiers(on: device, ioThreads: 1, ioQueueDepthMax: 4, blocks: 24)
    let stored = (0..<24).map { testBlockID($0) }
    device.holdReads(until: 2)  // the promotion's read holds the only thread (a minute at most)
    let reader = Task { try await tiers.lease([onNVMe[0]]) }
    #expect(try await eventually(within: 120) { device.arrivedReads == 1 })
    let before = tiers.stats
    do {
      _ = try await tiers.put(testBlockID(100), bytes: testPayload(100, bytes: Self.blockBytes))
      Issue.record("a PUT needing a demotion was taken while its namespace's share of the I/O queue was full")
    } catch {
      #expect(error.code == .resourceExhausted && error.message.contains("namespace 'test'"), "\(error)")
    }
    let after = tiers.stats
    #expect(after.ioQueueRefusals == before.ioQueueRefusals + 1)
    #expect(after.droppedBlocks == before.droppedBlocks && after.ioErrors == before.ioErrors)
    #expect(!tiers.lookup(stored).contains(.absent), "a block was lost: \(tiers.lookup(stored))")
    device.releaseReads()
    tiers.release(try await reader.value)
  }
}

/// Wraps a simulated device so that, once armed, reads wait until `width` of them have arrived,
/// or (metered) each waits for a grant; a minute at most either way (generous for a loaded
/// machine, where a test's task may wait seconds for a thread), after which no read is held.
/// It counts the most reads in flight at once, and records for each read done whether its bytes
/// hold a run of `marker`.
final class ReadBarrierDevice: BlockDevice {
  static let marker: UInt8 = 0xBB
  static let holdSeconds: TimeInterval = 60
  let inner: SimulatedBlockDevice
  private let condition = NSCondition()
  nonisolated(unsafe) private var width = 0
  nonisolated(unsafe) private var metered = false
  nonisolated(unsafe) private var grants = 0
  nonisolated(unsafe) private var arrived = 0
  nonisolated(unsafe) private var inFlight = 0
  nonisolated(unsafe) private var most = 0
  nonisolated(unsafe) private var marks: [Bool] = []

  init(_ inner: SimulatedBlockDevice) { self.inner = inner }

  var capacityBytes: Int { inner.capacityBytes }
  var alignmentBytes: Int { inner.alignmentBytes }

  /// From now on, reads wait until `width` have arrived; the count of reads in flight restarts.
  func holdReads(until width: Int) {
    condition.withLock {
      self.width = width
      arrived = 0
      most = 0
    }
  }

  var mostInFlight: Int { condition.withLock { most } }

  /// Reads that arrived since `holdReads`.
  var arrivedReads: Int { condition.withLock { arrived } }

  /// From now on, each read waits for a grant (`grantReads`).
  func meterReads() {
    condition.withLock {
      metered = true
      arrived = 0
      marks = []
    }
  }

  /// Lets `count` more metered reads go.
  func grantReads(_ count: Int) {
    condition.withLock {
      grants += count
      condition.broadcast()
    }
  }

  /// For each read done since `meterReads`, in order: whether it read a block of `marker` bytes.
  var markedReads: [Bool] { condition.withLock { marks } }

  /// Lets every held read go, and later ones pass.
  func releaseReads() {
    condition.withLock {
      width = 0
      metered = false
      condition.broadcast()
    }
  }

  func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
    condition.withLock {
      arrived += 1
      inFlight += 1
      most = max(most, inFlight)
      condition.broadcast()
      let deadline = Date().addingTimeInterval(Self.holdSeconds)
      while arrived < width || metered && grants == 0 {
        guard condition.wait(until: deadline) else {
          (width, metered) = (0, false)  // held too long: the test fails on its counts, never hangs
          condition.broadcast()
          break
        }
      }
      if metered && grants > 0 { grants -= 1 }
    }
    defer { condition.withLock { inFlight -= 1 } }
    try inner.read(at: offset, into: buffer)
    // A record's middle is its payload's.
    let middle = buffer[(buffer.count / 2)..<(buffer.count / 2 + 64)]
    condition.withLock { marks.append(middle.allSatisfy { $0 == Self.marker }) }
  }

  func write(at offset: Int, from buffer: UnsafeRawBufferPointer) throws(StrataError) {
    try inner.write(at: offset, from: buffer)
  }

  func sync() throws(StrataError) { try inner.sync() }
  func discard(at offset: Int, bytes: Int) { inner.discard(at: offset, bytes: bytes) }
}
