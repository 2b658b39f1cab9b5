// Shared by the test targets: a network namespace of the test's own, joined to this one by a veth
// pair, so that a server started inside it can be cut off without a word (every packet dropped,
// as when its host dies or a middlebox drops the flow), which loopback cannot do.

import Foundation

/// A network namespace reached at `address` (its end of a veth pair; this namespace's end is
/// `hostAddress`). `blackhole()` drops every packet this side sends into it. Removed, with its
/// veth pair, by `remove()` or when the object goes away. Needs root and `ip` (iproute2).
public final class NetworkNamespace: Sendable {
  public let name: String
  public let address: String
  public let hostAddress: String
  private let hostLink: String
  private let peerLink: String

  /// Whether this process may make one: root, with `ip` installed.
  public static var isAvailable: Bool { getuid() == 0 && FileManager.default.isExecutableFile(atPath: ip) }

  static let ip = "/usr/sbin/ip"

  public init() throws {
    let tag = String(UInt32.random(in: 0...UInt32.max), radix: 16)
    name = "strata-test-\(tag)"
    hostLink = "sth\(tag)"
    peerLink = "stn\(tag)"
    // A /30 of 10.200.0.0/16 picked at random; the two ends are .1 and .2 of it.
    let base = Int.random(in: 0..<16384) * 4
    hostAddress = "10.200.\(base / 256).\(base % 256 + 1)"
    address = "10.200.\(base / 256).\(base % 256 + 2)"
    try Self.runIP(["netns", "add", name])
    do {
      try Self.runIP(["link", "add", hostLink, "type", "veth", "peer", "name", peerLink])
      try Self.runIP(["link", "set", peerLink, "netns", name])
      try Self.runIP(["addr", "add", "\(hostAddress)/30", "dev", hostLink])
      try Self.runIP(["link", "set", hostLink, "up"])
      try Self.runIP(["-n", name, "addr", "add", "\(address)/30", "dev", peerLink])
      try Self.runIP(["-n", name, "link", "set", peerLink, "up"])
      try Self.runIP(["-n", name, "link", "set", "lo", "up"])
    } catch {
      remove()
      throw error
    }
  }

  deinit { remove() }

  /// The command line that runs `executable` inside the namespace.
  public func command(_ executable: String, _ arguments: [String]) -> (String, [String]) {
    (Self.ip, ["netns", "exec", name, executable] + arguments)
  }

  /// From now on every packet this side sends into the namespace is dropped (no reset, no error):
  /// the namespace's end of the veth pair goes down, so this end has no carrier and drops what it
  /// is given. The server inside can no longer be heard from, as if its host had gone.
  public func blackhole() throws {
    try Self.runIP(["-n", name, "link", "set", peerLink, "down"])
  }

  /// Deletes the namespace (its end of the veth pair goes with it, and so does this end).
  public func remove() {
    try? Self.runIP(["link", "delete", hostLink])
    try? Self.runIP(["netns", "delete", name])
  }

  /// Runs an `ip` command to completion; one that fails throws what it said.
  private static func runIP(_ arguments: [String]) throws {
    let result = try runToCompletion(ip, arguments, timeout: .seconds(30))
    guard result.exited, result.status == 0 else {
      throw NetworkNamespaceError(
        message:
          "ip \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.stderrText)")
    }
  }
}

/// Why a network namespace could not be set up.
public struct NetworkNamespaceError: Error, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}
