// The HTTP/1.1 response decoder (the client side): bytes in, events out (head, body pieces, end),
// Content-Length, chunked and until-close bodies. Pure: it does no I/O, so it is tested fed at
// every split; HTTPClientConnection feeds it from a socket.

public import StrataCore

/// The status line and headers of a response.
public struct HTTPResponseHead: Sendable, Hashable {
  public var status: Int
  public var reason: String
  /// Header names lower-cased, in arrival order.
  public var headers: [(name: String, value: String)]

  public init(status: Int, reason: String, headers: [(name: String, value: String)] = []) {
    self.status = status
    self.reason = reason
    self.headers = headers
  }

  /// The first value of the header `name` (lower-case).
  public func header(_ name: String) -> String? {
    headers.first { $0.name == name }?.value
  }

  public static func == (lhs: HTTPResponseHead, rhs: HTTPResponseHead) -> Bool {
    lhs.status == rhs.status && lhs.reason == rhs.reason && lhs.headers.map(\.name) == rhs.headers.map(\.name)
      && lhs.headers.map(\.value) == rhs.headers.map(\.value)
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(status)
    hasher.combine(reason)
    for header in headers {
      hasher.combine(header.name)
      hasher.combine(header.value)
    }
  }
}

/// What the decoder found next.
public enum HTTPEvent: Sendable, Hashable {
  case head(HTTPResponseHead)
  case body([UInt8])
  /// The response is complete; `reusable` when the connection may carry another request.
  case end(reusable: Bool)
}

/// Decodes one response at a time (call `reset()` before the next on the same connection).
public struct HTTPResponseDecoder: Sendable {
  /// Limits on what a peer may make us hold: one line, the head (and trailers), one chunk.
  public static let lineBytesMax = 16 << 10
  public static let headBytesMax = 64 << 10
  public static let chunkBytesMax = 64 << 20

  private enum State {
    case statusLine
    case headers(HTTPResponseHead)
    case fixedBody(remaining: Int)
    case chunkSize
    case chunkData(remaining: Int)
    case chunkDataEnd
    case trailers
    case untilClose
    case done
  }

  private var state = State.statusLine
  private var buffer: [UInt8] = []
  private var cursor = 0
  private var headBytes = 0
  private var closeAfter = false
  /// A response to HEAD or a 1xx/204/304 carries no body whatever its headers say.
  public var bodyless = false

  public init() {}

  /// Bytes received and not yet decoded (kept across `reset()`: a pipelined next response).
  public var pendingBytes: Int { buffer.count - cursor }

  public mutating func feed(_ bytes: some Collection<UInt8>) {
    if cursor > 0 && cursor == buffer.count {
      buffer.removeAll(keepingCapacity: true)
      cursor = 0
    } else if cursor > 4096 && cursor * 2 > buffer.count {
      buffer.removeFirst(cursor)
      cursor = 0
    }
    buffer.append(contentsOf: bytes)
  }

  /// Starts on the next response; undecoded bytes stay.
  public mutating func reset() {
    state = .statusLine
    headBytes = 0
    closeAfter = false
    bodyless = false
  }

  /// The peer closed the connection: ends a body delimited by the close, otherwise an error.
  public mutating func endOfInput() throws(StrataError) -> HTTPEvent {
    switch state {
    case .untilClose:
      state = .done
      return .end(reusable: false)
    case .done:
      return .end(reusable: false)
    case .statusLine where pendingBytes == 0:
      throw StrataError(.unavailable, "the HTTP peer closed the connection before answering")
    default:
      throw StrataError(.unavailable, "the HTTP peer closed the connection in the middle of a response")
    }
  }

