// A small HTTP/1.1 server and client for the admin API, on the project's blocking TCP sockets:
// a thread per connection, a bound on connections, keep-alive, Content-Length bodies only.
// The admin API carries small JSON documents and a metrics page; it needs nothing more.

import Dispatch
import Foundation
import Logging
import StrataCore
import StrataTCP
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// One HTTP request as read off a connection.
struct HTTPRequest: Sendable {
  var method: String
  /// The path without the query string.
  var path: String
  var query: [String: String]
  /// Header names lower-cased.
  var headers: [String: String]
  var body: [UInt8]
  /// Whether the client asked to close the connection after the response.
  var closes: Bool
}

/// An HTTP response: status, content type, extra headers and body.
struct HTTPResponse: Sendable {
  var status: Int
  var contentType: String
  var headers: [(String, String)] = []
  var body: [UInt8]

  func bytes(closing: Bool) -> [UInt8] {
    var head = "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\n"
    head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
    for (name, value) in headers { head += "\(name): \(value)\r\n" }
    head += closing ? "Connection: close\r\n\r\n" : "\r\n"
    return Array(head.utf8) + body
  }

  static func reason(_ status: Int) -> String {
    switch status {
    case 200: "OK"
    case 202: "Accepted"
    case 400: "Bad Request"
    case 401: "Unauthorized"
    case 403: "Forbidden"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 409: "Conflict"
    case 411: "Length Required"
    case 413: "Content Too Large"
    case 429: "Too Many Requests"
    case 431: "Request Header Fields Too Large"
    case 500: "Internal Server Error"
    case 501: "Not Implemented"
    case 503: "Service Unavailable"
    default: "Status \(status)"
    }
  }
}

/// Limits of the HTTP reader: a request larger than these is refused, never buffered.
enum HTTPLimits {
  static let headerBytesMax = 16 << 10
  static let bodyBytesMax = 1 << 20
  /// An idle keep-alive connection is closed after this long.
  static let idleMilliseconds: UInt64 = 30_000
}

/// Why a request could not be read: answered with `status`, then the connection closes.
struct HTTPReadFailure: Error {
  var status: Int
  var reason: String
}

/// Reads requests off one socket; keeps bytes that arrived after a request for the next one.
struct HTTPReader {
  let socket: TCPSocket
  private var buffer: [UInt8] = []

  init(socket: TCPSocket) { self.socket = socket }

