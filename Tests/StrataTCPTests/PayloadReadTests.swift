// Payload reads on a real loopback socket: `readSome` fills several destinations per read and,
// owed a megabyte or more, sleeps until a large piece has arrived (the low-water mark), yet never
// waits past the bytes the peer still owes, and leaves small reads after it waking for each byte.

import Dispatch
import StrataCore
import Testing

@testable import StrataTCP

#if canImport(Glibc)
  import Glibc
#endif

@Suite struct PayloadReadTests {
  /// A peer sends a payload in uneven pieces, its last far smaller than the mark, then a 16-byte
  /// header: the payload is read to its last byte, over three destinations, and the header after
  /// it, each long before the deadline (a mark the rest of the stream could not reach would leave
  /// the read asleep until the deadline, and the test failing with `timeout`).
  @Test(arguments: [(3 << 20) + 12_345, 2 << 20, (2 << 20) - 1, 70_001])
  func aPayloadIsReadToItsLastByteAndTheNextHeaderAfterIt(total: Int) throws {
    let listener = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0))
    defer { listener.shutdown() }
    let client = try TCPSocket.connect(to: listener.address, timeoutMilliseconds: 5_000)
    let server = try #require(listener.accept())
    let payload = (0..<total).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
    let header = [UInt8](repeating: 7, count: 16)
    let sent = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
      payload.withUnsafeBytes { bytes in
        var start = 0
        for piece in [100_003, 1 << 20, 333, 65_536] + Array(repeating: 777_777, count: 8) where start < total {
          let end = min(total, start + piece)
          try? client.writeAll(
            UnsafeRawBufferPointer(rebasing: bytes[start..<end]), deadline: .after(milliseconds: 10_000))
          start = end
        }
        if start < total { try? client.writeAll(UnsafeRawBufferPointer(rebasing: bytes[start...])) }
      }
      header.withUnsafeBytes { try? client.writeAll($0) }
      sent.signal()
    }
    var landed = [UInt8](repeating: 0, count: total)
    var reads = 0
    let began = ContinuousClock.now
    try landed.withUnsafeMutableBytes { whole in
      let cuts = [0, total / 3, total / 3 + 1, total]
      var segments = (0..<3).map { UnsafeMutableRawBufferPointer(rebasing: whole[cuts[$0]..<cuts[$0 + 1]]) }
      while !segments.isEmpty {
        var count = try server.readSome(into: segments, deadline: .after(milliseconds: 10_000))
        reads += 1
        while count > 0, let head = segments.first {
          let take = min(count, head.count)
          segments[0] = UnsafeMutableRawBufferPointer(rebasing: head[take...])
          if segments[0].isEmpty { segments.removeFirst() }
          count -= take
        }
      }
    }
    var next = [UInt8](repeating: 0, count: header.count)
    try next.withUnsafeMutableBytes { try server.readExactly($0, deadline: .after(milliseconds: 5_000)) }
    let took = ContinuousClock.now - began
    sent.wait()
    #expect(landed == payload)
    #expect(next == header)
    #expect(took < .seconds(5), "took \(took)")
    #expect(reads >= 1)
  }

  /// The mark a read sets is at most half of what it is owed (its segments and the bytes after
  /// them): a read that sleeps has copied less than the mark, so the peer still owes at least the
  /// mark and the read wakes. Reads owed little leave it at 1, and an exact read (a header) puts
  /// it back to 1.
  @Test func theMarkIsAtMostHalfOfWhatAReadIsOwed() throws {
    let listener = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0))
    defer { listener.shutdown() }
    let client = try TCPSocket.connect(to: listener.address, timeoutMilliseconds: 5_000)
    let server = try #require(listener.accept())
    let total = 6 << 20
    let sent = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
      let bytes = [UInt8](repeating: 3, count: total)
      bytes.withUnsafeBytes { try? client.writeAll($0, deadline: .after(milliseconds: 10_000)) }
      sent.signal()
    }
    func mark() -> Int32 {
      var value: Int32 = 0
      var size = socklen_t(MemoryLayout<Int32>.size)
      getsockopt(server.descriptor, SOL_SOCKET, SO_RCVLOWAT, &value, &size)
      return value
    }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
    defer { buffer.deallocate() }
    var left = total - 16
    var marks: [(owed: Int, mark: Int32)] = []
    while left > 0 {
      let want = min(left, buffer.count)
      let count = try server.readSome(
        into: [UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want])], deadline: .after(milliseconds: 10_000),
        followedBy: left - want)
      marks.append((left, mark()))
      left -= count
    }
    for (owed, mark) in marks { #expect(mark == 1 || Int(mark) * 2 <= owed, "mark \(mark) owed \(owed)") }
    #expect(marks.first?.mark == TCPSocket.lowWaterBytes, "a read owed megabytes sets the largest mark")
    #expect(marks.contains { $0.mark > 1 && $0.mark < TCPSocket.lowWaterBytes }, "smaller marks as less is owed")
    #expect(TCPSocket.lowWater(owed: 2 * Int(TCPSocket.lowWaterMin) - 1) == 1, "small reads keep the kernel's mark")
    try server.readExactly(
      UnsafeMutableRawBufferPointer(rebasing: buffer[0..<16]), deadline: .after(milliseconds: 5_000))
    #expect(mark() == 1)
    sent.wait()
  }
}
