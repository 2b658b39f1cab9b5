// A real node whose disk stops answering (reads held by `POST /v1/debug/disk-fault`
// `{"reads":"stall"}` on a `--fault-injection` node): a GET that needs the disk fails with
// `io_error` at the node's request deadline and its connection goes on serving RAM-resident
// blocks; nothing piles up (connections, pins), the metrics show the operation waiting, and once
// the disk answers again the block is read whole. Before, the connection's thread waited for the
// disk with no deadline: each GET of a block on the stalled disk held a connection until it
// answered, and a client that gave up at its own deadline left that connection behind.

import Foundation
import StrataClient
import StrataCore
import StrataTestKit
import Testing

@Suite(.serialized) struct DiskStallProcessTests {
  /// A TCP client of one connection (its default retries) and a 30 s timeout: every call goes
  /// over the same connection, and only the node's deadline (1 s here) can end a call early.
  static func oneConnectionClient(_ node: NodeProcess) -> StrataClient {
    var configuration = StrataClient.Configuration(node: node.address)
    configuration.connections = 1
    configuration.sameHost = false
    configuration.timeoutMilliseconds = 30_000
    return StrataClient(configuration)
  }

  @Test func aGetFromAStalledDiskFailsAtTheRequestDeadlineAndTheConnectionServesOn() async throws {
    let bytes = 256 << 10
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 * bytes, alignment: 4096)
    defer { source.deallocate() }
    fill(source, seed: 23)
    let keys = (0..<8).map { blockKey($0, 23) }
    let config = FileManager.default.temporaryDirectory.appendingPathComponent("disk-stall-\(getpid()).yaml").path
    try "limits:\n  request_timeout: 1s\n".write(toFile: config, atomically: true, encoding: .utf8)
    // Blocks 0..3 written and flushed by a first run: after a restart they are on NVMe only.
    let first = try await NodeProcess.launch(ram: "64MiB", nvme: "256MiB", extra: ["--config", config])
    do {
      let client = first.client(sameHost: false)
      let region = client.register(source)
      let items = try (0..<4).map {
        StrataClient.PutItem(key: keys[$0], source: try region.slice(offset: $0 * bytes, length: bytes))
      }
      #expect(try await client.put(items) == Array(repeating: .stored, count: 4))
      client.close()
    }
    #expect(first.stop(keepData: true) == 0)
    let node = try await NodeProcess.launch(
      ram: "64MiB", nvme: "256MiB", directory: first.directory, extra: ["--config", config, "--fault-injection"],
      files: [config])
    defer { _ = node.stop() }
    let admin = try node.admin
    let client = Self.oneConnectionClient(node)
    defer { client.close() }
    let region = client.register(source)
    let ramKey = keys[4]
    #expect(
      try await client.put([.init(key: ramKey, source: try region.slice(offset: 4 * bytes, length: bytes))]) == [
        .stored
      ])
    let readInto = { (slot: Int) in try region.slice(offset: slot * bytes, length: bytes) }

    _ = try diskFault(admin, ["reads": "stall"])
    for round in 0..<3 {
      let began = ContinuousClock.now
      let failed = await #expect(throws: StrataError.self) {
        try await client.get([.init(key: keys[round], destination: try readInto(5))])
      }
      let took = ContinuousClock.now - began
      #expect(failed?.code == .ioError, "\(String(describing: failed))")
      #expect(
        failed?.message.contains("did not answer within the request's deadline") == true,
        "\(String(describing: failed))")
      // The node's deadline is 1 s (plus the transfer time of 256 KiB at 1 MiB/s); wide for a
      // loaded machine, and far below the client's own 30 s.
      #expect(took < .seconds(15), "a GET from the stalled disk took \(took)")
      // The same connection serves a RAM-resident block at once.
      #expect(try await client.get([.init(key: ramKey, destination: try readInto(6))]) == [.ok(length: bytes)])
      #expect(memcmp(source.baseAddress! + 6 * bytes, source.baseAddress! + 4 * bytes, bytes) == 0)
    }
    let stalled = try scrape(admin)
    // Each stalled GET was answered once: an error the node answers is not retried (the client's
    // 2 retries are for transport failures), and the connection was kept (one ever accepted).
    #expect(sample(stalled, "strata_errors_total{code=\"io_error\"}") == 3)
    #expect(sample(stalled, "strata_connections_total{transport=\"tcp\"}") == 1)
    #expect(sample(stalled, "strata_connections_open{transport=\"tcp\"}") == 1)
    #expect((sample(stalled, "strata_nvme_oldest_operation_seconds") ?? 0) >= 1)
    #expect(sample(stalled, "strata_nvme_stalled_operations") == 0)  // not yet 30 s
    let stat = try JSONValue.parse(Array(try await client.stat().utf8))
    #expect(stat["disk_operations_stalled"] == .int(0), "\(stat)")

    // The disk answers again: the reads that waited end, their late pins are given back, and the
    // blocks are read whole.
    let counts = try diskFault(admin, ["reads": "ok"])
    #expect(counts.contains("\"stalled_reads\":"), "\(counts)")
    #expect(try await eventually(within: 10) { sample(try scrape(admin), "strata_transfer_pins") == 0 })
    for round in 0..<3 {
      #expect(try await client.get([.init(key: keys[round], destination: try readInto(5))]) == [.ok(length: bytes)])
      #expect(memcmp(source.baseAddress! + 5 * bytes, source.baseAddress! + round * bytes, bytes) == 0)
    }
    let after = try scrape(admin)
    #expect(sample(after, "strata_nvme_oldest_operation_seconds") == 0)
    #expect(sample(after, "strata_connections_open{transport=\"tcp\"}") == 1)
  }

  /// Writes held: write-behind cannot empty RAM, so once RAM is full a PUT needs an eviction that
  /// writes to the disk. Such a PUT is answered `no_space` for those items at the node's request
  /// deadline, not when the disk answers; the connection serves on, and once the disk answers the
  /// same keys are stored (the reservations made late were given back) and read whole.
  @Test func aPutThatNeedsAStalledDiskForRoomIsAnsweredNoSpaceAtTheDeadline() async throws {
    let bytes = 1 << 20
    let blocks = 160
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: (blocks + 1) * bytes, alignment: 4096)
    defer { source.deallocate() }
    fill(source, seed: 29)
    let keys = (0..<blocks).map { blockKey($0, 29) }
    let config = FileManager.default.temporaryDirectory.appendingPathComponent("put-stall-\(getpid()).yaml").path
    try "limits:\n  request_timeout: 1s\n".write(toFile: config, atomically: true, encoding: .utf8)
    let node = try await NodeProcess.launch(
      ram: "64MiB", nvme: "256MiB", extra: ["--config", config, "--fault-injection"], files: [config])
    defer { _ = node.stop() }
    let admin = try node.admin
    let client = Self.oneConnectionClient(node)
    defer { client.close() }
    let region = client.register(source)
    let slice = { (index: Int) in try region.slice(offset: index * bytes, length: bytes) }

    _ = try diskFault(admin, ["writes": "stall"])
    var refused: [Int] = []
    var stored: [Int] = []
    for first in stride(from: 0, to: blocks, by: 4) where refused.isEmpty {
      let indices = Array(first..<first + 4)
      let began = ContinuousClock.now
      let outcomes = try await client.put(try indices.map { .init(key: keys[$0], source: try slice($0)) })
      let took = ContinuousClock.now - began
      #expect(took < .seconds(15), "a PUT took \(took) with the disk's writes held")
      for (index, outcome) in zip(indices, outcomes) {
        if outcome == .noSpace {
          refused.append(index)
        } else {
          #expect(outcome == .stored)
          stored.append(index)
        }
      }
    }
    try #require(!refused.isEmpty, "RAM never filled: \(stored.count) blocks stored with the disk's writes held")
    // The payload was read after the wait (its deadline counts from then), so the connection was
    // kept: one was ever accepted, and it still serves what RAM holds.
    #expect(sample(try scrape(admin), "strata_connections_total{transport=\"tcp\"}") == 1)
    let probe = stored.last!
    #expect(try await client.get([.init(key: keys[probe], destination: try slice(blocks))]) == [.ok(length: bytes)])
    #expect(memcmp(source.baseAddress! + blocks * bytes, source.baseAddress! + probe * bytes, bytes) == 0)

    let counts = try diskFault(admin, ["writes": "ok"])
    #expect(counts.contains("\"stalled_writes\":"), "\(counts)")
    #expect(try await eventually(within: 30) { sample(try scrape(admin), "strata_writeback_pending_blocks") == 0 })
    let again = try await client.put(try refused.map { .init(key: keys[$0], source: try slice($0)) })
    #expect(again.allSatisfy { $0 == .stored }, "\(again)")
    for index in refused + [stored.first!] {
      #expect(try await client.get([.init(key: keys[index], destination: try slice(blocks))]) == [.ok(length: bytes)])
      #expect(memcmp(source.baseAddress! + blocks * bytes, source.baseAddress! + index * bytes, bytes) == 0)
    }
  }

  /// Two owners of every block; b restarts with a RAM tier of 1 MiB, so most of its copies are on
  /// its disk only, and that disk stops answering. A cluster client's GET of every block is
  /// answered whole: b answers io_error at its deadline for the keys it owns first that it must
  /// read from its disk, and those go to a, without b being marked down.
  @Test func aClusterGetGoesToTheNextOwnerWhenAnOwnersDiskDoesNotAnswer() async throws {
    let cluster = try ClusterHarness(membership: .staticPeers, names: ["a", "b"])
    defer { cluster.shutdown() }
    cluster.staticMembers = ["a", "b"]
    cluster.staticClusterConfig = ["probe_interval: 200ms"]
    cluster.configSections = ["limits:", "  request_timeout: 1s", "  max_block_size: 64KiB"]
    cluster.extraArguments = ["--fault-injection"]
    for name in ["a", "b"] { try await cluster.start(name) }
    let blocks = BlockSet(count: 200, run: 91, smallest: 16_384, spread: 2048)
    try await cluster.write(blocks, through: ["a", "b"])
    #expect(cluster.stop("b") == 0)
    cluster.ram = "1MiB"
    try await cluster.start("b")
    let bAdmin = try cluster.node("b").admin
    // b holds every block, most on its disk only (a peer's LOOKUP reads the index and fills nothing).
    var peer = StrataClient.Configuration(node: cluster.address("b"))
    peer.isPeer = true
    let inspector = StrataClient(peer)
    defer { inspector.close() }
    let tiers = try await inspector.lookup(blocks.keys).tiers
    #expect(!tiers.contains(.absent) && tiers.count { $0 == .nvme } > blocks.count / 2)
    _ = try diskFault(bAdmin, ["reads": "stall"])
    let reader = cluster.client(seeds: ["a", "b"])
    defer { reader.close() }
    try await reader.connect()
    let began = ContinuousClock.now
    let check = try await blocks.verify(reader)
    let took = ContinuousClock.now - began
    _ = try diskFault(bAdmin, ["reads": "ok"])
    #expect(check.ok == blocks.count, "\(check)\n\(cluster.log("b"))")
    let exposition = try scrape(bAdmin)
    #expect(
      (sample(exposition, "strata_errors_total{code=\"io_error\"}") ?? 0) >= 1,
      "b was never asked: GETs \(String(describing: sample(exposition, "strata_requests_total{op=\"get\"}"))), took \(took)\n\(cluster.log("b"))"
    )
    // One deadline of b's (1 s and the transfer time), not the client's 10 s timeout.
    #expect(took < .seconds(9), "the read took \(took)")
  }
}
