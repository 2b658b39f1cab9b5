// `strata bench`: drives a node (or, with --seeds, a cluster) with GET, PUT or LOOKUP of
// fixed-size blocks in batches over several connections and reports throughput and request
// latency percentiles.

import ArgumentParser
import Dispatch
import StrataAdmin
import StrataClient
import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

struct Bench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Measure GET, PUT or LOOKUP throughput and latency against a node or a cluster.",
    discussion: "With --json the last line is one JSON object: gbps, ops_per_s, p50_us, p99_us, p999_us.")

  @OptionGroup var options: NodeOptions

  enum Operation: String, ExpressibleByArgument, CaseIterable {
    case get
    case put
    case lookup
  }

  enum Transport: String, ExpressibleByArgument, CaseIterable {
    case tcp
    case shm
    case unix
  }

  enum Caller: String, ExpressibleByArgument, CaseIterable {
    case task
    case thread
  }

  @Option(help: "get, put or lookup (LOOKUP of --batch keys written first, all present).")
  var op: Operation = .get

  @Option(help: "Block size, like 2MiB.")
  var size: String = "2MiB"

  @Option(help: "Blocks per request.")
  var batch: Int = 16

  @Option(help: "Connections (one request in flight on each).")
  var connections: Int = 1

  @Option(help: "Seconds to run.")
  var seconds: Double = 5

  @Option(
    help: ArgumentHelp(
      "tcp: TCP only; shm: the same-host path with the blocks in the client's shared memory (one copy, by the node); unix: the same-host path with private buffers (payloads in the Unix socket's stream). shm and unix also time a single-thread memcpy of the same batches and print the ratio.",
      valueName: "tcp|shm|unix"))
  var transport: Transport = .tcp

  @Option(
    help: ArgumentHelp(
      "task: each connection's requests come from a Swift task (the async API); thread: from a plain thread of its own, blocked in each call, as a C or Python caller's (the C ABI's path).",
      valueName: "task|thread"))
  var caller: Caller = .task

  @Option(help: "The node's process id (a node on this machine): report its CPU seconds per GB moved.")
  var nodePid: Int32?

  @Flag(
    help: ArgumentHelp(
      "With --node-pid, GET and LOOKUP: after writing the working set, wait until the node is idle (under 20 ms of CPU in 0.5 s, 30 s at most) before timing, so the reads do not share the node with writing that working set behind to NVMe."
    ))
  var settle = false

  func run() async throws {
    do throws(StrataError) {
      guard batch >= 1, connections >= 1, seconds > 0 else {
        throw StrataError(.invalidArgument, "--batch and --connections must be at least 1, --seconds above 0")
      }
      guard !settle || nodePid != nil else {
        throw StrataError(.invalidArgument, "--settle needs --node-pid: it watches the node's CPU")
      }
      let blockBytes = Int(try ByteSize(parsing: size).bytes)
      guard blockBytes > 0 else { throw StrataError(.invalidArgument, "--size must be above zero") }
      let transport = self.transport
      let sharedBytes = transport == .shm ? blockBytes * batch * connections : 0
      let client = try options.client(connections: connections) { configuration in
        configuration.sameHost = transport != .tcp
        configuration.sharedMemoryBytes = sharedBytes
      }
      defer { client.close() }
      try await client.connect()
      if transport != .tcp && client.transportStats.sameHostConnections < connections {
        throw StrataError(
          .unavailable,
          "--transport \(transport): the same-host path is not in use (\(client.transportStats.sameHostDecision))")
      }
      var result = try await measure(client: client, blockBytes: blockBytes)
      if transport != .tcp && op != .lookup {
        result.memcpyGBps = memcpyRate(blockBytes: blockBytes, batch: batch, seconds: min(seconds, 2))
      }
      if options.json {
        print(result.json)
      } else {
        print(result.text)
      }
    } catch {
      throw report(error)
    }
  }

  struct Result {
    var bytes: Int
    var blocks: Int
    var seconds: Double
    var latenciesMicroseconds: [Double]
    var op: Operation
    var blockBytes: Int
    var batch: Int
    var connections: Int
    var transport = Transport.tcp
    var caller = Caller.task
    /// A single-thread memcpy of the same batches, same run (shm and unix only).
    var memcpyGBps: Double?
    /// CPU seconds per GB moved over the timed part of the run (the GET working set's preload not
    /// included): the node's (with --node-pid) and this process's own.
    var nodeCPUSecondsPerGB: Double?
    var clientCPUSecondsPerGB: Double?
    /// Seconds waited for the node to go idle after the working set was written (--settle).
    var settledSeconds: Double?

    func percentile(_ p: Double) -> Double {
      let sorted = latenciesMicroseconds.sorted()
      guard !sorted.isEmpty else { return 0 }
      return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }

    var gbps: Double { Double(bytes) / seconds / 1e9 }
    var opsPerSecond: Double { Double(blocks) / seconds }

    /// The result as one JSON line (scripts/bench-*.sh read it); a missing measure is null.
    var json: String {
      func round(_ value: Double, _ decimals: Int) -> Double {
        let scale = (0..<decimals).reduce(1.0) { value, _ in value * 10 }
        let number = (value * scale).rounded() / scale
        return number.isFinite ? number : 0
      }
      let line: [String: JSONValue] = [
        "op": .string(op.rawValue), "size": .int(blockBytes), "batch": .int(batch), "connections": .int(connections),
        "gbps": .double(round(gbps, 3)), "ops_per_s": .double(round(opsPerSecond, 1)),
        "p50_us": .double(round(percentile(0.5), 1)), "p99_us": .double(round(percentile(0.99), 1)),
        "p999_us": .double(round(percentile(0.999), 1)), "requests": .int(latenciesMicroseconds.count),
        "transport": .string(transport.rawValue), "caller": .string(caller.rawValue),
        "memcpy_gbps": memcpyGBps.map { .double(round($0, 3)) } ?? .null,
        "ratio_to_memcpy": memcpyGBps.map { .double(round(gbps / $0, 3)) } ?? .null,
        "node_cpu_s_per_gb": nodeCPUSecondsPerGB.map { .double(round($0, 4)) } ?? .null,
        "client_cpu_s_per_gb": clientCPUSecondsPerGB.map { .double(round($0, 4)) } ?? .null,
        "settled_s": settledSeconds.map { .double(round($0, 2)) } ?? .null,
      ]
      return JSONValue.object(line).encoded
    }

    var text: String {
      "\(op) \(ByteSize(bytes: UInt64(blockBytes))) × \(batch), \(connections) connection(s): "
        + "\(rounded(gbps, 2)) GB/s, \(rounded(opsPerSecond, 0)) blocks/s, request latency "
        + "p50 \(rounded(percentile(0.5), 0)) µs, p99 \(rounded(percentile(0.99), 0)) µs, "
        + "p999 \(rounded(percentile(0.999), 0)) µs (\(latenciesMicroseconds.count) requests), over \(transport), from a \(caller)"
        + (memcpyGBps.map { "; memcpy \(rounded($0, 2)) GB/s, ratio \(rounded(gbps / $0, 2))×" } ?? "")
        + (nodeCPUSecondsPerGB.map { "; node CPU \(rounded($0, 3)) s/GB" } ?? "")
        + (settledSeconds.map { "; the node went idle \(rounded($0, 1)) s after the working set was written" } ?? "")
        + (clientCPUSecondsPerGB.map { "; client CPU \(rounded($0, 3)) s/GB" } ?? "")
    }
  }

  private func measure(client: StrataClient, blockBytes: Int) async throws(StrataError) -> Result {
    let perWorker = blockBytes * batch
    // Over shm the blocks live in the client's shared memory, where the node reads and writes them.
    let shared = client.sharedMemory
    let owned =
      shared == nil ? UnsafeMutableRawBufferPointer.allocate(byteCount: perWorker * connections, alignment: 4096) : nil
    defer { owned?.deallocate() }
    let buffer = owned ?? UnsafeMutableRawBufferPointer(start: shared!.base, count: perWorker * connections)
    // Incompressible, non-zero content, touched once so no page fault lands in a measurement.
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    for index in stride(from: 0, to: buffer.count - 7, by: 8) {
      state ^= state << 13
      state ^= state >> 7
      state ^= state << 17
      buffer.storeBytes(of: state, toByteOffset: index, as: UInt64.self)
    }
    let region = shared ?? client.register(buffer)
    let runID = UInt64(truncatingIfNeeded: Int(now() * 1e9))
    @Sendable func key(_ worker: Int, _ n: Int) -> BlockKey {
      var seed: [UInt8] = []
      withUnsafeBytes(of: runID) { seed += $0 }
      withUnsafeBytes(of: UInt64(worker)) { seed += $0 }
      withUnsafeBytes(of: UInt64(n)) { seed += $0 }
      return SHA256.digest(seed)
    }
    // GET reads blocks written first: a working set of 4 batches per connection.
    // LOOKUP asks for one batch of keys, all written first.
    let workingSet = op == .lookup ? batch : 4 * batch
    if op == .get || op == .lookup {
      for worker in 0..<connections {
        for first in stride(from: 0, to: workingSet, by: batch) {
          let items = try (0..<batch).map { index throws(StrataError) in
            StrataClient.PutItem(
              key: key(worker, first + index),
              source: try region.slice(offset: worker * perWorker + index * blockBytes, length: blockBytes))
          }
          _ = try await client.put(items)
        }
      }
    }
    let isGet = op == .get
    let isLookup = op == .lookup
    let batch = self.batch
    let fromThread = caller == .thread
    var settledSeconds: Double?
    if settle, op != .put, let nodePid { settledSeconds = await waitUntilIdle(nodePid) }
    let nodeCPUBefore = nodePid.flatMap(processCPUSeconds)
    let clientCPUBefore = processCPUSeconds(getpid())
    let deadline = now() + seconds
    let start = now()
    // Progress over the run's time, with the byte rate so far (only on a terminal, and not with --json).
    let bar = ProgressBar(
      "bench \(op)", total: Int(seconds * 1000), unit: .bytes, enabled: !options.json && isatty(STDOUT_FILENO) == 1)
    let movedBytes = SharedCount()
    let ticker = Task {
      while now() < deadline && !Task.isCancelled {
        let elapsed = now() - start
        bar.update(
          done: Int(elapsed * 1000), rate: Double(movedBytes.value) / max(elapsed, 1e-3),
          secondsLeft: max(0, deadline - now()))
        try? await Task.sleep(nanoseconds: 100_000_000)
      }
    }
    defer {
      ticker.cancel()
      bar.finish()
    }
    let outcomes: [Swift.Result<(Int, [Double]), StrataError>] = await withTaskGroup(
      of: Swift.Result<(Int, [Double]), StrataError>.self
    ) { group in
      for worker in 0..<connections {
        // One connection's requests, in a row.
        let requests = { @Sendable () async -> Swift.Result<(Int, [Double]), StrataError> in
          var latencies: [Double] = []
          var blocks = 0
          var round = 0
          do throws(StrataError) {
            // Keys are derived (SHA-256) before each request's clock starts: that is the
            // benchmark's work, not the client's or the node's.
            let lookupKeys = isLookup ? (0..<batch).map { key(worker, $0) } : []
            while now() < deadline {
              let began: Double
              if isLookup {
                began = now()
                let found = try await client.lookup(lookupKeys)
                guard found.leadingRun == batch else {
                  throw StrataError(
                    .notFound,
                    "LOOKUP found a leading run of \(found.leadingRun) of the \(batch) benchmark keys written before it: "
                      + "the node let some go (\(batch) × \(ByteSize(bytes: UInt64(blockBytes))) each connection "
                      + "may not fit its tiers); try a smaller --size")
                }
              } else if isGet {
                let items = try (0..<batch).map { index throws(StrataError) in
                  StrataClient.GetItem(
                    key: key(worker, (round * batch + index) % workingSet),
                    destination: try region.slice(offset: worker * perWorker + index * blockBytes, length: blockBytes))
                }
                began = now()
                let results = try await client.get(items)
                guard results.allSatisfy({ $0 == .ok(length: blockBytes) }) else {
                  throw readBackFailure(results, blockBytes: blockBytes)
                }
              } else {
                let items = try (0..<batch).map { index throws(StrataError) in
                  StrataClient.PutItem(
                    key: key(worker, workingSet + round * batch + index),
                    source: try region.slice(offset: worker * perWorker + index * blockBytes, length: blockBytes))
                }
                began = now()
                _ = try await client.put(items)
              }
              latencies.append((now() - began) * 1e6)
              movedBytes.add(batch * blockBytes)
              blocks += batch
              round += 1
            }
            return .success((blocks, latencies))
          } catch {
            return .failure(error)
          }
        }
        group.addTask {
          guard fromThread else { return await requests() }
          return await onNewThread {
            do throws(StrataError) {
              return try waitForTask { () throws(StrataError) in await requests() }
            } catch {
              return .failure(error)
            }
          }
        }
      }
      var all: [Swift.Result<(Int, [Double]), StrataError>] = []
      for await outcome in group { all.append(outcome) }
      return all
    }
    let elapsed = now() - start
    var result = Result(
      bytes: 0, blocks: 0, seconds: elapsed, latenciesMicroseconds: [], op: op, blockBytes: blockBytes, batch: batch,
      connections: connections, transport: transport, caller: caller, settledSeconds: settledSeconds)
    for outcome in outcomes {
      let (blocks, latencies) = try outcome.get()
      result.blocks += blocks
      result.bytes += op == .lookup ? 0 : blocks * blockBytes
      result.latenciesMicroseconds += latencies
    }
    let gigabytes = Double(result.bytes) / 1e9
    if gigabytes > 0 {
      if let before = nodeCPUBefore, let after = nodePid.flatMap(processCPUSeconds) {
        result.nodeCPUSecondsPerGB = (after - before) / gigabytes
      }
      if let before = clientCPUBefore, let after = processCPUSeconds(getpid()) {
        result.clientCPUSecondsPerGB = (after - before) / gigabytes
      }
    }
    return result
  }
}

