// Sockets on loopback and on a Unix-domain path: every read bounded by its deadline, a closed
// peer named with how far the read got, a descriptor passed with a message, and locality checks.

import Dispatch
import StrataCore
import Testing

@testable import StrataTCP

#if canImport(Glibc)
  import Glibc
#endif

/// A connected pair on loopback: the client side and the accepted side.
private func loopbackPair() throws -> (client: TCPSocket, server: TCPSocket, listener: TCPListener) {
  let listener = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0))
  let client = try TCPSocket.connect(to: listener.address, timeoutMilliseconds: 5_000)
  guard let server = listener.accept() else { throw StrataError(.unavailable, "accept failed") }
  return (client, server, listener)
}

@Suite struct SocketDeadlineTests {
  @Test func aReadFromASilentPeerEndsAtItsDeadline() throws {
    let (client, server, listener) = try loopbackPair()
    defer { listener.shutdown() }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
    defer { buffer.deallocate() }
    let began = ContinuousClock.now
    do {
      try server.readExactly(buffer, deadline: .after(milliseconds: 200))
      Issue.record("a read from a silent peer returned")
    } catch {
      #expect(error.code == .timeout, "\(error)")
    }
    let took = ContinuousClock.now - began
    #expect(took >= .milliseconds(150) && took < .seconds(5), "took \(took)")
    client.shutdown()
  }

  /// A read keeps the timeout an earlier deadline set when it bounds this one too (no system call);
  /// it then times out before this deadline, and the read goes on with the exact rest: a later
  /// deadline is never cut short. A read after that still gets bytes that arrive late.
  @Test func aTimeoutKeptFromAnEarlierDeadlineNeverCutsALaterOneShort() throws {
    let (client, server, listener) = try loopbackPair()
    defer { listener.shutdown() }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
    defer { buffer.deallocate() }
    func read(within milliseconds: UInt64) -> (Duration, StrataError?) {
      let began = ContinuousClock.now
      do throws(StrataError) {
        try server.readExactly(buffer, deadline: .after(milliseconds: milliseconds))
        return (ContinuousClock.now - began, nil)
      } catch {
        return (ContinuousClock.now - began, error)
      }
    }
    let (first, firstError) = read(within: 150)  // sets a 150 ms timeout
    #expect(firstError?.code == .timeout && first >= .milliseconds(140), "\(first) \(String(describing: firstError))")
    // 150 ms bounds a deadline of 280 ms, and is kept: the read must still wait the whole 280.
    let (second, secondError) = read(within: 280)
    #expect(secondError?.code == .timeout, "\(String(describing: secondError))")
    #expect(second >= .milliseconds(270) && second < .seconds(5), "a 280 ms deadline ended after \(second)")
    // Bytes sent 200 ms into the next read are read, under that read's own deadline: a generous
    // one, so that a write the loaded test machine runs late still lands within it (the early
    // time-out under a kept timeout, and the read going on after it, are the second read's).
    DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(200)) {
      try? client.writeAll([1, 2, 3, 4, 5, 6, 7, 8])
    }
    let (third, thirdError) = read(within: 10_000)
    #expect(third >= .milliseconds(190), "the bytes were read after \(third), before they were sent")
    #expect(thirdError == nil, "\(String(describing: thirdError))")
    #expect(Array(buffer) == [1, 2, 3, 4, 5, 6, 7, 8])
    client.shutdown()
  }

  @Test func aPeerClosingMidReadIsUnavailableAndSaysHowFarTheReadGot() throws {
    let (client, server, listener) = try loopbackPair()
    defer { listener.shutdown() }
    try client.writeAll([1, 2, 3])
    client.shutdown()
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
    defer { buffer.deallocate() }
    do {
      try server.readExactly(buffer, deadline: .after(milliseconds: 5_000))
      Issue.record("a read past the peer's close returned")
    } catch {
      #expect(error.code == .unavailable && error.message.contains("3 of 8 bytes read"), "\(error)")
    }
  }

  @Test func bytesWrittenOnOneSideAreReadExactlyOnTheOther() throws {
    let (client, server, listener) = try loopbackPair()
    defer { listener.shutdown() }
    let sent = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    try client.writeAll(sent, deadline: .after(milliseconds: 5_000))
    var received = [UInt8](repeating: 0, count: sent.count)
    try received.withUnsafeMutableBytes { buffer in
      try server.readExactly(buffer, deadline: .after(milliseconds: 5_000))
    }
    #expect(received == sent)
  }

  /// A socket bound to port P and connected to P on loopback (what the kernel can do by itself
  /// when a connect to a port nobody listens on picks that port as its source) is recognised as
  /// connected to itself, which `connect` refuses; a real connection is not.
  @Test func aSocketConnectedToItselfIsRecognised() throws {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    try #require(descriptor >= 0)
    let looped = TCPSocket(descriptor: descriptor, peer: "self")
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let connected = withUnsafeMutablePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
        bind(descriptor, raw, length) == 0 && getsockname(descriptor, raw, &length) == 0
          && connect(descriptor, raw, length) == 0
      }
    }
    try #require(connected, "self-connect: errno \(errno)")
    #expect(looped.isConnectedToItself)

    let (client, server, listener) = try loopbackPair()
    defer { listener.shutdown() }
    #expect(!client.isConnectedToItself && !server.isConnectedToItself)
  }
}

