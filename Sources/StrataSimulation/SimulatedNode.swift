// One simulated node: the real data plane (NodeServer's request pipeline over in-memory
// connections, the tier manager with its lease table, and an NVMe tier on a SimulatedBlockDevice),
// its own clock (a ManualClock the simulator moves, jumps included), and the cluster layer's state
// that the simulator models (ring view, membership lease, process instance).

import Logging
import StrataCluster
import StrataConfig
import StrataCore
import StrataNode
import StrataPlacement
import StrataStorage
import StrataWire

final class SimulatedNode {
  enum Condition: String {
    case up
    case crashed
    /// Drained and gone for good.
    case departed
  }

  static let tenantToken = "sim-tenant-token-00000001"
  static let clusterToken = "sim-cluster-token-0000001"
  static let namespace = try! Namespace("sim")
  static let ramBytes = 4 << 20
  static let blockBytesMax = 8 << 10
  static let deviceBytes = 2 << 20
  static let regionBytes = 128 << 10
  static let leasesMax = 64
  static let leaseDurationMilliseconds: UInt64 = 2_000

  let id: String
  let index: Int
  private(set) var condition = Condition.up
  private(set) var instance = 0
  /// This node's clock: simulated time plus the jumps it has suffered (a monotonic clock never
  /// goes back, so jumps are forward).
  private(set) var clock = ManualClock()
  private var clockReading: UInt64 = 0
  private(set) var clockOffset: UInt64 = 0
  /// The disk outlives crashes: a restart recovers the NVMe tier from it.
  private(set) var device = SimulatedBlockDevice(capacityBytes: SimulatedNode.deviceBytes)
  private(set) var tiers: TierManager?
  private(set) var server: NodeServer?

  // The modelled cluster layer.
  var ring: Ring
  /// The ring before the last change, and when it changed (read-through's fill window).
  var previousRing: Ring?
  var ringChangedAt: UInt64 = 0
  var seenRevision: UInt64 = 0
  var instances: [String: Int] = [:]
  var membershipLease: UInt64 = 0
  /// Whether the node's membership watch is connected (false after a cut until it re-lists).
  var watching = false
  var draining = false
  var repairScheduled = false
  /// The drain's course (the real `DrainAttempts`).
  var drainAttempts = DrainAttempts()
  var slowDiskUntil: UInt64 = 0
  /// Peer connections from this node, by target node id.
  var peers: [String: InMemoryConnection] = [:]

  init(index: Int, replicas: Int) {
    self.index = index
    id = "n\(index)"
    ring = Ring(members: [], epoch: 0, replicationFactor: replicas, virtualNodes: Simulation.virtualNodes)
  }

  var address: String { "10.0.0.\(index + 1):7000" }
  var isUp: Bool { condition == .up }

  func member(state: Member.State) -> Member {
    Member(id: id, address: address, capacityBytes: UInt64(Self.ramBytes), state: state)
  }

  /// Starts (or restarts) the process: the NVMe tier recovered from the disk, RAM empty.
  func start(now: UInt64, hooks: any ClusterHooks, logger: Logger) throws(StrataError) -> String {
    instance += 1
    clock = ManualClock(milliseconds: now + clockOffset)
    clockReading = now
    let nvme: NVMeTier
    let recovered: String
    if instance == 1 {
      nvme = try NVMeTier(
        devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax,
        stagingBufferCount: 2)
      recovered = "formatted"
    } else {
      let (tier, report) = try NVMeTier.recover(
        devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax,
        stagingBufferCount: 2)
      nvme = tier
      recovered =
        "recovered \(tier.blockInventory().count) blocks (corrupt dropped \(report.corruptDropped), io errors \(report.ioErrors))"
    }
    let tiers = try TierManager(
      configuration: TierConfiguration(
        ramBytes: Self.ramBytes, blockBytesMax: Self.blockBytesMax, hugePages: false, admission: .always,
        leasesMax: Self.leasesMax, leaseDurationMilliseconds: Self.leaseDurationMilliseconds,
        leasesPerNamespaceMax: Self.leasesMax, ioThreads: 1, writebackWindowMilliseconds: 200),
      nvme: nvme, clock: clock)
    var configuration = NodeConfiguration()
    configuration.listen = HostPort(host: "127.0.0.1", port: 0)
    configuration.limits.blockBytesMax = .kibibytes(UInt64(Self.blockBytesMax >> 10))
    configuration.limits.leasesMax = Self.leasesMax
    configuration.limits.leasesPerNamespaceMax = Self.leasesMax
    configuration.limits.leasesPerConnectionMax = 16
    configuration.limits.leaseDuration = DurationSetting(milliseconds: Self.leaseDurationMilliseconds)
    configuration.auth.tokens = [.init(token: Self.tenantToken, namespace: Self.namespace)]
    configuration.cluster.token = Self.clusterToken
    let server = try NodeServer(
      configuration: ServerConfiguration(configuration, nodeID: id), tiers: tiers, logger: logger)
    server.cluster = hooks
    self.tiers = tiers
    self.server = server
    condition = .up
    return recovered
  }

  /// The process dies: RAM, connections and the cluster layer's state are gone; the disk stays
  /// as the crash left it.
  func crash() {
    stopProcess()
    condition = .crashed
    device = device.crashed()
  }

  /// A drained node leaves for good.
  func depart() {
    stopProcess()
    condition = .departed
  }

  private func stopProcess() {
    for (_, connection) in peers { connection.close() }
    peers = [:]
    tiers?.shutdown()
    server?.cluster = nil
    tiers = nil
    server = nil
    draining = false
    drainAttempts = DrainAttempts()
    repairScheduled = false
    watching = false
    seenRevision = 0
    previousRing = nil
    instances = [:]
    membershipLease = 0
  }

  /// Moves this node's clock to simulated time `now` (plus its jumps).
  func advanceClock(to now: UInt64) {
    guard now > clockReading else { return }
    clock.advance(milliseconds: now - clockReading)
    clockReading = now
  }

  func jumpClock(by milliseconds: UInt64) {
    clockOffset += milliseconds
    clock.advance(milliseconds: milliseconds)
  }

  /// Whether this node's storage holds `id` (RAM or NVMe index), read directly.
  func holds(_ id: BlockID) -> Bool {
    guard isUp, let tiers else { return false }
    return tiers.lookup([id]).first != .absent
  }
}

/// Frames of what a node answered, each with the payload that follows it.
func answeredFrames(_ bytes: [UInt8]) -> [(FrameHeader, WireMessage, [UInt8])] {
  var result: [(FrameHeader, WireMessage, [UInt8])] = []
  var offset = 0
  while offset + FrameHeader.byteCount <= bytes.count {
    guard
      let header = try? bytes.withUnsafeBytes({
        try FrameHeader(
          decoding: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + FrameHeader.byteCount]), limits: .standard)
      })
    else { break }
    let bodyEnd = offset + FrameHeader.byteCount + Int(header.bodyBytes)
    let payloadEnd = bodyEnd + Int(header.payloadBytes)
    guard payloadEnd <= bytes.count,
      let message = try? bytes.withUnsafeBytes({
        try WireMessage(
          header: header, body: UnsafeRawBufferPointer(rebasing: $0[offset + FrameHeader.byteCount..<bodyEnd]),
          limits: .standard)
      })
    else { break }
    result.append((header, message, Array(bytes[bodyEnd..<payloadEnd])))
    offset = payloadEnd
  }
  return result
}
