// Free loopback ports for test processes that cannot be told to listen on port 0.
//
// The ports come from below the kernel's ephemeral range: a port from inside it (what binding
// port 0 gives) can be taken, between a test choosing it and a node binding it, as the source
// port of any outgoing connection — a peer reconnecting to a stopped node does exactly that, and
// on loopback may even connect to itself on the port the node is about to bind.

import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Why no free port could be found.
public struct FreePortError: Error, CustomStringConvertible {
  public var description: String
}

/// The ports tried, in turn, by every caller in this process (so two tests never get the same one).
private let nextCandidate = Mutex<UInt16?>(nil)

/// `count` ports, below the ephemeral range, that were free on 127.0.0.1 a moment ago: each one
/// bound (without SO_REUSEADDR, so a port in TIME_WAIT is skipped too) and released.
public func freeLoopbackPorts(_ count: Int) throws -> [UInt16] {
  let (low, high) = candidateRange()
  var ports: [UInt16] = []
  var tries = 0
  while ports.count < count {
    tries += 1
    guard tries <= Int(high - low) else {
      throw FreePortError(description: "no free loopback port in \(low)..<\(high) (\(ports.count) of \(count) found)")
    }
    let port = nextCandidate.withLock { next -> UInt16 in
      let port = next ?? low + UInt16(truncatingIfNeeded: Int(getpid()) &* 7919) % (high - low)
      next = port + 1 >= high ? low : port + 1
      return port
    }
    if try isFree(port) { ports.append(port) }
  }
  return ports
}

/// A port that was free on 127.0.0.1 a moment ago.
public func freeLoopbackPort() throws -> UInt16 { try freeLoopbackPorts(1)[0] }

/// 10000 up to the start of the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range).
private func candidateRange() -> (UInt16, UInt16) {
  let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
  let ephemeralLow = text.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } ?? 32768
  return (10_000, UInt16(clamping: max(ephemeralLow, 20_000)))
}

private func isFree(_ port: UInt16) throws -> Bool {
  let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  guard descriptor >= 0 else { throw FreePortError(description: "socket() failed: errno \(errno)") }
  defer { close(descriptor) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = port.bigEndian
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  return withUnsafePointer(to: &address) { pointer in
    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
      bind(descriptor, raw, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
    }
  }
}
