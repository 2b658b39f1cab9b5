// strata-soak-hostile: legitimate clients with byte checks against one node while every attack of
// docs/security.md runs at once (scripts/soak-hostile.sh starts the node and runs this). Prints one
// line per interval (legit success and latency, node RSS and threads, attack counters) and a JSON
// summary; exits non-zero when a legitimate request failed, a byte differed or a violation was seen.

import ArgumentParser
import Foundation
import StrataClient
import StrataCore
import StrataTCP
import StrataWire
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

@main
struct HostileSoak: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "strata-soak-hostile",
    abstract: "Legitimate clients with byte checks against a node under every attack at once.")

  @Option(help: "The node's data-plane HOST:PORT.") var node: String
  @Option(help: "The node's admin HOST:PORT.") var admin: String
  @Option(help: "The node's process id (RSS and threads from /proc).") var pid: Int32
  @Option(help: "The legitimate tenant's token.") var tokenA: String
  @Option(help: "The attacking tenant's token.") var tokenB: String
  @Option(help: "The legitimate tenant's namespace (what a peer claim asks for).") var namespaceA = "tenant-a"
  @Option(help: "How long to run, in seconds.") var seconds: Double = 600
  @Option(help: "Seconds between report lines.") var interval: Double = 30
  @Option(help: "Legitimate clients (each one connection, PUT + leased LOOKUP + GET rounds).") var legitClients = 4
  @Option(help: "Milliseconds each legitimate client pauses between rounds.") var legitPauseMs: UInt64 = 10
  @Option(help: "Idle flood connections.") var idle = 1000
  @Option(help: "Half-HELLO flood connections.") var halfHello = 1000
  @Option(help: "The node's limits.request_timeout, in seconds.") var requestTimeout: Double = 2
  @Option(help: "The node's limits.min_transfer_rate, in bytes per second.") var minTransferRate: Double = 4_194_304
  @Option(help: "The node's limits.lease_duration, in seconds.") var leaseDuration: Double = 5
  @Option(help: "Write the summary as JSON to this file.") var summary: String?
  @Option(help: "Attacks to run: all, none, or a comma-separated list of \(attackNames.joined(separator: ", ")).")
  var attacks = "all"
  @Option(
    help: "Legitimate clients keep one block in this many (the others are deleted after their check; 0 keeps none).")
  var keepEvery = 4

  func run() async throws {
    let nodeAddress = try HostPort(parsing: node)
    let adminAddress = try HostPort(parsing: admin)
    legitToken.withLock { $0 = tokenA }
    let selected =
      attacks == "all" ? Set(attackNames) : attacks == "none" ? [] : Set(attacks.split(separator: ",").map(String.init))
    guard selected.isSubset(of: attackNames) else {
      throw ValidationError("unknown attacks: \(selected.subtracting(attackNames).sorted()); known: \(attackNames)")
    }
    let start = Date()
    let end = start.addingTimeInterval(seconds)
    let record = LegitRecord()
    let probes = ProbeStats()
    let (pid, interval, pause, keep) = (self.pid, self.interval, self.legitPauseMs, self.keepEvery)
    let timeline = Timeline(baseline: footprint(pid))
    let baseline = timeline.footprints.withLock { $0[0] }
    say(
      "node pid \(pid): RSS \(mib(baseline.residentBytes)) MiB, \(baseline.threads) threads, \(baseline.descriptors) fds before the attacks"
    )

    var threads: [Thread] = []
    let settings = AttackSettings(
      node: nodeAddress, admin: adminAddress, attackerToken: tokenB, victimNamespace: namespaceA,
      idleConnections: idle, halfHelloConnections: halfHello, requestTimeoutSeconds: requestTimeout,
      minTransferBytesPerSecond: minTransferRate, leaseHoldSeconds: leaseDuration, selected: selected,
      end: end)
    let attacks = startAttacks(settings, threads: &threads)
    let probe = Thread { probeAdmin(adminAddress, probes, end: end) }
    probe.name = "soak-admin-probe"
    threads.append(probe)
    // The flood first, so the legitimate clients connect after it is in place.
    if selected.contains("flood") {
      threads[0].start()
      try await Task.sleep(for: .seconds(3))
    }
    for thread in threads where !thread.isExecuting && !thread.isFinished { thread.start() }

    await withTaskGroup(of: Void.self) { group in
      for index in 0..<legitClients {
        group.addTask {
          await legitClient(
            index: index, address: nodeAddress, pauseMilliseconds: pause, keepEvery: keep, end: end, record: record)
        }
      }
      group.addTask {
        var next = start.addingTimeInterval(interval)
        var latencyMark = 0
        while Date() < end.addingTimeInterval(1) {
          while Date() < min(next, end), nodeAlive(pid) { try? await Task.sleep(for: .milliseconds(500)) }
          if !nodeAlive(pid) {
            say("the node (pid \(pid)) is gone: stopping the soak")
            soakAborted.store(true, ordering: .relaxed)
          }
          let now = footprint(pid)
          timeline.footprints.withLock { $0.append(now) }
          let stat = await nodeStat(nodeAddress, record: record)
          let sample = record.sample(since: &latencyMark)
          let line = reportLine(
            elapsed: Date().timeIntervalSince(start), sample: sample, footprint: now, attacks: attacks, probes: probes,
            stat: stat)
          say(line.text)
          timeline.samples.withLock { $0.append(line.json) }
          if !soakRunning(until: end) { break }
          next = next.addingTimeInterval(interval)
        }
      }
    }
    for thread in threads { while !thread.isFinished { try await Task.sleep(for: .milliseconds(100)) } }

    let finalStat = await nodeStat(nodeAddress, record: record)
    let seen = timeline.footprints.withLock { $0 }
    let all = record.allLatencies()
    let violations = attacks.reduce(0) { $0 + $1.violations.load(ordering: .relaxed) }
    let ops = record.ops.load(ordering: .relaxed)
    let failures = record.failures.load(ordering: .relaxed)
    func texts(_ items: [String]) -> JSONValue { .array(items.map(JSONValue.string)) }
    let result: [String: JSONValue] = [
      "seconds": .double(seconds), "legit_clients": .int(legitClients), "attacks_run": texts(selected.sorted()),
      "keep_every": .int(keepEvery), "node_stat_at_end": .object(finalStat.mapValues(JSONValue.int)),
      "legit": .object([
        "ops": .int(ops), "failures": .int(failures),
        "byte_mismatches": .int(record.mismatches.load(ordering: .relaxed)),
        "success_percent": .double(ops == 0 ? 0 : 100 * Double(ops - failures) / Double(ops)),
        "rounds": .int(record.rounds.load(ordering: .relaxed)),
        "bytes_checked": .int(record.bytesChecked.load(ordering: .relaxed)),
        "p50_ms": .double(percentile(all, 0.50)), "p99_ms": .double(percentile(all, 0.99)),
        "max_ms": .double(all.last ?? 0), "failure_notes": texts(record.notes.withLock { $0 }),
      ]),
      "node": .object([
        "rss_mib_before": .int(mib(baseline.residentBytes)),
        "rss_mib_max": .int(mib(seen.map(\.residentBytes).max() ?? 0)),
        "rss_mib_end": .int(mib(seen.last?.residentBytes ?? 0)), "threads_before": .int(baseline.threads),
        "threads_max": .int(seen.map(\.threads).max() ?? 0), "threads_end": .int(seen.last?.threads ?? 0),
        "fds_before": .int(baseline.descriptors), "fds_max": .int(seen.map(\.descriptors).max() ?? 0),
        "alive_at_end": .bool(nodeAlive(pid)),
      ]),
      "admin_probes": probes.json,
      "attacks": .object(Dictionary(uniqueKeysWithValues: attacks.map { ($0.name, $0.json) })),
      "violations": .int(violations),
      "samples": .array(timeline.samples.withLock { $0 }.map { .object($0.mapValues(JSONValue.double)) }),
    ]
    let text = JSONValue.object(result).pretty
    say("summary:\n" + text)
    if let summary { try text.write(toFile: summary, atomically: true, encoding: .utf8) }
    let alive = nodeAlive(pid)
    if failures > 0 || violations > 0 || ops == 0 || !alive {
      say("FAILED: \(failures) legitimate failures, \(violations) violations, node alive: \(alive)")
      throw ExitCode(1)
    }
  }
}

