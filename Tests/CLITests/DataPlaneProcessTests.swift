// The data plane against a real `strata serve` process on loopback: thousands of blocks of
// mixed sizes through the Swift client, byte-compared; 100 kinds of malformed frames sent while
// a well-behaved client streams, which must see no error; graceful stop on SIGTERM.

import Foundation
import StrataClient
import StrataCore
import StrataTCP
import StrataTestKit
import StrataWire
import Testing

/// A node process on a free loopback port, stopped with SIGTERM at the end of the test.
final class NodeProcess: @unchecked Sendable {
  // @unchecked: every stored property is a `let` set in `init`; `process` (Foundation's Process,
  // not declared Sendable) is only asked to signal, wait and report its status afterwards, which
  // it allows from any thread.
  let process = Process()
  let address: HostPort
  let directory: String
  /// Files of the test's own (a configuration, a log) that go with the data folder.
  let files: [String]
  /// What the node printed up to its "listening" line.
  let banner: String

  private init(
    ram: String = "1GiB", nvme: String = "1GiB", directory: String? = nil, listen: String = "127.0.0.1:0",
    log: String? = nil, extra: [String] = [], files: [String] = []
  ) throws {
    self.directory =
      directory
      ?? FileManager.default.temporaryDirectory.appendingPathComponent("strata-node-\(UUID().uuidString)").path
    self.files = files
    process.executableURL = URL(fileURLWithPath: strataExecutable)
    process.arguments =
      [
        "serve", "--data-dir", self.directory, "--listen", listen, "--ram", ram, "--nvme", nvme,
        "--ram-unlocked", "--admin", "127.0.0.1:0",
      ] + extra
    let out = Pipe()
    process.standardOutput = out
    // Standard error goes to `log`, or to a file beside the data folder that is read when the
    // node does not start (why it did not is there).
    let errorLog = log ?? self.directory + ".stderr"
    _ = FileManager.default.createFile(atPath: errorLog, contents: nil)
    process.standardError = FileHandle(forWritingAtPath: errorLog) ?? FileHandle.nullDevice
    defer { if log == nil { try? FileManager.default.removeItem(atPath: errorLog) } }
    try StrataTestKit.launch(process)
    // The node prints "… listening on HOST:PORT" once it accepts connections.
    var text = ""
    var found: HostPort?
    let handle = out.fileHandleForReading
    while found == nil {
      let data = handle.availableData
      if data.isEmpty { break }
      text += String(decoding: data, as: UTF8.self)
      for line in text.split(separator: "\n") where line.contains(" listening on ") {
        found = try HostPort(parsing: String(line.split(separator: " ").last!))
      }
    }
    guard let found else {
      process.terminate()
      process.waitUntilExit()
      let errors = (try? String(contentsOfFile: errorLog, encoding: .utf8)) ?? ""
      throw StrataError(
        .unavailable,
        "the node did not start (exit \(process.terminationStatus)): \(text)\nstandard error:\n\(errors.suffix(2000))")
    }
    address = found
    banner = text
  }

  /// Starts a node as `init` does, but waits for its "listening" line on a thread of its own: not
  /// on one of the cooperative pool, which the process tests together would otherwise hold for
  /// minutes (blocked reading the nodes' output) while every other test's tasks wait. `files`
  /// (a configuration, a log the test made) are removed with the data folder.
  static func launch(
    ram: String = "1GiB", nvme: String = "1GiB", directory: String? = nil, listen: String = "127.0.0.1:0",
    log: String? = nil, extra: [String] = [], files: [String] = []
  ) async throws -> NodeProcess {
    try await onNewThread {
      try NodeProcess(
        ram: ram, nvme: nvme, directory: directory, listen: listen, log: log, extra: extra, files: files)
    }
  }

