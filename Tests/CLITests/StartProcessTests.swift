// A real node's admin port from before its storage opens: a port already taken stops the start
// before the NVMe tier is touched, and the recovery's progress reaches the metrics.
// (NodeStartTests holds a recovery at its first region to check the answers given meanwhile.)

import Foundation
import StrataClient
import StrataCore
import StrataTCP
import StrataTestKit
import Testing

@Suite(.serialized) struct StartProcessTests {
  @Test func aTakenAdminPortStopsTheStartBeforeStorageOpens() async throws {
    let taken = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0))
    defer { withExtendedLifetime(taken) {} }
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-start-\(UUID().uuidString)")
      .path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let run = try await strata(
      "serve", "--data-dir", directory, "--listen", "127.0.0.1:0", "--admin", taken.address.description, "--ram",
      "64MiB", "--nvme", "256MiB", "--ram-unlocked")
    #expect(run.status != 0)
    #expect(run.stderr.contains(taken.address.description), "\(run.stderr)")
    #expect(!run.stderr.contains("storage: recovering"), "\(run.stderr)")
    #expect(!FileManager.default.fileExists(atPath: directory + "/nvme/strata-nvme.dat"))
  }

  @Test func theRecoverysProgressReachesTheMetricsAndTheAdminPortOpensFirst() async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-start-\(UUID().uuidString)")
      .path
    let log = directory + ".log"
    let first = try await NodeProcess.launch(ram: "64MiB", nvme: "256MiB", directory: directory)
    let client = first.client(sameHost: false)
    let stored = try await putBlocks(client, count: 40, size: 1 << 20, seed: 61)
    client.close()
    #expect(first.stop(keepData: true) == 0)

    let node = try await NodeProcess.launch(ram: "64MiB", nvme: "256MiB", directory: directory, log: log, files: [log])
    defer { _ = node.stop() }
    let metrics = try scrape(try node.admin)
    #expect(sample(metrics, "strata_starting") == 0)
    let total = try #require(sample(metrics, "strata_nvme_recovery_regions_total"))
    #expect(total > 0 && sample(metrics, "strata_nvme_recovery_regions_read") == total)
    #expect((sample(metrics, "strata_nvme_recovery_records_found") ?? 0) >= Double(stored.count))
    #expect(sample(metrics, "strata_tier_blocks", "tier=\"nvme\"") == Double(stored.count))
    let text = try String(contentsOfFile: log, encoding: .utf8)
    let answering = try #require(text.range(of: "admin API answering while the node starts"), "\(text)")
    let recovering = try #require(text.range(of: "storage: recovering the NVMe tier ("), "\(text)")
    #expect(answering.lowerBound < recovering.lowerBound)
    #expect(try adminCall(try node.admin, "GET", "/ready").status == 200)
  }

  /// `strata status --wait-ready` waits for a node that is not listening yet and exits 0 with its
  /// status once it is ready; with nothing ever listening it exits 3 at its timeout, saying why.
  @Test func statusWaitsUntilTheNodeIsReady() async throws {
    let silent = try freeLoopbackPort()
    let none = try await strata(
      "status", "--admin", "127.0.0.1:\(silent)", "--wait-ready", "--ready-timeout", "1s")
    #expect(none.status == 3, "\(none.stderr)")
    #expect(none.stderr.contains("the node at 127.0.0.1:\(silent) is not ready within 1s"), "\(none.stderr)")

    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-start-\(UUID().uuidString)")
      .path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let port = try freeLoopbackPort()
    let node = Process()
    node.executableURL = URL(fileURLWithPath: strataExecutable)
    node.arguments = [
      "serve", "--data-dir", directory, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:\(port)", "--ram", "64MiB",
      "--nvme", "256MiB", "--ram-unlocked",
    ]
    node.standardOutput = FileHandle.nullDevice
    node.standardError = FileHandle.nullDevice
    try StrataTestKit.launch(node)
    defer {
      node.terminate()
      node.waitUntilExit()
    }
    let ready = try await strata(
      "status", "--admin", "127.0.0.1:\(port)", "--wait-ready", "--ready-timeout", "60s", "--json")
    #expect(ready.status == 0, "\(ready.stderr)")
    #expect(try JSONValue.parse(Array(ready.stdout.utf8))["health"] == .string("ok"), "\(ready.stdout)")
  }
}
