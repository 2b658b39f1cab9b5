// The client verifies every GET block against the checksum the node sends, piece by piece as the
// bytes arrive: a block whose RAM copy was damaged after it was stored (the node sends a whole
// block with its stored checksum, unchecked) comes back `corrupt` with its destination zeroed,
// never as data, whether the damage is in the first chunk or a later one, and into one buffer or
// several; the client reports it (VERIFY) and the node, finding its copy damaged too, removes it.

import Foundation
import StrataClient
import StrataCore
import StrataTestKit
import Testing

@Suite(.serialized) struct ClientChecksumProcessTests {
  @Test func damagedBlocksAreReportedCorruptNeverReturned() async throws {
    // RAM only: a block written to NVMe too would keep that copy (TierCountersTests).
    let config = try temporaryFile("checksum-ram-only.yaml", "nvme: {admission: never}\n")
    let node = try await NodeProcess.launch(
      ram: "256MiB", nvme: "256MiB", extra: ["--fault-injection", "--config", config])
    defer { _ = node.stop() }
    let admin = try node.admin
    let blockBytes = 2 << 20
    let count = 4
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: count * blockBytes, alignment: 4096)
    let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: count * blockBytes, alignment: 4096)
    defer {
      source.deallocate()
      destination.deallocate()
    }
    fill(source, seed: 33)
    let keys = (0..<count).map { blockKey($0, 33) }
    let client = node.client()
    defer { client.close() }
    let from = client.register(source)
    let into = client.register(destination)
    _ = try await client.put(
      try (0..<count).map { n in
        StrataClient.PutItem(key: keys[n], source: try from.slice(offset: n * blockBytes, length: blockBytes))
      })
    // Block 0: damage in the first chunk; block 1: in the last; blocks 2 and 3 stay intact.
    for (n, byte) in [(0, 100), (1, blockBytes - 5)] { try flipBit(admin, keys[n], byte: byte) }
    memset(destination.baseAddress!, 0xEE, destination.count)
    // Blocks 0 and 2 into one buffer each; blocks 1 and 3 scattered over two halves.
    let half = blockBytes / 2
    let items = try (0..<count).map { n in
      n % 2 == 0
        ? StrataClient.GetItem(key: keys[n], destination: try into.slice(offset: n * blockBytes, length: blockBytes))
        : StrataClient.GetItem(
          key: keys[n], destination: try into.slice(offset: n * blockBytes, length: half),
          tail: [try into.slice(offset: n * blockBytes + half, length: half)])
    }
    let results = try await client.get(items)
    #expect(results[0] == .corrupt && results[1] == .corrupt, "\(results)")
    for n in [0, 1] {
      let zeroed = UnsafeRawBufferPointer(rebasing: destination[(n * blockBytes)..<((n + 1) * blockBytes)])
        .allSatisfy { $0 == 0 }
      #expect(zeroed, "block \(n): damaged bytes were left in the destination")
    }
    for n in [2, 3] {
      #expect(results[n] == .ok(length: blockBytes))
      #expect(memcmp(source.baseAddress! + n * blockBytes, destination.baseAddress! + n * blockBytes, blockBytes) == 0)
    }
    // The client reported the two damaged blocks (VERIFY); the node found its copies damaged too
    // and removed them, so they read as missing (the next owner's, or a recompute) and the next
    // PUT stores them again, while the intact ones stay.
    #expect(client.transportStats.damagedBlocksReported == 2)
    let stat = try JSONSerialization.jsonObject(with: Data(try await client.stat().utf8)) as? [String: Any]
    let counters = stat?["counters"] as? [String: Any] ?? stat ?? [:]
    #expect(counters["verify_confirmed"] as? Int == 2 && counters["verify_intact"] as? Int == 0, "\(counters)")
    let again = try await client.get(items)
    #expect(again[0] == .missing && again[1] == .missing, "\(again)")
    #expect(again[2] == .ok(length: blockBytes) && again[3] == .ok(length: blockBytes), "\(again)")
    let stored = try await client.put(
      try [0, 1].map { n in
        StrataClient.PutItem(key: keys[n], source: try from.slice(offset: n * blockBytes, length: blockBytes))
      })
    #expect(stored == [.stored, .stored])
    #expect(try await client.get(Array(items[0..<2])) == [.ok(length: blockBytes), .ok(length: blockBytes)])
    #expect(memcmp(source.baseAddress!, destination.baseAddress!, 2 * blockBytes) == 0)
  }

  /// A scheduled scrub (`verify.interval`) finds a block damaged in RAM before any reader does:
  /// removed, counted, and the others kept; it runs at the configured rate and says when it ran.
  @Test func aScheduledScrubFindsABlockDamagedInRAMWithNoReader() async throws {
    // RAM only: a block written to NVMe too would keep that copy (TierCountersTests).
    let config = try temporaryFile(
      "scheduled-verify.yaml", "verify: {interval: 1s, max_rate: 16MiB}\nnvme: {admission: never}\n")
    let node = try await NodeProcess.launch(
      ram: "256MiB", nvme: "256MiB", extra: ["--fault-injection", "--config", config])
    defer { _ = node.stop() }
    let admin = try node.admin
    let blockBytes = 256 << 10
    let count = 8
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: count * blockBytes, alignment: 4096)
    defer { source.deallocate() }
    fill(source, seed: 34)
    let keys = (0..<count).map { blockKey($0, 34) }
    let client = node.client()
    defer { client.close() }
    let from = client.register(source)
    let stored = try await client.put(
      try (0..<count).map { n in
        StrataClient.PutItem(key: keys[n], source: try from.slice(offset: n * blockBytes, length: blockBytes))
      })
    try #require(stored.allSatisfy { $0 == .stored })
    try flipBit(admin, keys[5], byte: 777)
    func metric(_ name: String) throws -> Double? { sample(try scrape(admin), name) }
    let found = try await eventually(within: 30) { try metric("strata_verify_corrupt_blocks_total") == 1 }
    #expect(found, "no scheduled scrub found the damaged block")
    #expect(try await client.lookup([keys[5]]).tiers == [.absent])
    #expect(try await client.lookup(keys).tiers.filter { $0 == .absent }.count == 1)
    #expect(
      try await eventually(within: 10) { (try metric("strata_verify_last_finished_timestamp_seconds") ?? 0) > 1.7e9 })
    let progress = try JSONValue.parse(try adminCall(admin, "GET", "/v1/verify").text)
    #expect(progress["max_rate_bytes_per_second"]?.intValue == 16 << 20, "\(progress)")
  }

  /// The scheduled scrub runs on a node whose admin API is off (`admin.enabled: false`): a block
  /// that decayed on disk is found, dropped (never served) and logged with no operator and no
  /// reader, and the other blocks stay.
  @Test func aScheduledScrubRunsWithTheAdminAPIDisabled() async throws {
    let config = try temporaryFile(
      "scheduled-verify-no-admin.yaml", "admin: {enabled: false}\nverify: {interval: 1s, max_rate: 64MiB}\n")
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("scrub-no-admin-\(getpid()).log").path
    let node = try await NodeProcess.launch(
      ram: "64MiB", nvme: "256MiB", log: log, extra: ["--config", config], files: [log])
    defer { _ = node.stop() }
    #expect(throws: StrataError.self) { try node.admin }
    let client = node.client()
    defer { client.close() }
    let size = 1 << 20
    // 96 MiB through a 64 MiB RAM tier: the first blocks are on NVMe only.
    let blocks = try await putBlocks(client, count: 96, size: size, seed: 35)
    let tiers = try await client.lookup(blocks.map(\.0)).tiers
    let victim = try #require(blocks.indices.first { tiers[$0] == .nvme })
    try corruptOnDisk(blocks[victim].1, dataDirectory: node.directory)
    let dropped = try await eventually(within: 30) {
      try await client.lookup([blocks[victim].0]).tiers == [.absent]
    }
    #expect(dropped, "no scheduled scrub dropped the block that decayed on disk")
    let logged = try await eventually(within: 10) {
      ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains(
        "verify found corrupt blocks and dropped them")
    }
    #expect(logged, "the scrub's finding is not in the node's log")
    #expect(try await client.lookup(blocks.map(\.0)).tiers.filter { $0 == .absent }.count == 1)
    let other = try #require(blocks.indices.first { tiers[$0] == .nvme && $0 != victim })
    #expect(try await getBlock(client, blocks[other].0, size: size) == blocks[other].1)
  }
}
