// One keep-alive HTTP/1.1 connection to an etcd gateway: POST a JSON body, read the response
// (Content-Length or chunked), or read a long chunked stream as newline-delimited JSON messages.

import StrataCore
import StrataTCP

/// A client connection used by one thread at a time (the client's pool hands it out exclusively;
/// a watch owns its connection).
final class HTTPConnection: @unchecked Sendable {
  // @unchecked: every mutable member is touched only by the thread that currently holds the
  // connection (taken out of the pool under its lock, or owned by one watch thread); `socket`
  // is Sendable and `shutdown()` on it is the one call made from other threads.
  let endpoint: EtcdEndpoint
  let socket: TCPSocket
  /// True once a response has been read in full: a failure on the next request may then be the
  /// peer's idle close, which is worth one retry on a fresh connection.
  private(set) var reused = false
  private var decoder = HTTPResponseDecoder()
  private var scratch = [UInt8](repeating: 0, count: 16 << 10)
  private var streamBuffer: [UInt8] = []
  private var streamEnded = false

  /// Bodies over this size are refused (a range over a few thousand members is far smaller).
  static let responseBytesMax = 64 << 20

  private init(endpoint: EtcdEndpoint, socket: TCPSocket) {
    self.endpoint = endpoint
    self.socket = socket
  }

  /// Connects to `endpoint`; an `https://` one over TLS with `tls` (which verifies etcd's
  /// certificate against its CA and the endpoint's host, and presents the client certificate).
  static func open(_ endpoint: EtcdEndpoint, timeoutMilliseconds: UInt64, tls: TLSContext?) throws(StrataError)
    -> HTTPConnection
  {
    if endpoint.isTLS && tls == nil {
      throw StrataError(
        .invalidConfiguration, "etcd endpoint \(endpoint) is https: give the CA of etcd's certificate (cluster.etcd_ca)"
      )
    }
    let socket = try TCPSocket.connect(
      to: endpoint.address, timeoutMilliseconds: timeoutMilliseconds, tls: endpoint.isTLS ? tls : nil)
    return HTTPConnection(endpoint: endpoint, socket: socket)
  }

  /// Sends `POST path` with a JSON body (and etcd's auth token, when given).
  func send(path: String, body: [UInt8], authorization: String? = nil) throws(StrataError) {
    let head =
      "POST \(path) HTTP/1.1\r\nHost: \(endpoint.hostHeader)\r\nContent-Type: application/json\r\n"
      + (authorization.map { "Authorization: \($0)\r\n" } ?? "")
      + "Accept: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
    decoder.reset()
    streamBuffer.removeAll()
    streamEnded = false
    try socket.writeAll(Array(head.utf8) + body)
  }

  /// Reads up to the end of the response head.
  func readHead() throws(StrataError) -> HTTPHead {
    while true {
      switch try nextEvent() {
      case .head(let head): return head
      case .body, .end:
        throw StrataError(.internalError, "HTTP decoder produced body before head")
      }
    }
  }

  /// Reads the rest of the body; true in `reusable` when the connection may carry another request.
  func readBody() throws(StrataError) -> (body: [UInt8], reusable: Bool) {
    var body: [UInt8] = []
    while true {
      switch try nextEvent() {
      case .body(let piece):
        body += piece
        guard body.count <= Self.responseBytesMax else {
          throw StrataError(.protocolError, "etcd response over \(Self.responseBytesMax) bytes")
        }
      case .end(let reusable):
        reused = reusable
        return (body, reusable)
      case .head:
        throw StrataError(.internalError, "HTTP decoder produced a second head")
      }
    }
  }

  /// The next newline-delimited message of a streamed body (the gateway writes one JSON object
  /// per line); nil once the response has ended.
  func nextStreamMessage() throws(StrataError) -> [UInt8]? {
    while true {
      if let newline = streamBuffer.firstIndex(of: UInt8(ascii: "\n")) {
        let line = Array(streamBuffer[..<newline])
        streamBuffer.removeFirst(newline + 1)
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x0d || $0 == 0x09 }) { continue }
        return line
      }
      if streamEnded {
        guard !streamBuffer.allSatisfy({ $0 == 0x20 || $0 == 0x0d || $0 == 0x09 }) else { return nil }
        defer { streamBuffer.removeAll() }
        return streamBuffer
      }
      switch try nextEvent() {
      case .body(let piece):
        streamBuffer += piece
        guard streamBuffer.count <= Self.responseBytesMax else {
          throw StrataError(.protocolError, "etcd stream message over \(Self.responseBytesMax) bytes")
        }
      case .end:
        streamEnded = true
      case .head:
        throw StrataError(.internalError, "HTTP decoder produced a second head")
      }
    }
  }

  private func nextEvent() throws(StrataError) -> HTTPEvent {
    while true {
      if let event = try decoder.next() { return event }
      let socket = socket
      let read: Result<Int, StrataError> = scratch.withUnsafeMutableBytes { raw in
        do throws(StrataError) {
          return .success(try socket.readSome(raw))
        } catch {
          return .failure(error)
        }
      }
      switch read {
      case .success(let count):
        decoder.feed(scratch[0..<count])
      case .failure(let error) where error.code == .unavailable:
        return try decoder.endOfInput()
      case .failure(let error):
        throw error
      }
    }
  }
}
