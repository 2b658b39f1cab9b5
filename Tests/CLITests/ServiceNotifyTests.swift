// A real node under systemd's notify protocol (deploy/systemd/strata.service is Type=notify): the
// test listens on a NOTIFY_SOCKET as systemd would and reads what the node says as it starts,
// serves and stops.

import Foundation
import Logging
import StrataAdmin
import StrataCore
import StrataTCP
import StrataTestKit
import Testing

@Suite struct ServiceNotifyTests {
  @Test func messagesAreKeyValueLinesAndNeedASocket() throws {
    #expect(
      ServiceNotifier.message([("READY", "1"), ("STATUS", "serving on\nhost")]) == "READY=1\nSTATUS=serving on host\n")
    let logger = Logger(label: "notify-test")
    #expect(ServiceNotifier(socketPath: nil, logger: logger) == nil)
    #expect(ServiceNotifier(socketPath: "relative/path", logger: logger) == nil)
    #expect(ServiceNotifier(socketPath: "@", logger: logger) == nil)
    // An abstract address, as systemd may give.
    let name = "@strata-notify-\(UUID().uuidString)"
    let listener = try UnixDatagramSocket(binding: name)
    let notifier = try #require(ServiceNotifier(socketPath: name, logger: logger))
    notifier.ready("serving")
    let received = try #require(listener.receive(timeoutMilliseconds: 10_000))
    #expect(String(decoding: received, as: UTF8.self) == "READY=1\nSTATUS=serving\n")
  }

  /// A service manager that stops reading must not stall the node: once its queue is full, sends
  /// are refused at once instead of waiting (without MSG_DONTWAIT this loop would block forever).
  @Test func aReceiverThatNeverReadsNeverStallsTheSender() throws {
    let name = "@strata-full-\(UUID().uuidString)"
    let listener = try UnixDatagramSocket(binding: name)
    let sender = try UnixDatagramSocket()
    var refused = 0
    for _ in 0..<2_000 {
      do throws(StrataError) {
        try sender.send([UInt8](repeating: 0x41, count: 512), to: name)
      } catch {
        refused += 1
      }
    }
    #expect(refused > 0)
    #expect(listener.receive(timeoutMilliseconds: 1_000)?.count == 512)
  }

  @Test func aNodeSaysHowItsStartGoesWhenItServesAndWhenItStops() async throws {
    let folder = try DeployFixtures.temporaryFolder("strata-notify")
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let socketPath = folder + "/notify.sock"
    let listener = try UnixDatagramSocket(binding: socketPath)
    let node = Process()
    node.executableURL = URL(fileURLWithPath: strataExecutable)
    node.arguments = [
      "serve", "--data-dir", folder + "/data", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--ram", "64MiB",
      "--nvme", "256MiB", "--ram-unlocked",
    ]
    node.environment = ProcessInfo.processInfo.environment.merging(["NOTIFY_SOCKET": socketPath]) { _, new in new }
    node.standardOutput = FileHandle.nullDevice
    node.standardError = FileHandle.nullDevice
    try StrataTestKit.launch(node)
    defer {
      if node.isRunning { node.terminate() }
      node.waitUntilExit()
    }

    // Every datagram up to READY=1, then SIGTERM and the one that says it stops.
    let (started, stopping) = try await onNewThread { () throws -> ([String], String?) in
      var messages: [String] = []
      while let datagram = listener.receive(timeoutMilliseconds: 60_000) {
        messages.append(String(decoding: datagram, as: UTF8.self))
        if messages.last!.hasPrefix("READY=1\n") { break }
      }
      guard messages.last?.hasPrefix("READY=1\n") == true else { return (messages, nil) }
      kill(node.processIdentifier, SIGTERM)
      return (messages, listener.receive(timeoutMilliseconds: 60_000).map { String(decoding: $0, as: UTF8.self) })
    }
    #expect(started.first == "STATUS=starting: opening storage\nEXTEND_TIMEOUT_USEC=300000000\n", "\(started)")
    #expect(started.contains { $0.hasPrefix("STATUS=starting: reading the NVMe tier") }, "\(started)")
    #expect(started.contains { $0.hasPrefix("STATUS=starting: faulting in the RAM arena (64MiB)") }, "\(started)")
    let ready = try #require(started.last)
    #expect(ready.hasPrefix("READY=1\nSTATUS=serving on 127.0.0.1:"), "\(ready)")
    #expect(stopping?.hasPrefix("STOPPING=1\nSTATUS=stopping (SIGTERM)") == true, "\(String(describing: stopping))")
    node.waitUntilExit()
    #expect(node.terminationStatus == 0)
  }
}
