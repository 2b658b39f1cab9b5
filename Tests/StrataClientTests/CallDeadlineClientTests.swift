// A call's deadline bounds the whole response, its payload included: a node that sends a GET's
// header and then its bytes a trickle at a time costs the call its deadline, not one socket
// timeout per read (each read gets a few bytes in time, so only the deadline ends the call). And
// closing a client ends a call in flight at once, not after the call's timeout.

import Dispatch
import Foundation
import StrataClient
import StrataCore
import StrataTCP
import StrataTestKit
import StrataWire
import Synchronization
import Testing

/// Reads one request frame (header and body) from `socket`; returns its header.
private func readRequest(_ socket: TCPSocket) throws -> FrameHeader {
  var header = [UInt8](repeating: 0, count: FrameHeader.byteCount)
  try header.withUnsafeMutableBytes { try socket.readExactly($0) }
  let decoded = try header.withUnsafeBytes { try FrameHeader(decoding: $0, limits: .standard) }
  var body = [UInt8](repeating: 0, count: Int(decoded.bodyBytes))
  try body.withUnsafeMutableBytes { try socket.readExactly($0) }
  return decoded
}

/// Reads the client's HELLO from `socket` and welcomes it as node `nodeID`.
private func welcome(_ socket: TCPSocket, nodeID: String) throws {
  let hello = try readRequest(socket)
  let welcome = HelloResponse(
    capabilities: [.tcp], nodeID: nodeID, namespace: .embeddedDefault, frameBytesMax: 1 << 30,
    inflightBytesMax: 1 << 30, ringEpoch: 0)
  try socket.writeAll(welcome.frameBytes(requestID: hello.requestID, ringEpoch: 0).withUnsafeBytes { Array($0) })
}

/// A client of the fake node at `address`: one TCP connection, no retry.
private func client(of address: HostPort, timeoutMilliseconds: UInt64) -> StrataClient {
  var configuration = StrataClient.Configuration(node: address)
  configuration.connections = 1
  configuration.timeoutMilliseconds = timeoutMilliseconds
  configuration.retries = 0
  configuration.sameHost = false
  configuration.rdma = false
  return StrataClient(configuration)
}

@Suite struct CallDeadlineClientTests {
  @Test func aGetWhosePayloadStallsEndsAtItsDeadline() async throws {
    let listener = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0))
    defer { listener.shutdown() }
    let release = DispatchSemaphore(value: 0)
    let blockBytes = 2 << 20
    // The node, on a thread of its own: answers HELLO, then a GET with the header of a 2 MiB block,
    // then 1 KiB of it every 100 ms until the test is over or the client hangs up (the whole block
    // would take 205 s).
    let node = Thread {
      guard let socket = listener.accept() else { return }
      defer { socket.shutdown() }
      do {
        try welcome(socket, nodeID: "stalling")
        let get = try readRequest(socket)
        let payload = [UInt8](repeating: 7, count: blockBytes)
        let answer = GetResponse(items: [.ok(length: UInt64(blockBytes), checksum: CRC32C.checksum(payload))])
        try socket.writeAll(answer.frameBytes(requestID: get.requestID, ringEpoch: 0))
        var sent = 0
        while sent < blockBytes, release.wait(timeout: .now() + .milliseconds(100)) == .timedOut {
          try socket.writeAll(Array(payload[sent..<(sent + 1024)]))
          sent += 1024
        }
      } catch {
        return
      }
    }
    node.start()
    let client = client(of: listener.address, timeoutMilliseconds: 10_000)
    defer { client.close() }
    let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 4096)
    defer { destination.deallocate() }
    let region = client.register(destination)
    let item = StrataClient.GetItem(
      key: BlockKey(hex: String(repeating: "d1", count: 32))!, destination: try region.slice(length: blockBytes))
    let began = ContinuousClock.now
    let failed = await #expect(throws: StrataError.self) {
      try await client.get([item], deadline: .after(milliseconds: 500))
    }
    let took = ContinuousClock.now - began
    #expect(failed?.code == .timeout, "\(String(describing: failed))")
    // Read to the end the call would take 205 s. The bound is wide because the whole suite runs at
    // once on a loaded machine, where this task can wait many seconds to resume after the call
    // (24.8 s was seen in CI); no wait for the node thread, which ends when the client hangs up.
    #expect(took < .seconds(90), "a 500 ms call took \(took): its payload reads were not bound by its deadline")
    release.signal()
  }

  /// A node that takes a request and never answers used to hold `close` until the call's timeout
  /// (the connection's thread was in the call): a stopping node's cluster service waited for
  /// each hung peer call, past its stop deadline.
  @Test func closingAClientEndsACallInFlightAtOnce() async throws {
    let listener = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0))
    defer { listener.shutdown() }
    let received = Atomic<Bool>(false)
    let release = DispatchSemaphore(value: 0)
    // The node, on a thread of its own: answers HELLO, reads one request, answers nothing.
    let node = Thread {
      guard let socket = listener.accept() else { return }
      defer { socket.shutdown() }
      do {
        try welcome(socket, nodeID: "silent")
        _ = try readRequest(socket)
        received.store(true, ordering: .releasing)
        _ = release.wait(timeout: .now() + .seconds(300))
      } catch {
        return
      }
    }
    node.start()
    defer { release.signal() }
    let client = client(of: listener.address, timeoutMilliseconds: 120_000)
    let call = Task { try await client.lookup([BlockKey(hex: String(repeating: "d2", count: 32))!]) }
    #expect(try await eventually(within: 60) { received.load(ordering: .acquiring) }, "the node never got the call")
    let began = ContinuousClock.now
    client.close()
    let took = ContinuousClock.now - began
    // Wide against the 120 s the close took before: the whole suite runs at once on CI's machine.
    #expect(took < .seconds(60), "close took \(took) with a call in flight (call timeout 120 s)")
    let outcome = await call.result
    #expect(throws: StrataError.self, "the call in flight fails") { try outcome.get() }
  }
}
