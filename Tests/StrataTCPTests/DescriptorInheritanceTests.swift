// Descriptors the library opens are close-on-exec from the moment they exist: a process that forks
// and execs on another thread at that moment (an inference engine starting its workers beside the
// C client, a test starting a node beside an in-process one) must not pass them on to its child.
// A later fcntl would leave a window; these tests read the flag of each kind of descriptor.

import CStrataLinux
import StrataCore
import Testing

@testable import StrataTCP

#if canImport(Glibc)
  import Glibc
#endif

private func isCloseOnExec(_ descriptor: Int32) -> Bool {
  let flags = fcntl(descriptor, F_GETFD)
  return flags >= 0 && flags & FD_CLOEXEC != 0
}

/// Whether `descriptor` has input to read now.
private func isReadable(_ descriptor: Int32) -> Bool {
  var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
  return poll(&entry, 1, 0) == 1 && entry.revents & Int16(POLLIN) != 0
}

@Suite struct DescriptorInheritanceTests {
  @Test func socketsAreCloseOnExecOnBothSidesOfEveryAccept() throws {
    let listener = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0))
    defer { listener.shutdown() }
    #expect(isCloseOnExec(listener.descriptor))
    let first = try TCPSocket.connect(to: listener.address, timeoutMilliseconds: 5_000)
    defer { first.shutdown() }
    let accepted = try #require(listener.accept())
    defer { accepted.shutdown() }
    #expect(isCloseOnExec(first.descriptor), "connected socket")
    #expect(isCloseOnExec(accepted.descriptor), "socket from a blocking accept")

    listener.setNonBlocking()
    let second = try TCPSocket.connect(to: listener.address, timeoutMilliseconds: 5_000)
    defer { second.shutdown() }
    var waiting = pollfd(fd: listener.descriptor, events: Int16(POLLIN), revents: 0)
    try #require(poll(&waiting, 1, 5_000) == 1, "no connection waiting within 5 s")
    guard case .connection(let available) = listener.acceptAvailable() else {
      Issue.record("a waiting connection was not accepted")
      return
    }
    defer { available.shutdown() }
    #expect(isCloseOnExec(available.descriptor), "socket from a non-blocking accept")
  }

  @Test func aPipeIsCloseOnExecAtBothEnds() throws {
    var ends: [Int32] = [-1, -1]
    try #require(strata_pipe(&ends) == 0)
    defer { for end in ends { close(end) } }
    #expect(isCloseOnExec(ends[0]) && isCloseOnExec(ends[1]))
  }

  /// The wake-up event of the C client's completion queue: close-on-exec, readable exactly between
  /// a signal and a reset however many signals came, and never blocking its caller.
  @Test func anEventIsCloseOnExecAndReadableExactlyWhileSignalled() throws {
    var ends: [Int32] = [-1, -1]
    try #require(strata_event_create(&ends) == 0)
    defer {
      close(ends[0])
      if ends[1] != ends[0] { close(ends[1]) }
    }
    #expect(isCloseOnExec(ends[0]) && isCloseOnExec(ends[1]))
    #expect(!isReadable(ends[0]), "readable before any signal")
    strata_event_reset(ends[0])  // a reset of an unsignalled event returns at once
    for _ in 0..<3 { strata_event_signal(ends[1]) }
    #expect(isReadable(ends[0]), "not readable after three signals")
    strata_event_reset(ends[0])
    #expect(!isReadable(ends[0]), "still readable after a reset")
    strata_event_signal(ends[1])
    #expect(isReadable(ends[0]), "not readable after a signal following a reset")
  }
}