  /// The next event, or nil when more bytes are needed.
  public mutating func next() throws(StrataError) -> HTTPEvent? {
    while true {
      switch state {
      case .statusLine:
        guard let line = try takeLine() else { return nil }
        if line.isEmpty { continue }  // tolerate a stray CRLF between responses
        state = .headers(try Self.parseStatusLine(line))
      case .headers(var head):
        guard let line = try takeLine() else { return nil }
        if !line.isEmpty {
          guard let colon = line.firstIndex(of: ":") else {
            throw StrataError(.protocolError, "HTTP header line without a colon: '\(Self.printable(line))'")
          }
          let name = line[..<colon].lowercased()
          let value = httpTrimmed(line[line.index(after: colon)...])
          head.headers.append((name, value))
          state = .headers(head)
          continue
        }
        try enterBody(head)
        return .head(head)
      case .fixedBody(let remaining):
        if remaining == 0 {
          state = .done
          return .end(reusable: !closeAfter)
        }
        guard let piece = take(upTo: remaining) else { return nil }
        state = .fixedBody(remaining: remaining - piece.count)
        return .body(piece)
      case .chunkSize:
        guard let line = try takeLine() else { return nil }
        let digits = line.split(separator: ";", maxSplits: 1).first.map { httpTrimmed($0) } ?? ""
        guard !digits.isEmpty, digits.count <= 8, let size = Int(digits, radix: 16) else {
          throw StrataError(.protocolError, "bad HTTP chunk size line '\(Self.printable(line))'")
        }
        guard size <= Self.chunkBytesMax else {
          throw StrataError(.protocolError, "HTTP chunk of \(size) bytes is over the \(Self.chunkBytesMax) limit")
        }
        state = size == 0 ? .trailers : .chunkData(remaining: size)
      case .chunkData(let remaining):
        guard let piece = take(upTo: remaining) else { return nil }
        state = piece.count == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - piece.count)
        return .body(piece)
      case .chunkDataEnd:
        guard let line = try takeLine() else { return nil }
        guard line.isEmpty else {
          throw StrataError(.protocolError, "HTTP chunk not followed by CRLF: '\(Self.printable(line))'")
        }
        state = .chunkSize
      case .trailers:
        guard let line = try takeLine() else { return nil }
        if line.isEmpty {
          state = .done
          return .end(reusable: !closeAfter)
        }
      case .untilClose:
        guard let piece = take(upTo: Int.max) else { return nil }
        return .body(piece)
      case .done:
        return nil
      }
    }
  }

  private mutating func enterBody(_ head: HTTPResponseHead) throws(StrataError) {
    closeAfter = head.header("connection")?.lowercased() == "close"
    if bodyless || head.status < 200 || head.status == 204 || head.status == 304 {
      state = .fixedBody(remaining: 0)
      return
    }
    if let encoding = head.header("transfer-encoding") {
      guard encoding.lowercased().hasSuffix("chunked") else {
        throw StrataError(.protocolError, "unsupported HTTP transfer encoding '\(encoding)'")
      }
      state = .chunkSize
      return
    }
    if let length = head.header("content-length") {
      guard let count = Int(length), count >= 0 else {
        throw StrataError(.protocolError, "bad HTTP Content-Length '\(length)'")
      }
      state = .fixedBody(remaining: count)
      return
    }
    closeAfter = true
    state = .untilClose
  }

  private static func parseStatusLine(_ line: String) throws(StrataError) -> HTTPResponseHead {
    // HTTP/1.1 200 OK
    let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3, let status = Int(parts[1]) else {
      throw StrataError(.protocolError, "not an HTTP/1.x status line: '\(printable(line))'")
    }
    return HTTPResponseHead(status: status, reason: parts.count > 2 ? String(parts[2]) : "", headers: [])
  }

  /// A line without its CRLF (a bare LF is accepted), or nil when it has not all arrived.
  private mutating func takeLine() throws(StrataError) -> String? {
    guard let newline = buffer[cursor...].firstIndex(of: UInt8(ascii: "\n")) else {
      if buffer.count - cursor > Self.lineBytesMax {
        throw StrataError(.protocolError, "HTTP line longer than \(Self.lineBytesMax) bytes")
      }
      return nil
    }
    var end = newline
    if end > cursor && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
    let length = newline + 1 - cursor
    guard length <= Self.lineBytesMax else {
      throw StrataError(.protocolError, "HTTP line longer than \(Self.lineBytesMax) bytes")
    }
    switch state {
    case .statusLine, .headers, .trailers:
      // Chunk-size lines of a long stream are not counted: only the head and the trailers.
      headBytes += length
      if headBytes > Self.headBytesMax {
        throw StrataError(.protocolError, "HTTP head or trailers longer than \(Self.headBytesMax) bytes")
      }
    default:
      break
    }
    let line = String(decoding: buffer[cursor..<end], as: UTF8.self)
    cursor = newline + 1
    return line
  }

  private mutating func take(upTo count: Int) -> [UInt8]? {
    let available = buffer.count - cursor
    guard available > 0 else { return nil }
    let taken = min(available, count)
    let piece = Array(buffer[cursor..<(cursor + taken)])
    cursor += taken
    return piece
  }

  /// At most 80 characters of `text`, anything but printable ASCII as `?` (for error messages).
  public static func printable(_ text: String) -> String {
    String(text.prefix(80).map { $0.isASCII && !$0.isNewline && ($0.asciiValue ?? 0) >= 32 ? $0 : "?" })
  }
}
