// A real node under systemd's notify protocol (deploy/systemd/strata.service is Type=notify): the
// test listens on a NOTIFY_SOCKET as systemd would and reads what the node says as it starts,
// serves and stops.

import Foundation
import Logging
import StrataAdmin
import StrataCore
import StrataStorage
import StrataTCP
import StrataTestKit
import Synchronization
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

  /// A stop's flush reports its progress with more time for each whole percent (systemd then
  /// waits out a flush of any size that keeps writing); the same percent again sends nothing.
  @Test func aFlushAsksForMoreTimeAsItMovesOn() throws {
    let name = "@strata-flush-\(UUID().uuidString)"
    let listener = try UnixDatagramSocket(binding: name)
    let notifier = try #require(ServiceNotifier(socketPath: name, logger: Logger(label: "notify-test")))
    var progress = FlushProgress()
    progress.blocksToWrite = 400
    progress.bytesToWrite = 400 << 20
    for written in [0, 1, 2, 3, 200, 400] {
      progress.blocksWritten = written
      progress.bytesWritten = written << 20
      notifier.flushing(progress)
    }
    var received: [String] = []
    while let datagram = listener.receive(timeoutMilliseconds: 200) {
      received.append(String(decoding: datagram, as: UTF8.self))
    }
    #expect(
      received
        == [0, 50, 100].map {
          "STATUS=stopping: writing RAM blocks to NVMe: \($0)% of 400MiB\nEXTEND_TIMEOUT_USEC=300000000\n"
        }, "\(received)")
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

  @Test func theWatchdogIntervalIsSystemdsForThisProcessOnly() {
    #expect(ServiceNotifier.watchdogMilliseconds([:], pid: 42) == nil)
    #expect(ServiceNotifier.watchdogMilliseconds(["WATCHDOG_USEC": "30000000"], pid: 42) == 30_000)
    #expect(
      ServiceNotifier.watchdogMilliseconds(["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"], pid: 42) == 30_000)
    // Meant for another process (a parent that passed its environment on).
    #expect(ServiceNotifier.watchdogMilliseconds(["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"], pid: 42) == nil)
    #expect(ServiceNotifier.watchdogMilliseconds(["WATCHDOG_USEC": "soon"], pid: 42) == nil)
    #expect(ServiceNotifier.watchdogMilliseconds(["WATCHDOG_USEC": "0"], pid: 42) == nil)
  }

  /// While the data plane is wedged the watchdog is not fed (systemd restarts the node); once it
  /// goes round again, it is. The first feeding a receiver sees comes after the problem cleared.
  @Test func theWatchdogIsFedOnlyWhileTheNodeIsAlive() async throws {
    let name = "@strata-watchdog-\(UUID().uuidString)"
    let listener = try UnixDatagramSocket(binding: name)
    let logs = LogCapture()
    let logger = Logger(label: "watchdog-test") { _ in logs.handler() }
    let notifier = try #require(ServiceNotifier(socketPath: name, logger: logger))
    let clock = ManualClock()
    let wedged = Mutex(true)
    let watchdog = ServiceWatchdog(notifier: notifier, intervalMilliseconds: 2_000, logger: logger, clock: clock) {
      wedged.withLock { $0 } ? ["the data plane's accept loop (tcp) has not gone round for 12 s"] : []
    }
    defer { watchdog.stop() }
    // Two turns while wedged: each ends asleep on the clock, having sent nothing.
    for _ in 0..<2 {
      #expect(try await eventually(within: 10) { clock.sleepers == 1 })
      clock.advance(milliseconds: 1_000)
    }
    #expect(try await eventually(within: 10) { clock.sleepers == 1 })
    let refused = logs.records.withLock {
      $0.filter { $0.message.hasPrefix("not feeding the service manager's watchdog") }
    }
    #expect(refused.count == 1 && refused.first?.metadata["reason"]?.contains("has not gone round") == true)
    wedged.withLock { $0 = false }
    clock.advance(milliseconds: 1_000)
    // Polled (a short receive each time) so that a stall of the cooperative pool, which runs the
    // watchdog's task, does not count against the bound (`eventually`).
    var received: [UInt8]?
    #expect(
      try await eventually(within: 30) {
        received = listener.receive(timeoutMilliseconds: 20)
        return received != nil
      })
    #expect(received.map { String(decoding: $0, as: UTF8.self) } == "WATCHDOG=1\n")
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
    // A 2 s watchdog: the node feeds it every second once it serves.
    node.environment = ProcessInfo.processInfo.environment.merging([
      "NOTIFY_SOCKET": socketPath, "WATCHDOG_USEC": "2000000",
    ]) { _, new in new }
    node.standardOutput = FileHandle.nullDevice
    node.standardError = FileHandle.nullDevice
    try StrataTestKit.launch(node)
    defer {
      if node.isRunning { node.terminate() }
      node.waitUntilExit()
    }

    // Every datagram up to READY=1, the watchdog fed twice, then SIGTERM and the one that says it
    // stops (watchdog datagrams before it skipped).
    let (started, fed, stopping) = try await onNewThread { () throws -> ([String], Int, String?) in
      var messages: [String] = []
      while let datagram = listener.receive(timeoutMilliseconds: 60_000) {
        messages.append(String(decoding: datagram, as: UTF8.self))
        if messages.last!.hasPrefix("READY=1\n") { break }
      }
      guard messages.last?.hasPrefix("READY=1\n") == true else { return (messages, 0, nil) }
      var fed = 0
      while fed < 2, let datagram = listener.receive(timeoutMilliseconds: 10_000) {
        if String(decoding: datagram, as: UTF8.self) == "WATCHDOG=1\n" { fed += 1 }
      }
      kill(node.processIdentifier, SIGTERM)
      while let datagram = listener.receive(timeoutMilliseconds: 60_000) {
        let text = String(decoding: datagram, as: UTF8.self)
        if text != "WATCHDOG=1\n" { return (messages, fed, text) }
      }
      return (messages, fed, nil)
    }
    #expect(fed == 2, "the watchdog was fed \(fed) time(s) in 20 s")
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
