// The admin port of a real `strata serve` process under hostile clients: malformed requests get
// a 4xx and the node lives on (its blocks too); probes answer while many slow connections hold
// the port; a request dripped in slowly is cut at the whole-request deadline; X-Request-Id
// cannot inject response headers.

import Foundation
import StrataClient
import StrataCore
import StrataTCP
import StrataTestKit
import Testing

/// Sends `bytes` on a fresh admin connection and reads until the node closes it or `seconds`
/// pass; returns what came back.
func rawAdminExchange(_ admin: HostPort, _ bytes: [UInt8], seconds: UInt64 = 5) throws -> String {
  let socket = try TCPSocket.connect(to: admin, timeoutMilliseconds: seconds * 1000)
  defer { socket.shutdown() }
  // The node may answer (and stop reading) before all of an oversized request is sent.
  try? socket.writeAll(bytes)
  var received: [UInt8] = []
  let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 << 10, alignment: 8)
  defer { chunk.deallocate() }
  while let count = try? socket.readSome(chunk), count > 0 {
    received += chunk[0..<count]
    if let text = String(validating: received, as: UTF8.self), isWholeResponse(text) { break }
  }
  return String(decoding: received, as: UTF8.self)
}

/// Whether `text` holds a response head and the body its Content-Length announces.
private func isWholeResponse(_ text: String) -> Bool {
  guard let end = text.range(of: "\r\n\r\n") else { return false }
  let head = text[..<end.lowerBound].lowercased()
  guard let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
    let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
  else { return true }
  return text.utf8.count - text[..<end.upperBound].utf8.count >= length
}

/// The status code of a response's status line (nil when there is none).
func statusCode(_ response: String) -> Int? {
  let parts = response.split(separator: " ", maxSplits: 2)
  guard parts.count >= 2, parts[0].hasPrefix("HTTP/1.") else { return nil }
  return Int(parts[1])
}

