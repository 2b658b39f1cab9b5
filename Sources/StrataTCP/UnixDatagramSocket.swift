// Unix-domain datagram sockets: how a node tells its service manager how its start goes
// (systemd's NOTIFY_SOCKET), and how a test listens as one.

import CStrataLinux
public import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

/// A Unix-domain datagram socket. Paths that start with '@' are in the abstract namespace.
public final class UnixDatagramSocket: Sendable {
  private let descriptor: Int32
  /// The path it is bound to (nil: unbound, for sending).
  public let path: String?

  /// An unbound socket (to send from), or one bound to `path` (to receive on).
  public init(binding path: String? = nil) throws(StrataError) {
    let fd = path.map { strata_unix_datagram_open($0) } ?? strata_unix_datagram_open(nil)
    guard fd >= 0 else {
      throw StrataError(
        .ioError, "cannot open a datagram socket\(path.map { " at \($0)" } ?? ""): \(String(cString: strerror(errno)))")
    }
    descriptor = fd
    self.path = path
  }

  deinit {
    close(descriptor)
    if let path, !path.hasPrefix("@") { unlink(path) }
  }

  /// Sends `bytes` as one datagram to `destination`, never waiting: when the receiver's queue is
  /// full the datagram is not sent (`ioError`), so a slow receiver cannot stall the sender.
  public func send(_ bytes: [UInt8], to destination: String) throws(StrataError) {
    let sent = bytes.withUnsafeBytes { strata_unix_datagram_send(descriptor, destination, $0.baseAddress, $0.count) }
    guard sent == bytes.count else {
      throw StrataError(.ioError, "cannot send to \(destination): \(String(cString: strerror(errno)))")
    }
  }

  /// The next datagram (at most `bytesMax`), or nil when none came within `timeoutMilliseconds`.
  public func receive(timeoutMilliseconds: Int32, bytesMax: Int = 65_536) -> [UInt8]? {
    var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
    guard poll(&poller, 1, timeoutMilliseconds) == 1 else { return nil }
    var buffer = [UInt8](repeating: 0, count: bytesMax)
    let received = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
    guard received >= 0 else { return nil }
    return Array(buffer[..<received])
  }
}
