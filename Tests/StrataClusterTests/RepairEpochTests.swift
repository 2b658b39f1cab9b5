// A repair pass drops a block it holds without owning it only once every owner holds it, and an
// owner counts only when it answered at the pass's ring epoch or later: an owner still on an older
// ring may not own the block there, and drop its copy because this node holds one while this node
// drops its own. The peers are in-memory channels that answer LOOKUP with "held" at a chosen epoch.

import Logging
import StrataConfig
import StrataCore
import StrataPlacement
import StrataStorage
import StrataTestKit
import Synchronization
import Testing

@testable import StrataCluster

/// Peers that hold every key asked about and answer at the epoch set for their address; one in
/// `writing` holds none, but answers a PUT with "already present" (another copy is being written).
private final class HoldingPeers: PeerTransport {
  let epochs: Mutex<[HostPort: UInt64]>
  let writing = Mutex<Set<HostPort>>([])
  let lookups = Atomic<Int>(0)

  init(_ epochs: [HostPort: UInt64]) { self.epochs = Mutex(epochs) }

  func channel(to peer: HostPort, namespace: Namespace, timeoutMilliseconds: UInt64) -> any PeerChannel {
    HoldingPeer(peers: self, address: peer)
  }
}

private struct HoldingPeer: PeerChannel {
  let peers: HoldingPeers
  let address: HostPort

  func lookup(_ keys: [BlockKey], deadline: Deadline) async throws(StrataError) -> PeerHoldings {
    peers.lookups.add(1, ordering: .relaxed)
    let epoch = peers.epochs.withLock { $0[address] ?? 0 }
    let tier: BlockTier = peers.writing.withLock { $0.contains(address) } ? .absent : .ram
    return PeerHoldings(tiers: keys.map { _ in tier }, ringEpoch: epoch)
  }

  func put(copies blocks: [LeasedBlock], deadline: Deadline) async throws(StrataError) -> [PutOutcome] {
    blocks.map { _ in .alreadyPresent }
  }

  func get(_ key: BlockKey, into destination: UnsafeMutableRawBufferPointer, deadline: Deadline)
    async throws(StrataError) -> Int?
  { nil }

  func stat(deadline: Deadline) async throws(StrataError) -> String { "{}" }

  func close() {}
}

/// A membership that takes the drain's announcement and publishes nothing: the test adopts the
/// published ring itself, as the etcd watch would.
private final class UnpublishedMembership: MembershipSource {
  let announced = Atomic<Bool>(false)
  func start() {}
  func announceDraining() { announced.store(true, ordering: .relaxed) }
  func stop(deregister: Bool) {}
}

private struct ThreeNodes {
  let clock = ManualClock(milliseconds: 1_000)
  let node: ClusterNode
  let tiers: TierManager
  let members: [Member]
  let peers: HoldingPeers
  let addresses: [HostPort]

  /// With `nvme`, the node's 4 MiB of RAM evict to that disk.
  init(nvme: NVMeTier? = nil) throws {
    addresses = (1...3).map { HostPort(host: "127.0.0.1", port: UInt16(40_000 + $0)) }
    var configuration = NodeConfiguration()
    configuration.cluster.peers = addresses
    configuration.cluster.replicas = 2
    var settings = ClusterNode.Settings(
      configuration: configuration, nodeID: "a", advertise: addresses[0], capacityBytes: 0)
    settings.clock = clock
    peers = HoldingPeers([addresses[1]: 9, addresses[2]: 9])
    settings.peerTransport = peers
    tiers = try TierManager(
      configuration: TierConfiguration(ramBytes: 4 << 20, blockBytesMax: 64 << 10, hugePages: false), nvme: nvme,
      clock: clock)
    node = ClusterNode(settings: settings, tiers: tiers, logger: Logger(label: "test.repair-epoch"))
    members = addresses.map { Member(id: $0.description, address: $0.description) }
  }

  /// A block this node does not own at any epoch of these members (both peers own it).
  func notOwnedBlock() -> BlockID {
    let ring = ClusterNode.makeRing(members: members, epoch: 9, settings: node.settings)
    let me = ring.members.firstIndex { $0.id == members[0].id }!
    for n in 0..<1024 {
      var bytes = [UInt8](repeating: 0, count: BlockKey.byteCount)
      bytes[0] = UInt8(truncatingIfNeeded: n)
      bytes[1] = UInt8(truncatingIfNeeded: n >> 8)
      bytes[31] = 0xA5
      let key = BlockKey(bytes: bytes)!
      if !ring.isOwner(memberIndex: me, of: key) { return BlockID(namespace: .embeddedDefault, key: key) }
    }
    preconditionFailure("no key of 1,024 is owned by the peers only")
  }

