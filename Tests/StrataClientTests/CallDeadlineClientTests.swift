// A call's deadline bounds the whole response, its payload included: a node that sends a GET's
// header and then its bytes a trickle at a time costs the call its deadline, not one socket
// timeout per read (each read gets a few bytes in time, so only the deadline ends the call).

import Dispatch
import Foundation
import StrataClient
import StrataCore
import StrataTCP
import StrataWire
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
        let hello = try readRequest(socket)
        let welcome = HelloResponse(
          capabilities: [.tcp], nodeID: "stalling", namespace: .embeddedDefault, frameBytesMax: 1 << 30,
          inflightBytesMax: 1 << 30, ringEpoch: 0)
        try socket.writeAll(welcome.frameBytes(requestID: hello.requestID, ringEpoch: 0).withUnsafeBytes { Array($0) })
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
    var configuration = StrataClient.Configuration(node: listener.address)
    configuration.connections = 1
    configuration.timeoutMilliseconds = 10_000
    configuration.retries = 0
    configuration.sameHost = false
    configuration.rdma = false
    let client = StrataClient(configuration)
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
}
