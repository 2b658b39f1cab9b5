// Copies between real `strata serve` processes never pass on a block whose RAM copy changed
// after it was stored: a bit flipped in one node's memory (the fault-injection route) is found
// when the node hands the block on, the block is refused and removed there, and the peer never
// stores the flipped bytes; the node's other blocks are handed on as usual.

import Foundation
import StrataClient
import StrataCore
import StrataPlacement
import StrataTestKit
import Testing

/// Node processes on loopback in one static cluster (R = 2), started with fault injection, and a
/// cluster client that has seen all of them. RAM only (`nvme.admission: never`): a block written
/// to NVMe as well keeps that copy when its RAM copy is damaged, and copies are made from it
/// (`TierCountersTests.aCopyOfABlockDamagedInRAMIsMadeFromItsDiskCopy`); here the RAM copy is
/// the only one, and is refused.
final class FaultCluster {
  let addresses: [HostPort]
  let base: String
  var nodes: [String: NodeProcess] = [:]
  let client: StrataClient

  init(names: [String]) async throws {
    addresses = try freeLoopbackPorts(names.count).map { HostPort(host: "127.0.0.1", port: $0) }
    base = FileManager.default.temporaryDirectory.appendingPathComponent("strata-copy-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    let config = "\(base)/ram-only.yaml"
    try "nvme:\n  admission: never\n".write(toFile: config, atomically: true, encoding: .utf8)
    for (name, address) in zip(names, addresses) {
      nodes[name] = try await NodeProcess.launch(
        ram: "256MiB", nvme: "512MiB", directory: "\(base)/\(name)", listen: address.description,
        log: "\(base)/\(name).log",
        extra: [
          "--node-id", "node-\(name)", "--replicas", "2", "--peers",
          addresses.map(\.description).joined(separator: ","), "--fault-injection", "--config", config,
        ])
    }
    var configuration = StrataClient.Configuration(seeds: addresses)
    configuration.timeoutMilliseconds = 10_000
    client = StrataClient(configuration)
    // Static peers find each other by probing: wait until the ring holds them all.
    let count = names.count
    let client = client
    #expect(try await eventually(within: 10) { try await client.refreshRing().activeMembers.count == count })
  }

  func log(_ name: String) -> String { (try? String(contentsOfFile: "\(base)/\(name).log", encoding: .utf8)) ?? "" }

  /// Flips one bit (of byte `byte`) of a block's RAM copy on node `name`.
  func flip(_ key: BlockKey, byte: Int, on name: String) throws { try flipBit(try nodes[name]!.admin, key, byte: byte) }

  func metrics(_ name: String) throws -> String { try scrape(try nodes[name]!.admin) }

  func stop() {
    client.close()
    for node in nodes.values {
      kill(node.process.processIdentifier, SIGCONT)
      node.killHard()
    }
    try? FileManager.default.removeItem(atPath: base)
  }
}

@Suite(.serialized) struct ReplicationChecksumTests {
  /// Issue 13 item 8: handoff recomputed the CRC from arena bytes, so the flipped block travelled
  /// on with a fresh, valid checksum and the new owner stored and served the wrong bytes.
  @Test func aBlockFlippedInRAMIsNeverCopiedToAPeer() async throws {
    let cluster = try await FaultCluster(names: ["a", "b", "c"])
    defer { cluster.stop() }
    let addresses = cluster.addresses
    let client = cluster.client
    func log(_ name: String) -> String { cluster.log(name) }
    let blocks = BlockSet(count: 200, run: 88)
    let region = client.register(blocks.source)
    for first in stride(from: 0, to: blocks.count, by: 100) {
      let items = try (first..<min(first + 100, blocks.count)).map { n in
        try blocks.putItem(n, in: region)
      }
      let outcomes = try await client.put(items)
      #expect(outcomes.allSatisfy { $0 == .stored }, "\(outcomes.filter { $0 != .stored })")
    }
    for address in addresses { _ = try await client.ringCall(RingCall.sync, node: address) }

    // Blocks held by a and b: once a leaves, c becomes their second owner and a hands them to c.
    let ring = try await client.currentRing()
    let ab: Set = [addresses[0].description, addresses[1].description]
    let onAB = blocks.keys.indices.filter { Set(ring.owners(of: blocks.keys[$0]).map(\.address)) == ab }
    try #require(onAB.count >= 2, "no two blocks owned by a and b")
    let victim = onAB[0]
    let original = Array(
      UnsafeRawBufferPointer(
        rebasing: blocks.source[blocks.offsets[victim]..<(blocks.offsets[victim] + blocks.sizes[victim])]))

    // A memory fault on a: one bit of the victim's RAM copy flips; its stored checksum stays.
    try cluster.flip(blocks.keys[victim], byte: 100, on: "a")

    // a drains: it hands every block to the owners in the ring without it.
    let drain = try await strata(["drain", "--seeds", addresses[0].description, addresses[0].description])
    #expect(drain.status == 0, "drain failed: \(drain.stdout) \(drain.stderr)\n\(log("a"))")
    #expect(cluster.nodes["a"]!.waitForExit() == 0, "a drained node exits 0")
    cluster.nodes["a"] = nil

    // c never received the flipped bytes (nor any bytes of the victim from a); the other blocks
    // a handed to c arrived whole.
    let direct = NodeProcess.client(addresses[2], connections: 1)
    defer { direct.close() }
    let onC = try await getBlock(direct, blocks.keys[victim], size: blocks.sizes[victim])
    var corrupted = original
    corrupted[100] ^= 1
    #expect(onC != corrupted, "node c stored the bytes flipped in a's RAM")
    // Absent, or (read through from b on the miss) the right bytes.
    #expect(onC == nil || onC == original, "node c serves bytes of the victim that were never written")
    let handed = try await blocks.verify(direct, indices: Array(onAB.dropFirst()))
    #expect(handed.ok == onAB.count - 1, "a's good blocks reached c: \(handed)\n\(log("a"))")
    #expect(log("a").contains("failed its stored checksum"), "a logged the refused copy:\n\(log("a").suffix(2000))")
    // The cluster still serves the victim right, from b.
    #expect(try await getBlock(client, blocks.keys[victim], size: blocks.sizes[victim]) == original)
  }

