// Helpers of the cluster tests: a set of node processes on loopback (static peers or etcd), and a
// set of blocks written through the cluster client and checked byte for byte.

import Foundation
import StrataClient
import StrataCore
import StrataPlacement
import StrataTCP
import StrataTestKit
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Node processes named "a", "b", … on fixed loopback ports, with data folders that survive
/// restarts (removed at `shutdown`).
final class ClusterHarness {
  enum Membership {
    case staticPeers
    case etcd(String)
  }

  let membership: Membership
  let base: String
  let ttlSeconds: Int
  private(set) var nodes: [String: NodeProcess] = [:]
  private(set) var ports: [String: UInt16] = [:]
  /// The names in the static peer list each node is started with.
  var staticMembers: [String] = []
  /// Member ids other than "node-<name>" (`rename`).
  private var ids: [String: String] = [:]

  init(membership: Membership, names: [String], ttlSeconds: Int = 2) throws {
    self.membership = membership
    self.ttlSeconds = ttlSeconds
    base = FileManager.default.temporaryDirectory.appendingPathComponent("strata-cluster-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    for (name, port) in zip(names, try freeLoopbackPorts(names.count)) { ports[name] = port }
  }

  func address(_ name: String) -> HostPort { HostPort(host: "127.0.0.1", port: ports[name]!) }
  func addresses(_ names: [String]) -> [HostPort] { names.map(address) }

  /// RAM and NVMe sizes of the nodes started from now on.
  var ram = "256MiB"
  var nvme = "512MiB"
  /// More `strata serve` arguments for the nodes started from now on.
  var extraArguments: [String] = []
  /// TLS for the harness's clients (nodes started with TLS); nil: plaintext.
  var clientTLS: TLSContext?
  /// Lines under `cluster:` in the configuration file of static nodes started from now on.
  var staticClusterConfig: [String] = []
  /// Lines after the `cluster:` section (other sections, whole), static and etcd nodes alike.
  var configSections: [String] = []
  /// More lines under `cluster:` in the configuration file of etcd nodes.
  var etcdClusterConfig: [String] = []

  /// Starts (or restarts, on the same folder and port) node `name`.
  func start(_ name: String) async throws {
    var extra = ["--node-id", id(name), "--replicas", "2"]
    switch membership {
    case .staticPeers:
      extra += ["--peers", staticMembers.map { address($0).description }.joined(separator: ",")]
      if !staticClusterConfig.isEmpty {
        let config = "\(base)/\(name).yaml"
        try (["cluster:"] + staticClusterConfig.map { "  " + $0 } + configSections).joined(separator: "\n")
          .write(toFile: config, atomically: true, encoding: .utf8)
        extra += ["--config", config]
      }
    case .etcd(let url):
      let config = "\(base)/\(name).yaml"
      try
        ("cluster:\n  etcd: \(url)\n  lease_ttl: \(ttlSeconds)s\n  etcd_prefix: /strata/test-\(ports["a"]!)/\n"
        + etcdClusterConfig.map { "  \($0)\n" }.joined() + configSections.map { "\($0)\n" }.joined())
        .write(toFile: config, atomically: true, encoding: .utf8)
      extra += ["--config", config]
    }
    nodes[name] = try await NodeProcess.launch(
      ram: ram, nvme: nvme, directory: "\(base)/\(name)", listen: address(name).description,
      log: "\(base)/\(name).log", extra: extra + extraArguments)
  }

  func node(_ name: String) -> NodeProcess { nodes[name]! }

  /// The admin API address node `name` printed when it started.
  func admin(_ name: String) throws -> String { try node(name).admin.description }

  /// SIGTERM with the data kept (a restart is warm).
  func stop(_ name: String) -> Int32 {
    defer { nodes[name] = nil }
    return nodes[name]!.stop(keepData: true)
  }

  func killHard(_ name: String) {
    nodes[name]!.killHard()
    nodes[name] = nil
  }

  func forget(_ name: String) { nodes[name] = nil }

  /// Node `name` (stopped) will listen on another port when it starts again: a node rescheduled
  /// onto another host, keeping its id and its data.
  func move(_ name: String) throws {
    precondition(nodes[name] == nil, "move a node while it is stopped")
    ports[name] = try freeLoopbackPort()
  }

  /// Node `name`'s member id: "node-<name>" unless renamed.
  func id(_ name: String) -> String { ids[name] ?? "node-\(name)" }

  /// Node `name` (stopped) will start under member id `id`, at its address and on its data: its
  /// configured id changed, or its machine was re-installed under a new host name.
  func rename(_ name: String, to id: String) {
    precondition(nodes[name] == nil, "rename a node while it is stopped")
    ids[name] = id
  }

  /// SIGSTOP: the node keeps its connections but answers nothing (a hung host); `resume` undoes it.
  func pause(_ name: String) { kill(nodes[name]!.process.processIdentifier, SIGSTOP) }
  func resume(_ name: String) { kill(nodes[name]!.process.processIdentifier, SIGCONT) }

  func client(seeds: [String]) -> StrataClient {
    var configuration = StrataClient.Configuration(seeds: addresses(seeds))
    configuration.connections = 2
    configuration.timeoutMilliseconds = 10_000
    configuration.downMilliseconds = 60_000
    configuration.tls = clientTLS
    return StrataClient(configuration)
  }

  /// Starts etcd-mode nodes `names` and waits until `names.first` sees all of them in its ring.
  func startRegistered(_ names: [String]) async throws {
    for name in names { try await start(name) }
    let all = try await eventually(within: 10) { try await activeIDs(via: [names[0]]).count == names.count }
    #expect(all, "the nodes did not all register")
  }

  /// The ids of the active members of the ring the nodes `seeds` serve.
  func activeIDs(via seeds: [String]) async throws -> Set<String> {
    let reader = client(seeds: seeds)
    defer { reader.close() }
    return Set(try await reader.refreshRing().activeMembers.map(\.id))
  }

  /// Node `name`'s membership report (`strata cluster members --json`), one section of it.
  func report(_ name: String, _ section: String) async throws -> [String: Any] {
    let reader = client(seeds: [name])
    defer { reader.close() }
    let answer = try await reader.ringCall(RingCall.members, node: address(name))
    let document = try JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any]
    return document?[section] as? [String: Any] ?? [:]
  }

