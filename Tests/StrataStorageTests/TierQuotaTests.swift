// Namespace quotas in the tiers: a namespace at its RAM quota evicts its own blocks, never another
// tenant's; one at its NVMe quota drops its blocks leaving RAM instead of writing them; and the
// partitioned policy is plain S3-FIFO when no quota is set.

import StrataConfig
import StrataCore
import Testing

@testable import StrataStorage

@Suite struct TierQuotaTests {
  static let blockBytes = 256 << 10

  private func quotaTiers(ram: Int, quotas: NamespaceQuotas, admission: AdmissionPolicy = .never) throws -> TierManager
  {
    let device = SimulatedBlockDevice(capacityBytes: 16 << 20)
    let nvme = try NVMeTier(
      devices: [device], regionBytes: TierFixture.regionBytes, compression: .none,
      blockBytesMax: TierFixture.blockBytesMax)
    return try TierManager(
      configuration: TierConfiguration(
        ramBytes: ram, blockBytesMax: TierFixture.blockBytesMax, lockMemory: false, hugePages: false,
        admission: admission, ioThreads: 2, quotas: quotas),
      nvme: nvme, clock: ManualClock(milliseconds: 1000))
  }

  private func fill(_ tiers: TierManager, _ namespace: String, count: Int) async throws {
    for n in 0..<count {
      _ = try await tiers.put(testBlockID(n, namespace: namespace), bytes: testPayload(n, bytes: Self.blockBytes))
    }
  }

  private func present(_ tiers: TierManager, _ namespace: String, count: Int) -> Int {
    tiers.lookup((0..<count).map { testBlockID($0, namespace: namespace) }).filter { $0 != nil }.count
  }

  /// The control: with no quota, A's writes past the RAM tier evict B's older blocks.
  @Test func withoutQuotasOneTenantEvictsAnother() async throws {
    let tiers = try quotaTiers(ram: 4 << 20, quotas: NamespaceQuotas())
    try await fill(tiers, "b", count: 4)
    try await fill(tiers, "a", count: 32)
    #expect(present(tiers, "b", count: 4) < 4)
  }

  @Test func aTenantAtItsRAMQuotaEvictsOnlyItsOwnBlocks() async throws {
    var quotas = NamespaceQuotas()
    quotas.defaults.ramBytesMax = 2 << 20
    let tiers = try quotaTiers(ram: 4 << 20, quotas: quotas)
    try await fill(tiers, "b", count: 4)
    try await fill(tiers, "a", count: 32)
    #expect(present(tiers, "b", count: 4) == 4, "B's blocks were evicted by A's writes")
    let usage = tiers.usageByNamespace().ram
    #expect((usage[try Namespace("a")]?.bytes ?? 0) <= 2 << 20)
    #expect(present(tiers, "a", count: 32) == (2 << 20) / Self.blockBytes)
    // The newest of A's blocks are the ones kept.
    #expect(tiers.lookup([testBlockID(31, namespace: "a")]) == [.ram])
    #expect(tiers.stats.quotaEvictedBlocks == 32 - (2 << 20) / Self.blockBytes)
  }

  @Test func aTenantWhoseBlocksArePinnedAtItsQuotaIsRefused() async throws {
    var quotas = NamespaceQuotas()
    quotas.defaults.ramBytesMax = 1 << 20
    let tiers = try quotaTiers(ram: 4 << 20, quotas: quotas)
    try await fill(tiers, "a", count: 4)
    let lease = try await tiers.lease((0..<4).map { testBlockID($0, namespace: "a") })
    defer { tiers.release(lease) }
    await #expect(throws: StrataError.self) {
      _ = try await tiers.put(testBlockID(99, namespace: "a"), bytes: testPayload(99, bytes: Self.blockBytes))
    }
    // Another tenant still has room.
    #expect(
      try await tiers.put(testBlockID(0, namespace: "b"), bytes: testPayload(0, bytes: Self.blockBytes)) == .stored)
  }

  @Test func aTenantAtItsNVMeQuotaDropsInsteadOfWriting() async throws {
    var quotas = NamespaceQuotas()
    quotas.defaults.ramBytesMax = 1 << 20
    quotas.defaults.nvmeBytesMax = 1 << 20
    let tiers = try quotaTiers(ram: 4 << 20, quotas: quotas, admission: .always)
    try await fill(tiers, "a", count: 16)
    let nvmeUsage = tiers.usageByNamespace().nvme[try Namespace("a")]?.bytes ?? 0
    #expect(nvmeUsage > 0 && nvmeUsage <= 1 << 20, "NVMe holds \(nvmeUsage) bytes of a")
    #expect(tiers.stats.nvmeQuotaDroppedBlocks > 0)
  }

  /// A namespace's own pinned-bytes quota (`namespaces[].pinned`) bounds its client leases; other
  /// namespaces keep the default.
  @Test func aNamespacePinnedQuotaBoundsItsLeases() async throws {
    var quotas = NamespaceQuotas()
    quotas.overrides[try Namespace("a")] = NamespaceQuota(pinnedBytesMax: 300 << 10)
    let tiers = try quotaTiers(ram: 4 << 20, quotas: quotas)
    try await fill(tiers, "a", count: 2)
    try await fill(tiers, "b", count: 2)
    let ids = { (namespace: String) in (0..<2).map { testBlockID($0, namespace: namespace) } }
    let a = try Namespace("a")
    await #expect(throws: StrataError.self) {
      _ = try await tiers.lease(ids("a"), .client(namespace: a, durationMilliseconds: 1000))
    }
    let one = try await tiers.lease([testBlockID(0, namespace: "a")], .client(namespace: a, durationMilliseconds: 1000))
    tiers.release(one)
    let b = try await tiers.lease(ids("b"), .client(namespace: try Namespace("b"), durationMilliseconds: 1000))
    #expect(b.blocks.allSatisfy { $0 != nil })
    tiers.release(b)
  }

  /// Under node-wide pressure the victim comes from the partition furthest over its share.
  @Test func nodeWidePressureTakesFromThePartitionFurthestOverItsShare() throws {
    var quotas = NamespaceQuotas()
    quotas.overrides[try Namespace("a")] = NamespaceQuota(ramBytesMax: 100)
    quotas.overrides[try Namespace("b")] = NamespaceQuota(ramBytesMax: 400)
    var policy = QuotaPartitionedPolicy(capacityBytes: 1000, quotas: quotas)
    for n in 0..<5 { policy.insert(testBlockID(n, namespace: "b"), bytes: 50) }  // 250 of 400
    for n in 0..<3 { policy.insert(testBlockID(n, namespace: "a"), bytes: 50) }  // 150 of 100
    for n in 0..<4 { policy.insert(testBlockID(n, namespace: "c"), bytes: 50) }  // 200 of 500 shared
    #expect(policy.evict(where: { _ in true })?.namespace.name == "a")
    #expect(policy.evict(where: { _ in true })?.namespace.name == "a")
    // a: 50/100 = 0.5; b: 250/400 = 0.625; shared: 200/500 = 0.4.
    #expect(policy.evict(where: { _ in true })?.namespace.name == "b")
    #expect(policy.evict(from: try Namespace("c"), where: { _ in true }) == nil, "c has no quota of its own")
    #expect(policy.count == 9 && policy.bytes == 450)
  }
}
