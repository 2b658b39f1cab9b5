// The bytes a client and a server write: a request (method, target, headers, Content-Length
// body) and a response (status, Content-Type, headers, Content-Length body). Neither can carry an
// injected header: values that could end a header line are refused (request) or left out (response).

public import StrataCore

/// An HTTP response: status, content type, extra headers and body.
public struct HTTPResponse: Sendable {
  public var status: Int
  public var contentType: String
  public var headers: [(String, String)]
  public var body: [UInt8]

  public init(status: Int, contentType: String, headers: [(String, String)] = [], body: [UInt8]) {
    self.status = status
    self.contentType = contentType
    self.headers = headers
    self.body = body
  }

  /// The response's bytes. A header whose value could break the header block (a control byte,
  /// non-ASCII, over 256 bytes) is left out: response headers can never be injected.
  public func bytes(closing: Bool) -> [UInt8] {
    var head = "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\n"
    head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
    for (name, value) in headers where isSafeHeaderValue(name, bytesMax: 64) && isSafeHeaderValue(value) {
      head += "\(name): \(value)\r\n"
    }
    head += closing ? "Connection: close\r\n\r\n" : "\r\n"
    return Array(head.utf8) + body
  }

  /// The reason phrase of `status`.
  public static func reason(_ status: Int) -> String {
    switch status {
    case 200: "OK"
    case 202: "Accepted"
    case 400: "Bad Request"
    case 401: "Unauthorized"
    case 403: "Forbidden"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 408: "Request Timeout"
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

/// A request a client sends: `method target HTTP/1.1`, the headers in order, and a body with its
/// Content-Length (written for every method but GET and HEAD without a body).
public struct HTTPClientRequest: Sendable {
  public var method: String
  /// Origin form: starts with `/`, printable ASCII without spaces.
  public var target: String
  /// Name and value of each header but Content-Length, which is written from `body`.
  public var headers: [(String, String)]
  public var body: [UInt8]

  public init(method: String, target: String, headers: [(String, String)] = [], body: [UInt8] = []) {
    self.method = method
    self.target = target
    self.headers = headers
    self.body = body
  }

  /// The request's bytes; throws `invalidArgument` for a method, target or header that could
  /// not be read back as written (a space in the target, a CR or LF in a value, non-ASCII).
  public func bytes() throws(StrataError) -> [UInt8] {
    guard (1...HTTPLimits.methodBytesMax).contains(method.utf8.count), method.utf8.allSatisfy(isTokenByte) else {
      throw StrataError(.invalidArgument, "HTTP method '\(HTTPResponseDecoder.printable(method))' is not a token")
    }
    guard target.first == "/", target.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
      throw StrataError(
        .invalidArgument, "HTTP target '\(HTTPResponseDecoder.printable(target))' must be a path of printable ASCII")
    }
    var head = "\(method) \(target) HTTP/1.1\r\n"
    for (name, value) in headers {
      guard !name.isEmpty, name.utf8.allSatisfy(isTokenByte), value.isEmpty || isSafeHeaderValue(value, bytesMax: 8192)
      else {
        throw StrataError(
          .invalidArgument, "HTTP header '\(HTTPResponseDecoder.printable(name))' has a name or value unsafe to send")
      }
      head += "\(name): \(value)\r\n"
    }
    if !body.isEmpty || !(method == "GET" || method == "HEAD") { head += "Content-Length: \(body.count)\r\n" }
    head += "\r\n"
    return Array(head.utf8) + body
  }
}