  /// The next request; nil when the peer closed (or went idle) between requests.
  mutating func next() throws(HTTPReadFailure) -> HTTPRequest? {
    var headerEnd: Int?
    while true {
      if let end = findHeaderEnd() {
        headerEnd = end
        break
      }
      guard buffer.count <= HTTPLimits.headerBytesMax else {
        throw HTTPReadFailure(status: 431, reason: "request header over \(HTTPLimits.headerBytesMax) bytes")
      }
      guard fill() else {
        if buffer.isEmpty { return nil }
        throw HTTPReadFailure(status: 400, reason: "connection closed inside a request header")
      }
    }
    guard let headerEnd else { return nil }
    let head = String(decoding: buffer[0..<headerEnd], as: UTF8.self)
    var lines = head.components(separatedBy: "\r\n")
    let requestLine = lines.removeFirst().split(separator: " ", omittingEmptySubsequences: true)
    guard requestLine.count == 3, requestLine[2].hasPrefix("HTTP/1.") else {
      throw HTTPReadFailure(status: 400, reason: "malformed request line")
    }
    var headers: [String: String] = [:]
    for line in lines where !line.isEmpty {
      guard let colon = line.firstIndex(of: ":") else {
        throw HTTPReadFailure(status: 400, reason: "malformed header line")
      }
      let name = line[..<colon].lowercased()
      headers[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    if headers["transfer-encoding"] != nil {
      throw HTTPReadFailure(status: 501, reason: "chunked request bodies are not supported; send Content-Length")
    }
    let length = Int(headers["content-length"] ?? "0") ?? -1
    guard length >= 0 else { throw HTTPReadFailure(status: 400, reason: "bad Content-Length") }
    guard length <= HTTPLimits.bodyBytesMax else {
      throw HTTPReadFailure(status: 413, reason: "request body over \(HTTPLimits.bodyBytesMax) bytes")
    }
    let bodyStart = headerEnd + 4
    while buffer.count < bodyStart + length {
      guard fill() else { throw HTTPReadFailure(status: 400, reason: "connection closed inside a request body") }
    }
    let body = Array(buffer[bodyStart..<(bodyStart + length)])
    buffer.removeFirst(bodyStart + length)
    let target = String(requestLine[1])
    let (path, query) = splitTarget(target)
    let version = requestLine[2]
    let connection = headers["connection"]?.lowercased() ?? ""
    let closes = connection == "close" || (version == "HTTP/1.0" && connection != "keep-alive")
    return HTTPRequest(
      method: String(requestLine[0]), path: path, query: query, headers: headers, body: body, closes: closes)
  }

  private func findHeaderEnd() -> Int? {
    guard buffer.count >= 4 else { return nil }
    for index in 0...(buffer.count - 4)
    where buffer[index] == 13 && buffer[index + 1] == 10 && buffer[index + 2] == 13 && buffer[index + 3] == 10 {
      return index
    }
    return nil
  }

  /// Reads what the socket has (at least one byte); false at end of stream, timeout or error.
  private mutating func fill() -> Bool {
    var chunk = [UInt8](repeating: 0, count: 8192)
    while true {
      let count = chunk.withUnsafeMutableBytes { recv(socket.descriptor, $0.baseAddress, $0.count, 0) }
      if count < 0 && errno == EINTR { continue }
      guard count > 0 else { return false }
      buffer.append(contentsOf: chunk[0..<count])
      return true
    }
  }
}

/// Splits `/path?a=b&c=d` into the path and its (percent-decoded) query parameters.
func splitTarget(_ target: String) -> (String, [String: String]) {
  guard let mark = target.firstIndex(of: "?") else { return (target, [:]) }
  var query: [String: String] = [:]
  for pair in target[target.index(after: mark)...].split(separator: "&") {
    let parts = pair.split(separator: "=", maxSplits: 1)
    let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
    let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
    query[name] = value
  }
  return (String(target[..<mark]), query)
}

/// Accepts connections on a thread of its own and serves each on a thread of its own, at most
/// `connectionsMax` at once (more are answered 503 and closed).
final class HTTPServer: Sendable {
  typealias Handler = @Sendable (HTTPRequest) -> HTTPResponse

  private let listener: TCPListener
  private let connectionsMax: Int
  private let handler: Handler
  private let logger: Logger
  private let state = Mutex<(open: [Int: TCPSocket], next: Int, stopping: Bool)>(([:], 0, false))
  private let acceptEnded = DispatchSemaphore(value: 0)

  init(listen: HostPort, connectionsMax: Int, logger: Logger, handler: @escaping Handler) throws(StrataError) {
    listener = try TCPListener(binding: listen)
    self.connectionsMax = connectionsMax
    self.handler = handler
    self.logger = logger
  }

  var address: HostPort { listener.address }

  func start() {
    let thread = Thread { [self] in
      acceptLoop()
      acceptEnded.signal()
    }
    thread.name = "strata-admin-accept"
    thread.start()
  }

  /// Stops accepting and closes every connection (a request being answered finishes its write
  /// or fails it).
  func stop() {
    let open = state.withLock { state -> [TCPSocket] in
      state.stopping = true
      return Array(state.open.values)
    }
    listener.shutdown()
    for socket in open { socket.shutdown() }
    acceptEnded.wait()
  }

  private func acceptLoop() {
    while let socket = listener.accept() {
      let id: Int? = state.withLock { state in
        guard !state.stopping, state.open.count < connectionsMax else { return nil }
        let id = state.next
        state.next += 1
        state.open[id] = socket
        return id
      }
      guard let id else {
        let refusal = HTTPResponse(
          status: 503, contentType: "application/json",
          body: Array(
            adminErrorBody(.resourceExhausted, "admin connection limit (\(connectionsMax)) reached; retry").utf8))
        socket.setTimeout(milliseconds: 1000)
        try? socket.writeAll(refusal.bytes(closing: true), then: [])
        socket.shutdown()
        continue
      }
      let thread = Thread { [self] in
        serve(socket)
        state.withLock { _ = $0.open.removeValue(forKey: id) }
        socket.shutdown()
      }
      thread.name = "strata-admin-\(id)"
      thread.start()
    }
  }

  private func serve(_ socket: TCPSocket) {
    socket.setTimeout(milliseconds: HTTPLimits.idleMilliseconds)
    var reader = HTTPReader(socket: socket)
    while true {
      let request: HTTPRequest
      do {
        guard let next = try reader.next() else { return }
        request = next
      } catch {
        let response = HTTPResponse(
          status: error.status, contentType: "application/json",
          body: Array(adminErrorBody(.invalidArgument, error.reason).utf8))
        try? socket.writeAll(response.bytes(closing: true), then: [])
        logger.info("admin request refused", metadata: ["peer": "\(socket.peer)", "reason": "\(error.reason)"])
        return
      }
      let response = handler(request)
      do {
        try socket.writeAll(response.bytes(closing: request.closes), then: [])
      } catch {
        return
      }
      if request.closes { return }
    }
  }
}

/// The JSON error body of the admin API: {"error":{"code":"name","message":"..."}}.
func adminErrorBody(_ code: StrataError.Code, _ message: String) -> String {
  JSONValue.object(["error": .object(["code": .string(code.name), "message": .string(message)])]).encoded
}
