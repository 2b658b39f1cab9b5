// The HTTP/1.1 request parser (the server side): a pure value fed the bytes that arrived, in any
// split, returning a whole request, "need more", or a typed refusal with its 4xx status. Strict
// by design: printable ASCII only, CRLF line ends, Content-Length bodies only, stated limits.

/// One HTTP request as read off a connection.
public struct HTTPRequest: Sendable {
  public var method: String
  /// The path without the query string (percent escapes checked, not decoded).
  public var path: String
  public var query: [String: String]
  /// Header names lower-cased.
  public var headers: [String: String]
  public var body: [UInt8]
  /// Whether the client asked to close the connection after the response.
  public var closes: Bool
}

/// Limits of the request parser: a request over these is refused, never buffered.
public enum HTTPLimits {
  public static let headerBytesMax = 16 << 10
  public static let headerCountMax = 64
  public static let methodBytesMax = 16
  public static let queryParametersMax = 32
  public static let bodyBytesMax = 1 << 20
}

/// Why a request could not be read: answered with `status` (always 4xx), then the connection closes.
public struct HTTPReadFailure: Error, Hashable {
  public var status: Int
  public var reason: String
}

/// What the parser has after the bytes fed so far.
public enum HTTPParseStep: Sendable {
  /// The request is not complete yet.
  case needMore
  case request(HTTPRequest)
  case failure(HTTPReadFailure)
}

/// Accumulates a connection's bytes and cuts them into requests. Bytes after a request stay for
/// the next one (pipelining). After a failure the parser stays failed.
public struct HTTPRequestParser: Sendable {
  private var buffer: [UInt8] = []
  /// Where the search for the end of the header resumes (bytes before it hold no CRLFCRLF).
  private var scanned = 0
  /// Bytes before this were checked by `checkHeaderBytes` (all but a trailing CR's lookahead).
  private var checked = 0
  /// The head of the request whose body is arriving, with the offset where its body starts.
  private var pendingHead: (head: HTTPRequestHead, bodyStart: Int)?
  private var failed: HTTPReadFailure?

  /// Bytes held, not yet part of a returned request.
  public var bufferedBytes: Int { buffer.count }

  public init() {}

  public mutating func append(_ bytes: some Collection<UInt8>) { buffer.append(contentsOf: bytes) }

  /// The next whole request, if the bytes hold one.
  public mutating func next() -> HTTPParseStep {
    if let failed { return .failure(failed) }
    switch step() {
    case .failure(let failure):
      failed = failure
      buffer = []
      return .failure(failure)
    case let other: return other
    }
  }

  private mutating func step() -> HTTPParseStep {
    if pendingHead == nil {
      guard let headerEnd = findHeaderEnd() else {
        let from = max(0, checked - 1)
        if let failure = Self.checkHeaderBytes(buffer[from...], firstByteChecked: from > 0) {
          return .failure(failure)
        }
        checked = buffer.count
        if buffer.count > HTTPLimits.headerBytesMax {
          return .failure(.init(status: 431, reason: "request header over \(HTTPLimits.headerBytesMax) bytes"))
        }
        return .needMore
      }
      guard headerEnd + 4 <= HTTPLimits.headerBytesMax else {
        return .failure(.init(status: 431, reason: "request header over \(HTTPLimits.headerBytesMax) bytes"))
      }
      switch HTTPRequestHead.parse(buffer[0..<headerEnd]) {
      case .success(let parsed): pendingHead = (parsed, headerEnd + 4)
      case .failure(let failure): return .failure(failure)
      }
    }
    guard let (head, bodyStart) = pendingHead, buffer.count - bodyStart >= head.contentLength else {
      return .needMore
    }
    let body = Array(buffer[bodyStart..<(bodyStart + head.contentLength)])
    buffer.removeFirst(bodyStart + head.contentLength)
    scanned = 0
    checked = 0
    pendingHead = nil
    return .request(
      HTTPRequest(
        method: head.method, path: head.path, query: head.query, headers: head.headers, body: body,
        closes: head.closes))
  }

