// A GET over the same-host path keeps to its call's deadline: the node copies the blocks into the
// client's shared region and answers on the Unix socket, and that answer was awaited with no
// deadline, so a stalled node held a 500 ms call for the whole socket timeout.

import Foundation
import StrataClient
import StrataCore
import StrataTestKit
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite(.serialized) struct SameHostDeadlineTests {
  @Test func aSameHostGetFromAStalledNodeEndsAtItsDeadline() async throws {
    let node = try await NodeProcess.launch(ram: "128MiB", nvme: "128MiB")
    defer {
      kill(node.process.processIdentifier, SIGCONT)
      _ = node.stop()
    }
    var configuration = StrataClient.Configuration(node: node.address)
    configuration.connections = 1
    configuration.sharedMemoryBytes = 8 << 20
    configuration.timeoutMilliseconds = 120_000
    configuration.retries = 0
    let client = StrataClient(configuration)
    defer { client.close() }
    let shared = try #require(client.sharedMemory)
    let bytes = 64 << 10
    fill(UnsafeMutableRawBufferPointer(start: shared.base, count: bytes), seed: 11)
    let key = blockKey(1, 211)
    #expect(try await client.put([.init(key: key, source: try shared.slice(offset: 0, length: bytes))]) == [.stored])
    let item = StrataClient.GetItem(key: key, destination: try shared.slice(offset: 4 << 20, length: bytes))
    #expect(try await client.get([item]) == [.ok(length: bytes)])
    #expect(client.transportStats.sameHostBatches >= 2, "the calls did not take the same-host path")

    // SIGSTOP takes effect as each of the node's threads next runs: wait until all have stopped,
    // or the GET may be served by a thread not stopped yet.
    let pid = node.process.processIdentifier
    kill(pid, SIGSTOP)
    #expect(try await eventually(within: 30) { everyThreadStopped(pid) }, "the node did not stop")
    let began = ContinuousClock.now
    let failed = await #expect(throws: StrataError.self) {
      try await client.get([item], deadline: .after(milliseconds: 500))
    }
    let took = ContinuousClock.now - began
    kill(node.process.processIdentifier, SIGCONT)
    #expect(failed?.code == .timeout, "\(String(describing: failed))")
    // The socket timeout is 120 s; wide for a loaded machine.
    #expect(took < .seconds(60), "a 500 ms same-host GET took \(took) against a stalled node")
  }
}

/// Whether every thread of process `pid` is stopped (state T in /proc/PID/task/TID/stat).
private func everyThreadStopped(_ pid: Int32) -> Bool {
  guard let threads = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task"), !threads.isEmpty
  else { return false }
  return threads.allSatisfy { thread in
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(thread)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return false }
    // After the command name in parentheses: " STATE ...".
    return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first == "T"
  }
}
