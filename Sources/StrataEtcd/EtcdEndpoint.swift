// An etcd client URL (`http://HOST:PORT`), parsed once so that a bad configuration fails at start.

public import StrataCore

/// One etcd member's client address. Only plain `http://` is supported: the cluster's etcd is
/// expected on a trusted network or loopback.
public struct EtcdEndpoint: Sendable, Hashable, CustomStringConvertible {
  /// Host and port to connect to.
  public let address: HostPort

  public init(address: HostPort) {
    self.address = address
  }

  /// Parses `http://HOST:PORT` (an optional trailing `/`; `[::1]` for IPv6). `https://` is
  /// rejected with `.unsupported`; anything else with `.invalidArgument`.
  public init(parsing url: String) throws(StrataError) {
    let text = url.trimmingSpaces()
    if text.lowercased().hasPrefix("https://") {
      throw StrataError(
        .unsupported,
        "etcd endpoint '\(url)': https is not supported by Strata's etcd client; use http:// on a trusted network")
    }
    guard text.lowercased().hasPrefix("http://") else {
      throw StrataError(.invalidArgument, "etcd endpoint '\(url)' is not a URL like http://127.0.0.1:2379")
    }
    var rest = Substring(text.dropFirst("http://".count))
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

  /// `http://HOST:PORT`.
  public var description: String {
    "http://\(hostHeader)"
  }

  /// The value of the Host header (IPv6 hosts in brackets).
  var hostHeader: String { address.description }
}