/// What the legitimate clients did: counts, failures and every request's latency.
final class LegitRecord: Sendable {
  let ops = Atomic<Int>(0)
  let failures = Atomic<Int>(0)
  let mismatches = Atomic<Int>(0)
  let rounds = Atomic<Int>(0)
  let bytesChecked = Atomic<Int>(0)
  let latencies = Mutex<[Double]>([])
  let notes = Mutex<[String]>([])

  func success(milliseconds: Double) {
    ops.add(1, ordering: .relaxed)
    latencies.withLock { $0.append(milliseconds) }
  }

  func failure(_ text: String) {
    ops.add(1, ordering: .relaxed)
    failures.add(1, ordering: .relaxed)
    let stamped = "\(ISO8601DateFormatter().string(from: Date())) \(text)"
    notes.withLock { if $0.count < 20 { $0.append(stamped) } }
    FileHandle.standardError.write(Data(("legit failure: " + stamped + "\n").utf8))
  }

  struct Sample {
    var ops: Int
    var failures: Int
    var p50: Double
    var p99: Double
  }

  /// The totals, and percentiles of the latencies recorded since `mark` (moved to now).
  func sample(since mark: inout Int) -> Sample {
    let recent = latencies.withLock { (all: inout [Double]) -> [Double] in
      defer { mark = all.count }
      return Array(all[min(mark, all.count)...])
    }.sorted()
    return Sample(
      ops: ops.load(ordering: .relaxed), failures: failures.load(ordering: .relaxed), p50: percentile(recent, 0.5),
      p99: percentile(recent, 0.99))
  }

