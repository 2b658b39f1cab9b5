// Unix-domain stream sockets for the same-host path (docs/protocol.md, "Same-host path"): the
// same framed stream as TCP, plus one message that carries a descriptor (SCM_RIGHTS). A
// `TCPSocket` carries them: reads, writes and deadlines are the same system calls.

import CStrataLinux
public import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

extension TCPSocket {
  /// Connects to the Unix-domain socket at `path`; `timeoutMilliseconds` bounds every later read
  /// and write (0: no limit). `unavailable` when nothing listens there. Errors name the peer
  /// `name` (default "unix:PATH").
  public static func connect(unixPath path: String, name: String? = nil, timeoutMilliseconds: UInt64 = 0)
    throws(StrataError) -> TCPSocket
  {
    let peer = name ?? "unix:\(path)"
    let fd = strata_unix_connect(path)
    guard fd >= 0 else {
      throw StrataError(.unavailable, "cannot connect to \(peer): \(String(cString: strerror(errno)))")
    }
    let socket = TCPSocket(descriptor: fd, peer: peer)
    if timeoutMilliseconds > 0 { socket.setTimeout(milliseconds: timeoutMilliseconds) }
    return socket
  }

  /// Sends `bytes` (one short message) with `descriptor` attached, or none when nil.
  public func sendMessage(_ bytes: [UInt8], attaching descriptor: Int32?, deadline: Deadline = .never)
    throws(StrataError)
  {
    if deadline != .never { setTimeout(milliseconds: max(1, deadline.remainingMilliseconds())) }
    let sent = bytes.withUnsafeBytes { raw in
      strata_send_with_descriptor(self.descriptor, raw.baseAddress, raw.count, descriptor ?? -1)
    }
    guard sent == bytes.count else {
      let code = errno
      if sent < 0 && (code == EAGAIN || code == EWOULDBLOCK) {
        throw StrataError(.timeout, "sending a descriptor to \(peer) timed out")
      }
      throw StrataError(
        .unavailable,
        "sending a descriptor to \(peer) failed: \(sent < 0 ? String(cString: strerror(code)) : "short send")")
    }
  }

  /// Fills `buffer` exactly (a short message); returns the descriptor the peer attached to its
  /// first bytes, nil if none. Descriptors attached to later bytes are not expected and refused.
  public func receiveMessage(_ buffer: UnsafeMutableRawBufferPointer, deadline: Deadline = .never) throws(StrataError)
    -> Int32?
  {
    if deadline != .never { setTimeout(milliseconds: max(1, deadline.remainingMilliseconds())) }
    var received: Int32? = nil
    var filled = 0
    while filled < buffer.count {
      var fd: Int32 = -1
      let count = strata_receive_with_descriptor(descriptor, buffer.baseAddress! + filled, buffer.count - filled, &fd)
      if count < 0 {
        let code = errno
        if let received { Glibc.close(received) }
        if code == EAGAIN || code == EWOULDBLOCK {
          throw StrataError(.timeout, "receiving a descriptor from \(peer) timed out")
        }
        if code == EPROTO {
          throw StrataError(.protocolError, "\(peer) attached more descriptors than one message holds")
        }
        throw StrataError(.unavailable, "receiving from \(peer) failed: \(String(cString: strerror(code)))")
      }
      if fd >= 0 {
        guard received == nil else {
          Glibc.close(fd)
          if let received { Glibc.close(received) }
          throw StrataError(.protocolError, "\(peer) attached a second descriptor")
        }
        received = fd
      }
      if count == 0 {
        if let received { Glibc.close(received) }
        throw StrataError(.unavailable, "\(peer) closed the connection")
      }
      filled += count
    }
    return received
  }
}

/// Whether `host` names this machine: a loopback address, or an address of one of its interfaces
/// (resolved; a name that does not resolve is not local).
public func isLocalHost(_ host: String) -> Bool {
  var hints = addrinfo()
  hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
  var results: UnsafeMutablePointer<addrinfo>?
  guard getaddrinfo(host, nil, &hints, &results) == 0, let first = results else { return false }
  defer { freeaddrinfo(results) }
  var addresses: [[UInt8]] = []
  var candidate: UnsafeMutablePointer<addrinfo>? = first
  while let info = candidate {
    candidate = info.pointee.ai_next
    guard let address = info.pointee.ai_addr, let bytes = addressBytes(address) else { continue }
    if bytes.count == 4 && bytes[0] == 127 { return true }
    if bytes == [UInt8](repeating: 0, count: 15) + [1] { return true }
    addresses.append(bytes)
  }
  guard !addresses.isEmpty else { return false }
  var interfaces: UnsafeMutablePointer<ifaddrs>?
  guard getifaddrs(&interfaces) == 0 else { return false }
  defer { freeifaddrs(interfaces) }
  var entry = interfaces
  while let current = entry {
    entry = current.pointee.ifa_next
    if let address = current.pointee.ifa_addr, let bytes = addressBytes(address), addresses.contains(bytes) {
      return true
    }
  }
  return false
}

private func addressBytes(_ address: UnsafeMutablePointer<sockaddr>) -> [UInt8]? {
  switch Int32(address.pointee.sa_family) {
  case AF_INET:
    return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
      withUnsafeBytes(of: pointer.pointee.sin_addr) { Array($0) }
    }
  case AF_INET6:
    return address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
      withUnsafeBytes(of: pointer.pointee.sin6_addr) { Array($0) }
    }
  default:
    return nil
  }
}
