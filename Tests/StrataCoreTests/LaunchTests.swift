// StrataTestKit's `launch`: a child process of the tests holds none of the tests' descriptors.

import Foundation
import StrataTestKit
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite struct LaunchTests {
  /// A pipe open in the test process is not among a launched child's descriptors, which are its
  /// standard three, the one it opens to list them and Foundation's exit socket; and once a child
  /// is launched, the pipe is close-on-exec here, so no later start can hand it on either.
  /// Foundation closes the descriptors it finds open when it starts a child, but one opened by
  /// another thread during that start (another test's exit socket) went to the child: how a node
  /// started by one test kept another test's killed node from being seen to exit.
  @Test func aLaunchedChildHoldsNoDescriptorOfTheTests() throws {
    var ends: [Int32] = [0, 0]
    try #require(pipe(&ends) == 0)
    defer { for end in ends { close(end) } }
    try #require(ends.allSatisfy { fcntl($0, F_GETFD) & FD_CLOEXEC == 0 }, "pipe() made close-on-exec descriptors")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/ls")
    process.arguments = ["/proc/self/fd"]
    let out = Pipe()
    process.standardOutput = out
    try launch(process)
    let listed = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let held = Set(String(decoding: listed, as: UTF8.self).split(separator: "\n").compactMap { Int32($0) })
    #expect(held.isSuperset(of: [0, 1, 2]), "\(held.sorted())")
    #expect(held.isDisjoint(with: ends), "the child holds the test's pipe \(ends): \(held.sorted())")
    #expect(held.count <= 5, "the child holds \(held.count) descriptors: \(held.sorted())")
    for end in ends { #expect(fcntl(end, F_GETFD) & FD_CLOEXEC != 0, "descriptor \(end) is inherited by later starts") }
  }
}
