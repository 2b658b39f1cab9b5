// The cluster layer on an injected clock: the fill window closes when the node's clock says so,
// a drain's attempts follow DrainAttempts on that clock (no real waiting), repair retries and
// static peer probes wait on it, and stopping the node cancels what waits. The peer is a loopback port nothing listens on:
// an owner that is down, so every attempt leaves the blocks unplaced.

import Logging
import StrataConfig
import StrataCore
import StrataPlacement
import StrataStorage
import StrataTestKit
import Testing

@testable import StrataCluster

private struct ClockedNode {
  let clock = ManualClock(milliseconds: 1_000)
  let node: ClusterNode
  let tiers: TierManager
  let me: Member
  let peer: Member

  /// `peerAddress`: the static peer (default: a loopback port nothing listens on).
  init(peerAddress given: HostPort? = nil) throws {
    let ports = try freeLoopbackPorts(2)
    let address = HostPort(host: "127.0.0.1", port: ports[0])
    let peerAddress = given ?? HostPort(host: "127.0.0.1", port: ports[1])
    var configuration = NodeConfiguration()
    configuration.cluster.peers = [address, peerAddress]
    var settings = ClusterNode.Settings(
      configuration: configuration, nodeID: "a", advertise: address, capacityBytes: 0)
    settings.clock = clock
    tiers = try TierManager(
      configuration: TierConfiguration(ramBytes: 4 << 20, blockBytesMax: 64 << 10, hugePages: false), nvme: nil,
      clock: clock)
    node = ClusterNode(settings: settings, tiers: tiers, logger: Logger(label: "test.cluster-clock"))
    me = settings.me
    peer = Member(id: peerAddress.description, address: peerAddress.description)
  }
}

@Suite struct ClusterClockTests {
  @Test func theFillWindowClosesWhenTheNodeClockPassesIt() throws {
    let fixture = try ClockedNode()
    let window = fixture.node.settings.fillWindowMilliseconds
    #expect(window > 1)
    fixture.node.adopt(members: [fixture.me, fixture.peer], epoch: 1)
    #expect(fixture.node.readsThrough)
    fixture.clock.advance(milliseconds: window - 1)
    #expect(fixture.node.readsThrough)
    fixture.clock.advance(milliseconds: 1)
    #expect(!fixture.node.readsThrough)

    // A ring change opens it again, from the change's time on the same clock.
    var draining = fixture.peer
    draining.state = .draining
    fixture.node.adopt(members: [fixture.me, draining], epoch: 2)
    #expect(fixture.node.readsThrough)
    fixture.clock.advance(milliseconds: window)
    #expect(!fixture.node.readsThrough)
  }