  /// The admin API's address (http or https), from the line the node printed when it started.
  var admin: HostPort {
    get throws {
      let prefix = "strata admin API at "
      guard let line = banner.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }),
        let scheme = line.range(of: "://")
      else { throw StrataError(.unavailable, "the node printed no admin address: \(banner)") }
      return try HostPort(parsing: String(line[scheme.upperBound...].prefix { $0 != " " }))
    }
  }

  /// SIGTERM; returns the exit status. The data folder (and `files`) are removed unless `keepData`.
  func stop(keepData: Bool = false) -> Int32 {
    kill(process.processIdentifier, SIGTERM)
    process.waitUntilExit()
    if !keepData {
      for path in [directory] + files { try? FileManager.default.removeItem(atPath: path) }
    }
    return process.terminationStatus
  }

  /// SIGKILL (a crash): nothing is flushed; the data folder stays for a restart.
  func killHard() {
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
  }

  /// Waits for the process to exit by itself (a drained node) and returns its status.
  func waitForExit() -> Int32 {
    process.waitUntilExit()
    return process.terminationStatus
  }

  /// A client of the node; on its host it moves blocks over the same-host path unless `sameHost`
  /// is false.
  func client(connections: Int = 2, sameHost: Bool = true) -> StrataClient {
    NodeProcess.client(address, connections: connections, sameHost: sameHost)
  }

  static func client(_ address: HostPort, connections: Int, sameHost: Bool = true) -> StrataClient {
    var configuration = StrataClient.Configuration(node: address)
    configuration.connections = connections
    configuration.sameHost = sameHost
    configuration.timeoutMilliseconds = 20_000
    return StrataClient(configuration)
  }
}

func blockKey(_ n: Int, _ run: Int) -> BlockKey {
  var seed: [UInt8] = []
  withUnsafeBytes(of: UInt64(n)) { seed += $0 }
  withUnsafeBytes(of: UInt64(run)) { seed += $0 }
  return SHA256.digest(seed)
}

func fill(_ buffer: UnsafeMutableRawBufferPointer, seed: Int) {
  var state = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 | 1
  for index in 0..<buffer.count {
    state ^= state << 13
    state ^= state >> 7
    state ^= state << 17
    buffer[index] = UInt8(truncatingIfNeeded: state)
  }
}

@Suite(.serialized) struct DataPlaneProcessTests {
  /// `strata bench` against a real node: a GET run with `--settle` waits for the node to go idle
  /// after writing its working set, says how long, and moves bytes; `--settle` without the node's
  /// process id, or a transport not offered, is refused before anything runs.
  @Test func benchTimesAGetOnceTheNodeIsIdle() async throws {
    let node = try await NodeProcess.launch(ram: "256MiB", nvme: "512MiB")
    defer { _ = node.stop() }
    let common = ["bench", "--node", node.address.description, "--op", "get", "--size", "256KiB", "--batch", "4"]
    let run = try await strata(
      common + ["--seconds", "0.5", "--node-pid", "\(node.process.processIdentifier)", "--settle", "--json"])
    #expect(run.status == 0, "\(run.stderr)")
    let result = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
    let settled = try #require(result?["settled_s"] as? Double, "\(run.stdout)")
    #expect(settled >= 0.5 && settled < 30, "one idle half-second at least, the 30 s bound at most")
    #expect((result?["gbps"] as? Double ?? 0) > 0 && result?["node_cpu_s_per_gb"] is Double)
    let refused = try await strata(common + ["--seconds", "0.5", "--settle"])
    #expect(refused.status != 0 && refused.stderr.contains("--settle needs --node-pid"), "\(refused.stderr)")
    // A choice not offered is bad usage, and the refusal lists the choices.
    let unknown = try await strata(["bench", "--node", node.address.description, "--transport", "rdma"])
    #expect(unknown.status == 64 && unknown.stderr.contains("one of 'tcp', 'shm' or 'unix'"), "\(unknown.stderr)")
  }

