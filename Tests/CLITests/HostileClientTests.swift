// Attacks on a real `strata serve` process (docs/security.md), each of which broke or locked up
// the node before the request pipeline was bounded: a stalled GET reader, idle and half-HELLO
// floods, body-size claims, stalled transfers, lease hogs, a tenant claiming to be a peer. Each
// test states the bound it checks and fails on a node without it.

import Foundation
import StrataClient
import StrataCore
import StrataTCP
import StrataTestKit
import StrataWire
import Synchronization
import Testing

/// A node started from a YAML configuration (plus the usual test flags).
func hostileNode(_ yaml: String, ram: String = "256MiB") async throws -> NodeProcess {
  let path = FileManager.default.temporaryDirectory.appendingPathComponent("strata-hostile-\(UUID().uuidString).yaml")
    .path
  try yaml.write(toFile: path, atomically: true, encoding: .utf8)
  return try await NodeProcess.launch(
    ram: ram, nvme: "256MiB", log: ProcessInfo.processInfo.environment["STRATA_TEST_NODE_LOG"],
    extra: ["--config", path], files: [path])
}

let tenantA = "tenant-a-secret-000000001"
let tenantB = "tenant-b-secret-000000002"
let tokensYAML = """
  auth:
    tokens:
      - {token: "\(tenantA)", namespace: tenant-a, admin: true}
      - {token: "\(tenantB)", namespace: tenant-b, admin: true}
  """

/// A client of one tenant.
func tenantClient(_ node: NodeProcess, _ token: String, connections: Int = 1, timeout: UInt64 = 20_000) -> StrataClient
{
  var configuration = StrataClient.Configuration(node: node.address)
  configuration.token = token
  configuration.connections = connections
  configuration.timeoutMilliseconds = timeout
  configuration.retries = 0
  return StrataClient(configuration)
}

/// Reads one whole frame (header and body) from a raw socket.
func readFrame(_ socket: TCPSocket) throws -> (FrameHeader, WireMessage) {
  var header = [UInt8](repeating: 0, count: FrameHeader.byteCount)
  try header.withUnsafeMutableBytes { try socket.readExactly($0) }
  let decoded = try header.withUnsafeBytes { try FrameHeader(decoding: $0, limits: .standard) }
  var body = [UInt8](repeating: 0, count: Int(decoded.bodyBytes))
  try body.withUnsafeMutableBytes { try socket.readExactly($0) }
  let message = try body.withUnsafeBytes { try WireMessage(header: decoded, body: $0, limits: .standard) }
  return (decoded, message)
}

/// A raw connection that said HELLO with `token` and read the answer.
func rawSession(
  _ node: NodeProcess, token: String, peer: Bool = false, peerNamespace: String = "",
  bufferBytes: Int32 = TCPSocket.defaultBufferBytes
) throws -> (TCPSocket, WireMessage) {
  let socket = try TCPSocket.connect(to: node.address, timeoutMilliseconds: 10_000, bufferBytes: bufferBytes)
  let hello = HelloRequest(
    capabilities: peer ? [.tcp, .peer] : [.tcp], frameBytesMax: 1 << 30, token: Array(token.utf8),
    clientName: "hostile", peerNamespace: peerNamespace)
  try socket.writeAll(hello.frameBytes(requestID: 1, ringEpoch: 0))
  return (socket, try readFrame(socket).1)
}

func setReceiveBuffer(_ socket: TCPSocket, bytes: Int32) {
  var value = bytes
  setsockopt(socket.descriptor, SOL_SOCKET, SO_RCVBUF, &value, socklen_t(MemoryLayout<Int32>.size))
}

/// The node process's resident memory, in bytes, and its thread count.
func processFootprint(_ pid: Int32) -> (residentBytes: Int, threads: Int) {
  let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
  var resident = 0
  var threads = 0
  for line in status.split(separator: "\n") {
    let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
    if line.hasPrefix("VmRSS:"), fields.count >= 2 { resident = (Int(fields[1]) ?? 0) * 1024 }
    if line.hasPrefix("Threads:"), fields.count >= 2 { threads = Int(fields[1]) ?? 0 }
  }
  return (resident, threads)
}

