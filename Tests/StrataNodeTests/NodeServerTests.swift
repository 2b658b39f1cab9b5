// The node's data plane in process: a real server on a loopback port, driven by the Swift
// client and by raw sockets (pipelining, malformed frames, limits).

import Foundation
import Logging
import StrataClient
import StrataConfig
import StrataCore
import StrataStorage
import StrataTCP
import StrataTestKit
import StrataWire
import Testing

@testable import StrataNode

/// A node on 127.0.0.1 with a port of its own, RAM tier only.
typealias TestNode = InProcessNode

func key(_ n: Int, _ salt: Int = 0) -> BlockKey {
  var seed: [UInt8] = []
  withUnsafeBytes(of: UInt64(n)) { seed += $0 }
  withUnsafeBytes(of: UInt64(salt)) { seed += $0 }
  return SHA256.digest(seed)
}

/// Deterministic block content.
func content(_ n: Int, bytes: Int) -> [UInt8] {
  var state = UInt64(n) &* 0x9E37_79B9_7F4A_7C15 | 1
  return (0..<bytes).map { _ in
    state ^= state << 13
    state ^= state >> 7
    state ^= state << 17
    return UInt8(truncatingIfNeeded: state)
  }
}

/// Reads one whole response frame (header, body, payload) from a raw socket.
func readFrame(_ socket: TCPSocket) throws -> (FrameHeader, WireMessage, [UInt8]) {
  var header = [UInt8](repeating: 0, count: FrameHeader.byteCount)
  try header.withUnsafeMutableBytes { try socket.readExactly($0) }
  let decoded = try header.withUnsafeBytes { try FrameHeader(decoding: $0, limits: .standard) }
  var body = [UInt8](repeating: 0, count: Int(decoded.bodyBytes))
  try body.withUnsafeMutableBytes { try socket.readExactly($0) }
  let message = try body.withUnsafeBytes { try WireMessage(header: decoded, body: $0, limits: .standard) }
  var payload = [UInt8](repeating: 0, count: Int(decoded.payloadBytes))
  try payload.withUnsafeMutableBytes { try socket.readExactly($0) }
  return (decoded, message, payload)
}

let hello = HelloRequest(capabilities: [.tcp], frameBytesMax: 1 << 30, token: [], clientName: "raw-test")

