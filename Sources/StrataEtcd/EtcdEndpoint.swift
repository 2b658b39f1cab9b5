// An etcd client URL (`http://HOST:PORT` or `https://HOST:PORT`), parsed once so that a bad
// configuration fails at start.

public import StrataCore
import StrataHTTP

/// One etcd member's client address.
public struct EtcdEndpoint: Sendable, Hashable, CustomStringConvertible {
  /// Host and port to connect to.
  public let address: HostPort
  /// `https://`: TLS, with the client's TLS context (EtcdClient `tls`).
  public let isTLS: Bool

  public init(address: HostPort, isTLS: Bool = false) {
    self.address = address
    self.isTLS = isTLS
  }

  /// Parses `http://HOST:PORT` or `https://HOST:PORT` (an optional trailing `/`; `[::1]` for
  /// IPv6); anything else is `.invalidArgument`.
  public init(parsing url: String) throws(StrataError) {
    let text = httpTrimmed(Substring(url))
    isTLS = text.lowercased().hasPrefix("https://")
    guard isTLS || text.lowercased().hasPrefix("http://") else {
      throw StrataError(.invalidArgument, "etcd endpoint '\(url)' is not a URL like http://127.0.0.1:2379")
    }
    var rest = Substring(text.dropFirst(isTLS ? "https://".count : "http://".count))
    if rest.hasSuffix("/") { rest = rest.dropLast() }
    guard !rest.contains("/"), !rest.contains("@"), !rest.contains("?") else {
      throw StrataError(
        .invalidArgument, "etcd endpoint '\(url)' must be only http://HOST:PORT (no path, user or query)")
    }
    do {
      address = try HostPort(parsing: String(rest))
    } catch {
      throw StrataError(.invalidArgument, "etcd endpoint '\(url)': \(error.message)", cause: error)
    }
  }

  /// `http://HOST:PORT` or `https://HOST:PORT`.
  public var description: String {
    "\(isTLS ? "https" : "http")://\(hostHeader)"
  }

  /// The value of the Host header (IPv6 hosts in brackets).
  var hostHeader: String { address.description }
}
