// A real `strata serve` given SIGTERM: its services stop in the reverse of their start order
// (readiness, data plane, admin API, storage), RAM blocks reach NVMe (a restart finds them), and it
// exits 0 in time. Given SIGTERM while it still reads its NVMe tier at start, it stops there.

import Foundation
import StrataClient
import StrataCore
import StrataTestKit
import Testing

@Suite struct GracefulStopTests {
  @Test func sigtermStopsTheServicesInOrderAndExitsZero() async throws {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("strata-stop-\(UUID().uuidString).log").path
    defer { try? FileManager.default.removeItem(atPath: log) }
    // No write-behind: the blocks reach NVMe only by the stop's flush, whose progress is logged.
    let config = FileManager.default.temporaryDirectory.appendingPathComponent("strata-stop-\(UUID().uuidString).yaml")
      .path
    try "nvme:\n  writeback_window: 0ms\n".write(toFile: config, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(atPath: config) }
    let node = try await NodeProcess.launch(ram: "64MiB", nvme: "256MiB", log: log, extra: ["--config", config])
    let client = node.client()
    let count = 20
    let blockBytes = 4096
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: count * blockBytes, alignment: 4096)
    defer { source.deallocate() }
    fill(source, seed: 5)
    let region = client.register(source)
    let items = try (0..<count).map { n in
      StrataClient.PutItem(key: blockKey(n, 7), source: try region.slice(offset: n * blockBytes, length: blockBytes))
    }
    #expect(try await client.put(items).allSatisfy { $0 == .stored })
    client.close()

    let began = ContinuousClock.now
    kill(node.process.processIdentifier, SIGTERM)
    // The node's stop deadlines add up to minutes; an idle node stops in well under 30 s.
    let deadline = Deadline.after(milliseconds: 30_000)
    while node.process.isRunning && !deadline.hasPassed() { usleep(20_000) }
    let running = node.process.isRunning
    if running { node.killHard() }
    #expect(!running, "the node was still running 30 s after SIGTERM")
    node.process.waitUntilExit()
    let took = ContinuousClock.now - began
    let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    defer { try? FileManager.default.removeItem(atPath: node.directory) }
    #expect(node.process.terminationStatus == 0, "exit \(node.process.terminationStatus) after \(took):\n\(text)")

    // The stop order is logged when stopping begins and confirmed when it ends.
    let order = #"["readiness", "data plane", "admin API", "verify", "storage"]"#
    let lines = text.split(separator: "\n").map(String.init)
    let stopping = lines.firstIndex { $0.contains("stopping") && $0.contains("order=\(order)") }
    let storage = lines.firstIndex { $0.contains("storage stopped") }
    let stopped = lines.firstIndex { $0.hasSuffix(" stopped") && $0.contains("services=\(order)") }
    #expect(stopping != nil && storage != nil && stopped != nil, "missing stop lines in:\n\(text)")
    if let stopping, let storage, let stopped { #expect(stopping < storage && storage < stopped, "\(text)") }
    #expect(storage.map { lines[$0].contains("blocks_written_to_nvme=\(count)") } == true, "\(text)")
    // The flush says how far it has got, from its start to its end.
    let flushed = lines.filter { $0.contains("storage: writing RAM blocks to NVMe:") }
    #expect(flushed.first?.contains("0 of \(count) blocks (0%") == true, "\(flushed)")
    #expect(flushed.last?.contains("\(count) of \(count) blocks (100%") == true, "\(flushed)")
    #expect(flushed.count <= 11, "a line per tenth at most: \(flushed)")

    // Every block reached NVMe before the exit: a node restarted on the same folder holds them all.
    let restarted = try await NodeProcess.launch(ram: "64MiB", nvme: "256MiB", directory: node.directory)
    let reader = restarted.client()
    let found = try await reader.lookup(items.map(\.key))
    reader.close()
    #expect(restarted.stop(keepData: true) == 0)
    #expect(found.tiers.allSatisfy { $0 != .absent }, "\(found.tiers)")
  }

  /// A node reads its whole NVMe tier at start (minutes for hundreds of GiB). SIGTERM then ends the
  /// recovery at the region being read and the process exits 0 without serving; the disk is left
  /// as it was, so the next start finds every block.
  @Test func sigtermWhileTheNVMeTierIsReadStopsTheStart() async throws {
    let node = try await NodeProcess.launch(ram: "64MiB", nvme: "2GiB")
    defer { try? FileManager.default.removeItem(atPath: node.directory) }
    // 1 GiB of 2 MiB blocks on NVMe: a second or more of reading at start.
    let count = 512
    let blockBytes = 2 << 20
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 4096)
    defer { source.deallocate() }
    fill(source, seed: 9)
    let client = node.client(sameHost: false)
    let slice = try client.register(source).slice(offset: 0, length: blockBytes)
    let keys = (0..<count).map { blockKey($0, 31) }
    for batch in stride(from: 0, to: count, by: 16) {
      let outcomes = try await client.put(
        keys[batch..<(batch + 16)].map { StrataClient.PutItem(key: $0, source: slice) })
      #expect(outcomes.allSatisfy { $0 == .stored })
    }
    client.close()
    #expect(node.stop(keepData: true) == 0)

    let restart = Process()
    restart.executableURL = URL(fileURLWithPath: strataExecutable)
    restart.arguments = [
      "serve", "--data-dir", node.directory, "--listen", "127.0.0.1:0", "--ram", "64MiB", "--nvme", "2GiB",
      "--ram-unlocked", "--admin", "127.0.0.1:0",
    ]
    let (out, errors) = (Pipe(), Pipe())
    restart.standardOutput = out
    restart.standardError = errors
    try StrataTestKit.launch(restart)
    // The signal goes as soon as the node says it is reading the tier; its log is read to the end.
    let log = try await onNewThread { () throws -> String in
      var text = ""
      var signalled = false
      while case let data = errors.fileHandleForReading.availableData, !data.isEmpty {
        text += String(decoding: data, as: UTF8.self)
        if !signalled && text.contains("storage: recovering the NVMe tier (") {
          kill(restart.processIdentifier, SIGTERM)
          signalled = true
        }
      }
      restart.waitUntilExit()
      return text
    }
    let printed = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    #expect(restart.terminationStatus == 0, "\(log)")
    #expect(log.contains("stopped while starting") && log.contains("NVMe recovery stopped on request"), "\(log)")
    #expect(!log.contains("storage: NVMe tier recovered") && !printed.contains(" listening on "), "\(log)")

    let restarted = try await NodeProcess.launch(ram: "64MiB", nvme: "2GiB", directory: node.directory)
    let reader = restarted.client()
    let found = try await reader.lookup(keys)
    reader.close()
    #expect(restarted.stop(keepData: true) == 0)
    #expect(found.tiers.allSatisfy { $0 != .absent }, "\(found.tiers.filter { $0 == .absent }.count) absent")
  }
}