  @Test func aDrainRetriesOnTheNodeClockAndThenStaysUp() async throws {
    let fixture = try ClockedNode()
    // The ring first, then the blocks: a first ring over held blocks would start a repair pass,
    // whose own retries would sleep on the same clock.
    fixture.node.adopt(members: [fixture.me, fixture.peer], epoch: 1)
    for n in 0..<3 { _ = try await fixture.tiers.put(block(n), bytes: [UInt8](repeating: UInt8(n), count: 4096)) }
    try fixture.node.startDrain()

    let limits = DrainAttempts.Limits.standard
    var delay = limits.retryDelayMilliseconds
    for attempt in 1..<limits.attemptsMax {
      // The attempt ran (its peer refused at once) and the drain now sleeps on the node's clock.
      #expect(
        try await eventually(within: 120) {
          fixture.node.drainProgress.attempts == attempt && fixture.clock.sleepers == 1
        }, "attempt \(attempt)")
      #expect(fixture.node.drainProgress.phase == .running)
      #expect(fixture.node.drainProgress.failedBlocks == 3)
      // One millisecond short of the wait: still waiting, no new attempt.
      fixture.clock.advance(milliseconds: delay - 1)
      #expect(fixture.clock.sleepers == 1)
      #expect(fixture.node.drainProgress.attempts == attempt)
      fixture.clock.advance(milliseconds: 1)
      delay = min(delay * 2, limits.retryDelayMaxMilliseconds)
    }
    #expect(
      try await eventually(within: 120) {
        fixture.node.drainProgress.phase == .failed && fixture.node.tasks.count == 0
      })
    let progress = fixture.node.drainProgress
    #expect(progress.attempts == limits.attemptsMax)
    #expect(progress.failedBlocks == 3)
    #expect(progress.message.contains("stays up"))
    // The whole schedule took 31 s on the node's clock and none on the wall.
    #expect(fixture.clock.nowMilliseconds() == 1_000 + 31_000)
    #expect(progress.finishedAt!.timeIntervalSince(progress.startedAt!) == 31)
    fixture.node.stop(deregister: false)
  }

  @Test func aRepairPassThatCannotReachAnOwnerRetriesOnTheNodeClock() async throws {
    let fixture = try ClockedNode()
    for n in 0..<2 { _ = try await fixture.tiers.put(block(n), bytes: [UInt8](repeating: UInt8(n), count: 4096)) }
    // The first ring over held blocks starts a repair pass; the owner is down, so it fails.
    fixture.node.adopt(members: [fixture.me, fixture.peer], epoch: 1)
    for retry in 1...ClusterNode.repairRetriesMax {
      #expect(try await eventually(within: 120) { fixture.clock.sleepers == 1 }, "retry \(retry)")
      #expect(fixture.node.repairProgress.phase == .failed)
      fixture.clock.advance(milliseconds: ClusterNode.repairRetryDelayMilliseconds - 1)
      #expect(fixture.clock.sleepers == 1)
      fixture.clock.advance(milliseconds: 1)
    }
    // After the last retry the pass gives up until the next ring change or returning peer.
    #expect(try await eventually(within: 120) { fixture.node.tasks.count == 0 })
    #expect(fixture.clock.sleepers == 0)
    #expect(fixture.node.repairProgress.failedBlocks == 2)
    #expect(!fixture.node.repairState.withLock { $0.running })
    fixture.node.stop(deregister: false)
  }

  @Test func staticPeersAreProbedOnTheNodeClock() async throws {
    let peer = try InProcessNode()
    let fixture = try ClockedNode(peerAddress: peer.server.address)
    let interval = fixture.node.settings.probeIntervalMilliseconds
    func health() -> String? {
      fixture.node.membersReport().members.first { $0.id == fixture.peer.id }?.health
    }
    try fixture.node.start()
    // The first round runs at once and finds the peer up; the next waits on the node's clock.
    #expect(try await eventually(within: 120) { health() == "up" && fixture.clock.sleepers == 1 })
    peer.server.stop()
    fixture.clock.advance(milliseconds: interval - 1)
    #expect(fixture.clock.sleepers == 1)
    #expect(health() == "up")
    fixture.clock.advance(milliseconds: 1)
    #expect(try await eventually(within: 120) { health() == "down" && fixture.clock.sleepers == 1 })
    // The node's stop ends the probe loop (and the replicator's loop): no owned task is left.
    fixture.node.stop(deregister: false)
    #expect(try await eventually(within: 120) { fixture.node.tasks.count == 0 })
    #expect(fixture.clock.sleepers == 0)
  }

  @Test func stoppingTheNodeCancelsADrainWaitingForItsNextAttempt() async throws {
    let fixture = try ClockedNode()
    fixture.node.adopt(members: [fixture.me, fixture.peer], epoch: 1)
    _ = try await fixture.tiers.put(block(7), bytes: [UInt8](repeating: 7, count: 4096))
    try fixture.node.startDrain()
    #expect(
      try await eventually(within: 120) { fixture.node.drainProgress.attempts == 1 && fixture.clock.sleepers == 1 })
    fixture.node.stop(deregister: false)
    #expect(try await eventually(within: 120) { fixture.node.tasks.count == 0 })
    #expect(fixture.clock.sleepers == 0)
    // Cancelled, not attempted again: the clock never moved.
    #expect(fixture.node.drainProgress.attempts == 1)
    #expect(fixture.clock.nowMilliseconds() == 1_000)
  }
}

private func block(_ n: Int) -> BlockID {
  var bytes = [UInt8](repeating: 0, count: BlockKey.byteCount)
  bytes[0] = UInt8(truncatingIfNeeded: n)
  bytes[31] = 0x5A
  return BlockID(namespace: .embeddedDefault, key: BlockKey(bytes: bytes)!)

}

extension ClusterClockTests {
  /// A stopped node, and the tier manager it was given, are freed once their last user lets go:
  /// the tier manager's demotion-failure handler must not hold the node (a cycle that kept every
  /// crashed node of a simulation, arena and all, until the process ran out of memory).
  @Test func aStoppedNodeAndItsTierManagerAreFreed() async throws {
    weak var node: ClusterNode?
    weak var tiers: TierManager?
    do {
      let fixture = try ClockedNode()
      try fixture.node.start()
      fixture.node.stop(deregister: false)
      node = fixture.node
      tiers = fixture.tiers
    }
    // The replicator's loop ends after the stop (on another thread): then nothing holds them.
    #expect(try await eventually(within: 30) { node == nil && tiers == nil })
  }

  /// From the start of its drain a node owns no key in its own ring, even in a ring the
  /// membership delivers later with it active (its announcement had not come back yet), and it
  /// takes no copies: it never acknowledges a PUT on a copy it will leave with.
  @Test func aDrainingNodeOwnsNothingInAnyRingItAdopts() throws {
    let fixture = try ClockedNode()
    fixture.node.adopt(members: [fixture.me, fixture.peer], epoch: 1)
    let keys = (0..<64).map { block($0).key }
    #expect(fixture.node.ring.replicationFactor == 2 && fixture.node.firstUnowned(keys) == nil)
    #expect(fixture.node.takesCopies)
    try fixture.node.startDrain()
    defer { fixture.node.stop(deregister: false) }
    #expect(!fixture.node.takesCopies)
    #expect(fixture.node.ring.members.first { $0.id == fixture.me.id }?.state == .draining)
    #expect(fixture.node.firstUnowned(keys) == keys.first)
    fixture.node.adopt(members: [fixture.me, fixture.peer], epoch: 2)
    #expect(fixture.node.ring.members.first { $0.id == fixture.me.id }?.state == .draining)
    #expect(fixture.node.firstUnowned(keys) == keys.first)
  }
}