  /// Waits until each of `names` sees every running node up. With static peers a node's first
  /// probe of a peer not yet listening marks it down until a later probe answers, and a PUT
  /// meanwhile misses its write quorum (the owner is down): under load that window outlasted the
  /// nodes' starts.
  func waitForPeersUp(_ names: [String]) async throws {
    let running = Set(nodes.keys.map { address($0).description })
    for name in names {
      let reader = client(seeds: [name])
      defer { reader.close() }
      let up = try await eventually(within: 30) {
        let answer = try await reader.ringCall(RingCall.members, node: address(name))
        let document = try JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any]
        let members = document?["members"] as? [[String: Any]] ?? []
        return members.contains { $0["self"] as? Bool == true }
          && members.allSatisfy { member in
            member["self"] as? Bool == true || !running.contains(member["address"] as? String ?? "")
              || member["health"] as? String == "up"
          }
      }
      #expect(up, "node \(name) does not see every running node up")
    }
  }

  /// Waits until every copy queued on each named node has gone out.
  func syncReplication(_ names: [String]) async throws {
    let client = self.client(seeds: names)
    defer { client.close() }
    for name in names { _ = try await client.ringCall(RingCall.sync, node: address(name)) }
  }

  /// Writes `blocks` through a cluster client of `names` and waits until every copy went out.
  func write(_ blocks: BlockSet, through names: [String]) async throws {
    if case .staticPeers = membership { try await waitForPeersUp(names) }
    let writer = client(seeds: names)
    defer { writer.close() }
    do { try await blocks.putAll(writer) } catch {
      // Whether each node still runs, and what it logged last: why a PUT failed is in there.
      let states = nodes.keys.sorted().map { name in
        "node \(name) (\(nodes[name]!.process.isRunning ? "running" : "exited \(nodes[name]!.process.terminationStatus)")):\n\(log(name))"
      }
      Issue.record("a write through \(names) failed: \(error)\n\(states.joined(separator: "\n"))")
      throw error
    }
    try await syncReplication(names)
  }

  /// Kills node `name` with SIGKILL and reads every block back through `survivors`: each must
  /// come back right from its other owner (every block had two copies).
  func killAndReadBack(_ name: String, _ blocks: BlockSet, survivors: [String]) async throws {
    killHard(name)
    let reader = client(seeds: survivors)
    defer { reader.close() }
    // A client opened now (as the C ABI and Python open one: connect first) opens with an owner
    // away, which it marks down, instead of failing.
    try await reader.connect()
    let afterKill = try await blocks.verify(reader)
    #expect(afterKill.wrong == 0 && afterKill.corrupt == 0, "\(afterKill)")
    #expect(afterKill.missing == 0, "every block had a surviving replica: \(afterKill)")
  }

  /// The last lines of a node's log (for failure messages).
  func log(_ name: String) -> String {
    let text = (try? String(contentsOfFile: "\(base)/\(name).log", encoding: .utf8)) ?? ""
    return text.split(separator: "\n").suffix(15).joined(separator: "\n")
  }

  func shutdown() {
    for (_, node) in nodes { node.killHard() }
    nodes.removeAll()
    try? FileManager.default.removeItem(atPath: base)
  }
}

