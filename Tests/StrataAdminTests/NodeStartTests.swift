// A node's admin port while the node starts: the start's progress as a value, and the answers
// an admin server gives while a real recovery is held at its first region.

import Dispatch
import Foundation
import Logging
import StrataAdmin
import StrataConfig
import StrataCore
import StrataNode
import StrataStorage
import StrataTestKit
import Testing

@Suite struct NodeStartTests {
  @Test func progressKeepsTheFurthestRecoveryReportAndMovesOnlyForward() {
    var progress = StartProgress()
    #expect(progress.phase == .openingStorage && progress.summary == "opening storage")
    progress.record(.recoveringNVMe(RecoveryProgress()))
    #expect(progress.phase == .recoveringNVMe && progress.summary == "reading the NVMe tier")
    progress.record(
      .recoveringNVMe(RecoveryProgress(regionsRead: 3, regionsTotal: 8, bytesRead: 3 << 20, recordsFound: 12)))
    // A reader thread's report of fewer regions, arriving late, changes nothing.
    progress.record(.recoveringNVMe(RecoveryProgress(regionsRead: 2, regionsTotal: 8, bytesRead: 2 << 20)))
    #expect(progress.recovery.regionsRead == 3 && progress.recovery.recordsFound == 12)
    #expect(progress.summary == "reading the NVMe tier: 3 of 8 regions (37%, 3MiB), 12 record(s) found")
    progress.record(.faultingInRAM(bytes: 1 << 30))
    #expect(progress.phase == .faultingInRAM && progress.summary == "faulting in the RAM arena (1GiB)")
    // A recovery report after the arena's step (a reader's last one, late) does not turn it back.
    progress.record(.recoveringNVMe(RecoveryProgress(regionsRead: 8, regionsTotal: 8)))
    #expect(progress.phase == .faultingInRAM && progress.recovery.regionsRead == 3)
    progress.storageOpened()
    #expect(progress.phase == .startingServices)
  }

  /// The recovery is held inside its progress report of its first region: the admin port answers
  /// how far it has got, refuses every other call, and switches to the node's routes once they
  /// are registered and started.
  @Test func theAdminPortSaysHowFarTheStartHasGotUntilTheNodeServes() async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-start-\(UUID().uuidString)")
      .path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let settings = NodeConfiguration.small(in: directory)
    let logger = Logger.quiet("node-start-test")
    // 24 blocks of 200 KiB written to NVMe, for the recovery to find.
    let blocks = 24
    do {
      let (tiers, _) = try TierManager.open(settings, logger: logger)
      for index in 0..<blocks {
        let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: 200 << 10)
        _ = try await tiers.put(
          BlockID(namespace: .embeddedDefault, key: SHA256.digest(Array("start-\(index)".utf8))), bytes: bytes)
      }
      #expect(try await tiers.flush() == blocks)
    }

    let metrics = NodeMetrics()
    let start = NodeStart(metrics: metrics)
    let admin = try AdminServer(configuration: .init(listen: settings.admin.listen), logger: logger)
    admin.startWhileStarting(start.answer)
    defer { admin.stop() }
    let client = AdminClient(address: admin.address, timeoutMilliseconds: 10_000)

    let held = DispatchSemaphore(value: 0)
    let release = DispatchSemaphore(value: 0)
    let (node, log) = (settings, logger)
    async let opened = onNewThread { () throws(StrataError) -> TierManager in
      try TierManager.open(node, logger: log) { step in
        start.record(step)
        if case .recoveringNVMe(let read) = step, read.regionsRead == 1 {
          held.signal()
          release.wait()
        }
      }.0
    }
    await onNewThread { held.wait() }

    let health = try client.send("GET", "/health")
    #expect(health.status == 200, "\(health.text)")
    #expect(try JSONValue.parse(health.body)["status"]?.stringValue == "starting")
    #expect(try JSONValue.parse(health.body)["phase"]?.stringValue == "recovering_nvme")
    let ready = try client.send("GET", "/ready")
    #expect(ready.status == 503)
    let reason = try JSONValue.parse(ready.body)["reason"]?.stringValue ?? ""
    #expect(reason.hasPrefix("starting: reading the NVMe tier: "), "\(reason)")
    #expect(reason.contains(" of 16 regions"), "\(reason)")
    let progress = try JSONValue.parse(ready.body)["progress"]
    #expect(progress?["regions_total"] == .int(16) && (progress?["regions_read"]?.intValue ?? 0) >= 1, "\(ready.text)")
    let starting = try client.send("GET", "/metrics")
    #expect(starting.status == 200)
    #expect(sample(starting.text, "strata_starting") == 1)
    #expect(sample(starting.text, "strata_nvme_recovery_regions_total") == 16)
    #expect((sample(starting.text, "strata_nvme_recovery_regions_read") ?? 0) >= 1)
    for (method, path) in [("GET", "/v1/status"), ("POST", "/v1/evict"), ("POST", "/health"), ("GET", "/nowhere")] {
      let refused = try client.send(method, path)
      #expect(refused.status == 503, "\(method) \(path): \(refused.text)")
      #expect(try JSONValue.parse(refused.body)["error"]?["code"]?.stringValue == "unavailable")
      #expect(refused.text.contains("the node is starting (reading the NVMe tier"), "\(refused.text)")
    }

    release.signal()
    let tiers = try await opened
    start.storageOpened()
    let between = try client.send("GET", "/ready")
    #expect(between.status == 503 && between.text.contains("starting the data plane"), "\(between.text)")

    // The node's routes, registered while the starting answers are served, take over at start().
    let server = try NodeServer(
      configuration: ServerConfiguration(settings, nodeID: "starting-node"), tiers: tiers, logger: logger,
      observer: metrics)
    let administration = NodeAdministration(
      settings: settings, configPath: nil, nodeID: "starting-node", tiers: tiers, node: server,
      verifier: StorageVerifier(tiers: tiers), metrics: metrics,
      machine: NodeConfiguration.Machine(physicalMemoryBytes: 64 << 30), admin: admin, logger: logger)
    #expect(try client.send("GET", "/v1/status").status == 503)
    administration.start()
    #expect(try client.call("GET", "/ready")["status"]?.stringValue == "ready")
    #expect(try client.send("GET", "/v1/status").status == 200)
    let serving = try client.send("GET", "/metrics").text
    #expect(sample(serving, "strata_starting") == 0)
    #expect(sample(serving, "strata_nvme_recovery_regions_read") == 16)
    #expect(sample(serving, "strata_nvme_recovery_records_found") == Double(blocks))
    #expect(sample(serving, "strata_tier_blocks", "tier=\"nvme\"") == Double(blocks))
  }
}