@Suite struct NodeServerTests {
  @Test func putGetLookupDeleteStatRoundTrip() async throws {
    let node = try TestNode()
    let client = node.client()
    defer { client.close() }
    let sizes = [1, 4096, 100_000, 1 << 20, 4 << 20]
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: sizes.reduce(0, +), alignment: 4096)
    let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: sizes.reduce(0, +), alignment: 4096)
    defer {
      source.deallocate()
      destination.deallocate()
    }
    let sourceRegion = client.register(source)
    let destinationRegion = client.register(destination)
    var offset = 0
    var puts: [StrataClient.PutItem] = []
    var gets: [StrataClient.GetItem] = []
    for (n, size) in sizes.enumerated() {
      let bytes = content(n, bytes: size)
      source.baseAddress!.advanced(by: offset).copyMemory(from: bytes, byteCount: size)
      puts.append(.init(key: key(n), source: try sourceRegion.slice(offset: offset, length: size)))
      gets.append(.init(key: key(n), destination: try destinationRegion.slice(offset: offset, length: size)))
      offset += size
    }
    #expect(try await client.put(puts) == Array(repeating: .stored, count: sizes.count))
    #expect(try await client.put(puts) == Array(repeating: .alreadyPresent, count: sizes.count))
    let results = try await client.get(gets)
    #expect(results == sizes.map { .ok(length: $0) })
    #expect(memcmp(source.baseAddress!, destination.baseAddress!, offset) == 0)

    let lookup = try await client.lookup([key(0), key(1), key(99), key(2)])
    #expect(lookup.tiers == [.ram, .ram, .absent, .ram])
    #expect(lookup.leadingRun == 2)

    #expect(try await client.delete([key(0), key(99)]) == [true, false])
    #expect(try await client.lookup([key(0)]).tiers == [.absent])
    let stat = try await client.stat()
    #expect(stat.contains("\"put_blocks\":5"))
  }

  /// An idle accept loop still goes round once a second, so the node's liveness (/health, the
  /// service manager's watchdog) tells a wedged loop from a quiet one; a stopped node has none.
  @Test func anIdleAcceptLoopGoesRoundSoALivenessCheckCanTrustIt() async throws {
    let node = try TestNode()
    // The loop runs (it has gone round at least once: an hour on, it would be stale).
    #expect(
      try await eventually(within: 10) {
        !node.server.livenessProblems(now: MonotonicTime.nowNanoseconds + 3_600_000_000_000).isEmpty
      })
    let began = MonotonicTime.nowNanoseconds
    let judgedAt = began + 10_500_000_000  // 10.5 s on: stale for any beat before `began + 0.5 s`
    #expect(!node.server.livenessProblems(now: judgedAt).isEmpty)
    // With no connection at all, the loop beats again after `began + 0.5 s`.
    #expect(try await eventually(within: 10) { node.server.livenessProblems(now: judgedAt).isEmpty })
    #expect(node.server.livenessProblems().isEmpty)
    node.server.stop()
    #expect(
      try await eventually(within: 10) { node.server.livenessProblems(now: judgedAt + 3_600_000_000_000).isEmpty })
  }

  @Test func statIsJSONWhateverTheNodeIDHolds() async throws {
    let nodeID = "n\"1\\x\u{1}\n"
    let node = try TestNode(nodeID: nodeID)
    let client = node.client()
    defer { client.close() }
    let stat = try await client.stat()
    let object = try #require(try JSONSerialization.jsonObject(with: Data(stat.utf8)) as? [String: Any])
    #expect(object["node_id"] as? String == nodeID)
    #expect(object["instance"] as? Int == node.server.instance && object["put_blocks"] as? Int == 0)
  }

  @Test func byteRangesAndDestinationChecks() async throws {
    let node = try TestNode()
    let client = node.client()
    defer { client.close() }
    let block = content(7, bytes: 10_000)
    _ = try await node.tiers.put(BlockID(namespace: .embeddedDefault, key: key(7)), bytes: block)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 20_000, alignment: 4096)
    defer { buffer.deallocate() }
    let region = client.register(buffer)
    let results = try await client.get([
      .init(key: key(7), destination: try region.slice(offset: 0, length: 1000), blockOffset: 4000, length: 1000),
      .init(key: key(7), destination: try region.slice(offset: 1000, length: 100)),
      .init(key: key(7), destination: try region.slice(offset: 1100, length: 100), blockOffset: 20_000, length: 1),
    ])
    #expect(results == [.ok(length: 1000), .destinationTooSmall(length: 10_000), .outOfRange])
    #expect(Array(UnsafeRawBufferPointer(rebasing: buffer[0..<1000])) == Array(block[4000..<5000]))
  }

  @Test func leasedLookupPinsUntilTheGet() async throws {
    let node = try TestNode()
    let client = node.client(connections: 1)
    defer { client.close() }
    _ = try await node.tiers.put(BlockID(namespace: .embeddedDefault, key: key(1)), bytes: content(1, bytes: 5000))
    let lookup = try await client.lookup([key(1), key(2)], leaseMilliseconds: 10_000)
    #expect(lookup.leaseID != 0 && lookup.leadingRun == 1)
    #expect(node.tiers.stats.pinnedBlocks == 1)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 5000, alignment: 4096)
    defer { buffer.deallocate() }
    let region = client.register(buffer)
    let results = try await client.get(
      [.init(key: key(1), destination: try region.slice(length: 5000))], leaseID: lookup.leaseID)
    #expect(results == [.ok(length: 5000)])
    // The node releases the pin once the reply is sent, which the client may see first.
    #expect(try await eventually(within: 30) { node.tiers.stats.pinnedBlocks == 0 })
  }

  @Test func pipelinedRequestsAreAllAnsweredByRequestID() throws {
    let node = try TestNode()
    let socket = try node.rawSocket()
    try socket.writeAll(hello.frameBytes(requestID: 1, ringEpoch: 0))
    _ = try readFrame(socket)
    // Ten requests sent back to back before reading any response.
    var frames: [UInt8] = []
    for id in 10..<20 {
      frames += LookupRequest(keys: [key(id)]).frameBytes(requestID: UInt64(id), ringEpoch: 0)
    }
    try socket.writeAll(frames)
    var answered: [UInt64] = []
    for _ in 10..<20 {
      let (header, message, _) = try readFrame(socket)
      guard case .lookupResponse = message else {
        Issue.record("unexpected \(message)")
        return
      }
      answered.append(header.requestID)
    }
    #expect(Set(answered) == Set((10..<20).map(UInt64.init)))
  }

  @Test func failedRequestsGetErrorResponsesAndTheConnectionStays() throws {
    let node = try TestNode()
    let socket = try node.rawSocket()
    try socket.writeAll(hello.frameBytes(requestID: 1, ringEpoch: 0))
    _ = try readFrame(socket)
    try socket.writeAll(hello.frameBytes(requestID: 2, ringEpoch: 0))  // a second HELLO is refused
    let (header, message, _) = try readFrame(socket)
    #expect(header.isError && header.requestID == 2)
    if case .error(_, let body) = message { #expect(body.message.contains("HELLO was already received")) }
    try socket.writeAll(LookupRequest(keys: [key(1)]).frameBytes(requestID: 3, ringEpoch: 0))
    let (after, _, _) = try readFrame(socket)
    #expect(!after.isError && after.requestID == 3)
  }

  @Test func tokensMapToNamespacesAndUnknownTokensAreRefused() async throws {
    let tenantA = try Namespace("tenant-a")
    let tenantB = try Namespace("tenant-b")
    let node = try TestNode(tokens: [
      .init(token: "secret-a-0123456789", namespace: tenantA),
      .init(token: "secret-b-0123456789", namespace: tenantB, admin: true),
    ])
    let good = node.client(connections: 1, token: "secret-a-0123456789")
    defer { good.close() }
    #expect(try await good.connect() == tenantA)
    // Tenants do not see each other's blocks, even under the same key.
    _ = try await node.tiers.put(BlockID(namespace: tenantB, key: key(1)), bytes: [1, 2, 3])
    #expect(try await good.lookup([key(1)]).tiers == [.absent])
    // DELETE is admin-scoped.
    await #expect(throws: StrataError.self) { _ = try await good.delete([key(1)]) }
    let admin = node.client(connections: 1, token: "secret-b-0123456789")
    defer { admin.close() }
    #expect(try await admin.delete([key(1)]) == [true])
    let bad = node.client(connections: 1, token: "wrong-token-0123456789")
    defer { bad.close() }
    await #expect(throws: StrataError.self) { try await bad.connect() }
  }

  @Test func connectionsOverTheLimitAreRefusedWithAReason() throws {
    let node = try TestNode(connectionsMax: 2)
    let first = try node.rawSocket()
    let second = try node.rawSocket()
    for socket in [first, second] {
      try socket.writeAll(hello.frameBytes(requestID: 1, ringEpoch: 0))
      _ = try readFrame(socket)
    }
    let third = try node.rawSocket()
    try third.writeAll(hello.frameBytes(requestID: 5, ringEpoch: 0))
    let (header, message, _) = try readFrame(third)
    #expect(header.requestID == 5)
    #expect(header.isError)
    if case .error(_, let body) = message { #expect(body.message.contains("connection limit")) }
    #expect(node.server.stats.connectionsRefused == 1)
  }

  @Test func stopFinishesAndClosesConnections() async throws {
    let node = try TestNode()
    let client = node.client(connections: 1)
    _ = try await client.lookup([key(1)])
    node.server.stop()
    #expect(node.server.stats.connectionsOpen == 0)
    await #expect(throws: StrataError.self) { _ = try await client.lookup([key(1)]) }
  }
}