/// Reads until the node closes the connection; returns every byte received and whether the close
/// came by `deadline` (seconds from now).
func drainUntilClosed(_ socket: TCPSocket, seconds: Double) -> (bytes: [UInt8], closed: Bool) {
  socket.setTimeout(milliseconds: 200)
  var received: [UInt8] = []
  let end = Date().addingTimeInterval(seconds)
  var chunk = [UInt8](repeating: 0, count: 1 << 20)
  while Date() < end {
    let outcome = chunk.withUnsafeMutableBytes { raw -> Result<Int, StrataError> in
      do throws(StrataError) { return .success(try socket.readSome(raw)) } catch { return .failure(error) }
    }
    switch outcome {
    case .success(let count): received += chunk[0..<count]
    case .failure(let error) where error.code == .timeout: continue
    case .failure: return (received, true)
    }
  }
  return (received, false)
}

@Suite(.serialized) struct HostileClientTests {
  /// A GET whose reader stalls keeps its block pinned for the whole send (no lease expiry can free
  /// the slot under it), so while another tenant's PUTs evict and reuse every other slot, the
  /// stalled reader receives only bytes of the block it asked for — and is cut off at the
  /// transfer deadline, not left holding the node's memory forever.
  @Test func stalledGetReaderGetsOnlyItsBlockAndIsCutAtTheDeadline() async throws {
    let node = try await hostileNode(
      """
      limits:
        lease_duration: 100ms
        request_timeout: 500ms
        min_transfer_rate: 16MiB
      \(tokensYAML)
      """, ram: "96MiB")
    defer { _ = node.stop() }
    let blockBytes = 24 << 20
    let pattern = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 4096)
    defer { pattern.deallocate() }
    fill(pattern, seed: 77)
    let writer = tenantClient(node, tenantA)
    defer { writer.close() }
    let secret = blockKey(1, 77)
    #expect(
      try await writer.put([.init(key: secret, source: writer.register(pattern).slice(length: blockBytes))]) == [
        .stored
      ])

    // The stalled reader: a tiny receive buffer, a GET, and no reads.
    let (reader, hello) = try rawSession(node, token: tenantA)
    guard case .helloResponse = hello else { throw StrataError(.protocolError, "HELLO answered \(hello)") }
    // A receive buffer shrunk under the window already offered: the kernel then drops what does
    // not fit, and the node's send stalls (loopback otherwise queues far past SO_RCVBUF).
    setReceiveBuffer(reader, bytes: 4096)
    try reader.writeAll(GetRequest(items: [.init(key: secret)]).frameBytes(requestID: 2, ringEpoch: 0))
    // Wait for the send to begin (its first bytes queued at the reader).
    var queued: Int32 = 0
    let begun = Date().addingTimeInterval(10)
    while queued == 0 && Date() < begun {
      try await Task.sleep(for: .milliseconds(10))  // polling the socket's queue, not waiting blind
      _ = ioctl(reader.descriptor, UInt(FIONREAD), &queued)
    }
    #expect(queued > 0, "the node never began sending the block")

    // Another tenant churns the whole RAM tier many times over meanwhile.
    let other = tenantClient(node, tenantB)
    defer { other.close() }
    let noise = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 4096)
    defer { noise.deallocate() }
    memset(noise.baseAddress!, 0xEE, blockBytes)
    let region = other.register(noise)
    var stored = 0
    for n in 0..<12 {
      let outcome = try await other.put([.init(key: blockKey(n, 78), source: region.slice(length: blockBytes))])
      if outcome == [.stored] { stored += 1 }
    }
    #expect(stored >= 6, "the other tenant could not write while one block was being sent (\(stored) stored)")

    // The node cuts the stalled send at its deadline (2 s: 500 ms + 24 MiB at 16 MiB/s) and then
    // holds no pins for it.
    let cutBy = Date().addingTimeInterval(15)
    while await statCounter(node, "deadlines_missed") < 1 && Date() < cutBy {
      try await Task.sleep(for: .milliseconds(50))  // polling the node's own counter
    }
    #expect(await statCounter(node, "deadlines_missed") == 1, "the node did not cut the stalled reader off")
    #expect(await statCounter(node, "transfer_pins") == 0, "the cut send still holds its pins")
    // Read what the stalled connection was sent: a frame, then only the secret's bytes.
    setReceiveBuffer(reader, bytes: 4 << 20)
    let (bytes, _) = drainUntilClosed(reader, seconds: 5)
    #expect(bytes.count >= 64)
    let (header, message) = try bytes.withUnsafeBytes { raw -> (FrameHeader, WireMessage) in
      let header = try FrameHeader(decoding: UnsafeRawBufferPointer(rebasing: raw[0..<64]), limits: .standard)
      let body = UnsafeRawBufferPointer(rebasing: raw[64..<64 + Int(header.bodyBytes)])
      return (header, try WireMessage(header: header, body: body, limits: .standard))
    }
    guard case .getResponse = message else { throw StrataError(.protocolError, "GET answered \(message)") }
    let payload = bytes[(64 + Int(header.bodyBytes))...]
    #expect(payload.count < blockBytes, "the stalled reader was sent the whole block: the test did not stall it")
    let expected = UnsafeRawBufferPointer(pattern)
    let mismatch = payload.enumerated().first { $0.element != expected[$0.offset] }
    #expect(
      mismatch == nil, "the stalled reader received bytes that are not its block's at offset \(mismatch?.offset ?? -1)")
  }

  /// 1,000 idle and 1,000 half-HELLO connections from the client's own address, re-opened as soon
  /// as the node drops them, do not keep a client that connects after them out, nor slow it past
  /// 50 ms at p99, nor grow the node's threads or memory without bound.
  @Test func idleAndHalfHelloFloodsDoNotLockOutAClient() async throws {
    let node = try await hostileNode(
      """
      limits:
        handshake_timeout: 2s
      \(tokensYAML)
      """)
    defer { _ = node.stop() }
    let before = processFootprint(node.process.processIdentifier)
    let stop = Atomic<Bool>(false)
    let reopened = Atomic<Int>(0)
    let address = node.address
    // The flood: its own thread, bounded in time by `stop` and in count by 2,000 sockets.
    let flood = Thread {
      var sockets: [(TCPSocket, Bool)] = []
      let half = HelloRequest(
        capabilities: [.tcp], frameBytesMax: 1 << 30, token: Array(repeating: 0x41, count: 3000), clientName: "half"
      ).frameBytes(requestID: 1, ringEpoch: 0)
      func open(_ halfHello: Bool) -> TCPSocket? {
        guard let socket = try? TCPSocket.connect(to: address, timeoutMilliseconds: 2_000) else { return nil }
        if halfHello { socket.sendAvailable(Array(half[0..<(64 + 100)])) }
        return socket
      }
      for n in 0..<2000 { if let socket = open(n % 2 == 1) { sockets.append((socket, n % 2 == 1)) } }
      var probe = [UInt8](repeating: 0, count: 64)
      // Wait (in poll, not spinning) for the node to drop some; re-open each at once.
      while !stop.load(ordering: .relaxed) {
        var watched = sockets.map { pollfd(fd: $0.0.descriptor, events: Int16(POLLIN), revents: 0) }
        guard poll(&watched, nfds_t(watched.count), 100) > 0 else { continue }
        for (index, entry) in watched.enumerated() where entry.revents != 0 {
          let (socket, halfHello) = sockets[index]
          let closed = probe.withUnsafeMutableBytes { raw in (try? socket.receiveAvailable(raw)) == nil }
          if closed, let again = open(halfHello) {
            sockets[index] = (again, halfHello)
            reopened.add(1, ordering: .relaxed)
          }
        }
      }
    }
    flood.start()
    defer { stop.store(true, ordering: .relaxed) }
    // Wait until the flood is in place (the node holds its 2,000 connections waiting for HELLO).
    let legitimate = tenantClient(node, tenantA, timeout: 5_000)
    defer { legitimate.close() }
    let deadline = Date().addingTimeInterval(30)
    while Date() < deadline, await statCounter(node, "handshakes_pending") < 1000 {
      try await Task.sleep(for: .milliseconds(50))  // polling the node's own counter, not waiting blind
    }
    // The client connects after the flood and works; its p99 stays under 50 ms.
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 4096)
    defer { buffer.deallocate() }
    let region = legitimate.register(buffer)
    var latencies: [Double] = []
    var failures: [String] = []
    // At least 300 rounds and at least 3 s, so the node drops (handshake deadline) and the flood
    // re-opens connections while the client works.
    let busyUntil = Date().addingTimeInterval(3)
    var n = 0
    while n < 300 || Date() < busyUntil {
      defer { n += 1 }
      fill(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<4096]), seed: n)
      let start = DispatchTime.now().uptimeNanoseconds
      do {
        let put = try await legitimate.put([.init(key: blockKey(n, 90), source: region.slice(length: 4096))])
        let got = try await legitimate.get([
          .init(key: blockKey(n, 90), destination: region.slice(offset: 4096, length: 4096))
        ])
        if put != [.stored] || got != [.ok(length: 4096)]
          || memcmp(buffer.baseAddress!, buffer.baseAddress! + 4096, 4096) != 0
        {
          failures.append("round \(n): \(put) \(got)")
        }
      } catch {
        failures.append("round \(n): \(error)")
      }
      latencies.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
      try await Task.sleep(for: .milliseconds(5))  // a client's pace, not a benchmark loop
    }
    // A second client that connects while the flood still churns gets in too.
    let late = tenantClient(node, tenantB, timeout: 5_000)
    defer { late.close() }
    #expect(try await late.lookup([blockKey(0, 91)]).leadingRun == 0)
    let during = processFootprint(node.process.processIdentifier)
    stop.store(true, ordering: .relaxed)
    latencies.sort()
    let p99 = latencies[Int(Double(latencies.count - 1) * 0.99)]
    #expect(failures.isEmpty, "the client saw failures under the flood: \(failures.prefix(3))")
    #expect(p99 < 50, "p99 \(p99) ms under the flood")
    #expect(reopened.load(ordering: .relaxed) > 0, "the node never dropped a flood connection")
    // Threads: the flood's 2,000 sockets got none (a handful of new ones for the two clients).
    #expect(during.threads < before.threads + 16, "threads grew from \(before.threads) to \(during.threads)")
    #expect(
      during.residentBytes < before.residentBytes + (64 << 20),
      "RSS grew from \(before.residentBytes) to \(during.residentBytes)")
  }

  /// Body-size claims: before HELLO a header announcing more than a HELLO is refused at once;
  /// after HELLO, 200 connections announcing 16 MiB bodies and sending 100 bytes cost what they
  /// sent, not what they claimed, and are cut at the transfer deadline.
  @Test func bodySizeClaimsCostOnlyWhatArrives() async throws {
    let node = try await hostileNode(
      """
      limits:
        request_timeout: 1500ms
        min_transfer_rate: 64MiB
        max_connections: 512
        max_connections_per_source: 512
        max_connections_per_namespace: 512
      \(tokensYAML)
      """)
    defer { _ = node.stop() }
    let pid = node.process.processIdentifier
    let before = processFootprint(pid)
    // Before HELLO.
    var claim = HelloRequest(capabilities: [.tcp], frameBytesMax: 1 << 30, token: [], clientName: "x")
      .frameBytes(requestID: 1, ringEpoch: 0)
    claim = MalformedFrames.setting(Array(claim[0..<64]), at: 24, UInt32(16 << 20))
    var preHello: [TCPSocket] = []
    for _ in 0..<200 {
      let socket = try TCPSocket.connect(to: node.address, timeoutMilliseconds: 5_000)
      try socket.writeAll(claim + [UInt8](repeating: 7, count: 100))
      preHello.append(socket)
    }
    for socket in preHello {
      #expect(drainUntilClosed(socket, seconds: 5).closed, "a 16 MiB HELLO claim was not refused")
    }
    // After HELLO.
    var sockets: [TCPSocket] = []
    for _ in 0..<200 {
      let (socket, hello) = try rawSession(node, token: tenantA)
      guard case .helloResponse = hello else { throw StrataError(.protocolError, "\(hello)") }
      let lookup = LookupRequest(keys: [blockKey(1, 1)]).frameBytes(requestID: 2, ringEpoch: 0)
      let header = MalformedFrames.setting(Array(lookup[0..<64]), at: 24, UInt32(16 << 20))
      try socket.writeAll(header + [UInt8](repeating: 1, count: 100))
      sockets.append(socket)
    }
    let during = processFootprint(pid)
    #expect(
      during.residentBytes < before.residentBytes + (128 << 20),
      "RSS grew from \(before.residentBytes) to \(during.residentBytes)")
    // Each is closed at its transfer deadline (1.5 s + 16 MiB at 64 MiB/s).
    for socket in sockets { #expect(drainUntilClosed(socket, seconds: 10).closed, "a stalled body was never cut") }
    let stat = try await tenantClient(node, tenantA).stat()
    #expect(stat.contains("\"deadlines_missed\":") && !stat.contains("\"deadlines_missed\":0,"))
  }

  /// Stalled PUTs (and a GET whose reader stalls) hold in-flight budget only until their deadline;
  /// meanwhile another tenant keeps its own budget, and afterwards the node's is whole again.
  @Test func stalledTransfersAreCutAndTheirBudgetReturned() async throws {
    let node = try await hostileNode(
      """
      limits:
        max_inflight_bytes: 160MiB
        max_inflight_bytes_per_namespace: 128MiB
        max_inflight_bytes_per_connection: 64MiB
        request_timeout: 1s
        min_transfer_rate: 64MiB
      \(tokensYAML)
      """)
    defer { _ = node.stop() }
    var stalled: [TCPSocket] = []
    for n in 0..<2 {
      let (socket, _) = try rawSession(node, token: tenantA)
      let put = PutRequest(items: [.init(key: blockKey(n, 5), length: 32 << 20, checksum: 0)])
      try socket.writeAll(put.frameBytes(requestID: 2, ringEpoch: 0) + [UInt8](repeating: 1, count: 1 << 20))
      stalled.append(socket)
    }
    // The stalling tenant is at its namespace budget; the other tenant still writes.
    let other = tenantClient(node, tenantB)
    defer { other.close() }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 << 20, alignment: 4096)
    defer { buffer.deallocate() }
    fill(buffer, seed: 3)
    let region = other.register(buffer)
    #expect(try await other.put([.init(key: blockKey(1, 6), source: region.slice(length: 16 << 20))]) == [.stored])
    // Both stalled PUTs are cut; the budget comes back (the stat shows none in flight).
    for socket in stalled { #expect(drainUntilClosed(socket, seconds: 10).closed, "a stalled PUT was never cut") }
    let same = tenantClient(node, tenantA)
    defer { same.close() }
    let stat = try await same.stat()
    #expect(stat.contains("\"deadlines_missed\":2"), "\(stat)")
    #expect(try await same.put([.init(key: blockKey(2, 6), source: region.slice(length: 16 << 20))]) == [.stored])
  }

  /// Lease durations are cut to `limits.lease_duration` (and the answer says so); a tenant holding
  /// every lease it may hold makes no difference to another tenant's GETs and leases.
  @Test func leaseHogsCannotDenyOtherTenants() async throws {
    let node = try await hostileNode(
      """
      limits:
        max_leases: 64
        max_leases_per_namespace: 48
        max_leases_per_connection: 16
        lease_duration: 2s
      \(tokensYAML)
      """)
    defer { _ = node.stop() }
    let (probe, _) = try rawSession(node, token: tenantA)
    try probe.writeAll(
      LookupRequest(keys: [blockKey(1, 1)], leaseMilliseconds: .max).frameBytes(requestID: 2, ringEpoch: 0))
    guard case .lookupResponse(let first) = try readFrame(probe).1 else { throw StrataError(.protocolError, "LOOKUP") }
    #expect(
      first.leaseExpiresInMilliseconds == 2000,
      "a lease of 2^32-1 ms was granted for \(first.leaseExpiresInMilliseconds) ms")
    // The hog takes leases until told no: per connection, then per namespace.
    var refusals: [String] = []
    var sessions: [TCPSocket] = []
    for _ in 0..<4 {
      let (socket, _) = try rawSession(node, token: tenantA)
      sessions.append(socket)
      for n in 0..<20 {
        try socket.writeAll(
          LookupRequest(keys: [], leaseMilliseconds: .max).frameBytes(requestID: UInt64(n + 2), ringEpoch: 0))
        if case .error(_, let body) = try readFrame(socket).1 { refusals.append(body.message) }
      }
    }
    #expect(refusals.contains { $0.contains("limits.max_leases_per_connection") }, "\(refusals.prefix(2))")
    #expect(refusals.contains { $0.contains("limits.max_leases_per_namespace") }, "\(refusals.prefix(2))")
    // The other tenant: GETs and its own leases work.
    let other = tenantClient(node, tenantB)
    defer { other.close() }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 4096)
    defer { buffer.deallocate() }
    let region = other.register(buffer)
    #expect(try await other.put([.init(key: blockKey(3, 3), source: region.slice(length: 4096))]) == [.stored])
    let leased = try await other.lookup([blockKey(3, 3)], leaseMilliseconds: 1000)
    #expect(leased.leadingRun == 1 && leased.leaseID != 0)
    let got = try await other.get(
      [.init(key: blockKey(3, 3), destination: region.slice(offset: 4096, length: 4096))], leaseID: leased.leaseID)
    #expect(got == [.ok(length: 4096)])
    #expect(
      try await other.get([.init(key: blockKey(3, 3), destination: region.slice(offset: 4096, length: 4096))]) == [
        .ok(length: 4096)
      ])
  }

  /// A tenant token never buys the peer capability (replication, handoff, no ownership checks);
  /// only the cluster token does.
  @Test func onlyTheClusterTokenGrantsThePeerCapability() async throws {
    let node = try await hostileNode(
      """
      cluster:
        token: "cluster-secret-token-0001"
      \(tokensYAML)
      """)
    defer { _ = node.stop() }
    let (_, asTenant) = try rawSession(node, token: tenantA, peer: true, peerNamespace: "tenant-b")
    guard case .error(_, let body) = asTenant else {
      Issue.record("a tenant token was granted the peer capability: \(asTenant)")
      return
    }
    #expect(body.message.contains("cluster token"))
    let (_, asPeer) = try rawSession(node, token: "cluster-secret-token-0001", peer: true, peerNamespace: "tenant-b")
    guard case .helloResponse(let response) = asPeer else {
      Issue.record("the cluster token was refused: \(asPeer)")
      return
    }
    #expect(response.capabilities.contains(.peer) && response.namespace.name == "tenant-b")
  }
}

