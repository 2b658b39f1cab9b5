// Copies between real `strata serve` processes never pass on a block whose RAM copy changed
// after it was stored: a bit flipped in one node's memory (the fault-injection route) is found
// when the node hands the block on, the block is refused and removed there, and the peer never
// stores the flipped bytes; the node's other blocks are handed on as usual.

import Foundation
import StrataClient
import StrataCore
import Testing

/// The admin address a node printed in its banner.
func adminAddress(of node: NodeProcess) throws -> HostPort {
  let prefix = "strata admin API at http://"
  let line = try #require(node.banner.split(separator: "\n").first { $0.hasPrefix(prefix) }, "\(node.banner)")
  return try HostPort(parsing: String(line.dropFirst(prefix.count).prefix { $0 != " " }))
}

@Suite(.serialized) struct ReplicationChecksumTests {
  /// Issue 13 item 8: handoff recomputed the CRC from arena bytes, so the flipped block travelled
  /// on with a fresh, valid checksum and the new owner stored and served the wrong bytes.
  @Test func aBlockFlippedInRAMIsNeverCopiedToAPeer() async throws {
    let names = ["a", "b", "c"]
    let ports = try freePorts(names.count)
    let addresses = ports.map { HostPort(host: "127.0.0.1", port: $0) }
    let base = FileManager.default.temporaryDirectory.appendingPathComponent("strata-copy-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: base) }
    var nodes: [String: NodeProcess] = [:]
    defer { for node in nodes.values { node.killHard() } }
    for (name, address) in zip(names, addresses) {
      nodes[name] = try NodeProcess(
        ram: "256MiB", nvme: "512MiB", directory: "\(base)/\(name)", listen: address.description,
        log: "\(base)/\(name).log",
        extra: [
          "--node-id", "node-\(name)", "--replicas", "2", "--peers",
          addresses.map(\.description).joined(separator: ","), "--fault-injection",
        ])
    }
    func log(_ name: String) -> String { (try? String(contentsOfFile: "\(base)/\(name).log", encoding: .utf8)) ?? "" }

    var configuration = StrataClient.Configuration(seeds: addresses)
    configuration.timeoutMilliseconds = 10_000
    let client = StrataClient(configuration)
    defer { client.close() }
    // Static peers find each other by probing: wait until the ring holds all three.
    #expect(try await eventually(within: 10) { try await client.refreshRing().activeMembers.count == 3 })
    let blocks = BlockSet(count: 200, run: 88)
    let region = client.register(blocks.source)
    for first in stride(from: 0, to: blocks.count, by: 100) {
      let items = try (first..<min(first + 100, blocks.count)).map { n in
        StrataClient.PutItem(
          key: blocks.keys[n], source: try region.slice(offset: blocks.offsets[n], length: blocks.sizes[n]))
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
    let flip = "{\"key\":\"\(blocks.keys[victim].hex)\",\"namespace\":\"default\",\"byte\":100}"
    let flipped = try rawAdminExchange(
      try adminAddress(of: nodes["a"]!),
      Array("POST /v1/debug/flip-bit HTTP/1.1\r\nContent-Length: \(flip.utf8.count)\r\n\r\n\(flip)".utf8))
    try #require(statusCode(flipped) == 200, "\(flipped)")

    // a drains: it hands every block to the owners in the ring without it.
    let drain = try strata(["drain", "--seeds", addresses[0].description, addresses[0].description])
    #expect(drain.status == 0, "drain failed: \(drain.stdout) \(drain.stderr)\n\(log("a"))")
    #expect(nodes["a"]!.waitForExit() == 0, "a drained node exits 0")
    nodes["a"] = nil

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
}