  /// The offset of the CRLFCRLF ending the header, resuming where the last search stopped.
  private mutating func findHeaderEnd() -> Int? {
    guard buffer.count >= 4 else { return nil }
    var index = max(0, scanned - 3)
    while index <= buffer.count - 4 {
      if buffer[index] == 13 && buffer[index + 1] == 10 && buffer[index + 2] == 13 && buffer[index + 3] == 10 {
        return index
      }
      index += 1
    }
    scanned = buffer.count
    return nil
  }

  /// Refuses early bytes that can never start a valid header: control characters, non-ASCII,
  /// a bare LF or a CR not followed by LF (checked as they arrive, before the header ends).
  /// With `firstByteChecked`, the first byte was checked before (with what preceded it) and
  /// only a CR there still needs its next byte looked at.
  static func checkHeaderBytes(_ bytes: ArraySlice<UInt8>, firstByteChecked: Bool = false) -> HTTPReadFailure? {
    var index = bytes.startIndex
    while index < bytes.endIndex {
      let byte = bytes[index]
      if firstByteChecked && index == bytes.startIndex && byte != 13 {
        index = bytes.index(after: index)
        continue
      }
      switch byte {
      case 13:
        let next = bytes.index(after: index)
        if next < bytes.endIndex, bytes[next] != 10 {
          return .init(status: 400, reason: "a CR without LF in the request header")
        }
      case 10:
        if index == bytes.startIndex || bytes[bytes.index(before: index)] != 13 {
          return .init(status: 400, reason: "a bare LF in the request header; lines end with CRLF")
        }
      case 9, 0x20...0x7E: break
      case 0x80...0xFF: return .init(status: 400, reason: "non-ASCII byte in the request header")
      default: return .init(status: 400, reason: "control byte 0x\(String(byte, radix: 16)) in the request header")
      }
      index = bytes.index(after: index)
    }
    return nil
  }
}

/// The request line and headers of one request, checked.
struct HTTPRequestHead {
  var method: String
  var path: String
  var query: [String: String]
  var headers: [String: String]
  var contentLength: Int
  var closes: Bool

  static func parse(_ bytes: ArraySlice<UInt8>) -> Result<HTTPRequestHead, HTTPReadFailure> {
    if let failure = HTTPRequestParser.checkHeaderBytes(bytes) { return .failure(failure) }
    // Only printable ASCII, HTAB and CRLF pairs remain, so the text is ASCII.
    let text = String(decoding: bytes, as: UTF8.self)
    var lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
    let requestLine = lines.removeFirst()
    let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
    guard parts.count == 3 else {
      return .failure(.init(status: 400, reason: "malformed request line: expected METHOD TARGET HTTP/1.1"))
    }
    let method = parts[0]
    guard (1...HTTPLimits.methodBytesMax).contains(method.utf8.count), method.utf8.allSatisfy({ isTokenByte($0) })
    else {
      return .failure(.init(status: 400, reason: "malformed method"))
    }
    let version = parts[2]
    guard version == "HTTP/1.1" || version == "HTTP/1.0" else {
      return .failure(.init(status: 400, reason: "unsupported HTTP version; use HTTP/1.1"))
    }
    let target: (path: String, query: [String: String])
    switch parseTarget(parts[1]) {
    case .success(let parsed): target = parsed
    case .failure(let failure): return .failure(failure)
    }
    guard lines.count <= HTTPLimits.headerCountMax else {
      return .failure(.init(status: 431, reason: "more than \(HTTPLimits.headerCountMax) header fields"))
    }
    var headers: [String: String] = [:]
    for line in lines {
      guard let colon = line.firstIndex(of: ":") else {
        return .failure(.init(status: 400, reason: "malformed header line (no colon)"))
      }
      let name = line[..<colon]
      guard !name.isEmpty, name.utf8.allSatisfy({ isTokenByte($0) }) else {
        return .failure(.init(status: 400, reason: "malformed header name"))
      }
      let lower = name.lowercased()
      let value = httpTrimmed(line[line.index(after: colon)...])
      if headers[lower] != nil, lower == "content-length" || lower == "host" || lower == "transfer-encoding" {
        return .failure(.init(status: 400, reason: "header \(lower) given twice"))
      }
      headers[lower] = headers[lower].map { $0 + ", " + value } ?? value
    }
    if headers["transfer-encoding"] != nil {
      return .failure(
        .init(status: 411, reason: "Transfer-Encoding (chunked bodies) is not supported; send Content-Length"))
    }
    var contentLength = 0
    if let text = headers["content-length"] {
      guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
        return .failure(.init(status: 400, reason: "Content-Length must be a decimal number"))
      }
      // More digits than the limit has cannot fit: refused before any arithmetic can overflow.
      guard text.utf8.count <= String(HTTPLimits.bodyBytesMax).utf8.count, let length = Int(text),
        length <= HTTPLimits.bodyBytesMax
      else {
        return .failure(.init(status: 413, reason: "request body over \(HTTPLimits.bodyBytesMax) bytes"))
      }
      contentLength = length
    }
    let connection = headers["connection"]?.lowercased() ?? ""
    let closes = connection == "close" || (version == "HTTP/1.0" && connection != "keep-alive")
    return .success(
      HTTPRequestHead(
        method: String(method), path: target.path, query: target.query, headers: headers,
        contentLength: contentLength, closes: closes))
  }
}

