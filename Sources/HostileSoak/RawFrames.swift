// Raw frames and sockets for the attacks: the soak speaks the wire protocol byte by byte where a
// well-behaved client never would (half frames, false body sizes, stalled transfers).

import Foundation
import StrataCore
import StrataTCP
import StrataWire

#if canImport(Glibc)
  import Glibc
#endif

/// POLLRDHUP (a GNU name the Glibc module does not export): the peer closed its sending side.
let pollReadHangUp: Int16 = 0x2000

enum RawFrames {
  /// Small socket buffers: thousands of attack sockets must not cost the machine gigabytes.
  static let attackBufferBytes: Int32 = 16 << 10

  static func connect(_ address: HostPort, bufferBytes: Int32 = attackBufferBytes) throws(StrataError) -> TCPSocket {
    try TCPSocket.connect(to: address, timeoutMilliseconds: 5_000, bufferBytes: bufferBytes)
  }

  static func hello(token: String, peer: Bool = false, peerNamespace: String = "") -> [UInt8] {
    HelloRequest(
      capabilities: peer ? [.tcp, .peer] : [.tcp], frameBytesMax: 1 << 30, token: Array(token.utf8),
      clientName: "soak-hostile", peerNamespace: peerNamespace
    ).frameBytes(requestID: 1, ringEpoch: 0)
  }

  /// Reads one whole frame (header and body) of a response that carries no payload.
  static func readFrame(_ socket: TCPSocket) throws(StrataError) -> WireMessage {
    var source = socket
    let reader = FrameReader(receiving: .response, bufferBytes: 4096)
    guard let (_, message) = try reader.nextFrame(from: &source, deadline: .never, headerArrived: { _ in .never })
    else {
      throw StrataError(.unavailable, "no frame")
    }
    return message
  }

  /// A connection that said HELLO with `token`, and the node's answer.
  static func session(
    _ address: HostPort, token: String, peer: Bool = false, peerNamespace: String = "",
    bufferBytes: Int32 = attackBufferBytes
  ) throws -> (TCPSocket, WireMessage) {
    let socket = try connect(address, bufferBytes: bufferBytes)
    try socket.writeAll(hello(token: token, peer: peer, peerNamespace: peerNamespace))
    return (socket, try readFrame(socket))
  }

  /// Recomputes the header checksum (bytes 60..<64) over bytes 0..<60.
  static func resigned(_ frame: [UInt8]) -> [UInt8] {
    var frame = frame
    let checksum = frame.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
    withUnsafeBytes(of: checksum.littleEndian) { for (index, byte) in $0.enumerated() { frame[60 + index] = byte } }
    return frame
  }

  /// A frame's 64-byte header whose body length (bytes 24..<28) claims `bodyBytes`, correctly signed.
  static func claimingBody(_ frame: [UInt8], bodyBytes: UInt32) -> [UInt8] {
    var header = Array(frame[0..<FrameHeader.byteCount])
    withUnsafeBytes(of: bodyBytes.littleEndian) { for (index, byte) in $0.enumerated() { header[24 + index] = byte } }
    return resigned(header)
  }

  static func setReceiveBuffer(_ socket: TCPSocket, bytes: Int32) {
    var value = bytes
    setsockopt(socket.descriptor, SOL_SOCKET, SO_RCVBUF, &value, socklen_t(MemoryLayout<Int32>.size))
  }

  /// Waits in poll (never spinning) until the node closes the connection, reading and keeping what
  /// it sends; returns the bytes and whether the close came within `seconds`.
  static func waitClosed(_ socket: TCPSocket, seconds: Double, keep: Int = 0) -> (bytes: [UInt8], closed: Bool) {
    let end = Date().addingTimeInterval(seconds)
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 << 10)
    while true {
      let left = end.timeIntervalSinceNow
      if left <= 0 { return (received, false) }
      var watched = pollfd(fd: socket.descriptor, events: Int16(POLLIN) | pollReadHangUp, revents: 0)
      let ready = poll(&watched, 1, Int32(min(left * 1000, 1000)) + 1)
      if ready <= 0 { continue }
      let outcome = chunk.withUnsafeMutableBytes { raw -> Int? in try? socket.receiveAvailable(raw) }
      guard let count = outcome else { return (received, true) }
      if received.count < keep { received += chunk[0..<min(count, keep - received.count)] }
      if count == 0, watched.revents & (Int16(POLLHUP) | Int16(POLLERR)) != 0 { return (received, true) }
    }
  }
}

/// Deterministic block contents: `fill(buffer, seed:)` writes the same bytes for the same seed.
func fill(_ buffer: UnsafeMutableRawBufferPointer, seed: UInt64) {
  var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
  let words = buffer.count / 8
  let wordPointer = buffer.baseAddress!.bindMemory(to: UInt64.self, capacity: words)
  for index in 0..<words {
    state ^= state << 13
    state ^= state >> 7
    state ^= state << 17
    wordPointer[index] = state
  }
  for index in (words * 8)..<buffer.count { buffer[index] = UInt8(truncatingIfNeeded: state >> (index % 8 * 8)) }
}

func blockKey(_ parts: UInt64...) -> BlockKey {
  var seed: [UInt8] = []
  for part in parts { withUnsafeBytes(of: part) { seed += $0 } }
  return SHA256.digest(seed)
}
