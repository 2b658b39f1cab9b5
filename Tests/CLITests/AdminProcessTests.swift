// The admin API and admin CLI against a real `strata serve` process: status, evict and verify
// through the `strata` commands (a block corrupted on disk is found by verify and never served),
// metrics scraped while a load runs, config reload, exit codes and completion scripts.

import Foundation
import StrataAdmin
import StrataClient
import StrataCore
import StrataTestKit
import Testing

/// A node process (see NodeProcess) and the address of its admin API, read from its banner.
final class AdminNodeProcess: Sendable {
  let node: NodeProcess
  let admin: HostPort

  private init(node: NodeProcess) throws {
    self.node = node
    do { admin = try node.admin } catch {
      _ = node.stop()
      throw error
    }
  }

  /// Starts it off the cooperative pool (`NodeProcess.launch`).
  static func launch(ram: String = "64MiB", nvme: String = "256MiB", config: String? = nil) async throws
    -> AdminNodeProcess
  {
    try AdminNodeProcess(
      node: await NodeProcess.launch(ram: ram, nvme: nvme, extra: config.map { ["--config", $0] } ?? []))
  }

  var address: HostPort { node.address }
  var directory: String { node.directory }
  var banner: String { node.banner }

  func client(connections: Int = 2, sameHost: Bool = true) -> StrataClient {
    node.client(connections: connections, sameHost: sameHost)
  }

  /// `strata ARGS --admin ADDRESS`.
  func cli(_ arguments: String...) async throws -> Run { try await strata(arguments + ["--admin", admin.description]) }

  func stop() -> Int32 { node.stop() }
}

/// Puts `count` blocks of `size` random bytes (seeded) and returns their keys and contents.
/// Overwrites 64 bytes of a stored block's payload (found by its first 256 bytes) in the NVMe
/// device file of the node whose data folder is `dataDirectory`, under the running node.
func corruptOnDisk(_ block: [UInt8], dataDirectory: String) throws {
  let handle = try FileHandle(forUpdating: URL(fileURLWithPath: dataDirectory + "/nvme/strata-nvme.dat"))
  defer { try? handle.close() }
  let contents = try handle.readToEnd() ?? Data()
  let found = try #require(contents.range(of: Data(block[0..<256])), "the block's bytes are not in the device file")
  try handle.seek(toOffset: UInt64(found.lowerBound + 4096))
  try handle.write(contentsOf: Data(repeating: 0xEE, count: 64))
  try handle.synchronize()
}

func putBlocks(_ client: StrataClient, count: Int, size: Int, seed: Int) async throws -> [(BlockKey, [UInt8])] {
  var blocks: [(BlockKey, [UInt8])] = []
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
  defer { buffer.deallocate() }
  let region = client.register(buffer)
  for n in 0..<count {
    fill(buffer, seed: seed * 100_000 + n)
    let key = blockKey(n, seed)
    #expect(try await client.put([.init(key: key, source: try region.slice(length: size))]) == [.stored])
    blocks.append((key, Array(buffer)))
  }
  return blocks
}

func getBlock(_ client: StrataClient, _ key: BlockKey, size: Int) async throws -> [UInt8]? {
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
  defer { buffer.deallocate() }
  let region = client.register(buffer)
  let result = try await client.get([.init(key: key, destination: try region.slice(length: size))])
  guard result == [.ok(length: size)] else { return nil }
  return Array(buffer)
}

