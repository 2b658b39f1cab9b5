// A read-through (a new owner filling a block it lacks from the previous owners) keeps to its
// request's deadline: every peer call carries it, and no source is asked once it has passed. It
// used to call each source with no deadline, so a hung previous owner held the client's request
// for the peer timeout (10 s) per source, long after the client had given up.

import Logging
import StrataConfig
import StrataCore
import StrataPlacement
import StrataStorage
import StrataTestKit
import Synchronization
import Testing

@testable import StrataCluster

/// Peers that hang: a call ends by its deadline, or by the channel's timeout when it has none,
/// with `timeout`. Each records the deadline it was given.
private final class HungPeers: PeerTransport {
  let calls = Mutex<[(peer: HostPort, deadline: Deadline)]>([])

  func channel(to peer: HostPort, namespace: Namespace, timeoutMilliseconds: UInt64) -> any PeerChannel {
    HungPeer(peers: self, address: peer, timeoutMilliseconds: timeoutMilliseconds)
  }
}

private struct HungPeer: PeerChannel {
  let peers: HungPeers
  let address: HostPort
  let timeoutMilliseconds: UInt64

  private func hang(_ deadline: Deadline) async throws(StrataError) -> Never {
    peers.calls.withLock { $0.append((address, deadline)) }
    let wait = deadline == .never ? timeoutMilliseconds : deadline.remainingMilliseconds()
    try? await Task.sleep(for: .milliseconds(Int64(clamping: wait)))
    throw StrataError(.timeout, "\(address) did not answer")
  }

  func lookup(_ keys: [BlockKey], deadline: Deadline) async throws(StrataError) -> PeerHoldings {
    try await hang(deadline)
  }

  func put(copies blocks: [LeasedBlock], deadline: Deadline) async throws(StrataError) -> [PutOutcome] {
    try await hang(deadline)
  }

  func get(_ key: BlockKey, into destination: UnsafeMutableRawBufferPointer, deadline: Deadline)
    async throws(StrataError) -> Int?
  { try await hang(deadline) }

  func stat(deadline: Deadline) async throws(StrataError) -> String { try await hang(deadline) }

  func close() {}
}

@Suite struct ReadThroughDeadlineTests {
  @Test func aFillFromHungPreviousOwnersEndsByItsRequestsDeadline() async throws {
    let addresses = (1...3).map { HostPort(host: "127.0.0.1", port: UInt16(41_000 + $0)) }
    var configuration = NodeConfiguration()
    configuration.cluster.peers = addresses
    configuration.cluster.replicas = 2
    var settings = ClusterNode.Settings(
      configuration: configuration, nodeID: "a", advertise: addresses[0], capacityBytes: 0)
    let peers = HungPeers()
    settings.peerTransport = peers
    let tiers = try TierManager(
      configuration: TierConfiguration(ramBytes: 4 << 20, blockBytesMax: 64 << 10, hugePages: false), nvme: nil)
    let readThrough = ReadThrough(
      tiers: tiers, peers: PeerClients(settings: settings, timeoutMilliseconds: 10_000), blockBytesMax: 64 << 10)
    let members = addresses.map { Member(id: $0.description, address: $0.description) }
    // Before a joined, b and c owned every key (R = 2): both are sources of the fill.
    let previous = ClusterNode.makeRing(members: Array(members[1...]), epoch: 1, settings: settings)
    let current = ClusterNode.makeRing(members: members, epoch: 2, settings: settings)
    let id = BlockID(namespace: .embeddedDefault, key: BlockKey(bytes: [UInt8](repeating: 0x5A, count: 32))!)
    let byID = Dictionary(uniqueKeysWithValues: zip(members.map(\.id), addresses))

    let filled = await readThrough.fill(
      [id], previous: previous, current: current, me: members[0].id, addresses: byID,
      deadline: .after(milliseconds: 300))

    // No wall-clock bound here: under the whole suite a task can resume tens of seconds late.
    // What bounds the fill is that each call carries the deadline and that no source is asked
    // after it (without either, the first source's call alone would take its 10 s timeout).
    #expect(filled == 0)
    let calls = peers.calls.withLock { $0 }
    #expect(!calls.isEmpty)
    #expect(calls.allSatisfy { $0.deadline != .never }, "a peer call of the fill had no deadline")
    // The first source took the whole deadline: the second was not asked.
    #expect(calls.count == 1, "\(calls.map(\.peer))")
  }
}