  func allLatencies() -> [Double] { latencies.withLock { $0 }.sorted() }
}

/// Set when the node died: every loop of the soak ends.
let soakAborted = Atomic<Bool>(false)

func soakRunning(until end: Date) -> Bool { Date() < end && !soakAborted.load(ordering: .relaxed) }

/// Whether the node process still runs (and is not a zombie).
func nodeAlive(_ pid: Int32) -> Bool {
  guard kill(pid, 0) == 0 else { return false }
  let status = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
  return !status.contains(") Z ")
}

/// A line on standard output, written at once (the soak's log is read while it runs).
func say(_ text: String) { FileHandle.standardOutput.write(Data((text + "\n").utf8)) }

func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
  sorted.isEmpty ? 0 : sorted[Int(Double(sorted.count - 1) * fraction)]
}

/// One tenant-A client: rounds of PUT, leased LOOKUP and GET naming the lease of a block of 4 KiB to
/// 1 MiB, each GET compared byte for byte, then (unless kept) DELETE; a fresh connection
/// every 200 rounds.
func legitClient(
  index: Int, address: HostPort, pauseMilliseconds: UInt64, keepEvery: Int, end: Date, record: LegitRecord
) async {
  let blockBytesMax = 1 << 20
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * blockBytesMax, alignment: 4096)
  defer { buffer.deallocate() }
  var generator = SystemRandomNumberGenerator()
  var round: UInt64 = 0
  while soakRunning(until: end) {
    let client = legitTenantClient(address)
    defer { client.close() }
    let region = client.register(buffer)
    for _ in 0..<200 where soakRunning(until: end) {
      round += 1
      record.rounds.add(1, ordering: .relaxed)
      // Log-uniform sizes from 4 KiB to 1 MiB, not only multiples of 4 KiB.
      let size = min(blockBytesMax, Int(4096 * pow(256, Double.random(in: 0...1, using: &generator))))
      let seed = UInt64(index) << 40 | round
      let source = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size])
      let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[blockBytesMax..<(blockBytesMax + size)])
      fill(source, seed: seed)
      memset(destination.baseAddress!, 0, size)
      let key = blockKey(0xA, seed)
      do {
        var began = DispatchTime.now().uptimeNanoseconds
        let put = try await client.put([.init(key: key, source: region.slice(length: size))])
        guard put == [.stored] else {
          record.failure("client \(index) round \(round): PUT of \(size) bytes answered \(put)")
          continue
        }
        record.success(milliseconds: elapsedMilliseconds(since: &began))
        let lookup = try await client.lookup([key], leaseMilliseconds: 2000)
        guard lookup.leadingRun == 1, lookup.leaseID != 0 else {
          record.failure("client \(index) round \(round): leased LOOKUP answered \(lookup)")
          continue
        }
        record.success(milliseconds: elapsedMilliseconds(since: &began))
        let got = try await client.get(
          [.init(key: key, destination: region.slice(offset: blockBytesMax, length: size))], leaseID: lookup.leaseID)
        guard got == [.ok(length: size)] else {
          record.failure("client \(index) round \(round): GET of \(size) bytes answered \(got)")
          continue
        }
        let milliseconds = elapsedMilliseconds(since: &began)
        guard memcmp(source.baseAddress!, destination.baseAddress!, size) == 0 else {
          record.mismatches.add(1, ordering: .relaxed)
          record.failure("client \(index) round \(round): GET of \(size) bytes returned different bytes")
          continue
        }
        record.success(milliseconds: milliseconds)
        record.bytesChecked.add(size, ordering: .relaxed)
        // Most blocks are deleted again (by default three in four), so the node keeps a part of what
        // is written: the RAM tier still fills and evicts, at a pace its NVMe tier keeps up with.
        if keepEvery == 0 || round % UInt64(keepEvery) != 0 {
          let deleted = try await client.delete([key])
          guard deleted == [true] else {
            record.failure("client \(index) round \(round): DELETE answered \(deleted)")
            continue
          }
          record.success(milliseconds: elapsedMilliseconds(since: &began))
        }
      } catch {
        record.failure("client \(index) round \(round) (\(size) bytes): \(error)")
        try? await Task.sleep(for: .milliseconds(100))  // a failing client backs off
      }
      try? await Task.sleep(for: .milliseconds(Int(pauseMilliseconds)))  // a client's pace
    }
  }
}