@Suite struct UnixSocketTests {
  private static func path() -> String { "/tmp/strata-unix-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock" }

  @Test func aDescriptorTravelsWithItsMessage() throws {
    let path = Self.path()
    let listener = try TCPListener(unixPath: path)
    defer { listener.shutdown() }
    let client = try TCPSocket.connect(unixPath: path, timeoutMilliseconds: 5_000)
    guard let server = listener.accept() else { throw StrataError(.unavailable, "accept failed") }
    var pipeEnds: [Int32] = [0, 0]
    #expect(pipe(&pipeEnds) == 0)
    defer { close(pipeEnds[0]) }
    try client.sendMessage([7, 8, 9], attaching: pipeEnds[1], deadline: .after(milliseconds: 5_000))
    close(pipeEnds[1])
    var message = [UInt8](repeating: 0, count: 3)
    let passed = try message.withUnsafeMutableBytes { buffer in
      try server.receiveMessage(buffer, deadline: .after(milliseconds: 5_000))
    }
    #expect(message == [7, 8, 9])
    guard let passed else {
      Issue.record("no descriptor arrived with the message")
      return
    }
    // The received descriptor is the pipe's write end: bytes written to it come out of the pipe.
    #expect(write(passed, "ok", 2) == 2)
    close(passed)
    var out = [UInt8](repeating: 0, count: 2)
    #expect(read(pipeEnds[0], &out, 2) == 2 && out == Array("ok".utf8))
  }

  @Test func aMessageWithoutADescriptorAndASilentPeerAreToldApart() throws {
    let path = Self.path()
    let listener = try TCPListener(unixPath: path)
    defer { listener.shutdown() }
    let client = try TCPSocket.connect(unixPath: path, timeoutMilliseconds: 5_000)
    guard let server = listener.accept() else { throw StrataError(.unavailable, "accept failed") }
    try client.sendMessage([1], attaching: nil)
    var one = [UInt8](repeating: 0, count: 1)
    let none = try one.withUnsafeMutableBytes { buffer in
      try server.receiveMessage(buffer, deadline: .after(milliseconds: 5_000))
    }
    #expect(none == nil && one == [1])
    do {
      _ = try one.withUnsafeMutableBytes { buffer in
        try server.receiveMessage(buffer, deadline: .after(milliseconds: 200))
      }
      Issue.record("a receive from a silent peer returned")
    } catch {
      #expect((error as? StrataError)?.code == .timeout, "\(error)")
    }
  }

  @Test func connectingWhereNothingListensIsUnavailable() {
    do {
      _ = try TCPSocket.connect(unixPath: Self.path())
      Issue.record("connected to a path nobody listens on")
    } catch {
      #expect(error.code == .unavailable && error.message.contains("cannot connect to unix:/tmp/strata-unix-test-"))
    }
  }

  @Test func loopbackNamesAreLocalAndADocumentationAddressIsNot() {
    #expect(isLocalHost("127.0.0.1") && isLocalHost("localhost"))
    #expect(!isLocalHost("192.0.2.1"), "TEST-NET-1 belongs to no interface")
  }
}
