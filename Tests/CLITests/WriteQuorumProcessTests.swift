// Acknowledged means replicated (docs/cluster.md, "Write quorum"): 3 node processes, R = 2, a
// writer doing batched PUTs through the ring while a chaos loop kill -9s and restarts one random
// node at a time. Afterwards every acknowledged block reads back byte-exact (0 lost, 0 wrong), and
// every block of a PUT that was not acknowledged reads back whole or not at all.

import Foundation
import StrataClient
import StrataCore
import StrataPlacement
import StrataTestKit
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// What the writer did to each block: unwritten, acknowledged, or attempted without an
/// acknowledgement (the PUT failed or answered an error).
private enum WriteState: UInt8 {
  case unwritten, acknowledged, unacknowledged
}

/// The writer's record, shared with the chaos loop.
private final class SharedLog: Sendable {
  private let state: Mutex<WriterLog>
  init(_ log: WriterLog) { state = Mutex(log) }
  func withLock<T>(_ body: (inout WriterLog) -> T) -> T { state.withLock { body(&$0) } }
}

private struct WriterLog {
  var states: [WriteState]
  var batches = 0
  var acknowledgedBatches = 0
  var failedBatches = 0
  var inFlight = false
  /// The writer starts a batch only while `batches` is below this (the chaos loop raises it).
  var budget = 0
  var stop = false
  var errors: [String: Int] = [:]
}

@Suite(.serialized) struct WriteQuorumProcessTests {
  static let cycles = 30
  static let batchBlocks = 16

  @Test func acknowledgedBlocksSurviveKillRestartChaos() async throws {
    let cluster = try Self.staticCluster()
    defer { cluster.shutdown() }
    try await Self.chaos(cluster)
  }