@Suite(.serialized) struct AdminHostileTests {
  /// Item 1 of issue 13: `GET /health?=` trapped in the query parser and killed the node.
  @Test func malformedRequestsGetA4xxAndTheNodeLivesOn() async throws {
    let node = try await AdminNodeProcess.launch(ram: "64MiB", nvme: "256MiB")
    defer { _ = node.stop() }
    let client = node.client()
    defer { client.close() }
    let blocks = try await putBlocks(client, count: 4, size: 64 << 10, seed: 3)
    let requests: [(String, [UInt8], ClosedRange<Int>)] = [
      ("empty query pair", Array("GET /health?= HTTP/1.1\r\n\r\n".utf8), 400...400),
      ("empty pairs", Array("GET /health?&& HTTP/1.1\r\n\r\n".utf8), 400...400),
      ("double equals", Array("GET /metrics?a==b HTTP/1.1\r\n\r\n".utf8), 400...400),
      ("bad escape", Array("GET /v1/status?x=%zz HTTP/1.1\r\n\r\n".utf8), 400...400),
      ("bare LF line ends", Array("GET /health HTTP/1.1\nHost: x\n\n".utf8), 400...400),
      ("non-ASCII", Array("GET /health HTTP/1.1\r\nX: ".utf8) + [0xC3, 0xA9] + Array("\r\n\r\n".utf8), 400...400),
      ("no version", Array("GET /health\r\n\r\n".utf8), 400...400),
      (
        "absurd length", Array("POST /v1/evict HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".utf8),
        413...413
      ),
      ("chunked", Array("POST /v1/evict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".utf8), 411...411),
      (
        "huge header", Array(("GET /health HTTP/1.1\r\nX: " + String(repeating: "a", count: 40_000) + "\r\n\r\n").utf8),
        431...431
      ),
    ]
    for (name, bytes, expected) in requests {
      let response = try rawAdminExchange(node.admin, bytes)
      let status = try #require(statusCode(response), "\(name): no response: \(response.prefix(200))")
      #expect(expected.contains(status), "\(name): \(response.prefix(200))")
      #expect(response.contains("\"error\""), "\(name): a JSON error body")
    }
    // Still alive, blocks still served.
    #expect(statusCode(try rawAdminExchange(node.admin, Array("GET /health HTTP/1.1\r\n\r\n".utf8))) == 200)
    for (key, bytes) in blocks { #expect(try await getBlock(client, key, size: bytes.count) == bytes) }
    let metrics = try rawAdminExchange(node.admin, Array("GET /metrics HTTP/1.1\r\n\r\n".utf8))
    #expect((sample(metrics, "strata_admin_refused_total{reason=\"malformed\"}") ?? 0) >= Double(requests.count))
  }

  /// Item 7: sixteen slow connections made /health and /ready answer 503, and each admin
  /// connection had a thread of its own.
  @Test func probesAnswerWhileSlowConnectionsHoldTheAdminPort() async throws {
    let node = try await AdminNodeProcess.launch(ram: "64MiB", nvme: "256MiB")
    defer { _ = node.stop() }
    let tasks = "/proc/\(node.node.process.processIdentifier)/task"
    let threadsBefore = try FileManager.default.contentsOfDirectory(atPath: tasks).count
    // 200 connections (over the limit of 64) that send part of a request and stall.
    var slow: [TCPSocket] = []
    defer { for socket in slow { socket.shutdown() } }
    for _ in 0..<200 {
      let socket = try TCPSocket.connect(to: node.admin, timeoutMilliseconds: 5000)
      try socket.writeAll(Array("GET /v1/status HTTP/1.1\r\nX-Slow: ".utf8))
      slow.append(socket)
    }
    for path in ["/health", "/ready", "/health", "/ready", "/metrics"] {
      let response = try rawAdminExchange(node.admin, Array("GET \(path) HTTP/1.1\r\n\r\n".utf8))
      #expect(statusCode(response) == 200, "\(path) with 200 slow connections open: \(response.prefix(300))")
    }
    // The admin port's threads are fixed: 200 connections added none.
    let threadsDuring = try FileManager.default.contentsOfDirectory(atPath: tasks).count
    #expect(
      threadsDuring <= threadsBefore + 2, "threads: \(threadsBefore) before, \(threadsDuring) with 200 connections")
  }

  /// Item 7: the 30 s timeout was per recv, so a client dripping a byte now and then held a
  /// connection (and a thread) forever. A request must now arrive whole within
  /// admin.request_timeout (1 s here): the dripping client is answered 408 and cut.
  @Test func aDrippedRequestIsCutAtTheRequestDeadline() async throws {
    let config = try temporaryFile("admin-deadline.yaml", "admin:\n  request_timeout: 1s\n")
    let node = try await AdminNodeProcess.launch(ram: "64MiB", nvme: "256MiB", config: config)
    defer { _ = node.stop() }
    let socket = try TCPSocket.connect(to: node.admin, timeoutMilliseconds: 200)
    defer { socket.shutdown() }
    try socket.writeAll(Array("GET /health HTTP/1.1\r\n".utf8))
    let started = Date()
    var received: [UInt8] = []
    let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
    defer { chunk.deallocate() }
    var closed = false
    // One header byte every 200 ms (each read waits at most 200 ms: the drip's pace), until the
    // node answers and closes; 10 s is the test's own bound.
    var writing = true
    while !closed && Date().timeIntervalSince(started) < 10 {
      // Once the node stops reading, its answer is read to the end.
      if writing && (try? socket.writeAll(Array("X".utf8))) == nil { writing = false }
      do {
        let count = try socket.readSome(chunk)
        if count == 0 { closed = true }
        received += chunk[0..<count]
      } catch {
        if error.code != .timeout { closed = true }
      }
    }
    let elapsed = Date().timeIntervalSince(started)
    let text = String(decoding: received, as: UTF8.self)
    #expect(closed || statusCode(text) == 408, "the dripping connection was never cut")
    #expect(statusCode(text) == 408, "\(text.prefix(200))")
    #expect(elapsed < 5, "cut after \(elapsed) s with a 1 s request deadline")
    // The node still answers.
    #expect(statusCode(try rawAdminExchange(node.admin, Array("GET /health HTTP/1.1\r\n\r\n".utf8))) == 200)
  }