/// A counter from the node's STAT answer (through a fresh client of its own); 0 if unreadable.
func statCounter(_ node: NodeProcess, _ name: String) async -> Int {
  let client = tenantClient(node, tenantA, timeout: 2_000)
  defer { client.close() }
  let text = (try? await client.stat()) ?? ""
  guard let range = text.range(of: "\"\(name)\":") else { return 0 }
  return Int(text[range.upperBound...].prefix { $0.isNumber }) ?? 0
}

/// The pipeline fuzzer's corpus (seeds, and what a 10-minute ASan run added) replays through the request pipeline without a crash and
/// without leaving a connection, in-flight bytes, a lease or a pin behind (the body checks each).
@Test func pipelineFuzzCorpusReplaysCleanly() async throws {
  let fuzzer = URL(fileURLWithPath: strataExecutable).deletingLastPathComponent()
    .appendingPathComponent("strata-pipeline-fuzz").path
  let corpus = packageRoot.appendingPathComponent("Tests/Fixtures/pipeline-corpus").path
  let inputs = try FileManager.default.contentsOfDirectory(atPath: corpus).count
  #expect(inputs >= 6)
  let result = try await runProcess(fuzzer, [corpus])
  #expect(result.status == 0, "\(result.stderrText)")
  #expect(result.stdoutText.contains("replayed \(inputs) inputs"), "\(result.stdoutText)")
}