  /// The same with etcd membership (lease TTL 2 s): a killed node leaves the ring once its lease
  /// lapses (the survivors repair), and rejoins when it restarts (the others repair it).
  @Test(.enabled(if: EtcdProcess.isAvailable, "etcd is not installed (scripts/bootstrap.sh installs etcd-server)"))
  func acknowledgedBlocksSurviveKillRestartChaosWithEtcd() async throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let cluster = try ClusterHarness(membership: .etcd(etcd.clientURL), names: ["a", "b", "c"], ttlSeconds: 2)
    defer { cluster.shutdown() }
    try await Self.chaos(cluster, etcd: etcd)
  }

  /// The same where node c's disk is lost each time it is killed (its NVMe folder removed before
  /// it restarts), with RAM tiers so small that most blocks live on NVMe: c comes back empty.
  @Test func acknowledgedBlocksSurviveALostDisk() async throws {
    let cluster = try Self.staticCluster(smallRAM: true)
    defer { cluster.shutdown() }
    try await Self.chaos(cluster, losesDisk: "c", cycles: 12)
  }

  /// The same where node c's disk starts failing under the running process (the block device
  /// seam, armed through the admin API of a node started with --fault-injection): each time c is
  /// the victim its disk first fails writes and fails (or, every other time, corrupts) reads while
  /// the writer goes on; c must refuse rather than lose (a failed demotion keeps a block in RAM
  /// unless another owner holds it on NVMe) and must never serve wrong bytes; then c is killed
  /// mid-batch and restarts, every other time on a replaced (empty) disk. One failure at a time:
  /// the other nodes are killed only while c's disk is healthy.
  @Test func acknowledgedBlocksSurviveAFailingDisk() async throws {
    let cluster = try Self.staticCluster(smallRAM: true)
    defer { cluster.shutdown() }
    // 1 MiB RAM tiers: RAM fills within a few batches (again after each restart), and from then
    // on a write during a disk failure needs a demotion (which fails).
    cluster.ram = "1MiB"
    cluster.extraArguments = ["--fault-injection"]
    try await Self.chaos(cluster, failingDisk: "c", cycles: 12)
  }

  /// A block whose record on one owner's disk is damaged is dropped there when read (never
  /// served) and read back from its other owner: the two owners hold every block again, with no
  /// ring change (nothing else copies a block to an owner that lost it; simulation seed 89694).
  @Test func aBlockDroppedFromADamagedDiskIsReadBackFromItsOtherOwner() async throws {
    let cluster = try ClusterHarness(membership: .staticPeers, names: ["a", "b"])
    defer { cluster.shutdown() }
    cluster.staticMembers = ["a", "b"]
    cluster.staticClusterConfig = ["probe_interval: 200ms"]
    cluster.configSections = ["limits:", "  max_block_size: 64KiB"]
    cluster.extraArguments = ["--fault-injection"]
    try await cluster.start("a")
    cluster.ram = "1MiB"  // b keeps most of the ~4.5 MiB on its disk only
    try await cluster.start("b")
    let blocks = BlockSet(count: 3_000, run: 88, smallest: 512, spread: 2048)
    let writer = cluster.client(seeds: ["a", "b"])
    defer { writer.close() }
    let region = writer.register(blocks.source)
    for first in stride(from: 0, to: blocks.count, by: 25) {
      let items = try (first..<min(first + 25, blocks.count)).map { n in try blocks.putItem(n, in: region) }
      // b refuses a copy while its 4 MiB are full of blocks not yet written to its disk: again
      // once the write-behind has caught up.
      let stored = try await eventually(within: 20) {
        (try? await writer.put(items))?.allSatisfy { $0 == .stored || $0 == .alreadyPresent } == true
      }
      try #require(stored, "blocks \(first)... were not acknowledged")
    }
    let all = Array(0..<blocks.count)
    #expect(try await Self.holds("b", all, cluster: cluster, blocks: blocks), "b does not hold every block")
    _ = try diskFault(try cluster.node("b").admin, ["reads": "corrupt"])
    let peer = Self.peerClient("b", cluster: cluster, timeoutMilliseconds: 10_000)
    defer { peer.close() }
    let damaged = try await blocks.verify(peer, indices: all)
    _ = try diskFault(try cluster.node("b").admin, ["reads": "ok"])
    try #require(damaged.ok < blocks.count, "no read met the damaged disk: \(damaged)")
    let back = try await eventually(within: 30) {
      try await Self.holds("b", all, cluster: cluster, blocks: blocks)
    }
    #expect(back, "b did not get its dropped blocks back: \(damaged)\n\(cluster.log("b"))")
    let check = try await blocks.verify(peer, indices: all)
    #expect(check.ok == blocks.count, "read from b afterwards: \(check)")
    let log = (try? String(contentsOfFile: "\(cluster.base)/b.log", encoding: .utf8)) ?? ""
    #expect(log.contains("reading them back from their other owners"), "b did not say it reads blocks back")
  }

  /// A block whose RAM copy on b was damaged after it was stored (a memory fault) is found by the
  /// reader, which reports it (VERIFY); b confirms, removes its copy, and reads the block back
  /// from a, its other owner, so it holds R copies again without a ring change or a new PUT.
  @Test func aBlockRemovedForRAMDamageIsReadBackFromItsOtherOwner() async throws {
    let cluster = try ClusterHarness(membership: .staticPeers, names: ["a", "b"])
    defer { cluster.shutdown() }
    cluster.staticMembers = ["a", "b"]
    cluster.staticClusterConfig = ["probe_interval: 200ms"]
    // RAM only: a block written to NVMe too would keep that copy, and not need reading back.
    cluster.configSections = ["limits:", "  max_block_size: 128KiB", "nvme:", "  admission: never"]
    cluster.extraArguments = ["--fault-injection"]
    for name in ["a", "b"] { try await cluster.start(name) }
    // a saw b down before b started: its repair pass for b's coming back (which copies every block
    // b lacks) must be over before the damage, or it, not the read-back, would restore them.
    let repaired = try await eventually(within: 20) {
      ((try? String(contentsOfFile: "\(cluster.base)/a.log", encoding: .utf8)) ?? "").contains("repair finished")
    }
    try #require(repaired, "a never finished its repair pass for b\n\(cluster.log("a"))")
    let blocks = BlockSet(count: 40, run: 89, smallest: 4096, spread: 65_536)
    let writer = cluster.client(seeds: ["a", "b"])
    defer { writer.close() }
    let region = writer.register(blocks.source)
    let outcomes = try await writer.put(try (0..<blocks.count).map { n in try blocks.putItem(n, in: region) })
    try #require(outcomes.allSatisfy { $0 == .stored }, "\(outcomes)")
    let all = Array(0..<blocks.count)
    #expect(try await Self.holds("b", all, cluster: cluster, blocks: blocks), "b does not hold every block")
    let damaged = Array(stride(from: 0, to: blocks.count, by: 3))
    for n in damaged { try flipBit(try cluster.node("b").admin, blocks.keys[n], byte: n) }
    let peer = Self.peerClient("b", cluster: cluster, timeoutMilliseconds: 10_000)
    defer { peer.close() }
    let first = try await blocks.verify(peer, indices: all)
    #expect(
      first.ok == blocks.count - damaged.count && first.corrupt == damaged.count, "the first read from b: \(first)")
    let back = try await eventually(within: 30) {
      try await Self.holds("b", all, cluster: cluster, blocks: blocks)
    }
    #expect(back, "b did not get its removed blocks back\n\(cluster.log("b"))")
    let check = try await blocks.verify(peer, indices: all)
    #expect(check.ok == blocks.count, "read from b afterwards: \(check)")
    let metrics = try scrape(try cluster.node("b").admin)
    #expect(
      sample(metrics, "strata_damaged_read_back_total", #"outcome="read_back""#) == Double(damaged.count)
        && sample(metrics, "strata_damaged_blocks_waiting") == 0,
      "\(metrics.split(separator: "\n").filter { $0.contains("damaged") })")
  }

  /// A failing disk under the one failure that can follow it: node c (1 MiB of RAM, its disk
  /// failing writes) takes blocks it owns with a or b, whose copies stay in their RAM (256 MiB,
  /// never demoted). Each block c cannot demote may leave its RAM only if the other owner holds
  /// it on NVMe, which none does: c keeps them and refuses writes once full. Then a is killed:
  /// every acknowledged block a and c owned is still read back, byte-exact, from c. (A node that
  /// dropped such blocks, as a plain eviction would, loses them here.)
  @Test func aFailingDiskKeepsBlocksWhoseOtherCopyIsOnlyInRAM() async throws {
    let cluster = try Self.staticCluster()
    defer { cluster.shutdown() }
    cluster.configSections = ["limits:", "  max_block_size: 64KiB"]
    cluster.extraArguments = ["--fault-injection"]
    for name in ["a", "b"] { try await cluster.start(name) }
    cluster.ram = "1MiB"
    try await cluster.start("c")
    _ = try diskFault(try cluster.node("c").admin, ["writes": "fail"])

    let blocks = BlockSet(count: 3_000, run: 85, smallest: 512, spread: 2048)
    let writer = cluster.client(seeds: ["a", "b", "c"])
    defer { writer.close() }
    let region = writer.register(blocks.source)
    var acknowledged: [Int] = []
    var refused = 0
    for first in stride(from: 0, to: blocks.count, by: 16) {
      let batch = Array(first..<min(first + 16, blocks.count))
      let items = try batch.map { n in
        try blocks.putItem(n, in: region)
      }
      let outcomes = try? await writer.put(items)
      if let outcomes, outcomes.allSatisfy({ $0 == .stored || $0 == .alreadyPresent }) {
        acknowledged += batch
      } else {
        refused += 1
      }
    }
    let metrics = try scrape(try cluster.node("c").admin)
    let kept = sample(metrics, "strata_demotion_failures_total", #"outcome="kept""#) ?? 0
    #expect(kept > 0, "no demotion failed on c")
    #expect(refused > 0, "c never refused a write once its RAM was full of blocks it could not demote")
    let onAC = Set(try await Self.blocks(ownedBy: ["a", "c"], of: blocks, in: cluster)).intersection(acknowledged)
      .sorted()
    try #require(onAC.count >= 50, "only \(onAC.count) acknowledged blocks on a and c")

    cluster.killHard("a")
    let peer = Self.peerClient("c", cluster: cluster, timeoutMilliseconds: 10_000)
    defer { peer.close() }
    let check = try await blocks.verify(peer, indices: onAC)
    #expect(check.ok == onAC.count, "acknowledged blocks of a and c read from c after a was killed: \(check)")
    print(
      "failing disk, other copy in RAM: \(acknowledged.count) blocks acknowledged, \(refused) batches refused, \(Int(kept)) demotions kept in RAM; after a's kill, from c: \(check) of \(onAC.count)"
    )
  }

  /// The gauge of blocks under-replicated now: node a takes PUTs of blocks owned by a and b while
  /// b is down; each is held by a alone (quorum not reached) and counted; once b is back the
  /// repair pass copies them and the gauge returns to 0.
  @Test func theUnderReplicatedGaugeRisesWhileAnOwnerIsDownAndReturnsToZeroAfterRepair() async throws {
    let cluster = try Self.staticCluster()
    defer { cluster.shutdown() }
    for name in ["a", "b", "c"] { try await cluster.start(name) }
    let blocks = BlockSet(count: 400, run: 81)
    let onAB = try await Self.blocks(ownedBy: ["a", "b"], of: blocks, in: cluster)
    try #require(onAB.count >= 20)
    #expect(try Self.metric(cluster, "a", "strata_under_replicated_blocks") == 0)

    cluster.killHard("b")
    let direct = NodeProcess.client(cluster.address("a"), connections: 1)
    defer { direct.close() }
    let region = direct.register(blocks.source)
    let items = try onAB.map { n in
      try blocks.putItem(n, in: region)
    }
    let refused = await #expect(throws: StrataError.self) { try await direct.put(items) }
    #expect(refused?.code == .quorumNotReached, "\(String(describing: refused))")
    // The copies that failed went to the replicator's queue too, and fail again there (the
    // barrier returns once they have): still counted once each.
    _ = try await direct.ringCall(RingCall.sync, node: cluster.address("a"))
    #expect(try Self.metric(cluster, "a", "strata_under_replicated_blocks") == Double(onAB.count))
    #expect(try Self.metric(cluster, "a", "strata_under_replicated_overflow_total") == 0)

    try await cluster.start("b")
    let repaired = try await eventually(within: 30) {
      try Self.metric(cluster, "a", "strata_under_replicated_blocks") == 0
    }
    #expect(
      repaired,
      "the gauge stayed at \(String(describing: try? Self.metric(cluster, "a", "strata_under_replicated_blocks")))")
    #expect(try await Self.holds("b", onAB, cluster: cluster, blocks: blocks), "b did not get the blocks back")
  }

  /// etcd: a node killed and restarted within its lease TTL keeps its member key, so the ring
  /// does not change; its member record's `instance` does, and the others repair toward it. Node
  /// c, restarted on a wiped disk well inside a 30 s TTL, holds again every block it owns
  /// without a single read (asked as a peer, which fills nothing).
  @Test(.enabled(if: EtcdProcess.isAvailable, "etcd is not installed (scripts/bootstrap.sh installs etcd-server)"))
  func anEtcdMemberRestartedWithinItsLeaseTTLIsRepairedWithoutReads() async throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let cluster = try ClusterHarness(membership: .etcd(etcd.clientURL), names: ["a", "b", "c"], ttlSeconds: 30)
    defer { cluster.shutdown() }
    try await cluster.startRegistered(["a", "b", "c"])
    let blocks = BlockSet(count: 2_000, run: 83)
    let writer = cluster.client(seeds: ["a", "b", "c"])
    defer { writer.close() }
    try await blocks.putAll(writer)
    let ring = try await writer.refreshRing()
    let me = cluster.address("c").description
    let owned = blocks.keys.indices.filter { ring.owners(of: blocks.keys[$0]).contains { $0.address == me } }
    try #require(owned.count > 500)
    #expect(try await Self.holds("c", owned, cluster: cluster, blocks: blocks), "c holds its blocks before the kill")

    let killed = ContinuousClock.now
    cluster.killHard("c")
    try FileManager.default.removeItem(atPath: "\(cluster.base)/c/nvme")
    try await cluster.start("c")
    let caughtUp = try await eventually(within: 20) {
      try await Self.holds("c", owned, cluster: cluster, blocks: blocks)
    }
    let took = ContinuousClock.now - killed
    #expect(caughtUp, "c did not get its blocks back")
    #expect(took < .seconds(cluster.ttlSeconds), "c caught up only after \(took): its lease may have lapsed")
    // Nothing was read through: the blocks came by repair.
    #expect(try Self.metric(cluster, "c", "strata_readthrough_blocks_total") == 0)
    // The ring kept c throughout: what repaired it was the restart, not a ring change.
    #expect(try await cluster.activeIDs(via: ["a"]).contains("node-c"))
    let survivors = cluster.log("a") + cluster.log("b")
    #expect(survivors.contains("members restarted"), "no survivor noticed c's restart")
    #expect(!survivors.contains("members left"), "c's lease lapsed: the test restarted it too late")
  }

  /// etcd mode has no peer probes: a peer that stops answering for less than its lease TTL
  /// changes no ring, so blocks whose copies to it failed used to stay on one node until some
  /// later ring change (the gauge said so, nothing acted on it). Now the node retries them, 5 s
  /// after the failure and then at doubling intervals: b, hung inside its 30 s TTL while a took
  /// PUTs at write quorum 1, holds them all soon after it answers again, with no ring change.
  @Test(.enabled(if: EtcdProcess.isAvailable, "etcd is not installed (scripts/bootstrap.sh installs etcd-server)"))
  func blocksLeftUnderReplicatedByAHungPeerAreCopiedWithNoRingChange() async throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let cluster = try ClusterHarness(membership: .etcd(etcd.clientURL), names: ["a", "b", "c"], ttlSeconds: 30)
    defer {
      if cluster.nodes["b"] != nil { cluster.resume("b") }
      cluster.shutdown()
    }
    try await cluster.startRegistered(["a", "b", "c"])
    let blocks = BlockSet(count: 400, run: 98)
    // Fewer than one replication batch (32): one copy exchange with b, which times out in 10 s.
    let onAB = Array(try await Self.blocks(ownedBy: ["a", "b"], of: blocks, in: cluster).prefix(20))
    try #require(onAB.count == 20)
    let direct = NodeProcess.client(cluster.address("a"), connections: 1)
    defer { direct.close() }
    let region = direct.register(blocks.source)
    let items = try onAB.map { n in try blocks.putItem(n, in: region) }
    cluster.pause("b")
    #expect(try await direct.put(items, writeQuorum: 1) == Array(repeating: .stored, count: items.count))
    let counted = try await eventually(within: 40) {
      try Self.metric(cluster, "a", "strata_under_replicated_blocks") == Double(onAB.count)
    }
    #expect(counted, "a's copies to b did not fail: \(cluster.log("a"))")
    cluster.resume("b")
    let repaired = try await eventually(within: 60) {
      try Self.metric(cluster, "a", "strata_under_replicated_blocks") == 0
    }
    #expect(
      repaired,
      "the gauge stayed at \(String(describing: try? Self.metric(cluster, "a", "strata_under_replicated_blocks")))\n\(cluster.log("a"))"
    )
    #expect(try await Self.holds("b", onAB, cluster: cluster, blocks: blocks), "b did not get the blocks")
    let log = cluster.log("a")
    #expect(!log.contains("members left") && !log.contains("members restarted"), "the ring changed: \(log)")
  }

  /// A PUT whose other owner hangs (SIGSTOP: connected, silent) is answered within its deadline
  /// with `quorum_not_reached`, naming the copies; once the owner answers again, the same PUT
  /// (now "already present" on the first owner) completes the copy and is acknowledged.
  @Test func aHungOwnerGetsAnErrorInTimeAndARetryCompletesTheQuorum() async throws {
    let cluster = try ClusterHarness(membership: .staticPeers, names: ["a", "b", "c"])
    defer { cluster.shutdown() }
    cluster.staticMembers = ["a", "b", "c"]
    for name in ["a", "b", "c"] { try await cluster.start(name) }
    let blocks = BlockSet(count: 200, run: 79)
    let onAB = try await Self.blocks(ownedBy: ["a", "b"], of: blocks, in: cluster)
    try #require(onAB.count >= 4)
    let direct = NodeProcess.client(cluster.address("a"), connections: 1)
    defer { direct.close() }
    let region = direct.register(blocks.source)
    let items = try onAB.prefix(4).map { n in
      try blocks.putItem(n, in: region)
    }
    cluster.pause("b")
    let started = ContinuousClock.now
    let refused = await #expect(throws: StrataError.self) { try await direct.put(items) }
    let waited = ContinuousClock.now - started
    #expect(refused?.code == .quorumNotReached, "\(String(describing: refused))")
    #expect(refused?.message.contains("4 with 1 copy") == true, "\(String(describing: refused))")
    // The node's deadline for the PUT (limits.request_timeout, 10 s, plus its bytes) bounds the wait.
    #expect(waited < .seconds(15), "the answer took \(waited)")
    cluster.resume("b")
    let retried = try await eventually(within: 20) {
      (try? await direct.put(items)) == Array(repeating: .alreadyPresent, count: items.count)
    }
    #expect(retried, "the retried PUT was not acknowledged once b answered again")
    var peerConfiguration = StrataClient.Configuration(node: cluster.address("b"))
    peerConfiguration.isPeer = true
    let peer = StrataClient(peerConfiguration)
    defer { peer.close() }
    #expect(try await peer.lookup(items.map(\.key)).tiers.allSatisfy { $0 != .absent }, "b holds the blocks")
  }

  /// A PUT naming one key twice counts each owner holding that block once toward its quorum:
  /// with three owners, quorum 3 and one owner down, two hold it, and the PUT is not acknowledged
  /// (counting the second item's copy again made it three).
  @Test func aKeyRepeatedInOnePutCountsEachOwnerOnce() async throws {
    let cluster = try ClusterHarness(membership: .staticPeers, names: ["a", "b", "c"])
    defer { cluster.shutdown() }
    cluster.staticMembers = ["a", "b", "c"]
    cluster.staticClusterConfig = ["probe_interval: 200ms"]
    cluster.extraArguments = ["--replicas", "3"]  // after the harness's own --replicas 2: it wins
    for name in ["a", "b", "c"] { try await cluster.start(name) }
    cluster.killHard("c")
    let blocks = BlockSet(count: 2, run: 91)
    let direct = NodeProcess.client(cluster.address("a"), connections: 1)
    defer { direct.close() }
    let region = direct.register(blocks.source)
    let item = try blocks.putItem(0, in: region)
    let refused = await #expect(throws: StrataError.self) { try await direct.put([item, item], writeQuorum: 3) }
    #expect(refused?.code == .quorumNotReached, "\(String(describing: refused))")
    #expect(refused?.message.contains("with 2 copies") == true, "\(refused?.message ?? "")")
  }

  /// Three static nodes a, b, c probing each other every 200 ms; with `smallRAM`, 4 MiB RAM
  /// tiers (most blocks live on NVMe) and blocks of at most 64 KiB.
  private static func staticCluster(smallRAM: Bool = false) throws -> ClusterHarness {
    let cluster = try ClusterHarness(membership: .staticPeers, names: ["a", "b", "c"])
    cluster.staticMembers = ["a", "b", "c"]
    cluster.staticClusterConfig = ["probe_interval: 200ms"]
    if smallRAM {
      cluster.ram = "4MiB"
      cluster.configSections = ["limits:", "  max_block_size: 64KiB"]
    }
    return cluster
  }

  private static func chaos(
    _ cluster: ClusterHarness, etcd: EtcdProcess? = nil, losesDisk: String? = nil, failingDisk: String? = nil,
    cycles: Int = Self.cycles
  ) async throws {
    // STRATA_TEST_WRITE_QUORUM=1 runs the same chaos with acknowledgement before the copies (the
    // behaviour before write quorums), to see the test fail.
    if let quorum = ProcessInfo.processInfo.environment["STRATA_TEST_WRITE_QUORUM"] {
      cluster.extraArguments = ["--write-quorum", quorum]
    }
    if etcd != nil {
      try await cluster.startRegistered(["a", "b", "c"])
    } else {
      for name in ["a", "b", "c"] { try await cluster.start(name) }
    }
    let blocks = BlockSet(count: 12_000, run: 77, smallest: 512, spread: 2048)
    let log = SharedLog(WriterLog(states: Array(repeating: .unwritten, count: blocks.count)))

    var writerConfiguration = StrataClient.Configuration(seeds: cluster.addresses(["a", "b", "c"]))
    writerConfiguration.timeoutMilliseconds = 5_000
    writerConfiguration.downMilliseconds = 300
    writerConfiguration.retries = 1
    let writer = StrataClient(writerConfiguration)
    defer { writer.close() }
    // The writer reads the blocks' keys, sizes and source bytes, which nothing changes; the
    // destination buffer is used only after the writer has finished.
    nonisolated(unsafe) let written = blocks
    let writing = Task { try await Self.write(written, with: writer, log: log) }

    var random = SplitMix64(seed: 20_261_202)
    // etcd: from each kill to the survivor's ring without the node.
    var leaveTimes: [Duration] = []
    var midBatchKills = 0
    var disksLost = 0
    var diskFailures = 0
    var failingReadsMissed = 0
    var faultCounts = (writes: 0, reads: 0, corrupted: 0, demotionsKept: 0, demotionsDropped: 0)
    var completed = 0
    var notCaughtUp: [String] = []
    for cycle in 0..<cycles {
      // The first cycles with a failing disk pick it, so that it fails more than once.
      let victim = failingDisk != nil && cycle % 4 == 1 ? failingDisk! : ["a", "b", "c"][Int(random.next() % 3)]
      if victim == failingDisk {
        diskFailures += 1
        let reads = diskFailures % 2 == 1 ? "corrupt" : "fail"
        _ = try diskFault(try cluster.node(victim).admin, ["writes": "fail", "reads": reads])
        // The writer goes on against the failing disk, and the node is read from directly (as a
        // peer: nothing is read through): whatever it answers is byte-exact, or a miss.
        let failing = log.withLock { log in
          log.budget = max(log.budget, log.batches + 6)
          return log.batches
        }
        _ = try await eventually(within: 30) { log.withLock { $0.batches >= failing + 6 || $0.stop } }
        // A write needs a demotion (which fails) only once the victim's RAM is full, which a node
        // restarted shortly before may not be yet: the writer goes on, at most 40 batches more,
        // until one has failed.
        func demotionFailures() throws -> Double {
          let metrics = try scrape(try cluster.node(victim).admin)
          return (sample(metrics, "strata_demotion_failures_total", #"outcome="kept""#) ?? 0)
            + (sample(metrics, "strata_demotion_failures_total", #"outcome="dropped""#) ?? 0)
        }
        if try demotionFailures() == 0 {
          let more = log.withLock { log in
            log.budget = max(log.budget, log.batches + 40)
            return log.batches
          }
          _ = try await eventually(within: 30) {
            try demotionFailures() > 0 || log.withLock { $0.batches >= more + 40 || $0.stop }
          }
        }
        let direct = try await Self.readOwned(victim, cluster: cluster, blocks: blocks, log: log)
        #expect(direct.wrong == 0 && direct.corrupt == 0, "the failing node served wrong bytes: \(direct)")
        failingReadsMissed += direct.missing
        let counts = try diskFault(try cluster.node(victim).admin, [:])
        let document = try JSONSerialization.jsonObject(with: Data(counts.utf8)) as? [String: Any] ?? [:]
        faultCounts.writes += document["failed_writes"] as? Int ?? 0
        faultCounts.reads += document["failed_reads"] as? Int ?? 0
        faultCounts.corrupted += document["corrupted_reads"] as? Int ?? 0
        let metrics = try scrape(try cluster.node(victim).admin)
        faultCounts.demotionsKept += Int(
          sample(metrics, "strata_demotion_failures_total", #"outcome="kept""#) ?? 0)
        faultCounts.demotionsDropped += Int(
          sample(metrics, "strata_demotion_failures_total", #"outcome="dropped""#) ?? 0)
      }
      // Kill once the writer has done 1–4 of the 8 batches it may do now: it is inside the next
      // one then, so the kill lands in the middle of a batch.
      let before = log.withLock { log in
        log.budget = log.batches + 8
        return log.batches
      }
      let wait = 1 + Int(random.next() % 4)
      // Polled every millisecond: a batch takes a few.
      let deadline = ContinuousClock.now + .seconds(20)
      while ContinuousClock.now < deadline
        && !log.withLock({ ($0.batches >= before + wait && $0.inFlight) || $0.stop })
      {
        try await Task.sleep(for: .milliseconds(1))
      }
      if log.withLock({ $0.inFlight }) { midBatchKills += 1 }
      cluster.killHard(victim)
      // While it is down the writer goes on: blocks the victim owns cannot reach their quorum.
      let down = log.withLock { log in
        log.budget = max(log.budget, log.batches + 4)
        return log.batches
      }
      _ = try await eventually(within: 20) { log.withLock { $0.batches >= down + 3 || $0.stop } }
      if let etcd {
        // One failure at a time: the cluster learns of it when the lease lapses.
        let survivor = ["a", "b", "c"].first { $0 != victim }!
        let killed = ContinuousClock.now
        func left() async throws -> Bool { try await !cluster.activeIDs(via: [survivor]).contains("node-\(victim)") }
        let bound = Double(cluster.ttlSeconds) + 5
        let gone = try await eventually(within: bound) { try await left() }
        if !gone {
          // Say how late, and what the survivor and etcd knew: a survivor cut off from etcd, a
          // slow etcd (its log warns of slow disk syncs and applies), or a watch that missed it.
          let later = try await eventually(within: 30) { try await left() }
          let slow = etcd.recentLog.split(separator: "\n").filter {
            $0.contains("slow") || $0.contains("took too long") || $0.contains("lease")
          }
          Issue.record(
            """
            node \(victim) did not leave \(survivor)'s ring within its lease TTL + 5 s: \
            \(later ? "it left after" : "still there after") \(ContinuousClock.now - killed); \
            \(survivor)'s membership: \(try await cluster.report(survivor, "membership")); \
            etcd's log: \(slow.suffix(12).joined(separator: " | "))
            """)
        }
        leaveTimes.append(ContinuousClock.now - killed)
      }
      if victim == losesDisk || (victim == failingDisk && diskFailures % 2 == 0) {
        let nvme = "\(cluster.base)/\(victim)/nvme"
        #expect(FileManager.default.fileExists(atPath: nvme), "no NVMe folder at \(nvme)")
        try FileManager.default.removeItem(atPath: nvme)
        disksLost += 1
      }
      try await cluster.start(victim)
      // One failure at a time: before the next kill the restarted node must hold again every
      // acknowledged block it owns (copied back by the others' repair, asked as a peer so the
      // question itself fills nothing).
      let caughtUp = try await eventually(within: 30) {
        try await Self.holdsItsAcknowledgedBlocks(victim, cluster: cluster, blocks: blocks, log: log)
      }
      if !caughtUp {
        // What the victim's NVMe tier let go of since its restart (blocks it held at recovery
        // and evicted later are lost to it: repair found them present).
        let metrics = (try? scrape(try cluster.node(victim).admin)) ?? ""
        let evicted = sample(metrics, "strata_evictions_total", #"tier="nvme",reason="capacity""#) ?? -1
        notCaughtUp.append("cycle \(cycle): \(victim) (\(Int(evicted)) blocks evicted from NVMe since its restart)")
        break
      }
      // A few batches with every node up: these are acknowledged.
      let healthy = log.withLock { log in
        log.budget = log.batches + 4
        return log.budget
      }
      _ = try await eventually(within: 20) { log.withLock { $0.batches >= healthy || $0.stop } }
      completed += 1
    }
    log.withLock { $0.stop = true }
    try await writing.value
    let summary = log.withLock { $0 }
    #expect(notCaughtUp.isEmpty, "restarted nodes did not get their blocks back: \(notCaughtUp)")
    #expect(completed == cycles, "\(completed) of \(cycles) cycles ran")
    #expect(midBatchKills >= cycles / 2, "only \(midBatchKills) kills landed inside a batch")
    #expect(losesDisk == nil || disksLost > 0, "no disk was lost")
    if failingDisk != nil {
      // The faults bit: writes and reads failed, reads were corrupted, demotions failed, and the
      // failing node answered misses rather than wrong bytes.
      #expect(diskFailures >= 2 && disksLost >= 1, "\(diskFailures) disk failures, \(disksLost) disks replaced")
      #expect(
        faultCounts.writes > 0 && faultCounts.reads > 0 && faultCounts.corrupted > 0
          && faultCounts.demotionsKept + faultCounts.demotionsDropped > 0,
        "injected faults: \(faultCounts)")
      #expect(failingReadsMissed > 0, "no read of the failing disk missed")
    }
    #expect(
      summary.acknowledgedBatches > 0 && summary.failedBatches > 0,
      "\(summary.acknowledgedBatches) acknowledged, \(summary.failedBatches) failed batches")

    // Every node is up: read everything written back through the ring.
    let acknowledged = summary.states.indices.filter { summary.states[$0] == .acknowledged }
    let unacknowledged = summary.states.indices.filter { summary.states[$0] == .unacknowledged }
    let reader = cluster.client(seeds: ["a", "b", "c"])
    defer { reader.close() }
    let acked = try await blocks.verify(reader, indices: acknowledged)
    #expect(
      acked.ok == acknowledged.count && acked.missing == 0 && acked.wrong == 0 && acked.corrupt == 0,
      "acknowledged blocks: \(acked) of \(acknowledged.count)")
    let unacked = try await blocks.verify(reader, indices: unacknowledged)
    #expect(unacked.wrong == 0 && unacked.corrupt == 0, "unacknowledged blocks are whole or absent: \(unacked)")
    print(
      "write quorum chaos: \(completed) of \(cycles) cycles, \(disksLost) disks lost, "
        + (failingDisk == nil
          ? ""
          : "\(diskFailures) disk failures \(faultCounts), \(failingReadsMissed) misses reading the failing disk, ")
        + (leaveTimes.isEmpty
          ? ""
          : "killed nodes left the ring after \(leaveTimes.min()!)–\(leaveTimes.max()!) (lease TTL \(cluster.ttlSeconds) s), ")
        + "\(midBatchKills) kills inside a batch, \(summary.batches) batches (\(summary.acknowledgedBatches) acknowledged, \(summary.failedBatches) not), acknowledged blocks \(acked), unacknowledged blocks \(unacked), errors \(summary.errors)"
    )
  }

  /// Writes the blocks in order, `batchBlocks` at a time, until told to stop or out of blocks.
  private static func write(_ blocks: BlockSet, with client: StrataClient, log: SharedLog) async throws {
    let region = client.register(blocks.source)
    var first = 0
    while first < blocks.count {
      // Wait for the chaos loop to allow another batch.
      while log.withLock({ !$0.stop && $0.batches >= $0.budget }) { try await Task.sleep(for: .milliseconds(2)) }
      if log.withLock({ $0.stop }) { return }
      let batch = Array(first..<min(first + batchBlocks, blocks.count))
      first += batch.count
      let items = try batch.map { n in
        try blocks.putItem(n, in: region)
      }
      log.withLock { $0.inFlight = true }
      var acknowledged = false
      var failure: String?
      do {
        let outcomes = try await client.put(items)
        acknowledged = outcomes.allSatisfy { $0 == .stored || $0 == .alreadyPresent }
        if !acknowledged {
          // Named by the outcomes that refused it (a full node with a failing disk answers noSpace).
          failure = Set(outcomes.filter { $0 != .stored && $0 != .alreadyPresent }.map { "\($0)" }).sorted()
            .joined(separator: "+")
        }
      } catch {
        failure = error.code.name
      }
      log.withLock { log in
        log.inFlight = false
        log.batches += 1
        if acknowledged { log.acknowledgedBatches += 1 } else { log.failedBatches += 1 }
        if let failure { log.errors[failure, default: 0] += 1 }
        for n in batch { log.states[n] = acknowledged ? .acknowledged : .unacknowledged }
      }
    }
    log.withLock { $0.stop = true }
  }

  /// The blocks of `blocks` whose owners are exactly the nodes `names`, in node a's ring.
  private static func blocks(ownedBy names: [String], of blocks: BlockSet, in cluster: ClusterHarness) async throws
    -> [Int]
  {
    let ringReader = cluster.client(seeds: ["a"])
    defer { ringReader.close() }
    let ring = try await ringReader.currentRing()
    let owners = Set(names.map { cluster.address($0).description })
    return blocks.keys.indices.filter { Set(ring.owners(of: blocks.keys[$0]).map(\.address)) == owners }
  }

  /// Reads every acknowledged block node `name` owns from that node alone, as a peer (nothing is
  /// read through, no other owner is asked).
  private static func readOwned(
    _ name: String, cluster: ClusterHarness, blocks: BlockSet, log: SharedLog
  ) async throws -> BlockSet.Check {
    let ringReader = cluster.client(seeds: [name])
    defer { ringReader.close() }
    let owned = acknowledged(ownedBy: name, in: try await ringReader.refreshRing(), cluster, blocks, log)
    let peer = peerClient(name, cluster: cluster, timeoutMilliseconds: 10_000)
    defer { peer.close() }
    return try await blocks.verify(peer, indices: owned)
  }

  /// The acknowledged blocks node `name` owns in `ring`.
  private static func acknowledged(
    ownedBy name: String, in ring: Ring, _ cluster: ClusterHarness, _ blocks: BlockSet, _ log: SharedLog
  ) -> [Int] {
    let me = cluster.address(name).description
    let states = log.withLock { $0.states }
    return states.indices.filter { n in
      states[n] == .acknowledged && ring.owners(of: blocks.keys[n]).contains { $0.address == me }
    }
  }

  /// A client of node `name` alone that says HELLO as a peer (its requests fill nothing).
  private static func peerClient(_ name: String, cluster: ClusterHarness, timeoutMilliseconds: UInt64 = 5_000)
    -> StrataClient
  {
    var configuration = StrataClient.Configuration(node: cluster.address(name))
    configuration.isPeer = true
    configuration.timeoutMilliseconds = timeoutMilliseconds
    return StrataClient(configuration)
  }

  /// Whether node `name` holds blocks `indices` (LOOKUP as a peer: it fills nothing).
  private static func holds(_ name: String, _ indices: [Int], cluster: ClusterHarness, blocks: BlockSet) async throws
    -> Bool
  {
    let peer = peerClient(name, cluster: cluster)
    defer { peer.close() }
    for first in stride(from: 0, to: indices.count, by: 2_000) {
      let keys = indices[first..<min(first + 2_000, indices.count)].map { blocks.keys[$0] }
      guard let found = try? await peer.lookup(keys), found.tiers.allSatisfy({ $0 != .absent }) else { return false }
    }
    return true
  }

  /// A metric of node `name`, scraped now.
  private static func metric(_ cluster: ClusterHarness, _ name: String, _ metric: String) throws -> Double? {
    sample(try scrape(try cluster.node(name).admin), metric)
  }

  /// Whether node `name` holds every acknowledged block it owns in its ring, asked as a peer (a
  /// peer's LOOKUP reads nothing through).
  private static func holdsItsAcknowledgedBlocks(
    _ name: String, cluster: ClusterHarness, blocks: BlockSet, log: SharedLog
  ) async throws -> Bool {
    let ringReader = cluster.client(seeds: [name])
    defer { ringReader.close() }
    guard let ring = try? await ringReader.refreshRing() else { return false }
    guard ring.activeMembers.contains(where: { $0.address == cluster.address(name).description }) else { return false }
    return try await holds(
      name, acknowledged(ownedBy: name, in: ring, cluster, blocks, log), cluster: cluster, blocks: blocks)
  }
}
