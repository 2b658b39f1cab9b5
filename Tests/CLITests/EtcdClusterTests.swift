// The cluster scenario with etcd membership (lease TTL 2 s), R = 2, real processes on loopback:
// a killed node leaves the ring within its TTL while every block still reads back; the restarted
// node rejoins and serves its blocks again; a fourth node joins on its own and a node drains and
// leaves; with etcd down the nodes keep serving on their last ring, report it, and register again
// when etcd returns.

import Foundation
import StrataClient
import StrataCore
import StrataEtcd
import StrataPlacement
import StrataTestKit
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite(
  .serialized,
  .enabled(if: EtcdProcess.isAvailable, "etcd is not installed (scripts/bootstrap.sh installs etcd-server)"))
struct EtcdClusterTests {
  @Test func etcdClusterSurvivesKillRestartJoinAndDrain() async throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let cluster = try ClusterHarness(membership: .etcd(etcd.clientURL), names: ["a", "b", "c", "d"], ttlSeconds: 2)
    defer { cluster.shutdown() }
    // Peers over TCP, not the same-host path, so the test can see each node's connections to another.
    cluster.configSections = ["same_host:", "  enabled: false"]
    try await cluster.startRegistered(["a", "b", "c"])
    let blocks = BlockSet(count: 10_000, run: 43)
    try await cluster.write(blocks, through: ["a", "b", "c"])