  /// Holds `id`, adopts the ring at epoch 9 (which starts a repair pass over the held block) and
  /// waits for the pass to end: done, or failed and waiting on the node's clock to retry.
  func repair(_ id: BlockID) async throws -> HandoffProgress {
    _ = try await tiers.put(id, bytes: [UInt8](repeating: 7, count: 4096))
    node.adopt(members: members, epoch: 9)
    #expect(
      try await eventually(within: 120) {
        let phase = node.repairProgress.phase
        return phase == .done && !node.repairState.withLock { $0.running }
          || phase == .failed && clock.sleepers == 1
      })
    #expect(peers.lookups.load(ordering: .relaxed) >= 2)
    return node.repairProgress
  }
}

@Suite struct RepairEpochTests {
  @Test func aBlockHeldWithoutBeingOwnedGoesOnceEveryOwnerHoldsItAtThePassEpoch() async throws {
    let fixture = try ThreeNodes()
    defer { fixture.node.stop(deregister: false) }
    let id = fixture.notOwnedBlock()
    let progress = try await fixture.repair(id)
    #expect(progress.phase == .done)
    #expect(progress.releasedBlocks == 1)
    #expect(fixture.tiers.lookup([id]) == [.absent])
  }

  @Test func anOwnerAnsweringAtAnOlderEpochDoesNotCount() async throws {
    let fixture = try ThreeNodes()
    defer { fixture.node.stop(deregister: false) }
    // One owner still routes by epoch 8: it says it holds the block, but may drop it there.
    fixture.peers.epochs.withLock { $0[fixture.addresses[2]] = 8 }
    let id = fixture.notOwnedBlock()
    let progress = try await fixture.repair(id)
    #expect(progress.phase == .failed)
    #expect(progress.releasedBlocks == 0)
    #expect(progress.failedBlocks == 1)
    #expect(fixture.tiers.lookup([id]) == [.ram])

    // Once it has caught up, the retry releases the copy.
    fixture.peers.epochs.withLock { $0[fixture.addresses[2]] = 9 }
    fixture.clock.advance(milliseconds: ClusterNode.repairRetryDelayMilliseconds)
    #expect(try await eventually(within: 120) { fixture.tiers.lookup([id]) == [.absent] })
    #expect(fixture.node.repairProgress.releasedBlocksTotal + fixture.node.repairProgress.releasedBlocks == 1)
  }

  /// "Already present" from an owner may mean another copy is being written, which may yet fail:
  /// it counts only once a LOOKUP finds the block committed.
  @Test func anOwnerStillWritingAnotherCopyDoesNotCount() async throws {
    let fixture = try ThreeNodes()
    defer { fixture.node.stop(deregister: false) }
    fixture.peers.writing.withLock { $0 = [fixture.addresses[1]] }
    let id = fixture.notOwnedBlock()
    let progress = try await fixture.repair(id)
    #expect(progress.phase == .failed)
    #expect(progress.releasedBlocks == 0)
    #expect(fixture.tiers.lookup([id]) == [.ram])
  }

  /// A drain counts an owner's copy only once the owner answers at the epoch at which the
  /// membership published the drain: before it, the owner routes by a ring where the draining node
  /// owns the block, and may drop its copy because that node answered "held" just before it began
  /// draining.
  @Test func aDrainCountsOwnersOnlyFromItsPublication() async throws {
    let fixture = try ThreeNodes()
    defer { fixture.node.stop(deregister: false) }
    fixture.node.adopt(members: fixture.members, epoch: 9)
    #expect(try await eventually(within: 120) { !fixture.node.repairState.withLock { $0.running } })
    let id = fixture.notOwnedBlock()
    _ = try await fixture.tiers.put(id, bytes: [UInt8](repeating: 7, count: 4096))
    let membership = UnpublishedMembership()
    try fixture.node.start(membership: membership)
    try fixture.node.startDrain()
    let announced = membership.announced.load(ordering: .relaxed)
    #expect(announced)
    #expect(
      try await eventually(within: 120) {
        fixture.node.drainProgress.message == "waiting for the membership to publish this node draining"
          && fixture.clock.sleepers == 1
      })
    #expect(fixture.node.drainProgress.attempts == 0)