/// Why a GET of the benchmark's own blocks fell short, counted by outcome: a node that has dropped
/// blocks the bench wrote (too little room for the working set) says so instead of listing them.
func readBackFailure(_ results: [StrataClient.GetResult], blockBytes: Int) -> StrataError {
  var counts: [String: Int] = [:]
  for result in results where result != .ok(length: blockBytes) {
    let name: String
    switch result {
    case .ok(let length): name = "\(length) bytes instead of \(blockBytes)"
    case .missing: name = "missing"
    case .outOfRange: name = "out of range"
    case .destinationTooSmall: name = "larger than written"
    case .corrupt: name = "corrupt"
    }
    counts[name, default: 0] += 1
  }
  let listed = counts.keys.sorted().map { "\(counts[$0]!) \($0)" }.joined(separator: ", ")
  let hint =
    counts["missing"] != nil
    ? ": the node no longer holds blocks this bench wrote (give it more --ram/--nvme, or start it afresh)" : ""
  return StrataError(
    .internalError,
    "\(results.count - results.count { $0 == .ok(length: blockBytes) }) of \(results.count) "
      + "benchmark blocks were not read back whole (\(listed))\(hint)")
}

/// Single-thread memcpy of `batch` blocks per round, from a working set of four batches (as the
/// GET benchmark reads) into one batch of destinations: the same-host path's ceiling.
func memcpyRate(blockBytes: Int, batch: Int, seconds: Double) -> Double {
  let source = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 * batch * blockBytes, alignment: 4096)
  let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: batch * blockBytes, alignment: 4096)
  defer {
    source.deallocate()
    destination.deallocate()
  }
  memset(source.baseAddress!, 0x5A, source.count)
  memset(destination.baseAddress!, 0, destination.count)
  var copied = 0
  var round = 0
  let start = now()
  let end = start + seconds
  repeat {
    for index in 0..<batch {
      memcpy(
        destination.baseAddress! + index * blockBytes,
        source.baseAddress! + ((round * batch + index) % (4 * batch)) * blockBytes, blockBytes)
    }
    copied += batch * blockBytes
    round += 1
  } while now() < end
  return Double(copied) / (now() - start) / 1e9
}

