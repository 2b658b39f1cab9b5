// The per-namespace usage the tiers keep as blocks come and go (what metrics read) agrees with
// a walk of every block after puts, demotions, promotions, evictions, removals, NVMe reclaim and
// a restart; and copies to other nodes refuse a block whose RAM bytes no longer match the
// checksum stored with it, removing it from the node.

import StrataCore
import Synchronization
import Testing

@testable import StrataStorage

/// Usage per namespace found by walking every block (RAM: slot sizes; NVMe: record sizes).
private func walkedUsage(_ tiers: TierManager) -> (ram: [Namespace: TierUsage], nvme: [Namespace: TierUsage]) {
  let ram = tiers.state.withLock { state in
    var usage: [Namespace: TierUsage] = [:]
    for (id, entry) in state.ram {
      usage[id.namespace, default: TierUsage()].blocks += 1
      usage[id.namespace, default: TierUsage()].bytes += entry.slot.capacityBytes
    }
    return usage
  }
  let nvme = tiers.nvme!.log.withLock { log in
    var usage: [Namespace: TierUsage] = [:]
    for (key, location) in log.index {
      let namespace = log.blockID(of: key).namespace
      usage[namespace, default: TierUsage()].blocks += 1
      usage[namespace, default: TierUsage()].bytes += log.recordBytes(storedBytes: location.storedBytes)
    }
    return usage
  }
  return (ram, nvme)
}

@Suite struct TierCountersTests {
  @Test func usageCountersAgreeWithAWalkOfEveryBlock() async throws {
    // 1 MiB of RAM and 16 MiB of NVMe: 900 blocks (~19 MB) of up to 40 KB demote, and reclaim evicts regions.
    var fixture = try TierFixture(ramBytes: 1 << 20, nvmeBytes: 16 << 20)
    func check(_ step: String) {
      let kept = fixture.tiers.usageByNamespace()
      let walked = walkedUsage(fixture.tiers)
      #expect(kept.ram == walked.ram, "RAM after \(step)")
      #expect(kept.nvme == walked.nvme, "NVMe after \(step)")
    }
    let namespaces = ["tenant-a", "tenant-b", "tenant-c"]
    for n in 0..<900 {
      let id = testBlockID(n, namespace: namespaces[n % 3])
      try await fixture.tiers.put(id, bytes: testPayload(n, bytes: 1000 + (n * 131) % 40_000))
    }
    check("puts and demotions")
    #expect(!(fixture.tiers.usageByNamespace().nvme.isEmpty), "blocks were demoted")
    for n in stride(from: 0, to: 900, by: 7) {
      _ = try await fixture.tiers.read(testBlockID(n, namespace: namespaces[n % 3]))
    }
    check("reads and promotions")
    for n in stride(from: 1, to: 900, by: 5) { fixture.tiers.remove(testBlockID(n, namespace: namespaces[n % 3])) }
    check("removals")
    _ = try fixture.tiers.evict(EvictionSelector(namespace: try Namespace("tenant-b")))
    check("eviction of a namespace")
    #expect(fixture.tiers.usageByNamespace().ram[try Namespace("tenant-b")] == nil)
    try fixture.nvme.sync()
    fixture = try fixture.restarted()
    check("a restart")
    #expect(!(fixture.tiers.usageByNamespace().nvme.isEmpty), "the restart recovered blocks")
  }

  @Test func aCopyRefusesABlockWhoseRAMBytesNoLongerMatchTheirChecksum() async throws {
    let fixture = try TierFixture()
    let good = testBlockID(1)
    let flipped = testBlockID(2)
    try await fixture.tiers.put(good, bytes: testPayload(1, bytes: 50_000))
    try await fixture.tiers.put(flipped, bytes: testPayload(2, bytes: 50_000))
    let failuresBefore = fixture.tiers.stats.checksumFailures
    #expect(fixture.tiers.flipBitInRAMForTesting(flipped, byte: 777, bit: 3))

    let copy = try await fixture.tiers.leaseForCopy([good, flipped, testBlockID(3)])
    #expect(copy.corrupt == [flipped])
    #expect(copy.blocks[0]?.id == good && copy.blocks[1] == nil && copy.blocks[2] == nil)
    #expect(copy.blocks[0].map { Array($0.bytes) } == testPayload(1, bytes: 50_000))
    #expect(copy.blocks[0]?.checksum == CRC32C.checksum(testPayload(1, bytes: 50_000)))
    fixture.tiers.release(copy)
    // The corrupt block is gone from every tier: never served, never copied again.
    #expect(fixture.tiers.lookup([good, flipped]) == [.ram, .absent])
    #expect(try await fixture.tiers.read(flipped) == nil)
    #expect(fixture.tiers.stats.checksumFailures == failuresBefore + 1)
    // Its memory is reusable: the same key can be written again, right this time.
    try await fixture.tiers.put(flipped, bytes: testPayload(2, bytes: 50_000))
    #expect(try await fixture.tiers.read(flipped) == testPayload(2, bytes: 50_000))
  }

  /// A block whose RAM copy is damaged but whose NVMe copy is whole loses only the RAM copy: the
  /// copy to another node is made from the disk copy (read and checked), a single node keeps the
  /// block, and nothing is reported lost (no read-back from other owners).
  @Test func aCopyOfABlockDamagedInRAMIsMadeFromItsDiskCopy() async throws {
    let fixture = try TierFixture()
    let id = testBlockID(4)
    let payload = testPayload(4, bytes: 40_000)
    try await fixture.tiers.put(id, bytes: payload)
    #expect(try await fixture.tiers.persist(id))
    #expect(fixture.tiers.flipBitInRAMForTesting(id, byte: 999, bit: 6))
    let reported = Mutex<[BlockID]>([])
    fixture.tiers.setDamagedHandler { damaged in reported.withLock { $0 += damaged } }
    let failuresBefore = fixture.tiers.stats.checksumFailures
    let copy = try await fixture.tiers.leaseForCopy([id])
    #expect(copy.corrupt.isEmpty && copy.recovered == [id])
    #expect(copy.blocks[0].map { Array($0.bytes) } == payload && copy.blocks[0]?.checksum == CRC32C.checksum(payload))
    fixture.tiers.release(copy)
    #expect(fixture.tiers.stats.checksumFailures == failuresBefore + 1)
    #expect(reported.withLock { $0 }.isEmpty)
    #expect(try await fixture.tiers.read(id) == payload)
    // A reader's report of it (VERIFY) is confirmed the same way, and the block stays readable.
    #expect(fixture.tiers.flipBitInRAMForTesting(id, byte: 5, bit: 0))
    #expect(try await fixture.tiers.check([id]) == [.corrupt])
    #expect(try await fixture.tiers.read(id) == payload)
  }
}