  /// Item 7: X-Request-Id was echoed back unchecked, so a bare LF in it injected headers.
  @Test func requestIDsCannotInjectResponseHeaders() async throws {
    let node = try await AdminNodeProcess.launch(ram: "64MiB", nvme: "256MiB")
    defer { _ = node.stop() }
    let injected = try rawAdminExchange(
      node.admin, Array("GET /health HTTP/1.1\r\nX-Request-Id: abc\nInjected: yes\r\n\r\n".utf8))
    let injectedHead = injected.components(separatedBy: "\r\n\r\n").first ?? ""
    #expect(statusCode(injected) != nil, "an answer: \(injected)")
    #expect(!injectedHead.contains("\nInjected"), "a header was injected: \(injectedHead)")
    // A good id is echoed; an over-long one is replaced by the node's own.
    let good = try rawAdminExchange(node.admin, Array("GET /health HTTP/1.1\r\nX-Request-Id: trace-42.a\r\n\r\n".utf8))
    #expect(good.contains("X-Request-Id: trace-42.a\r\n"), "\(good)")
    let long = String(repeating: "z", count: 100)
    let replaced = try rawAdminExchange(node.admin, Array("GET /health HTTP/1.1\r\nX-Request-Id: \(long)\r\n\r\n".utf8))
    #expect(statusCode(replaced) == 200 && !replaced.contains(long) && replaced.contains("X-Request-Id: admin-"))
  }

  /// 300 connections of seeded garbage and mangled requests, each sent in a few pieces: every
  /// answer is a 4xx (a 200 where the mangling left a valid request, a 503 if the workers are
  /// busy), and the node lives on.
  @Test func garbageOnManyConnectionsNeverTakesTheNodeDown() async throws {
    let node = try await AdminNodeProcess.launch(ram: "64MiB", nvme: "256MiB")
    defer { _ = node.stop() }
    var state: UInt64 = 0x5EED
    func random() -> UInt64 {
      state ^= state << 13
      state ^= state >> 7
      state ^= state << 17
      return state
    }
    let alphabet = Array("?=&%:/ \r\n\t0123456789aF-".utf8) + [0, 0x7F, 0x80, 0xFF]
    let base = Array("GET /metrics?a=b&c=%20d HTTP/1.1\r\nHost: x\r\nX-Request-Id: r1\r\n\r\n".utf8)
    for round in 0..<300 {
      var bytes = base
      if round % 5 == 0 {
        bytes = (0..<(1 + random() % 300)).map { _ in UInt8(truncatingIfNeeded: random()) }
      } else {
        for _ in 0..<(1 + random() % 4) {
          let position = Int(random() % UInt64(bytes.count))
          bytes[position] = alphabet[Int(random() % UInt64(alphabet.count))]
        }
      }
      let socket = try TCPSocket.connect(to: node.admin, timeoutMilliseconds: 200)
      var start = 0
      while start < bytes.count {
        let end = min(bytes.count, start + 1 + Int(random() % UInt64(bytes.count)))
        try? socket.writeAll(Array(bytes[start..<end]))
        start = end
      }
      // Half the connections close without reading; the rest read what comes back.
      if round % 2 == 0 {
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        if let count = try? socket.readSome(chunk),
          let status = statusCode(String(decoding: chunk[0..<count], as: UTF8.self))
        {
          #expect((400..<500).contains(status) || status == 200 || status == 503, "round \(round): \(status)")
        }
        chunk.deallocate()
      }
      socket.shutdown()
    }
    #expect(statusCode(try rawAdminExchange(node.admin, Array("GET /health HTTP/1.1\r\n\r\n".utf8))) == 200)
    let client = node.client()
    defer { client.close() }
    let blocks = try await putBlocks(client, count: 2, size: 4096, seed: 9)
    #expect(try await getBlock(client, blocks[0].0, size: 4096) == blocks[0].1)
  }
}
