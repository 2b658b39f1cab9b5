// A blocking client of the admin API, for the CLI and tests: one HTTP/1.1 request per connection,
// JSON bodies, error bodies turned back into StrataErrors with their codes.

public import StrataCore
public import StrataTCP

#if canImport(Glibc)
  import Glibc
#endif

/// One admin API response.
public struct AdminReply: Sendable {
  public var status: Int
  /// Header names lower-cased.
  public var headers: [String: String]
  public var body: [UInt8]

  public var text: String { String(decoding: body, as: UTF8.self) }
}

/// Calls a node's admin API. Blocks the calling thread: use it from a thread, not from tasks.
public struct AdminClient: Sendable {
  public var address: HostPort
  public var token: String
  public var timeoutMilliseconds: UInt64
  /// HTTPS: the CA of the node's certificate (and a client certificate); nil: plain HTTP.
  public var tls: TLSContext?

  public init(address: HostPort, token: String = "", timeoutMilliseconds: UInt64 = 30_000, tls: TLSContext? = nil) {
    self.address = address
    self.token = token
    self.timeoutMilliseconds = timeoutMilliseconds
    self.tls = tls
  }

  /// Sends one request and returns whatever status came back. Throws `unavailable` when the
  /// node cannot be reached, `protocolError` for a reply that is not HTTP.
  public func send(_ method: String, _ path: String, body: JSONValue? = nil) throws(StrataError) -> AdminReply {
    let socket = try TCPSocket.connect(to: address, timeoutMilliseconds: timeoutMilliseconds, tls: tls)
    defer { socket.shutdown() }
    let payload = body.map { Array($0.encoded.utf8) } ?? []
    var head = "\(method) \(path) HTTP/1.1\r\nHost: \(address)\r\nConnection: close\r\nAccept: application/json\r\n"
    if !token.isEmpty { head += "Authorization: Bearer \(token)\r\n" }
    if body != nil { head += "Content-Type: application/json\r\n" }
    head += "Content-Length: \(payload.count)\r\n\r\n"
    try socket.writeAll(Array(head.utf8) + payload, then: [])
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      let outcome: Result<Int, StrataError> = chunk.withUnsafeMutableBytes { raw in
        do throws(StrataError) { return .success(try socket.readSome(raw)) } catch { return .failure(error) }
      }
      switch outcome {
      case .success(let count): received.append(contentsOf: chunk[0..<count])
      case .failure(let error):
        // The reply ends where the node closes (Connection: close).
        if error.code == .unavailable && error.message.hasSuffix("closed the connection") {
          return try parseReply(received)
        }
        throw StrataError(error.code, "admin API at \(address): \(error.message)")
      }
    }
  }

  /// Sends one request and returns its JSON body; an error status throws the StrataError the
  /// body names (its code travels in the body).
  public func call(_ method: String, _ path: String, body: JSONValue? = nil) throws(StrataError) -> JSONValue {
    let reply = try send(method, path, body: body)
    let document = try? JSONValue.parse(reply.body)
    guard (200..<300).contains(reply.status) else {
      let error = document?["error"]
      let name = error?["code"]?.stringValue ?? ""
      let code = StrataError.Code.all.first { $0.name == name } ?? (reply.status == 503 ? .unavailable : .internalError)
      let message = error?["message"]?.stringValue ?? "HTTP \(reply.status): \(reply.text.prefix(200))"
      throw StrataError(code, message)
    }
    guard let document else {
      throw StrataError(.protocolError, "admin API at \(address) answered \(path) with a body that is not JSON")
    }
    return document
  }

  private func parseReply(_ bytes: [UInt8]) throws(StrataError) -> AdminReply {
    var end: Int?
    if bytes.count >= 4 {
      for index in 0...(bytes.count - 4)
      where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
        end = index
        break
      }
    }
    guard let end else {
      throw StrataError(.protocolError, "admin API at \(address) closed the connection without a full HTTP reply")
    }
    let lines = String(decoding: bytes[0..<end], as: UTF8.self).split(separator: "\r\n")
    let statusParts = lines.first?.split(separator: " ") ?? []
    guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
      throw StrataError(.protocolError, "admin API at \(address) did not answer HTTP")
    }
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
      guard let colon = line.firstIndex(of: ":") else { continue }
      headers[line[..<colon].lowercased()] = String(line[line.index(after: colon)...].drop { $0 == " " })
    }
    var body = Array(bytes[(end + 4)...])
    if let length = headers["content-length"].flatMap({ Int($0) }), length < body.count {
      body = Array(body[0..<length])
    }
    return AdminReply(status: status, headers: headers, body: body)
  }
}