/// `count` blocks of 1–16 KiB with seeded contents, in one source buffer.
final class BlockSet {
  let count: Int
  let sizes: [Int]
  let offsets: [Int]
  let keys: [BlockKey]
  let source: UnsafeMutableRawBufferPointer
  let destination: UnsafeMutableRawBufferPointer

  /// Block `n` is `smallest + (n × 7919) mod spread` bytes.
  init(count: Int, run: Int, smallest: Int = 1024, spread: Int = 15 * 1024) {
    self.count = count
    sizes = (0..<count).map { smallest + ($0 &* 7919) % spread }
    var offsets: [Int] = []
    var offset = 0
    for size in sizes {
      offsets.append(offset)
      offset += size
    }
    self.offsets = offsets
    keys = (0..<count).map { blockKey($0, run) }
    source = .allocate(byteCount: offset, alignment: 4096)
    destination = .allocate(byteCount: offset, alignment: 4096)
    fill(source, seed: run)
  }

  deinit {
    source.deallocate()
    destination.deallocate()
  }

  /// A PUT item for block `n`, from `region` (the client's registration of `source`).
  func putItem(_ n: Int, in region: MemoryRegion) throws -> StrataClient.PutItem {
    StrataClient.PutItem(key: keys[n], source: try region.slice(offset: offsets[n], length: sizes[n]))
  }

  func putAll(_ client: StrataClient) async throws {
    let region = client.register(source)
    for first in stride(from: 0, to: count, by: 100) {
      let items = try (first..<min(first + 100, count)).map { n in
        StrataClient.PutItem(key: keys[n], source: try region.slice(offset: offsets[n], length: sizes[n]))
      }
      let outcomes = try await client.put(items)
      #expect(outcomes.allSatisfy { $0 == .stored || $0 == .alreadyPresent }, "a PUT was refused: \(outcomes)")
    }
  }

  struct Check: CustomStringConvertible {
    var ok = 0
    var missing = 0
    var wrong = 0
    var corrupt = 0
    var description: String { "ok \(ok), missing \(missing), wrong \(wrong), corrupt \(corrupt)" }
  }

  /// Reads `indices` (default: all) back and compares each block with what was written.
  func verify(_ client: StrataClient, indices: [Int]? = nil) async throws -> Check {
    let region = client.register(destination)
    let wanted = indices ?? Array(0..<count)
    var check = Check()
    for first in stride(from: 0, to: wanted.count, by: 200) {
      let batch = Array(wanted[first..<min(first + 200, wanted.count)])
      memset(destination.baseAddress!, 0xEE, destination.count)
      let items = try batch.map { n in
        StrataClient.GetItem(key: keys[n], destination: try region.slice(offset: offsets[n], length: sizes[n]))
      }
      let results = try await client.get(items)
      for (n, result) in zip(batch, results) {
        switch result {
        case .ok(let length):
          if length == sizes[n]
            && memcmp(source.baseAddress! + offsets[n], destination.baseAddress! + offsets[n], sizes[n]) == 0
          {
            check.ok += 1
          } else {
            check.wrong += 1
          }
        case .missing: check.missing += 1
        case .corrupt: check.corrupt += 1
        default: check.wrong += 1
        }
      }
    }
    return check
  }
}
