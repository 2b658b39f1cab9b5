// A client call's deadline bounds it, whatever the connection's own timeout: against a peer that
// accepts and never answers, GET and STAT give up at their deadline (the cluster's read-through
// and probes pass one), not after the connection's configured 10 minutes.

import StrataClient
import StrataCore
import StrataTCP
import Testing

@Suite struct CallDeadlineTests {
  @Test func getAndStatEndAtTheirDeadlineAgainstASilentPeer() async throws {
    // The kernel completes connections into the backlog; nothing ever reads or answers them.
    let silent = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0))
    var configuration = StrataClient.Configuration(node: silent.address)
    configuration.timeoutMilliseconds = 600_000
    configuration.retries = 0
    let client = StrataClient(configuration)
    defer { client.close() }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { buffer.deallocate() }
    let region = client.register(buffer)
    let item = StrataClient.GetItem(
      key: BlockKey(hex: String(repeating: "ab", count: 32))!, destination: try region.slice(length: 4096))

    let started = ContinuousClock.now
    await #expect(throws: StrataError.self) { _ = try await client.get([item], deadline: .after(milliseconds: 300)) }
    await #expect(throws: StrataError.self) { _ = try await client.stat(deadline: .after(milliseconds: 300)) }
    // Both ended at their deadlines (0.3 s each), far from the 10 minutes the connection would
    // wait. The bound is loose: in the full suite on 2 cores this test's task can wait tens of
    // seconds for a thread.
    #expect(ContinuousClock.now - started < .seconds(180))
  }
}
