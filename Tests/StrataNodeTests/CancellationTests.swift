// A cancelled client call stops its work: the parts of a batch still waiting for a connection
// are never sent.

import Dispatch
import Logging
import StrataClient
import StrataConfig
import StrataCore
import StrataStorage
import StrataTestKit
import Synchronization
import Testing

@testable import StrataNode

/// Counts the node's GETs; the first one holds its connection's thread (after it was answered)
/// until released, so the client's next part stays in flight and the rest wait behind it.
private final class HoldingObserver: NodeObserver {
  let gets = Atomic<Int>(0)
  let release = DispatchSemaphore(value: 0)

  func requestFinished(_ event: RequestEvent) {
    guard event.op == "get" else { return }
    if gets.add(1, ordering: .relaxed).newValue == 1 { release.wait() }
  }
}

@Suite struct CancellationTests {
  @Test func aCancelledBatchSendsNoFurtherParts() async throws {
    let tiers = try TierManager(
      configuration: TierConfiguration(
        ramBytes: 16 << 20, blockBytesMax: 1 << 20, lockMemory: false, hugePages: false, admission: .never),
      nvme: nil)
    var node = NodeConfiguration()
    node.listen = HostPort(host: "127.0.0.1", port: 0)
    var logger = Logger(label: "test-node")
    logger.logLevel = .error
    let observer = HoldingObserver()
    let server = try NodeServer(
      configuration: ServerConfiguration(node, nodeID: "test"), tiers: tiers, logger: logger, observer: observer)
    server.start()
    defer { server.stop() }

    // One connection, one block per part: 8 parts queue on one connection, one at a time.
    var configuration = StrataClient.Configuration(node: server.address)
    configuration.connections = 1
    configuration.batchBytesMax = 4096
    configuration.timeoutMilliseconds = 10_000
    let client = StrataClient(configuration)
    defer { client.close() }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 * 4096, alignment: 4096)
    defer { buffer.deallocate() }
    let region = client.register(buffer)
    let items = try (0..<8).map { index in
      StrataClient.GetItem(key: key(index, 77), destination: try region.slice(offset: index * 4096, length: 4096))
    }

    let call = Task { try await client.get(items) }
    // Generous (and StrataTestKit's `eventually` does not count a stall of the cooperative pool,
    // which also holds back the call's task, against the bound).
    _ = try await eventually(within: 120) { observer.gets.load(ordering: .relaxed) >= 1 }
    let first = observer.gets.load(ordering: .relaxed)
    #expect(first == 1)
    call.cancel()
    observer.release.signal()
    switch await call.result {
    case .success: Issue.record("a cancelled batch of 8 parts completed")
    case .failure(let error): #expect((error as? StrataError)?.code == .cancelled)
    }
    // The call has returned, so every part has ended: the one answered, at most the one in
    // flight when it was cancelled, and none of the 6 or more still waiting.
    let sent = observer.gets.load(ordering: .relaxed)
    #expect(sent <= 2, "\(sent) of 8 parts were sent")
  }
}
