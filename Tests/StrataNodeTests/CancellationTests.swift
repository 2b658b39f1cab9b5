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

/// Counts the node's GETs, and cancels the client's call from the first one (after it was
/// answered, before its connection's thread reads the next part): at that moment at most the
/// client's next part is in flight, and the rest wait behind it. Cancelling here, not from the
/// test's task, keeps the test independent of when the cooperative pool runs that task (in the
/// full suite it has been held for minutes, long enough for the client's parts to time out).
private final class CancellingObserver: NodeObserver {
  let gets = Atomic<Int>(0)
  let call = Mutex<Task<[StrataClient.GetResult], any Error>?>(nil)
  let armed = DispatchSemaphore(value: 0)

  func requestFinished(_ event: RequestEvent) {
    guard event.op == "get" else { return }
    guard gets.add(1, ordering: .relaxed).newValue == 1 else { return }
    armed.wait()
    call.withLock { $0?.cancel() }
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
    let observer = CancellingObserver()
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
    observer.call.withLock { $0 = call }
    observer.armed.signal()
    switch await call.result {
    case .success: Issue.record("a cancelled batch of 8 parts completed")
    case .failure(let error): #expect((error as? StrataError)?.code == .cancelled)
    }
    // The call has returned, so every part has ended: the one answered, at most the one in
    // flight when it was cancelled, and none of the 6 or more still waiting.
    let sent = observer.gets.load(ordering: .relaxed)
    #expect(sent >= 1 && sent <= 2, "\(sent) of 8 parts were sent")
  }
}
