// A cluster of real node processes on loopback, R = 2: 10,000 blocks written through the cluster
// client survive a kill -9 (read from the surviving replica), come back from the restarted node,
// and stay readable while a node joins and another drains. Static membership here; the same
// scenario with etcd is in EtcdClusterTests.swift.

import Foundation
import StrataClient
import StrataCore
import StrataPlacement
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite(.serialized) struct ClusterProcessTests {
  @Test func staticClusterSurvivesKillRestartJoinAndDrain() async throws {
    let cluster = try ClusterHarness(membership: .staticPeers, names: ["a", "b", "c", "d"])
    defer { cluster.shutdown() }
    cluster.staticMembers = ["a", "b", "c"]
    for name in ["a", "b", "c"] { try cluster.start(name) }
    let blocks = BlockSet(count: 10_000, run: 41)
    try await cluster.write(blocks, through: ["a", "b", "c"])

    // (a) kill -9 one node: every block still reads back from its other owner.
    try await cluster.killAndReadBack("b", blocks, survivors: ["a", "c"])

    // (b) the node restarts (its RAM was lost) and serves every block it owns again: read
    // straight from it, each missing block is read through from the key's other owner.
    try cluster.start("b")
    let ring = try await cluster.client(seeds: ["a"]).currentRing()
    let ownedByB = (0..<blocks.count).filter { n in
      ring.owners(of: blocks.keys[n]).contains { $0.id == cluster.address("b").description }
    }
    #expect(ownedByB.count > blocks.count / 3, "b owns \(ownedByB.count) of \(blocks.count) keys")
    let direct = NodeProcess.client(cluster.address("b"), connections: 2)
    let fromB = try await blocks.verify(direct, indices: ownedByB)
    direct.close()
    #expect(fromB.ok == ownedByB.count, "b after restart: \(fromB)\n\(cluster.log("b"))")

    // (c) a fourth node joins (static membership changes by configuration: d starts with the new
    // list, the others restart with it one at a time), then a node drains and leaves.
    cluster.staticMembers = ["a", "b", "c", "d"]
    try cluster.start("d")
    for name in ["a", "b", "c"] {
      #expect(cluster.stop(name) == 0)
      try cluster.start(name)
    }
    let afterJoin = try await blocks.verify(cluster.client(seeds: ["a", "b", "c", "d"]))
    #expect(afterJoin.ok == blocks.count, "after d joined: \(afterJoin)\n\(cluster.log("d"))")

    let drain = try strata([
      "drain", "--seeds", cluster.address("a").description, cluster.address("a").description,
    ])
    #expect(drain.status == 0, "drain failed: \(drain.stdout) \(drain.stderr)\n\(cluster.log("a"))")
    #expect(cluster.node("a").waitForExit() == 0, "a drained node exits 0")
    cluster.forget("a")
    let afterDrain = try await blocks.verify(cluster.client(seeds: ["b", "c", "d"]))
    #expect(afterDrain.ok == blocks.count, "after a drained: \(afterDrain)")
  }
}
