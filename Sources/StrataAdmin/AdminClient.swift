// A blocking client of the admin API, for the CLI and tests: one HTTP/1.1 request per connection,
// JSON bodies, error bodies turned back into StrataErrors with their codes.

public import StrataCore
import StrataHTTP
public import StrataTCP

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
    var headers = [("Host", "\(address)"), ("Connection", "close"), ("Accept", "application/json")]
    if !token.isEmpty { headers.append(("Authorization", "Bearer \(token)")) }
    var payload: [UInt8] = []
    if let body {
      headers.append(("Content-Type", "application/json"))
      payload = try JSONCoding.encode(body)
    }
    let connection = try HTTPClientConnection.open(address, timeoutMilliseconds: timeoutMilliseconds, tls: tls)
    defer { connection.socket.shutdown() }
    do throws(StrataError) {
      try connection.send(HTTPClientRequest(method: method, target: path, headers: headers, body: payload))
      let head = try connection.readHead()
      let (bytes, _) = try connection.readBody()
      var fields: [String: String] = [:]
      for (name, value) in head.headers { fields[name] = value }
      return AdminReply(status: head.status, headers: fields, body: bytes)
    } catch {
      throw StrataError(error.code, "admin API at \(address): \(error.message)")
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
}
