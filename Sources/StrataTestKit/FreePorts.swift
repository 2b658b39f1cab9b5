// Free loopback ports for test processes that cannot be told to listen on port 0.

#if canImport(Glibc)
  import Glibc
#endif

/// Why no free port could be found.
public struct FreePortError: Error, CustomStringConvertible {
  public var description: String
}

/// `count` ports that were free on 127.0.0.1 a moment ago: each bound to port 0 and read back,
/// all held open together while chosen (so they differ), then released.
public func freeLoopbackPorts(_ count: Int) throws -> [UInt16] {
  var descriptors: [Int32] = []
  defer { for descriptor in descriptors { close(descriptor) } }
  var ports: [UInt16] = []
  for _ in 0..<count {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw FreePortError(description: "socket() failed: errno \(errno)") }
    descriptors.append(descriptor)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
        bind(descriptor, raw, length) == 0 && getsockname(descriptor, raw, &length) == 0
      }
    }
    guard bound else { throw FreePortError(description: "cannot bind a loopback port: errno \(errno)") }
    ports.append(UInt16(bigEndian: address.sin_port))
  }
  return ports
}

/// A port that was free on 127.0.0.1 a moment ago.
public func freeLoopbackPort() throws -> UInt16 { try freeLoopbackPorts(1)[0] }
