// What a process holds open, read from /proc (Linux): tests of limits on a node's connections.

import Foundation

/// How many TCP sockets process `pid` holds whose remote end is port `port` (IPv4 or IPv6, any
/// state: a socket whose peer went away stays, in CLOSE_WAIT, until its holder closes it).
public func tcpSockets(of pid: Int32, toPort port: UInt16) -> Int {
  let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
  var inodes = Set<Substring>()
  for descriptor in descriptors {
    guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(descriptor)"),
      target.hasPrefix("socket:[")
    else { continue }
    inodes.insert(target.dropFirst("socket:[".count).dropLast())
  }
  let remotePort = String(format: "%04X", port)
  var count = 0
  for table in ["/proc/\(pid)/net/tcp", "/proc/\(pid)/net/tcp6"] {
    // Read to the end: one read of a /proc table (what `String(contentsOfFile:)` does) stops at a page.
    let data = (try? FileHandle(forReadingFrom: URL(fileURLWithPath: table)).readToEnd()) ?? nil
    let text = String(decoding: data ?? Data(), as: UTF8.self)
    // Columns: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    for line in text.split(separator: "\n").dropFirst() {
      let fields = line.split(separator: " ")
      guard fields.count > 9, fields[2].hasSuffix(":" + remotePort), inodes.contains(fields[9]) else { continue }
      count += 1
    }
  }
  return count
}