    // (a) kill -9: reads go on from the surviving replicas; the node leaves the ring within its TTL.
    try await cluster.killAndReadBack("b", blocks, survivors: ["a", "c"])
    let reader = cluster.client(seeds: ["a", "c"])
    #expect(
      try await eventually(within: 2 + 3) { try await cluster.activeIDs(via: ["a"]) == ["node-a", "node-c"] },
      "the killed node did not leave the ring within its lease TTL")
    let whileGone = try await blocks.verify(reader)
    reader.close()
    #expect(whileGone.ok == blocks.count, "with b out of the ring: \(whileGone)")

    // (b) the node restarts and serves its blocks again (read through from the others where its
    // RAM was lost).
    try await cluster.start("b")
    #expect(try await eventually(within: 10) { try await cluster.activeIDs(via: ["a"]).contains("node-b") })
    let ring = try await cluster.client(seeds: ["b"]).refreshRing()
    let ownedByB = (0..<blocks.count).filter { ring.owners(of: blocks.keys[$0]).contains { $0.id == "node-b" } }
    let direct = NodeProcess.client(cluster.address("b"), connections: 2)
    let fromB = try await blocks.verify(direct, indices: ownedByB)
    direct.close()
    #expect(fromB.ok == ownedByB.count, "b after restart: \(fromB)\n\(cluster.log("b"))")

    // (c) a fourth node joins by registering; then a node drains and leaves.
    try await cluster.start("d")
    #expect(try await eventually(within: 10) { try await cluster.activeIDs(via: ["a"]).count == 4 })
    let early = cluster.client(seeds: ["b"])  // a seed's pool is kept: b stays
    defer { early.close() }
    let afterJoin = try await blocks.verify(early)
    #expect(afterJoin.ok == blocks.count, "after d joined: \(afterJoin)\n\(cluster.log("d"))")
    #expect(early.nodeAddresses.contains(cluster.address("a")), "the client used a")
    // Writes through the others: they copy blocks to a, their second owner, so they hold
    // connections to it when it leaves.
    try await cluster.write(BlockSet(count: 2_000, run: 47), through: ["b", "c", "d"])
    let portOfA = cluster.address("a").port
    let toA = { (names: [String]) in
      names.map { tcpSockets(of: cluster.node($0).process.processIdentifier, toPort: portOfA) }
    }
    let before = toA(["b", "c", "d"])
    let drain = try await strata(["drain", "--seeds", cluster.address("c").description, "node-a"])
    #expect(drain.status == 0, "drain failed: \(drain.stdout) \(drain.stderr)\n\(cluster.log("a"))")
    #expect(cluster.node("a").waitForExit() == 0, "a drained node exits 0")
    cluster.forget("a")
    #expect(try await cluster.activeIDs(via: ["c"]) == ["node-b", "node-c", "node-d"], "a deregistered at once")
    let afterDrain = try await blocks.verify(cluster.client(seeds: ["b", "c", "d"]))
    #expect(afterDrain.ok == blocks.count, "after a drained: \(afterDrain)")

    // Nothing is kept for a member that left: the nodes close their connections to it (once the
    // calls begun on them are over), and a client that routes by the newer ring drops its pool.
    #expect(before.reduce(0, +) > 0, "no node had a connection to a before it left: \(before)")
    let stale = try await blocks.verify(early)
    #expect(stale.ok == blocks.count, "the client that began with a: \(stale)")
    #expect(!early.nodeAddresses.contains(cluster.address("a")), "the client kept its pool of a")
    let closed = try await eventually(within: 45) { toA(["b", "c", "d"]).allSatisfy { $0 == 0 } }
    #expect(closed, "connections to the departed a: \(toA(["b", "c", "d"])) (\(before) before it left)")
  }

  /// After a node dies and leaves the ring, the survivors copy the blocks it held a copy of to
  /// their new owners (repair), so a second failure later loses nothing.
  @Test func repairAfterAFailureSurvivesASecondFailure() async throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let cluster = try ClusterHarness(membership: .etcd(etcd.clientURL), names: ["a", "b", "c"], ttlSeconds: 2)
    defer { cluster.shutdown() }
    try await cluster.startRegistered(["a", "b", "c"])
    let blocks = BlockSet(count: 2_000, run: 45)
    try await cluster.write(blocks, through: ["a", "b", "c"])

    cluster.killHard("b")
    #expect(
      try await eventually(within: 2 + 3) { try await cluster.activeIDs(via: ["a"]) == ["node-a", "node-c"] },
      "the killed node did not leave the ring within its lease TTL")
    for name in ["a", "c"] {
      let repaired = try await eventually(within: 30) {
        try await cluster.report(name, "repair")["state"] as? String == "done"
      }
      #expect(repaired, "node \(name) did not repair")
    }

    cluster.killHard("c")
    let reader = cluster.client(seeds: ["a"])
    defer { reader.close() }
    let check = try await blocks.verify(reader)
    #expect(check.ok == blocks.count, "after a second failure: \(check)\n\(cluster.log("a"))")
  }

  /// A node killed and started again at another address under the same id (a pod rescheduled with
  /// its volume), before its member key expired, is reached at the new address: the others took
  /// the new ring but kept the old address (the previous ring's), so every copy to the node
  /// failed, and a PUT whose write quorum needed it was refused until the next membership change.
  @Test func aNodeThatComesBackAtANewAddressIsReachedThere() async throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let cluster = try ClusterHarness(membership: .etcd(etcd.clientURL), names: ["a", "b"], ttlSeconds: 10)
    defer { cluster.shutdown() }
    // Peers on one host would use the same-host path (a Unix socket in the node's folder, which
    // does not move): TCP, as between hosts.
    cluster.configSections = ["same_host:", "  enabled: false"]
    try await cluster.startRegistered(["a", "b"])
    let old = cluster.address("b")
    cluster.killHard("b")
    try cluster.move("b")
    try await cluster.start("b")
    let moved = try await eventually(within: 8) {
      let reader = cluster.client(seeds: ["a"])
      defer { reader.close() }
      let ring = try await reader.refreshRing()
      return ring.activeMembers.contains { $0.id == "node-b" && $0.address == cluster.address("b").description }
    }
    try #require(moved, "a's ring never showed b at \(cluster.address("b")) (it was at \(old))")
    // Every block has both nodes as owners (R = 2): each PUT needs a's copy to b.
    let blocks = BlockSet(count: 200, run: 93)
    let writer = cluster.client(seeds: ["a"])
    defer { writer.close() }
    let region = writer.register(blocks.source)
    let stored = try await eventually(within: 15) {
      let outcomes = try? await writer.put(try (0..<blocks.count).map { try blocks.putItem($0, in: region) })
      return outcomes?.allSatisfy { $0 == .stored || $0 == .alreadyPresent } == true
    }
    #expect(stored, "PUTs needing a copy to b were refused\n\(cluster.log("a"))")
    let reader = cluster.client(seeds: ["b"])
    defer { reader.close() }
    let check = try await blocks.verify(reader)
    #expect(check.ok == blocks.count, "read through b: \(check)")
  }

  /// A node killed and started again under a new id at its address, before its old member key
  /// expired: the old record takes no share of the ring while it stays (another record, written
  /// later, claims its address), so no block has that one node as two of its owners, its write
  /// quorum met by a single copy (simulation: `rename`). Counted and logged.
  @Test func aNodeBackUnderANewIdAtItsAddressIsNotTwoOwners() async throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let cluster = try ClusterHarness(membership: .etcd(etcd.clientURL), names: ["a", "b", "c"], ttlSeconds: 30)
    defer { cluster.shutdown() }
    try await cluster.startRegistered(["a", "b", "c"])
    cluster.killHard("b")
    cluster.rename("b", to: "node-b2")
    try await cluster.start("b")
    let adopted = try await eventually(within: 10) { try await cluster.activeIDs(via: ["a"]).contains("node-b2") }
    try #require(adopted, "a's ring never took node-b2")
    // The old record is still in etcd (its lease has 30 s), and no ring honours it.
    let records = try EtcdClient(endpoints: [try EtcdEndpoint(parsing: etcd.clientURL)])
      .range(prefix: "/strata/test-\(cluster.ports["a"]!)/members/").kvs.map { $0.key.split(separator: "/").last! }
    #expect(Set(records) == ["node-a", "node-b", "node-b2", "node-c"], "\(records)")
    for seeds in [["a"], ["b"], ["c"]] {
      #expect(try await cluster.activeIDs(via: seeds) == ["node-a", "node-b2", "node-c"], "ring of \(seeds)")
    }
    // Every PUT is acknowledged on two owners that are two nodes; each block reads back.
    let blocks = BlockSet(count: 200, run: 97)
    try await blocks.putAll(cluster.client(seeds: ["a"]))
    let check = try await blocks.verify(cluster.client(seeds: ["c"]))
    #expect(check.ok == blocks.count, "\(check)")
    let metrics = try scrape(try cluster.node("a").admin)
    #expect(sample(metrics, "strata_member_records_rejected_total", #"reason="address_taken""#) == 1, "\(metrics)")
    #expect(sample(metrics, "strata_member_records_rejected") == 1)
    #expect(cluster.log("a").contains("another record claims its address"))
  }

  @Test func nodesServeThroughAnEtcdOutageAndRegisterAgain() async throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let cluster = try ClusterHarness(membership: .etcd(etcd.clientURL), names: ["a", "b", "c"], ttlSeconds: 2)
    defer { cluster.shutdown() }
    try await cluster.startRegistered(["a", "b", "c"])
    let blocks = BlockSet(count: 500, run: 44)
    try await blocks.putAll(cluster.client(seeds: ["a"]))
    try await cluster.syncReplication(["a", "b", "c"])

    etcd.kill()
    func membership() async throws -> String { try await cluster.report("a", "membership")["state"] as? String ?? "?" }
    #expect(try await eventually(within: 10) { try await membership() == "disconnected" }, "etcd down not reported")
    // Still serving, on the last ring, with all three members.
    #expect(try await cluster.activeIDs(via: ["a"]).count == 3)
    let during = try await blocks.verify(cluster.client(seeds: ["a", "b", "c"]))
    #expect(during.ok == blocks.count, "during the etcd outage: \(during)")
    #expect(try String(contentsOfFile: "\(cluster.base)/a.log", encoding: .utf8).contains("etcd: unreachable"))

    try etcd.restart()
    #expect(try await eventually(within: 15) { try await membership() == "connected" }, "no re-registration")
    #expect(try await eventually(within: 10) { try await cluster.activeIDs(via: ["b"]).count == 3 })
    let after = try await blocks.verify(cluster.client(seeds: ["c"]))
    #expect(after.ok == blocks.count, "after etcd returned: \(after)")
  }
}