  /// Issue 13 item 8, replication after a PUT: the copy to the other owner was read from arena
  /// memory and sent with a CRC computed from those bytes. A block that changed in RAM while its
  /// copy waited in the replication queue now fails its stored checksum and is not sent.
  @Test func replicationRefusesABlockFlippedWhileItsCopyWaited() async throws {
    let cluster = try await FaultCluster(names: ["a", "b"])
    defer { cluster.stop() }
    let client = cluster.client
    let ring = try await client.currentRing()
    // Blocks written to a (their first owner), copied to b after the PUT.
    let blocks = BlockSet(count: 400, run: 91)
    let first = blocks.keys.indices.filter {
      ring.owners(of: blocks.keys[$0]).first?.address == cluster.addresses[0].description
    }
    // More blocks than the replicator takes in one batch (32), then the victim.
    try #require(first.count > 40)
    let (held, victim) = (Array(first[0..<40]), first[40])
    let region = client.register(blocks.source)
    func put(_ indices: [Int]) async throws {
      let items = try indices.map { n in
        try blocks.putItem(n, in: region)
      }
      // Write quorum 1: acknowledged once a holds them, copied afterwards from a's queue (the
      // path under test); the default quorum would wait for b.
      #expect(try await client.put(items, writeQuorum: 1) == Array(repeating: .stored, count: indices.count))
    }
    // b stops (SIGSTOP: connected, silent): a's first batch of copies to b waits for b's answer,
    // and the victim's copy (queued after 40 others, so never in that batch) waits in line
    // while one bit of the victim flips in a's RAM.
    kill(cluster.nodes["b"]!.process.processIdentifier, SIGSTOP)
    try await put(held)
    // Copies are queued after the PUT is answered (requests on other connections may queue
    // theirs first): the victim is written once the 40 are in a's queue, or, where a loaded
    // machine let the batch to the stopped b time out first, under-replicated.
    #expect(
      try await eventually(within: 10) {
        let metrics = try cluster.metrics("a")
        let queued = sample(metrics, "strata_replication_queue_depth") ?? 0
        return queued + (sample(metrics, "strata_under_replicated_blocks") ?? 0) >= Double(held.count)
      })
    try await put([victim])
    try cluster.flip(blocks.keys[victim], byte: 10, on: "a")
    kill(cluster.nodes["b"]!.process.processIdentifier, SIGCONT)
    _ = try await client.ringCall(RingCall.sync, node: cluster.addresses[0])

    let metrics = try cluster.metrics("a")
    // The replicator finds the flip when the victim's batch comes up. While b was stopped, a's
    // peer probe may also have marked it down; its return then starts a repair pass, which can
    // reach the victim first and remove it (copy=handoff in the log; the replicator then finds it
    // gone, or never meets it: a copy whose batch timed out waits for the repair, not in the
    // queue). Either way exactly one copy path refused it (the copy count below).
    let corruptDrops = sample(metrics, "strata_replication_dropped_total{reason=\"corrupt\"}") ?? 0
    #expect(
      corruptDrops == 1 || cluster.log("a").contains("copy=handoff"), "\(cluster.log("a").suffix(2000))")
    #expect(sample(metrics, "strata_copy_corrupt_blocks_total") == 1)
    #expect(cluster.log("a").contains("failed its stored checksum"))
    // b never stored the flipped bytes (it may hold nothing, or the right bytes read through).
    let direct = NodeProcess.client(cluster.addresses[1], connections: 1)
    defer { direct.close() }
    let original = Array(
      UnsafeRawBufferPointer(
        rebasing: blocks.source[blocks.offsets[victim]..<(blocks.offsets[victim] + blocks.sizes[victim])]))
    let onB = try await getBlock(direct, blocks.keys[victim], size: blocks.sizes[victim])
    #expect(onB == nil || onB == original, "node b serves bytes of the victim that were never written")
    // a no longer serves the victim (removed as corrupt); the held block went out whole.
    let onA = NodeProcess.client(cluster.addresses[0], connections: 1)
    defer { onA.close() }
    #expect(try await onA.lookup([blocks.keys[victim]]).tiers == [.absent])
    let heldOnB = try await blocks.verify(direct, indices: held)
    #expect(heldOnB.ok == held.count, "\(heldOnB)")
  }
}