  /// 2,000 blocks from 1 byte to 1 MiB, written in batches of 50 and read back in other batches.
  /// A node closes a connection idle past `limits.idle_timeout`; the client's next call on it
  /// connects again instead of failing. No retries here to hide a failed call: without the check
  /// it fails ("closed the connection", or a reset over the same-host socket), and a peer's write
  /// quorum copy failed the same way after two minutes without writes.
  @Test(arguments: [false, true])
  func aConnectionTheNodeClosedWhileIdleIsReplacedNotFailed(sameHost: Bool) async throws {
    let config = try temporaryFile("idle-\(sameHost).yaml", "limits:\n  idle_timeout: 100ms\n")
    let node = try await NodeProcess.launch(ram: "64MiB", nvme: "128MiB", extra: ["--config", config])
    var configuration = StrataClient.Configuration(node: node.address)
    configuration.connections = 1
    configuration.retries = 0
    configuration.sameHost = sameHost
    let client = StrataClient(configuration)
    let observer = node.client(connections: 1)
    let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 4096)
    defer {
      block.deallocate()
      client.close()
      observer.close()
      _ = node.stop()
    }
    fill(block, seed: 5)
    let region = client.register(block)
    let first = try await client.put([.init(key: blockKey(1, 77), source: try region.slice(length: 4096))])
    #expect(first == [.stored])
    #expect((client.transportStats.sameHostConnections == 1) == sameHost)
    // The node closes the client's connection once it has been idle 100 ms (the observer's own
    // connection, asking every 20 ms, never is).
    let closed = try await eventually(within: 30) {
      let stat = (try? await observer.stat()) ?? ""
      return !stat.contains("\"idle_closed\":0")
    }
    #expect(closed, "the node did not close the idle connection")
    // (The first call may have replaced one already: it learns the node's limits on the
    // connection before it sends, and on a loaded machine more than 100 ms can pass in between.)
    let replacedBefore = client.transportStats.idleConnectionsReplaced
    let second = try await client.put([
      .init(key: blockKey(2, 77), source: try region.slice(offset: 4096, length: 4096))
    ])
    #expect(second == [.stored])
    #expect(client.transportStats.idleConnectionsReplaced == replacedBefore + 1)
  }

  @Test func thousandsOfMixedBlocksRoundTripByteForByte() async throws {
    let node = try await NodeProcess.launch()
    let client = node.client()
    let count = 2000
    let sizes = (0..<count).map { n in [1, 100, 4096, 10_000, 65_536, 300_000, 1 << 20][n % 7] + n % 13 }
    let total = sizes.reduce(0, +)
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 4096)
    let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 4096)
    defer {
      source.deallocate()
      destination.deallocate()
    }
    fill(source, seed: 11)
    memset(destination.baseAddress!, 0, total)
    let sourceRegion = client.register(source)
    let destinationRegion = client.register(destination)
    var offsets: [Int] = []
    var offset = 0
    for size in sizes {
      offsets.append(offset)
      offset += size
    }
    for first in stride(from: 0, to: count, by: 50) {
      let items = try (first..<min(first + 50, count)).map { n in
        StrataClient.PutItem(key: blockKey(n, 1), source: try sourceRegion.slice(offset: offsets[n], length: sizes[n]))
      }
      #expect(try await client.put(items).allSatisfy { $0 == .stored })
    }
    for first in stride(from: 0, to: count, by: 37) {
      let items = try (first..<min(first + 37, count)).map { n in
        StrataClient.GetItem(
          key: blockKey(n, 1), destination: try destinationRegion.slice(offset: offsets[n], length: sizes[n]))
      }
      let results = try await client.get(items)
      #expect(results == items.map { .ok(length: $0.destination.length) })
    }
    #expect(memcmp(source.baseAddress!, destination.baseAddress!, total) == 0, "a byte differs")
    let lookup = try await client.lookup((0..<count).map { blockKey($0, 1) } + [blockKey(0, 2)])
    #expect(lookup.leadingRun == count)
    client.close()
    #expect(node.stop() == 0, "the node did not exit 0 on SIGTERM")
  }

  @Test func malformedFramesCloseOnlyTheirConnection() async throws {
    let node = try await NodeProcess.launch()
    let cases = MalformedFrames.all()
    #expect(cases.count >= 100)
    // A well-behaved client streams puts and gets the whole time.
    let address = node.address
    let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
    let streamer = Task { () -> (Int, [String]) in
      let client = NodeProcess.client(address, connections: 2)
      defer { client.close() }
      let size = 256 << 10
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size * 2, alignment: 4096)
      defer { buffer.deallocate() }
      let region = client.register(buffer)
      var errors: [String] = []
      var rounds = 0
      while !Task.isCancelled && rounds < 10_000 {
        let source = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size])
        fill(source, seed: rounds)
        do {
          let put = try await client.put([.init(key: blockKey(rounds, 3), source: try region.slice(length: size))])
          let got = try await client.get([
            .init(key: blockKey(rounds, 3), destination: try region.slice(offset: size, length: size))
          ])
          if put != [.stored] || got != [.ok(length: size)]
            || memcmp(buffer.baseAddress!, buffer.baseAddress! + size, size) != 0
          {
            errors.append("round \(rounds): put \(put), get \(got)")
          }
        } catch (let error as StrataError) where error.code == .cancelled && Task.isCancelled {
          break  // the streamer was stopped mid-round: a cancelled call stops its work
        } catch {
          errors.append("round \(rounds): \(error)")
        }
        rounds += 1
        if rounds == 1 { startedContinuation.yield() }
      }
      return (rounds, errors)
    }
    // The malformed frames go out while the well-behaved client is mid-stream.
    for await _ in started { break }
    var closedByNode = 0
    for malformed in cases {
      let socket = try TCPSocket.connect(to: node.address, timeoutMilliseconds: 10_000)
      if malformed.afterHello {
        try socket.writeAll(
          HelloRequest(capabilities: [.tcp], frameBytesMax: 1 << 30, token: [], clientName: "fuzz").frameBytes(
            requestID: 1, ringEpoch: 0))
        var header = [UInt8](repeating: 0, count: FrameHeader.byteCount)
        try header.withUnsafeMutableBytes { try socket.readExactly($0) }
        let decoded = try header.withUnsafeBytes { try FrameHeader(decoding: $0, limits: .standard) }
        var body = [UInt8](repeating: 0, count: Int(decoded.bodyBytes))
        try body.withUnsafeMutableBytes { try socket.readExactly($0) }
      }
      try? socket.writeAll(malformed.bytes)
      if malformed.thenHalfClose { shutdown(socket.descriptor, Int32(SHUT_WR)) }
      // The node must close this connection (EOF), not answer it as if nothing were wrong.
      var byte: UInt8 = 0
      let outcome = withUnsafeMutableBytes(of: &byte) { raw -> Result<Void, StrataError> in
        do throws(StrataError) {
          try socket.readExactly(raw)
          return .success(())
        } catch {
          return .failure(error)
        }
      }
      if case .failure(let error) = outcome, error.code == .unavailable {
        closedByNode += 1
      } else {
        Issue.record("\(malformed.name): the node did not close the connection (\(outcome))")
      }
    }
    streamer.cancel()
    let (rounds, errors) = await streamer.value
    #expect(closedByNode == cases.count)
    #expect(errors.isEmpty, "the well-behaved client saw errors: \(errors.prefix(5))")
    #expect(rounds > 0)
    // The node is still healthy: a fresh client works, and it counted the malformed frames.
    let client = node.client(connections: 1)
    let stat = try await client.stat()
    client.close()
    #expect(stat.contains("\"malformed_frames\":"))
    #expect(node.stop() == 0)
  }
}
