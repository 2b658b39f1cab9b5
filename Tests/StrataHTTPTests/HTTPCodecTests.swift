// The codec end to end: what the client writes the request parser reads back, and what the
// server writes the response decoder reads back, fed split at every byte (and at every pair of
// bytes for a chunked response); injected header lines are refused; and the client and server
// talk over loopback: keep-alive, HEAD, Connection: close and the server's own refusals.

import Logging
import StrataCore
import StrataTCP
import Testing

@testable import StrataHTTP

/// Every request `bytes` holds, fed as the given pieces.
private func requests(_ pieces: [ArraySlice<UInt8>]) -> (requests: [HTTPRequest], failure: HTTPReadFailure?) {
  var parser = HTTPRequestParser()
  var found: [HTTPRequest] = []
  for piece in pieces {
    parser.append(piece)
    parsing: while true {
      switch parser.next() {
      case .needMore: break parsing
      case .request(let request): found.append(request)
      case .failure(let failure): return (found, failure)
      }
    }
  }
  return (found, nil)
}

/// Head, body and whether the connection is reusable, for each response the pieces hold.
private func responses(_ pieces: [ArraySlice<UInt8>]) throws -> [(HTTPResponseHead, [UInt8], Bool)] {
  var decoder = HTTPResponseDecoder()
  var found: [(HTTPResponseHead, [UInt8], Bool)] = []
  var head: HTTPResponseHead?
  var body: [UInt8] = []
  for piece in pieces {
    decoder.feed(piece)
    while let event = try decoder.next() {
      switch event {
      case .head(let value): head = value
      case .body(let bytes): body += bytes
      case .end(let reusable):
        found.append((try #require(head), body, reusable))
        head = nil
        body = []
        decoder.reset()
      }
    }
  }
  return found
}

/// `bytes` cut in two at every offset (0 and the end included).
private func everySplit(_ bytes: [UInt8]) -> [[ArraySlice<UInt8>]] {
  (0...bytes.count).map { [bytes[..<$0], bytes[$0...]] }
}

@Suite struct HTTPCodecTests {
  @Test func clientRequestsReadBackAtEverySplit() throws {
    let post = HTTPClientRequest(
      method: "POST", target: "/v3/kv/put?x=%41",
      headers: [("Host", "127.0.0.1:2379"), ("Content-Type", "application/json"), ("Authorization", "tok en")],
      body: Array(#"{"key":"a2V5"}"#.utf8))
    let get = HTTPClientRequest(method: "GET", target: "/health", headers: [("Connection", "close")])
    let bytes = try post.bytes() + get.bytes()
    for (offset, pieces) in everySplit(bytes).enumerated() {
      let (found, failure) = requests(pieces)
      #expect(failure == nil, "split at \(offset)")
      try #require(found.count == 2, "split at \(offset)")
      #expect(found[0].method == "POST" && found[0].path == "/v3/kv/put" && found[0].query == ["x": "A"])
      #expect(found[0].headers["authorization"] == "tok en" && found[0].headers["host"] == "127.0.0.1:2379")
      #expect(found[0].body == post.body && !found[0].closes)
      #expect(found[1].method == "GET" && found[1].body.isEmpty && found[1].closes)
    }
  }

  @Test func serverResponsesReadBackAtEverySplit() throws {
    let first = HTTPResponse(
      status: 503, contentType: "application/json", headers: [("X-Request-Id", "r-1")], body: Array(#"{"a":1}"#.utf8))
    let second = HTTPResponse(status: 200, contentType: "text/plain", body: Array("ok\n".utf8))
    let bytes = first.bytes(closing: false) + second.bytes(closing: true)
    for (offset, pieces) in everySplit(bytes).enumerated() {
      let found = try responses(pieces)
      try #require(found.count == 2, "split at \(offset)")
      #expect(found[0].0.status == 503 && found[0].0.reason == "Service Unavailable")
      #expect(found[0].0.header("x-request-id") == "r-1" && found[0].0.header("content-type") == "application/json")
      #expect(found[0].1 == first.body && found[0].2)
      #expect(found[1].0.status == 200 && found[1].1 == second.body && !found[1].2)
    }
  }

  @Test func chunkedStreamReadsTheSameAtEveryPairOfSplits() throws {
    let text =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      + "7\r\n{\"a\":1}\r\n1;x=y\r\n\n\r\n0\r\nTrailer: t\r\n\r\n"
    let bytes = Array(text.utf8)
    for cut in 0...bytes.count {
      for second in cut...bytes.count {
        let found = try responses([bytes[..<cut], bytes[cut..<second], bytes[second...]])
        try #require(found.count == 1, "cuts at \(cut), \(second)")
        #expect(found[0].1 == Array("{\"a\":1}\n".utf8) && found[0].2, "cuts at \(cut), \(second)")
      }
    }
  }

  @Test func limitsAreStatedAndHeld() throws {
    // A chunk announced over the limit is refused before any of it is held.
    var decoder = HTTPResponseDecoder()
    let size = String(HTTPResponseDecoder.chunkBytesMax + 1, radix: 16)
    decoder.feed(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\(size)\r\n".utf8))
    _ = try decoder.next()
    let error = #expect(throws: StrataError.self) { try decoder.next() }
    #expect(error?.code == .protocolError && error?.message.contains("over the") == true)
    // A line without its end is refused once it passes the line limit.
    var endless = HTTPResponseDecoder()
    endless.feed(Array(repeating: UInt8(ascii: "H"), count: HTTPResponseDecoder.lineBytesMax + 1))
    #expect(throws: StrataError.self) { try endless.next() }
    // A request body over the limit is refused from its Content-Length alone.
    let (_, failure) = requests([
      ArraySlice("POST / HTTP/1.1\r\nContent-Length: \(HTTPLimits.bodyBytesMax + 1)\r\n\r\n".utf8)
    ])
    #expect(failure?.status == 413)
  }

  @Test func aResponseToHEADHasNoBodyWhateverItsLength() throws {
    var decoder = HTTPResponseDecoder()
    decoder.bodyless = true
    decoder.feed(Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n".utf8))
    #expect(
      try decoder.next() == .head(HTTPResponseHead(status: 200, reason: "OK", headers: [("content-length", "5")])))
    #expect(try decoder.next() == .end(reusable: true))
    decoder.reset()
    guard case .head(let next) = try decoder.next() else {
      Issue.record("the next response was not found where the bodyless one ended")
      return
    }
    #expect(next.status == 204)
  }

  @Test func requestsCannotCarryInjectedLines() {
    let bad = [
      HTTPClientRequest(method: "GET", target: "/a b"),
      HTTPClientRequest(method: "GET", target: "/a\r\nX: y"),
      HTTPClientRequest(method: "GET", target: "relative"),
      HTTPClientRequest(method: "G ET", target: "/"),
      HTTPClientRequest(method: "GET", target: "/", headers: [("X", "a\r\nInjected: yes")]),
      HTTPClientRequest(method: "GET", target: "/", headers: [("Bad Name", "x")]),
      HTTPClientRequest(method: "GET", target: "/", headers: [("X", "caf\u{E9}")]),
    ]
    for request in bad {
      let error = #expect(throws: StrataError.self, "\(request.target)") { try request.bytes() }
      #expect(error?.code == .invalidArgument)
    }
  }

  @Test func clientAndServerOverLoopback() throws {
    let server = try HTTPServer(
      name: "test", listen: HostPort(host: "127.0.0.1", port: 0),
      limits: HTTPServerLimits(connectionsMax: 8, requestTimeoutMilliseconds: 5_000, workers: 2),
      logger: Logger(label: "test"), inline: { $0.path == "/inline" },
      refusal: { status, code, message in
        HTTPResponse(status: status, contentType: "text/plain", body: Array("\(code.name): \(message)".utf8))
      },
      handler: { request in
        HTTPResponse(
          status: request.path == "/missing" ? 404 : 200, contentType: "text/plain",
          body: request.method == "HEAD" ? [] : Array("\(request.method) \(request.path) \(request.body.count)".utf8))
      })
    server.start()
    defer { server.stop() }
    let connection = try HTTPClientConnection.open(server.address, timeoutMilliseconds: 5_000, tls: nil)
    defer { connection.socket.shutdown() }
    // Keep-alive: requests on one connection, one answered by a worker, one on the event loop.
    let calls: [(String, String, [UInt8])] = [
      ("POST", "/work", [UInt8](repeating: 7, count: 3000)), ("GET", "/inline", []),
    ]
    for (method, path, body) in calls {
      try connection.send(HTTPClientRequest(method: method, target: path, headers: [("Host", "x")], body: body))
      let head = try connection.readHead()
      let (bytes, reusable) = try connection.readBody()
      #expect(head.status == 200 && reusable)
      #expect(String(decoding: bytes, as: UTF8.self) == "\(method) \(path) \(body.count)")
    }
    #expect(connection.reused)
    // HEAD: a head only (its handler here answers no body).
    try connection.send(HTTPClientRequest(method: "HEAD", target: "/missing"))
    #expect(try connection.readHead().status == 404)
    #expect(try connection.readBody().body.isEmpty)
    try connection.send(HTTPClientRequest(method: "GET", target: "/x", headers: [("Connection", "close")]))
    #expect(try connection.readHead().status == 200)
    let (last, reusable) = try connection.readBody()
    #expect(String(decoding: last, as: UTF8.self) == "GET /x 0" && !reusable)

    // A request the parser refuses gets the server's own refusal, then the connection closes.
    let refused = try HTTPClientConnection.open(server.address, timeoutMilliseconds: 5_000, tls: nil)
    defer { refused.socket.shutdown() }
    try refused.socket.writeAll(Array("GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".utf8))
    #expect(try refused.readHead().status == 411)
    let (reason, again) = try refused.readBody()
    #expect(String(decoding: reason, as: UTF8.self).hasPrefix("invalid_argument: Transfer-Encoding") && !again)
    #expect(server.stats.refusedMalformed == 1)
  }
}
