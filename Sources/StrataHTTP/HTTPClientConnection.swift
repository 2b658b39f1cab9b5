// The HTTP/1.1 client: one keep-alive connection on StrataTCP (plain or TLS) that sends a request
// and reads its response (Content-Length, chunked or until close) through HTTPResponseDecoder, or
// reads a long chunked stream as newline-delimited messages (etcd's watch).

public import StrataCore
public import StrataTCP

/// A client connection used by one thread at a time (a pool hands it out exclusively; a stream
/// reader owns its connection).
public final class HTTPClientConnection: @unchecked Sendable {
  // @unchecked: every mutable member is touched only by the thread that currently holds the
  // connection (taken out of a pool under its lock, or owned by one stream thread); `socket`
  // is Sendable and `shutdown()` on it is the one call made from other threads.
  public let socket: TCPSocket
  /// True once a response has been read in full: a failure on the next request may then be the
  /// peer's idle close, which is worth one retry on a fresh connection.
  public private(set) var reused = false
  private var decoder = HTTPResponseDecoder()
  private var scratch = [UInt8](repeating: 0, count: 16 << 10)
  private var streamBuffer: [UInt8] = []
  private var streamEnded = false

  /// Bodies (and stream messages) over this size are refused.
  public let responseBytesMax: Int

  public init(socket: TCPSocket, responseBytesMax: Int = 64 << 20) {
    self.socket = socket
    self.responseBytesMax = responseBytesMax
  }

  /// Connects to `address`, over TLS with `tls` (which verifies the server's certificate).
  public static func open(
    _ address: HostPort, timeoutMilliseconds: UInt64, tls: TLSContext?, responseBytesMax: Int = 64 << 20
  ) throws(StrataError) -> HTTPClientConnection {
    let socket = try TCPSocket.connect(to: address, timeoutMilliseconds: timeoutMilliseconds, tls: tls)
    return HTTPClientConnection(socket: socket, responseBytesMax: responseBytesMax)
  }

  /// Sends `request`; its response is read next.
  public func send(_ request: HTTPClientRequest) throws(StrataError) {
    let bytes = try request.bytes()
    decoder.reset()
    decoder.bodyless = request.method == "HEAD"
    streamBuffer.removeAll()
    streamEnded = false
    try socket.writeAll(bytes)
  }

  /// Reads up to the end of the response head.
  public func readHead() throws(StrataError) -> HTTPResponseHead {
    switch try nextEvent() {
    case .head(let head): return head
    case .body, .end: throw StrataError(.internalError, "HTTP decoder produced body before head")
    }
  }

  /// Reads the rest of the body; true in `reusable` when the connection may carry another request.
  public func readBody() throws(StrataError) -> (body: [UInt8], reusable: Bool) {
    var body: [UInt8] = []
    while true {
      switch try nextEvent() {
      case .body(let piece):
        body += piece
        guard body.count <= responseBytesMax else {
          throw StrataError(.protocolError, "HTTP response over \(responseBytesMax) bytes")
        }
      case .end(let reusable):
        reused = reusable
        return (body, reusable)
      case .head: throw StrataError(.internalError, "HTTP decoder produced a second head")
      }
    }
  }

  /// The next newline-delimited message of a streamed body (blank lines skipped); nil once the
  /// response has ended.
  public func nextStreamMessage() throws(StrataError) -> [UInt8]? {
    func blank(_ bytes: some Collection<UInt8>) -> Bool { bytes.allSatisfy { $0 == 0x20 || $0 == 0x0d || $0 == 0x09 } }
    while true {
      if let newline = streamBuffer.firstIndex(of: UInt8(ascii: "\n")) {
        let line = Array(streamBuffer[..<newline])
        streamBuffer.removeFirst(newline + 1)
        if blank(line) { continue }
        return line
      }
      if streamEnded {
        guard !blank(streamBuffer) else { return nil }
        defer { streamBuffer.removeAll() }
        return streamBuffer
      }
      switch try nextEvent() {
      case .body(let piece):
        streamBuffer += piece
        guard streamBuffer.count <= responseBytesMax else {
          throw StrataError(.protocolError, "HTTP stream message over \(responseBytesMax) bytes")
        }
      case .end: streamEnded = true
      case .head: throw StrataError(.internalError, "HTTP decoder produced a second head")
      }
    }
  }

  private func nextEvent() throws(StrataError) -> HTTPEvent {
    while true {
      if let event = try decoder.next() { return event }
      let socket = socket
      let read: Result<Int, StrataError> = scratch.withUnsafeMutableBytes { raw in
        do throws(StrataError) { return .success(try socket.readSome(raw)) } catch { return .failure(error) }
      }
      switch read {
      case .success(let count): decoder.feed(scratch[0..<count])
      case .failure(let error) where error.code == .unavailable: return try decoder.endOfInput()
      case .failure(let error): throw error
      }
    }
  }
}
