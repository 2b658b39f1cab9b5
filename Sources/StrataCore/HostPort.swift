// A network address as written in configuration, on the command line and in RING members.

/// A host and port, as `HOST:PORT` or `[IPv6]:PORT`.
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
  public var host: String
  public var port: UInt16

  public init(host: String, port: UInt16) {
    self.host = host
    self.port = port
  }

  /// Whether the host is the wildcard a node may listen on (`0.0.0.0`, `::`), which no peer or
  /// client can reach it at.
  public var isUnspecified: Bool { host == "0.0.0.0" || host == "::" }

  /// Parses `HOST:PORT`; port 0 ("any free port", for listening) only when `allowAnyPort`.
  public init(parsing text: String, allowAnyPort: Bool = false) throws(StrataError) {
    let hostPart: Substring
    let portPart: Substring
    if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
      hostPart = text[text.index(after: text.startIndex)..<close]
      let rest = text[text.index(after: close)...]
      guard rest.hasPrefix(":") else {
        throw StrataError(.invalidArgument, "'\(text)' is not HOST:PORT (expected [IPv6]:PORT)")
      }
      portPart = rest.dropFirst()
    } else {
      guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
        throw StrataError(.invalidArgument, "'\(text)' is not HOST:PORT (like 127.0.0.1:7400)")
      }
      hostPart = text[..<colon]
      portPart = text[text.index(after: colon)...]
    }
    guard !hostPart.isEmpty else { throw StrataError(.invalidArgument, "'\(text)' has no host") }
    guard let port = UInt16(portPart), port > 0 || allowAnyPort else {
      throw StrataError(
        .invalidArgument,
        "'\(text)' has port '\(portPart)', expected \(allowAnyPort ? "0 (any free port)" : "1") to 65535")
    }
    host = String(hostPart)
    self.port = port
  }

  public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

  /// Whether the host is a loopback address or `localhost` (reachable from this machine only).
  public var isLoopback: Bool {
    let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
    return bare == "localhost" || bare == "::1" || bare.hasPrefix("127.")
  }
}