    // The watch brings the node's own record back, draining, at revision 12. The peers still
    // answer at 9: the first attempt leaves the block unplaced.
    var published = fixture.members
    published[0].state = .draining
    fixture.node.adopt(members: published, epoch: 12)
    fixture.clock.advance(milliseconds: ClusterNode.drainPublicationPollMilliseconds)
    #expect(
      try await eventually(within: 120) {
        let progress = fixture.node.drainProgress
        return progress.attempts == 1 && progress.failedBlocks == 1 && progress.message.hasPrefix("attempt 1 of")
          && fixture.clock.sleepers == 1
      })
    #expect(fixture.tiers.lookup([id]) == [.ram])

    // Once they have heard it, the next attempt places the block.
    fixture.peers.epochs.withLock { $0 = [fixture.addresses[1]: 12, fixture.addresses[2]: 12] }
    fixture.clock.advance(milliseconds: DrainAttempts.Limits.standard.retryDelayMilliseconds)
    #expect(try await eventually(within: 120) { fixture.node.drainProgress.phase == .done })
  }

  /// A pass asks the owners first and reads only the blocks one of them lacks: a pass that finds
  /// every block on every owner (the common case after a peer's restart) reads nothing from the
  /// disk. Before, it read every block it walked into RAM, so each peer restart pulled every
  /// node's whole disk through its RAM and evicted the blocks its clients were reading.
  @Test func aPassReadsOnlyTheBlocksAnOwnerLacks() async throws {
    let nvme = try NVMeTier(
      devices: [SimulatedBlockDevice(capacityBytes: 64 << 20)], regionBytes: 4 << 20, compression: .none,
      blockBytesMax: 64 << 10)
    let fixture = try ThreeNodes(nvme: nvme)
    defer { fixture.node.stop(deregister: false) }
    let ids = (0..<200).map { n in
      var bytes = [UInt8](repeating: 0, count: BlockKey.byteCount)
      bytes[0] = UInt8(truncatingIfNeeded: n)
      bytes[31] = 0x5A
      return BlockID(namespace: .embeddedDefault, key: BlockKey(bytes: bytes)!)
    }
    for id in ids { _ = try await fixture.tiers.put(id, bytes: [UInt8](repeating: 3, count: 60 << 10)) }
    let inRAM = Set(ids.indices.filter { fixture.tiers.lookup([ids[$0]]) == [.ram] })
    try #require(inRAM.count < 100, "most blocks live on the disk only: \(ids.count - inRAM.count)")

    fixture.node.adopt(members: fixture.members, epoch: 9)
    #expect(
      try await eventually(within: 120) {
        fixture.node.repairProgress.phase == .done && !fixture.node.repairState.withLock { $0.running }
      })
    #expect(fixture.node.repairProgress.presentBlocks > 0)
    #expect(fixture.tiers.stats.promotedBlocks == 0, "the pass read blocks every owner held")
    // No block came into RAM (blocks held without being owned left: every owner holds them).
    #expect(ids.indices.allSatisfy { fixture.tiers.lookup([ids[$0]]) != [.ram] || inRAM.contains($0) })

    // An owner that lacks them (it answers "absent", then "already present" to the copy): the
    // blocks it lacks are read, and offered to it.
    fixture.peers.writing.withLock { $0 = [fixture.addresses[1]] }
    #expect(fixture.node.scheduleRepair(reason: "a peer came back"))
    #expect(try await eventually(within: 120) { fixture.tiers.stats.promotedBlocks > 0 })
  }

  @Test func theSameMembersAtALaterEpochRenumberTheRing() throws {
    let fixture = try ThreeNodes()
    fixture.node.adopt(members: fixture.members, epoch: 5)
    let before = fixture.node.ring
    fixture.node.adopt(members: fixture.members, epoch: 9)
    #expect(fixture.node.epoch == 9)
    #expect(fixture.node.ring.members == before.members)
    // An older revision does not take the epoch back.
    fixture.node.adopt(members: fixture.members, epoch: 7)
    #expect(fixture.node.epoch == 9)
    fixture.node.stop(deregister: false)
  }
}