/// Splits an origin-form target `/path?a=b&c=d` into its path and its percent-decoded query
/// parameters. Refused (400): a target not starting with `/`, a bad percent escape, an empty
/// parameter or name (`?&&`, `?=x`), a second `=` in a parameter, a value that is not UTF-8.
func parseTarget(_ target: Substring) -> Result<(path: String, query: [String: String]), HTTPReadFailure> {
  guard target.first == "/" else {
    return .failure(.init(status: 400, reason: "the request target must be a path starting with /"))
  }
  let mark = target.firstIndex(of: "?")
  let path = target[..<(mark ?? target.endIndex)]
  guard percentDecoded(path) != nil else {
    return .failure(.init(status: 400, reason: "bad percent escape in the path"))
  }
  var query: [String: String] = [:]
  if let mark {
    let text = target[target.index(after: mark)...]
    if !text.isEmpty {
      let pairs = text.split(separator: "&", omittingEmptySubsequences: false)
      guard pairs.count <= HTTPLimits.queryParametersMax else {
        return .failure(.init(status: 400, reason: "more than \(HTTPLimits.queryParametersMax) query parameters"))
      }
      for pair in pairs {
        let parts = pair.split(separator: "=", omittingEmptySubsequences: false)
        guard !pair.isEmpty, parts.count <= 2, !parts[0].isEmpty else {
          return .failure(
            .init(status: 400, reason: "malformed query parameter '\(pair)': expected name or name=value"))
        }
        guard let name = percentDecoded(parts[0]), let value = parts.count == 2 ? percentDecoded(parts[1]) : ""
        else {
          return .failure(.init(status: 400, reason: "bad percent escape in query parameter '\(pair)'"))
        }
        query[name] = value
      }
    }
  }
  return .success((String(path), query))
}

/// `%XX` escapes decoded; nil for a truncated or non-hex escape or a result that is not UTF-8.
func percentDecoded(_ text: Substring) -> String? {
  var bytes: [UInt8] = []
  var iterator = text.utf8.makeIterator()
  while let byte = iterator.next() {
    guard byte == UInt8(ascii: "%") else {
      bytes.append(byte)
      continue
    }
    guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
    bytes.append(high << 4 | low)
  }
  return String(validating: bytes, as: UTF8.self)
}

private func hexValue(_ byte: UInt8) -> UInt8? {
  switch byte {
  case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
  case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
  case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
  default: nil
  }
}

/// RFC 9110 token characters (method and header names).
func isTokenByte(_ byte: UInt8) -> Bool {
  switch byte {
  case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
    UInt8(ascii: "0")...UInt8(ascii: "9"):
    true
  default: Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
  }
}

/// `text` without leading and trailing spaces and tabs.
public func httpTrimmed(_ text: Substring) -> String {
  var text = text
  while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
  while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
  return String(text)
}

/// Whether `value` may go into a response header as is: printable ASCII (no CR, LF or other
/// control byte that could end the header and start another), at most `bytesMax` bytes.
public func isSafeHeaderValue(_ value: String, bytesMax: Int = 256) -> Bool {
  !value.isEmpty && value.utf8.count <= bytesMax && value.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
}