@Suite(.serialized) struct AdminProcessTests {
  /// status, evict and verify against a live node; a block corrupted on disk while the node runs
  /// is reported by verify (exit 4), dropped, and never served.
  /// A static node started without --node-id is named by its member id, its address: the nodes
  /// of a cluster on one host differ (the host name would name them all alike).
  @Test func aStaticNodeWithoutAnIdIsNamedByItsAddress() async throws {
    let ports = try freeLoopbackPorts(2)
    let me = "127.0.0.1:\(ports[0])"
    let node = try await NodeProcess.launch(
      ram: "64MiB", nvme: "256MiB", listen: me, extra: ["--peers", "\(me),127.0.0.1:\(ports[1])"])
    defer { _ = node.stop() }
    #expect(node.banner.contains("strata node \(me) listening on \(me)"), "\(node.banner)")
    let status = try await strata(["status", "--admin", try node.admin.description, "--json"])
    #expect(try JSONValue.parse(status.stdout)["node_id"]?.stringValue == me, "\(status.stdout)")
    // A cluster node must advertise an address peers reach: a wildcard one is refused at start.
    for wildcard in ["0.0.0.0:7000", "[::]:7000"] {
      let refused = await #expect(throws: StrataError.self) {
        _ = try await NodeProcess.launch(
          ram: "64MiB", nvme: "256MiB", extra: ["--peers", "\(me),127.0.0.1:\(ports[1])", "--advertise", wildcard])
      }
      #expect(refused?.message.contains("cluster.advertise: \(wildcard) is no address peers") == true, "\(refused!)")
    }
  }

  /// A node whose disk holds records of blocks removed since keeps its cold blocks when the log
  /// comes round to their regions: the reclaim rewrites them ahead rather than evicting them while
  /// at most three quarters of the tier is live (a rule up to half evicted them here, at about
  /// 70%). 4 MiB regions, 256 KiB blocks: 120 written, half evicted by an operator, 100 and then 10
  /// more written, which wraps the 64 MiB log.
  @Test func aDiskWithDeadRecordsKeepsItsColdBlocksWhenTheLogWraps() async throws {
    let config = FileManager.default.temporaryDirectory.appendingPathComponent("reclaim-\(getpid()).yaml").path
    try "limits:\n  max_block_size: 1MiB\nnvme:\n  region_size: 4MiB\n".write(
      toFile: config, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(atPath: config) }
    let node = try await AdminNodeProcess.launch(ram: "32MiB", nvme: "64MiB", config: config)
    defer { _ = node.stop() }
    let client = node.client()
    defer { client.close() }
    let size = 256 << 10
    var blocks = try await putBlocks(client, count: 120, size: size, seed: 41)
    let admin = try node.admin
    let prefixes = (0..<8).flatMap { ["--key-prefix", String($0)] }
    let evict = try await strata(["evict", "--json", "--admin", admin.description] + prefixes)
    #expect(evict.status == 0, "\(evict.stderr)")
    let evicted = blocks.filter { "01234567".contains($0.0.hex.first!) }
    #expect(try JSONValue.parse(evict.stdout)["evicted_blocks"]?.intValue == evicted.count)
    blocks.removeAll { "01234567".contains($0.0.hex.first!) }
    blocks += try await putBlocks(client, count: 100, size: size, seed: 42)
    blocks += try await putBlocks(client, count: 10, size: size, seed: 43)
    // Every block is on the disk (written behind within the window), and the log has wrapped.
    let deadline = Date().addingTimeInterval(30)
    while try sample(scrape(admin), "strata_writeback_pending_blocks") != 0 && Date() < deadline {
      try await Task.sleep(for: .milliseconds(50))
    }
    let metrics = try scrape(admin)
    let live = try #require(sample(metrics, "strata_tier_bytes", #"tier="nvme""#))
    #expect(live <= 0.75 * Double(64 << 20), "the premise: at most three quarters live (\(live) bytes)")
    #expect(sample(metrics, "strata_nvme_reclaimed_regions_total") ?? 0 >= 1, "the log should have wrapped")
    #expect(sample(metrics, "strata_nvme_reinserted_blocks_total") ?? 0 > 0)
    #expect(sample(metrics, "strata_evictions_total", #"tier="nvme",reason="capacity""#) == 0)
    for (index, block) in blocks.enumerated() {
      #expect(try await getBlock(client, block.0, size: size) == block.1, "block \(index)")
    }
  }

  @Test func statusEvictAndVerifyAgainstALiveNode() async throws {
    let node = try await AdminNodeProcess.launch()
    defer { _ = node.stop() }
    let client = node.client()
    defer { client.close() }
    let size = 1 << 20
    // 96 MiB through a 64 MiB RAM tier: the first blocks are demoted to NVMe.
    let blocks = try await putBlocks(client, count: 96, size: size, seed: 7)

    let status = try await node.cli("status", "--json")
    #expect(status.status == 0, "\(status.stderr)")
    let document = try JSONValue.parse(status.stdout)
    #expect(document["health"]?.stringValue == "ok")
    #expect((document["tiers"]?["nvme"]?["blocks"]?.intValue ?? 0) > 0)
    // Transfers by transport: the client on the node's host moved its blocks over the same-host
    // path; one that declines it moves a block over TCP; nothing moved over RDMA.
    #expect(document["transfers"]?["shm"]?["put_bytes"]?.intValue == 96 * size)
    #expect(document["transfers"]?["tcp"]?["put_bytes"]?.intValue == 0)
    let overTCP = node.client(sameHost: false)
    defer { overTCP.close() }
    _ = try await putBlocks(overTCP, count: 1, size: 280_000, seed: 8)
    let after = try JSONValue.parse(try await node.cli("status", "--json").stdout)["transfers"]
    #expect(after?["tcp"]?["put_bytes"]?.intValue == 280_000)
    #expect(after?["shm"]?["put_bytes"]?.intValue == 96 * size)
    #expect(after?["rdma"]?["put_bytes"]?.intValue == 0 && after?["rdma"]?["get_bytes"]?.intValue == 0)
    let table = try await node.cli("status")
    #expect(table.status == 0)
    for word in [
      "health", "uptime", "epoch", "RAM", "NVMe", "hit rate", "transfers tcp", "transfers shm", "top errors",
    ] {
      #expect(table.stdout.contains(word), "status table lacks \(word): \(table.stdout)")
    }

    // Corrupt one NVMe-only block's payload in the device file, under the running node.
    let tiers = try await client.lookup(blocks.map(\.0)).tiers
    let onNVMe = blocks.indices.filter { tiers[$0] == .nvme }
    #expect(onNVMe.count >= 10)
    let victim = try #require(onNVMe.first)
    try corruptOnDisk(blocks[victim].1, dataDirectory: node.directory)

    let verify = try await node.cli("verify", "--wait", "--json")
    #expect(verify.status == 4, "verify should exit 4 on corruption: \(verify.stdout) \(verify.stderr)")
    let result = try JSONValue.parse(verify.stdout)
    #expect(result["state"]?.stringValue == "done")
    #expect(result["corrupt_blocks"]?.intValue == 1 && result["dropped_blocks"]?.intValue == 1)
    #expect(result["total_blocks"]?.intValue == result["scanned_blocks"]?.intValue)
    #expect(result["corrupt"]?.arrayValue?.first?["key"]?.stringValue == blocks[victim].0.hex)
    // Never served: GET misses; every other NVMe block still reads back exact.
    #expect(try await getBlock(client, blocks[victim].0, size: size) == nil)
    #expect(try await client.lookup([blocks[victim].0]).tiers == [.absent])
    for index in onNVMe.dropFirst().prefix(5) {
      #expect(try await getBlock(client, blocks[index].0, size: size) == blocks[index].1)
    }
    let again = try await node.cli("verify", "--status")
    #expect(again.status == 4 && again.stdout.contains("1 corrupt"), "\(again.stdout)")
    // Paced on request (a busy node), and a pace below 1 MiB/s refused, naming the field.
    let paced = try await node.cli("verify", "--wait", "--json", "--max-rate", "512MiB")
    #expect(paced.status == 0, "\(paced.stdout) \(paced.stderr)")
    #expect(try JSONValue.parse(paced.stdout)["max_rate_bytes_per_second"]?.intValue == 512 << 20, "\(paced.stdout)")
    let tooSlow = try await node.cli("verify", "--max-rate", "1KiB")
    #expect(tooSlow.status != 0 && tooSlow.stderr.contains("max_rate"), "\(tooSlow.stderr)")

    // Evict by key prefix, then by namespace.
    let target = blocks[50].0
    let evictOne = try await node.cli("evict", "--key-prefix", target.hex, "--json")
    #expect(evictOne.status == 0, "\(evictOne.stderr)")
    #expect(try JSONValue.parse(evictOne.stdout)["evicted_blocks"]?.intValue == 1)
    #expect(try await client.lookup([target]).tiers == [.absent])
    let evictAll = try await node.cli("evict", "--namespace", "default")
    #expect(evictAll.status == 0 && evictAll.stdout.hasPrefix("evicted 95 block(s)"), "\(evictAll.stdout)")
    #expect(try await client.lookup(blocks.map(\.0)).leadingRun == 0)
    #expect(try await node.cli("evict").status == 2)
    #expect(try await node.cli("evict", "--key-prefix", "xyz").status == 2)
  }

  /// Over TCP, and over the same-host path (the node's Unix socket, which a client on this machine
  /// takes by default): each transport's series move.
  @Test(arguments: ["tcp", "shm"]) func metricsMoveWhileALoadRuns(transport: String) async throws {
    let node = try await AdminNodeProcess.launch(ram: "256MiB")
    defer { _ = node.stop() }
    #expect(node.banner.contains("metrics: http://\(node.admin)/metrics"))
    let address = node.address
    let (rounds, roundsContinuation) = AsyncStream.makeStream(of: Int.self)
    let load = Task {
      var configuration = StrataClient.Configuration(node: address)
      configuration.timeoutMilliseconds = 20_000
      configuration.sameHost = transport == "shm"
      let client = StrataClient(configuration)
      defer { client.close() }
      let size = 64 << 10
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
      defer { buffer.deallocate() }
      let region = client.register(buffer)
      var round = 0
      while !Task.isCancelled {
        fill(buffer, seed: round)
        let source = try region.slice(length: size)
        _ = try await client.put([.init(key: blockKey(round, 99), source: source)])
        _ = try await client.get([.init(key: blockKey(round, 99), destination: source)])
        round += 1
        roundsContinuation.yield(round)
      }
    }
    let scraper = AdminClient(address: node.admin)
    var first: String?
    var second: String?
    for await round in rounds {
      if round == 10 { first = try scraper.send("GET", "/metrics").text }
      if round == 60 {
        second = try scraper.send("GET", "/metrics").text
        break
      }
    }
    load.cancel()
    _ = await load.result
    let before = try #require(first)
    let after = try #require(second)
    // The load ran ahead of the scrapes by a few rounds at most: the first scrape saw at least 10
    // rounds, the second at least 60 (each round one put and one get of 64 KiB), and more than the
    // first; but the node counts a request once its answer is written, so the last one the client
    // saw answered may not be counted yet (one round less).
    let perRound = Double(64 << 10)
    for (series, unit) in [
      (#"strata_requests_total{op="put"}"#, 1.0), (#"strata_requests_total{op="get"}"#, 1),
      (#"strata_transfer_bytes_total{op="put",transport="\#(transport)"}"#, perRound),
      (#"strata_transfer_bytes_total{op="get",transport="\#(transport)"}"#, perRound),
      (#"strata_request_duration_seconds_count{op="get",transport="\#(transport)"}"#, 1),
      (#"strata_hits_total{tier="ram"}"#, 1),
      (#"strata_transfer_block_bytes_count{op="put"}"#, 1), (#"strata_tier_blocks{tier="ram",namespace="default"}"#, 1),
    ] {
      let old = try #require(sample(before, series), "\(series) missing")
      let new = try #require(sample(after, series), "\(series) missing")
      #expect(old >= 9 * unit && new >= 59 * unit && new > old, "\(series) went from \(old) to \(new)")
    }
    #expect(sample(after, #"strata_build_info{version="\#(StrataVersion.current)"}"#) == 1)
    // The load's connections (two) were open over this transport when the second scrape ran.
    #expect(sample(after, #"strata_connections_open{transport="\#(transport)"}"#) == 2)
  }

  @Test func configReloadAndTokens() async throws {
    let admin = "operator-secret-000000001"
    let config = try temporaryFile(
      "reload-\(UUID().uuidString).yaml",
      "auth:\n  tokens:\n    - {token: \(admin), namespace: ops, admin: true}\n    - {token: tenant-secret-00000001, namespace: t1}\n"
    )
    let node = try await AdminNodeProcess.launch(config: config)
    defer { _ = node.stop() }
    #expect(try await node.cli("status").status == 1, "no token: permission denied")
    #expect(try await node.cli("status", "--token", "tenant-secret-00000001").status == 1)
    #expect(try await node.cli("status", "--token", admin).status == 0)
    let rotated = "operator-secret-000000002"
    try "auth:\n  tokens:\n    - {token: \(rotated), namespace: ops, admin: true}\nlimits: {max_leases: 7}\n".write(
      toFile: config, atomically: true, encoding: .utf8)
    let reload = try await node.cli("config", "reload", "--token", admin, "--json")
    #expect(reload.status == 0, "\(reload.stderr)")
    let report = try JSONValue.parse(reload.stdout)
    #expect(report["applied"] == .array([.string("auth.tokens")]))
    #expect(report["needs_restart"] == .array([.string("limits.max_leases")]))
    #expect(try await node.cli("status", "--token", rotated).status == 0)
    #expect(try await node.cli("status", "--token", admin).status == 1)
    try "limits: {max_leases: many}\n".write(toFile: config, atomically: true, encoding: .utf8)
    let rejected = try await node.cli("config", "reload", "--token", rotated)
    #expect(rejected.status == 2 && rejected.stdout.contains("rejected"), "\(rejected.stdout)")
  }

  @Test func exitCodesAndCompletionScripts() async throws {
    let unreachable = try await strata("status", "--admin", "127.0.0.1:1")
    #expect(unreachable.status == 3, "\(unreachable.stderr)")
    #expect(try await strata("status", "--admin", "nonsense").status == 2)
    for shell in ["bash", "zsh", "fish"] {
      let script = try await strata("--generate-completion-script", shell)
      #expect(script.status == 0)
      for command in ["status", "evict", "verify", "serve"] {
        #expect(script.stdout.contains(command), "\(shell) completion lacks \(command)")
      }
    }
  }
}