func legitTenantClient(_ address: HostPort) -> StrataClient {
  var configuration = StrataClient.Configuration(node: address)
  configuration.token = legitToken.withLock { $0 }
  configuration.connections = 1
  configuration.timeoutMilliseconds = 10_000
  configuration.retries = 0
  configuration.rdma = false
  return StrataClient(configuration)
}

/// Set once at start (the token option), read by every legitimate client.
let legitToken = Mutex<String>("")

func elapsedMilliseconds(since began: inout UInt64) -> Double {
  let now = DispatchTime.now().uptimeNanoseconds
  defer { began = now }
  return Double(now - began) / 1e6
}

/// The node's STAT counters through a fresh legitimate connection (itself a legitimate request).
func nodeStat(_ address: HostPort, record: LegitRecord) async -> [String: Int] {
  let client = legitTenantClient(address)
  defer { client.close() }
  do {
    let text = try await client.stat()
    let object = try JSONValue.parse(text).objectValue ?? [:]
    record.ops.add(1, ordering: .relaxed)
    return object.compactMapValues { $0.intValue }
  } catch {
    record.failure("STAT: \(error)")
    return [:]
  }
}

/// The node's footprint at each sample and the report lines' numbers, shared with the sampler.
final class Timeline: Sendable {
  let footprints: Mutex<[Footprint]>
  let samples = Mutex<[[String: Double]]>([])
  init(baseline: Footprint) { footprints = Mutex([baseline]) }
}

struct Footprint {
  var residentBytes: Int
  var threads: Int
  var descriptors: Int
}

/// The node's resident memory, threads and open descriptors from /proc.
func footprint(_ pid: Int32) -> Footprint {
  let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
  var result = Footprint(residentBytes: 0, threads: 0, descriptors: 0)
  for line in status.split(separator: "\n") {
    let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
    if line.hasPrefix("VmRSS:"), fields.count >= 2 { result.residentBytes = (Int(fields[1]) ?? 0) * 1024 }
    if line.hasPrefix("Threads:"), fields.count >= 2 { result.threads = Int(fields[1]) ?? 0 }
  }
  result.descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
  return result
}

func mib(_ bytes: Int) -> Int { bytes >> 20 }

/// /health and /ready once a second each, with a 2 s limit per request.
final class ProbeStats: Sendable {
  let ok = Atomic<Int>(0)
  let failed = Atomic<Int>(0)
  let latencies = Mutex<[Double]>([])
  let notes = Mutex<[String]>([])

  var json: JSONValue {
    let sorted = latencies.withLock { $0 }.sorted()
    return .object([
      "ok": .int(ok.load(ordering: .relaxed)), "failed": .int(failed.load(ordering: .relaxed)),
      "p99_ms": .double(percentile(sorted, 0.99)), "max_ms": .double(sorted.last ?? 0),
      "notes": .array(notes.withLock { $0 }.map(JSONValue.string)),
    ])
  }
}

