// The operator's commands against a live cluster (etcd + 3 nodes on loopback, R = 2): status,
// cluster members and ring, evict, verify (a block corrupted on one node's disk is found, dropped,
// and never served: readers get the replica's bytes) and drain.

import Foundation
import StrataAdmin
import StrataClient
import StrataCore
import StrataPlacement
import StrataTestKit
import Testing

@Suite(
  .serialized,
  .enabled(if: EtcdProcess.isAvailable, "etcd is not installed (scripts/bootstrap.sh installs etcd-server)"))
struct ClusterOperationsTests {
  @Test func operatorCommandsWorkAgainstALiveCluster() async throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let cluster = try ClusterHarness(membership: .etcd(etcd.clientURL), names: ["a", "b", "c"], ttlSeconds: 2)
    defer { cluster.shutdown() }
    cluster.ram = "48MiB"
    cluster.nvme = "256MiB"
    for name in ["a", "b", "c"] { try await cluster.start(name) }
    let seeds = cluster.address("a").description
    // Each node registers before it says it listens; the others see it through their watch.
    #expect(
      try await eventually(within: 10) {
        let members = try await strata(["cluster", "members", "--seeds", seeds, "--json"])
        return (try JSONValue.parse(members.stdout)["members"]?.arrayValue?.count ?? 0) == 3
      })
    // 128 MiB × 2 replicas over three 48 MiB RAM tiers: every node demotes blocks to NVMe.
    let size = 1 << 20
    let client = cluster.client(seeds: ["a", "b", "c"])
    defer { client.close() }
    let blocks = try await putBlocks(client, count: 128, size: size, seed: 17)
    try await cluster.syncReplication(["a", "b", "c"])

    // status and cluster views.
    let status = try await strata(["status", "--admin", try cluster.admin("a"), "--json"])
    #expect(status.status == 0, "\(status.stderr)")
    let document = try JSONValue.parse(status.stdout)
    #expect(document["health"]?.stringValue == "ok")
    #expect((document["epoch"]?.intValue ?? 0) > 0, "the epoch is etcd's revision")
    #expect(document["cluster"]?["members"]?.arrayValue?.count == 3)
    // The human view names the cluster's state in words, no section as raw JSON.
    let table = try await strata(["status", "--admin", try cluster.admin("a")])
    #expect(table.status == 0, "\(table.stderr)")
    for row in [
      "cluster         etcd membership, connected, member node-a; 3 members (3 up), replicas 2\n",
      "replication     0 queued", "write quorum    auto: ", "drain           idle", "read-through    ",
    ] {
      #expect(table.stdout.contains(row), "status lacks \(row): \(table.stdout)")
    }
    #expect(!table.stdout.contains("{"), "\(table.stdout)")
    let members = try await strata(["cluster", "members", "--seeds", seeds])
    #expect(members.status == 0 && members.stdout.contains("etcd membership, connected"), "\(members.stdout)")
    #expect(members.stdout.contains("\nwrite quorum    auto: "), "\(members.stdout)")
    for id in ["node-a", "node-b", "node-c"] { #expect(members.stdout.contains(id)) }
    let ring = try await strata(["cluster", "ring", "--seeds", seeds, "--json"])
    let shares = try JSONValue.parse(ring.stdout)["members"]?.arrayValue?.compactMap { $0["owner_share"]?.doubleValue }
    #expect(shares?.count == 3 && abs((shares ?? []).reduce(0, +) - 2) < 0.001, "owner shares sum to R: \(ring.stdout)")

    // evict one block on the node that holds it.
    let ringNow = try await client.currentRing()
    let target = blocks[10].0
    let holder = try #require(ringNow.owners(of: target).first?.id.dropFirst("node-".count)).description
    let evict = try await strata(["evict", "--admin", try cluster.admin(holder), "--key-prefix", target.hex, "--json"])
    #expect(evict.status == 0, "\(evict.stderr)")
    #expect(try JSONValue.parse(evict.stdout)["evicted_blocks"]?.intValue == 1)

    // verify: corrupt one NVMe-only block in node c's device file under the running node.
    let direct = NodeProcess.client(cluster.address("c"), connections: 1)
    defer { direct.close() }
    let onC = try await direct.lookup(blocks.map(\.0)).tiers
    let victim = try #require(blocks.indices.first { onC[$0] == .nvme }, "node c demoted nothing")
    let device = cluster.node("c").directory + "/nvme/strata-nvme.dat"
    let handle = try FileHandle(forUpdating: URL(fileURLWithPath: device))
    let contents = try handle.readToEnd() ?? Data()
    let found = try #require(contents.range(of: Data(blocks[victim].1[0..<256])))
    try handle.seek(toOffset: UInt64(found.lowerBound + 4096))
    try handle.write(contentsOf: Data(repeating: 0xEE, count: 64))
    try handle.synchronize()
    try handle.close()
    let verify = try await strata(["verify", "--admin", try cluster.admin("c"), "--wait", "--json"])
    #expect(verify.status == 4, "verify exits 4 on corruption: \(verify.stdout) \(verify.stderr)")
    #expect(
      try JSONValue.parse(verify.stdout)["corrupt"]?.arrayValue?.first?["key"]?.stringValue == blocks[victim].0.hex)
    // Never served: node c and the cluster both answer with the replica's (right) bytes.
    #expect(try await getBlock(direct, blocks[victim].0, size: size) == blocks[victim].1)
    #expect(try await getBlock(client, blocks[victim].0, size: size) == blocks[victim].1)

    // drain node c; every block but the evicted one still reads back right.
    let drain = try await strata(["drain", "--seeds", seeds, "node-c"])
    #expect(drain.status == 0, "\(drain.stdout) \(drain.stderr)\n\(cluster.log("c"))")
    #expect(cluster.node("c").waitForExit() == 0)
    cluster.forget("c")
    let reader = cluster.client(seeds: ["a", "b"])
    defer { reader.close() }
    for (index, block) in blocks.enumerated() where index != 10 {
      #expect(try await getBlock(reader, block.0, size: size) == block.1, "block \(index) after the drain")
    }
  }
}
