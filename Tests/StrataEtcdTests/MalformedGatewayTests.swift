// The client against a fake gateway on a loopback socket that answers with broken HTTP or JSON:
// each gives a clear StrataError, never a crash or a hang.

import Foundation
import StrataCore
import StrataEtcd
import StrataTCP
import Testing

/// A port that nothing listens on (bound, read back, closed).
func closedPort() throws -> UInt16 {
  try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0)).address.port
}

/// Answers each connection's first request with `response`, then closes it.
final class FakeGateway: Sendable {
  let listener: TCPListener
  let endpoint: EtcdEndpoint

  init(response: [UInt8]) throws {
    listener = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0))
    endpoint = EtcdEndpoint(address: listener.address)
    let listener = listener
    Thread.detachNewThread {
      while let socket = listener.accept() {
        Self.readRequest(socket)
        try? socket.writeAll(response)
        socket.shutdown()
      }
    }
  }

  deinit { listener.shutdown() }

  /// Reads a request head and its Content-Length body.
  private static func readRequest(_ socket: TCPSocket) {
    var received: [UInt8] = []
    var scratch = [UInt8](repeating: 0, count: 4096)
    while true {
      let text = String(decoding: received, as: UTF8.self)
      if let end = text.range(of: "\r\n\r\n") {
        let head = text[..<end.lowerBound].lowercased()
        let length =
          head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
          .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
        if text.utf8.count - text.utf8.distance(from: text.startIndex, to: end.upperBound) >= length { return }
      }
      let count = scratch.withUnsafeMutableBytes { (try? socket.readSome($0)) ?? 0 }
      if count == 0 { return }
      received += scratch[0..<count]
    }
  }
}

@Suite struct MalformedGatewayTests {
  /// The error a put gets from a gateway that answers `response`.
  private func putError(_ response: String) throws -> StrataError? {
    let gateway = try FakeGateway(response: Array(response.utf8))
    let client = EtcdClient(endpoints: [gateway.endpoint], timeoutMilliseconds: 2000)
    return #expect(throws: StrataError.self) { try client.put("k", value: [1]) }
  }

  @Test func bodyThatIsNotJSON() throws {
    let error = try putError("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    #expect(error?.code == .protocolError)
    #expect(error?.message.contains("malformed JSON") == true)
  }

  @Test func statusLineThatIsNotHTTP() throws {
    let error = try putError("SMTP 220 hello\r\n\r\n")
    #expect(error?.code == .protocolError)
    #expect(error?.message.contains("status line") == true)
  }

  @Test func badChunkSize() throws {
    let error = try putError("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    #expect(error?.code == .protocolError)
    #expect(error?.message.contains("chunk size") == true)
  }

  @Test func bodyCutShort() throws {
    let error = try putError("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"header\":")
    #expect(error?.code == .unavailable)
    #expect(error?.message.contains("middle of a response") == true)
  }

  @Test func missingRevision() throws {
    let error = try putError("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    #expect(error?.code == .protocolError)
    #expect(error?.message.contains("no header revision") == true)
  }

  @Test func revisionThatIsNotANumber() throws {
    let body = #"{"header":{"revision":"twelve"}}"#
    let error = try putError("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
    #expect(error?.code == .protocolError)
    #expect(error?.message.contains("not an int64") == true)
  }

  @Test func gatewayErrorCarriesEtcdMessage() throws {
    let body =
      #"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#
    let error = try putError("HTTP/1.1 404 Not Found\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
    #expect(error?.code == .notFound)
    #expect(error?.message.contains("requested lease not found") == true)
  }

  @Test func unknownPathAndServerError() throws {
    var error = try putError("HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nNot Found\n")
    #expect(error?.code == .protocolError)
    #expect(error?.message.contains("no such path") == true)
    error = try putError("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
    #expect(error?.code == .unavailable)
    #expect(error?.message.contains("HTTP 503") == true)
  }

  @Test func valueThatIsNotBase64() throws {
    let body = #"{"header":{"revision":"3"},"kvs":[{"key":"Zm9v","value":"***","mod_revision":"2"}]}"#
    let gateway = try FakeGateway(
      response: Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8))
    let client = EtcdClient(endpoints: [gateway.endpoint], timeoutMilliseconds: 2000)
    let error = #expect(throws: StrataError.self) { try client.get("foo") }
    #expect(error?.code == .protocolError)
    #expect(error?.message.contains("base64") == true)
  }

  @Test func watchWithoutCreatedMessage() throws {
    let message = #"{"result":{"header":{"revision":"3"}}}"# + "\n"
    let hex = String(message.utf8.count, radix: 16)
    let gateway = try FakeGateway(
      response: Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\(hex)\r\n\(message)\r\n0\r\n\r\n".utf8))
    let client = EtcdClient(endpoints: [gateway.endpoint], timeoutMilliseconds: 2000)
    let error = #expect(throws: StrataError.self) {
      try client.watch(prefix: "p", startRevision: 1, onEvents: { _, _ in }, onEnd: { _ in })
    }
    #expect(error?.code == .protocolError)
    #expect(error?.message.contains("expected a created message") == true)
  }

  @Test func endpointParsing() throws {
    let endpoint = try EtcdEndpoint(parsing: "http://127.0.0.1:2379/")
    #expect(endpoint.address == HostPort(host: "127.0.0.1", port: 2379))
    #expect(endpoint.description == "http://127.0.0.1:2379")
    #expect(try EtcdEndpoint(parsing: "http://[::1]:2379").address.host == "::1")
    let https = try EtcdEndpoint(parsing: "https://127.0.0.1:2379")
    #expect(https.isTLS && !endpoint.isTLS)
    #expect(https.description == "https://127.0.0.1:2379")
    for bad in ["127.0.0.1:2379", "http://127.0.0.1", "http://h:2379/v3", "http://:2379", "ftp://h:1"] {
      let error = #expect(throws: StrataError.self) { try EtcdEndpoint(parsing: bad) }
      #expect(error?.code == .invalidArgument, "\(bad)")
    }
  }
}