func probeAdmin(_ admin: HostPort, _ stats: ProbeStats, end: Date) {
  var round = 0
  while soakRunning(until: end) {
    round += 1
    let path = round % 2 == 0 ? "/health" : "/ready"
    let began = Date()
    let status = httpStatus(admin, path: path)
    let milliseconds = Date().timeIntervalSince(began) * 1000
    if status == 200 {
      stats.ok.add(1, ordering: .relaxed)
      stats.latencies.withLock { $0.append(milliseconds) }
    } else {
      stats.failed.add(1, ordering: .relaxed)
      let text =
        "\(ISO8601DateFormatter().string(from: began)) \(path): \(status.map { "HTTP \($0)" } ?? "no answer in 2 s")"
      stats.notes.withLock { if $0.count < 10 { $0.append(text) } }
    }
    let pause = 0.5 - Date().timeIntervalSince(began)
    if pause > 0 { Thread.sleep(forTimeInterval: pause) }  // the probe's period
  }
}

/// The status code of one GET, or nil when none came within 2 s.
func httpStatus(_ address: HostPort, path: String) -> Int? {
  guard let socket = try? TCPSocket.connect(to: address, timeoutMilliseconds: 2_000, bufferBytes: 16 << 10) else {
    return nil
  }
  let request = "GET \(path) HTTP/1.1\r\nHost: \(address.host)\r\nConnection: close\r\n\r\n"
  guard (try? socket.writeAll(Array(request.utf8), deadline: .after(milliseconds: 2_000))) != nil else { return nil }
  var head = [UInt8](repeating: 0, count: 12)
  guard (try? head.withUnsafeMutableBytes { try socket.readExactly($0, deadline: .after(milliseconds: 2_000)) }) != nil
  else { return nil }
  let line = String(decoding: head, as: UTF8.self)
  guard line.hasPrefix("HTTP/1.") else { return nil }
  return Int(line.dropFirst(9).prefix(3))
}

/// One report line and its JSON sample.
func reportLine(
  elapsed: Double, sample: LegitRecord.Sample, footprint: Footprint, attacks: [AttackStats], probes: ProbeStats,
  stat: [String: Int]
) -> (text: String, json: [String: Double]) {
  let success = sample.ops == 0 ? 0 : 100 * Double(sample.ops - sample.failures) / Double(sample.ops)
  let dropped = attacks.reduce(0) { $0 + $1.dropped.load(ordering: .relaxed) }
  let refused = attacks.reduce(0) { $0 + $1.refused.load(ordering: .relaxed) }
  let violations = attacks.reduce(0) { $0 + $1.violations.load(ordering: .relaxed) }
  let probeOK = probes.ok.load(ordering: .relaxed)
  let probeFailed = probes.failed.load(ordering: .relaxed)
  let counters = [
    "handshakes_pending", "handshakes_timed_out", "handshakes_evicted", "idle_closed", "deadlines_missed",
    "connections_open", "connections_refused", "leases_active", "transfer_pins", "malformed_frames",
  ]
  let text = String(
    format:
      "%6.0fs legit %ld ops %.3f%% ok p50 %.2f ms p99 %.2f ms | node RSS %ld MiB, %ld threads, %ld fds | attacks: %ld dropped by node, %ld refusals, %ld violations | probes %ld ok %ld failed | node: pending %ld, timed out %ld, deadlines %ld, refused %ld",
    elapsed, sample.ops, success, sample.p50, sample.p99, mib(footprint.residentBytes), footprint.threads,
    footprint.descriptors, dropped, refused, violations, probeOK, probeFailed, stat["handshakes_pending"] ?? -1,
    stat["handshakes_timed_out"] ?? -1, stat["deadlines_missed"] ?? -1, stat["connections_refused"] ?? -1)
  var json: [String: Double] = [
    "elapsed_s": elapsed.rounded(), "legit_ops": Double(sample.ops), "legit_failures": Double(sample.failures),
    "legit_success_percent": success, "legit_p50_ms": sample.p50, "legit_p99_ms": sample.p99,
    "rss_mib": Double(mib(footprint.residentBytes)), "threads": Double(footprint.threads),
    "fds": Double(footprint.descriptors), "attack_dropped": Double(dropped), "attack_refusals": Double(refused),
    "violations": Double(violations), "probes_ok": Double(probeOK), "probes_failed": Double(probeFailed),
  ]
  for name in counters { json["node_" + name] = Double(stat[name] ?? -1) }
  return (text, json)
}
