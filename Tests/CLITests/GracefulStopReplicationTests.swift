// A SIGTERM sends the replication copies a node has queued before it stops, for a bounded time:
// blocks acknowledged at write quorum 1 reach their other owner even when the node is stopped
// right after acknowledging them, and a peer that never answers delays the stop by that bound only.

import Foundation
import StrataClient
import StrataCore
import StrataPlacement
import StrataTestKit
import Testing

@Suite(.serialized) struct GracefulStopReplicationTests {
  /// Writes `count` blocks whose first owner is a at write quorum 1 while b is stopped (SIGSTOP:
  /// connected, silent), so their copies to b wait in a's queue; returns the blocks' indices.
  private func queueCopiesToStoppedPeer(_ cluster: FaultCluster, _ blocks: BlockSet, count: Int) async throws -> [Int] {
    let client = cluster.client
    let ring = try await client.currentRing()
    let onA = blocks.keys.indices.filter {
      ring.owners(of: blocks.keys[$0]).first?.address == cluster.addresses[0].description
    }
    try #require(onA.count >= count)
    let written = Array(onA.prefix(count))
    let region = client.register(blocks.source)
    kill(cluster.nodes["b"]!.process.processIdentifier, SIGSTOP)
    let items = try written.map { n in try blocks.putItem(n, in: region) }
    #expect(try await client.put(items, writeQuorum: 1) == Array(repeating: .stored, count: count))
    // Every copy waits at a: queued, or (a batch whose send to the stopped b timed out, which a
    // loaded machine can make happen before the last copies are queued) under-replicated, which
    // the stop retries too.
    #expect(
      try await eventually(within: 10) {
        let metrics = try cluster.metrics("a")
        let queued = sample(metrics, "strata_replication_queue_depth") ?? 0
        return queued + (sample(metrics, "strata_under_replicated_blocks") ?? 0) >= Double(count)
      })
    return written
  }

  /// SIGTERMs a, resumes b once a has begun sending what it had queued, and checks that a exits 0
  /// with nothing left behind and that b holds every block of `written`.
  private func stopAndCheckPeerHoldsAll(_ cluster: FaultCluster, _ blocks: BlockSet, _ written: [Int]) async throws {
    let a = cluster.nodes["a"]!
    kill(a.process.processIdentifier, SIGTERM)
    // The data plane has stopped and the cluster service is sending what it had queued.
    #expect(
      try await eventually(within: 30) {
        cluster.log("a").contains("sending queued replication copies before stopping")
      },
      "\(cluster.log("a").suffix(2000))")
    kill(cluster.nodes["b"]!.process.processIdentifier, SIGCONT)
    #expect(try await eventually(within: 60) { !a.process.isRunning })
    #expect(a.process.terminationStatus == 0, "\(cluster.log("a").suffix(2000))")
    cluster.nodes["a"] = nil
    #expect(!cluster.log("a").contains("replication copies still queued"), "\(cluster.log("a").suffix(2000))")
    let direct = NodeProcess.client(cluster.addresses[1], connections: 1)
    defer { direct.close() }
    let onB = try await blocks.verify(direct, indices: written)
    #expect(onB.ok == written.count, "b holds \(onB) of the \(written.count) blocks a acknowledged")
  }

  /// The stopping node's cluster service used to drop its replication queue: every block whose
  /// copy had not gone out stayed on that node alone (until a repair pass, which needs the node
  /// back). Now the stop sends them first: b, resumed once a has begun sending, holds every block.
  @Test func aStoppingNodeSendsTheCopiesItHadQueued() async throws {
    let cluster = try await FaultCluster(names: ["a", "b"])
    defer { cluster.stop() }
    let blocks = BlockSet(count: 400, run: 93)
    let written = try await queueCopiesToStoppedPeer(cluster, blocks, count: 150)
    try await stopAndCheckPeerHoldsAll(cluster, blocks, written)
  }

  /// A copy that failed while its peer was away (here: stopped, so the batch in flight fails) waits
  /// for a retry 5 s later, which a node stopping sooner never made: those blocks stayed on it
  /// alone. Now the stop makes one pass over them within its bound, so b, back by then, holds
  /// every block a acknowledged, the failed batch's too.
  @Test func aStoppingNodeRetriesTheCopiesThatFailedBeforeIt() async throws {
    let cluster = try await FaultCluster(names: ["a", "b"])
    defer { cluster.stop() }
    let blocks = BlockSet(count: 400, run: 95)
    let written = try await queueCopiesToStoppedPeer(cluster, blocks, count: 150)
    #expect(
      try await eventually(within: 40) {
        (sample(try cluster.metrics("a"), "strata_under_replicated_blocks") ?? 0) >= 1
      }, "the batch in flight to the stopped peer failed")
    try await stopAndCheckPeerHoldsAll(cluster, blocks, written)
  }

  /// A peer that never answers holds the stop for the bound (10 s) only: the node says how many
  /// copies it leaves behind and exits 0, within the cluster service's 15 s stop deadline.
  @Test func aPeerThatNeverAnswersDelaysTheStopByTheBoundOnly() async throws {
    let cluster = try await FaultCluster(names: ["a", "b"])
    defer { cluster.stop() }
    let blocks = BlockSet(count: 400, run: 94)
    _ = try await queueCopiesToStoppedPeer(cluster, blocks, count: 150)
    let a = cluster.nodes["a"]!
    kill(a.process.processIdentifier, SIGTERM)
    #expect(try await eventually(within: 90) { !a.process.isRunning }, "\(cluster.log("a").suffix(2000))")
    #expect(a.process.terminationStatus == 0, "\(cluster.log("a").suffix(2000))")
    cluster.nodes["a"] = nil
    let log = cluster.log("a")
    #expect(log.contains("sending queued replication copies before stopping"))
    #expect(log.contains("replication copies still queued"), "\(log.suffix(2000))")
  }
}