/// Waits until process `pid` uses under 20 ms of CPU in half a second, 30 s at most (or until its
/// CPU time cannot be read); returns the seconds waited.
func waitUntilIdle(_ pid: Int32) async -> Double {
  let start = now()
  while now() - start < 30, let before = processCPUSeconds(pid) {
    try? await Task.sleep(nanoseconds: 500_000_000)
    guard let after = processCPUSeconds(pid), after - before >= 0.02 else { break }
  }
  return now() - start
}

/// User plus system CPU seconds of process `pid` so far (/proc/PID/stat), nil when unreadable.
func processCPUSeconds(_ pid: Int32) -> Double? {
  guard let file = fopen("/proc/\(pid)/stat", "r") else { return nil }
  defer { fclose(file) }
  var line = [CChar](repeating: 0, count: 4096)
  guard fgets(&line, Int32(line.count), file) != nil else { return nil }
  let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  // Fields after the command name (which may hold spaces) start after its closing parenthesis;
  // utime and stime are fields 14 and 15, the 12th and 13th after it.
  guard let close = text.lastIndex(of: ")") else { return nil }
  let fields = text[text.index(after: close)...].split(separator: " ")
  guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
  return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func now() -> Double {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

func rounded(_ value: Double, _ decimals: Int) -> String {
  var scale = 1.0
  for _ in 0..<decimals { scale *= 10 }
  let number = (value * scale).rounded() / scale
  return decimals == 0 ? "\(Int(number))" : "\(number)"
}
