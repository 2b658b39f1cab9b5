// One simulated node: the real data plane (NodeServer's request pipeline over in-memory
// connections, the tier manager with its lease table, and an NVMe tier on a SimulatedBlockDevice),
// the real cluster layer (ClusterNode, started by Simulation.startCluster), its own clock (a
// ManualClock the simulator moves, jumps included), and what the membership model knows of its
// session (lease, watch, revision seen).

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
    /// The process is not running (it crashed, or ended a graceful stop): it starts again.
    case down
    /// Drained and gone for good.
    case departed
  }

  static let tenantToken = "sim-tenant-token-00000001"
  static let clusterToken = "sim-cluster-token-0000001"
  static let namespace = try! Namespace("sim")
  /// The RAM tier of a node in most seeds: larger than every block it will hold.
  static let roomyRAMBytes = 4 << 20
  static let blockBytesMax = 8 << 10
  static let deviceBytes = 2 << 20
  static let regionBytes = 128 << 10
  static let leasesMax = 64
  static let leaseDurationMilliseconds: UInt64 = 2_000

  /// Its member id: "n<index>", and after a `rename` "n<index>r<renames>".
  private(set) var id: String
  let index: Int
  /// How many times it came back under a new id.
  private(set) var renames = 0
  private(set) var condition = Condition.up
  private(set) var instance = 0
  /// This node's clock: simulated time plus the jumps it has suffered (a monotonic clock never
  /// goes back, so jumps are forward).
  private(set) var clock = ManualClock()
  private var clockReading: UInt64 = 0
  private(set) var clockOffset: UInt64 = 0
  /// The disk outlives crashes: a restart recovers the NVMe tier from it.
  private(set) var device = SimulatedBlockDevice(capacityBytes: SimulatedNode.deviceBytes)
  /// The disk was replaced by an empty one: the next start formats it.
  private var diskIsNew = true
  private(set) var tiers: TierManager?
  /// The current process's NVMe tier (inside `tiers`), read to see what a stop left on the disk.
  private(set) var nvme: NVMeTier?
  private(set) var server: NodeServer?
  /// The process is stopping gracefully (`Fault.stop`) since this time: its data plane is
  /// closed (no one reaches it), its cluster layer still sends what it had queued.
  var stoppingSince: UInt64?
  /// The blocks on the disk whose records read back intact when the last graceful stop ended,
  /// with the region each is in: the next start recovers every one (but those in a region whose
  /// first block a disk fault hit), unless a disk fault struck meanwhile (which clears it).
  var diskAtStop: [BlockID: Int]?
  /// Regions of this disk whose first aligned block a disk fault flipped bits in: behind a
  /// damaged first header recovery cannot tell the region's records from an older use's, and
  /// drops them (docs/nvme-format.md, "Past a damaged header").
  var damagedRegionStarts: Set<Int> = []

  /// The real cluster layer of the current process, and the peer connections it opened.
  var cluster: ClusterNode?
  var peerTransport: SimulatedPeerTransport?

  // The membership session, as the model sees it.
  var seenRevision: UInt64 = 0
  var membershipLease: UInt64 = 0
  /// Whether the session runs (keep-alives, re-registration): from the cluster's start to its stop.
  var sessionActive = false
  /// Whether the node's membership watch is connected (false after a cut until it re-lists).
  var watching = false
  /// The node announced its drain: its member key says draining.
  var draining = false
  var slowDiskUntil: UInt64 = 0
  /// The current process's blocks let go for a failing disk and NVMe I/O errors, as far as the
  /// run has looked for copies they lost (`Simulation.recordLostCopies`).
  var lossesCounted = 0

  /// Its RAM tier: `roomyRAMBytes`, or a few dozen blocks' worth in a seed that draws RAM
  /// pressure (`SimulationOptions.ramPressure`).
  let ramBytes: Int
  /// Blocks its earlier processes' RAM tiers evicted (to NVMe, clean, or dropped), counted as
  /// each process ends.
  private(set) var evictedBlocks = 0

  init(index: Int, ramBytes: Int = SimulatedNode.roomyRAMBytes) {
    self.index = index
    self.ramBytes = ramBytes
    id = "n\(index)"
  }

  /// Where it listens: a node moved to another host (`move`) comes back at a new address.
  var address: String { "10.0.\(generation).\(index + 1):7000" }
  /// How many times it moved.
  private(set) var generation = 0
  var isUp: Bool { condition == .up }
  /// Whether a client or a peer reaches it now: up, not stopping, not paused.
  func answers(at now: UInt64) -> Bool { isUp && stoppingSince == nil && !isPaused(at: now) }
  /// The process is stopped until this simulated time (`Fault.pause`); 0 when it runs.
  var pausedUntil: UInt64 = 0
  func isPaused(at now: UInt64) -> Bool { isUp && now < pausedUntil }

  func member(state: Member.State) -> Member {
    Member(id: id, address: address, capacityBytes: UInt64(ramBytes), state: state)
  }

  /// Starts (or restarts) the process: the NVMe tier recovered from the disk, RAM empty.
  func start(now: UInt64, logger: Logger) throws(StrataError) -> String {
    instance += 1
    clock = ManualClock(milliseconds: now + clockOffset)
    clockReading = now
    let nvme: NVMeTier
    let recovered: String
    if diskIsNew {
      nvme = try NVMeTier(
        devices: [device], regionBytes: Self.regionBytes, compression: .none, blockBytesMax: Self.blockBytesMax,
        stagingBufferCount: 2)
      diskIsNew = false
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
        ramBytes: ramBytes, blockBytesMax: Self.blockBytesMax, hugePages: false, admission: .always,
        leasesMax: Self.leasesMax, leaseDurationMilliseconds: Self.leaseDurationMilliseconds,
        leasesPerNamespaceMax: Self.leasesMax, ioThreads: 0, writebackWindowMilliseconds: 200),
      nvme: nvme, clock: clock)
    let server = try NodeServer(
      configuration: ServerConfiguration(Self.configuration(), nodeID: id), tiers: tiers, logger: logger)
    self.tiers = tiers
    self.nvme = nvme
    self.server = server
    condition = .up
    return recovered
  }

  /// The process dies: RAM, connections and the cluster layer's state are gone; the disk stays
  /// as the crash left it.
  func crash() {
    condition = .down
    pausedUntil = 0
    diskAtStop = nil
    stopProcess()
    device = device.crashed()
  }

  /// A graceful stop's end: the process exits once its blocks are on the disk. The disk keeps
  /// only what it was told to keep (as after a crash): a stop must sync what it wrote. What the
  /// next start must recover is every block whose record reads back intact now (bits a disk
  /// fault flipped earlier are found then, and dropped).
  func endStop() {
    // The next start reads a device without armed faults (`crashed()`): reads failing now would
    // hide records it recovers (seed 25233 under RAM pressure).
    device.clearReadFaults()
    var buffer = [UInt8](repeating: 0, count: Self.blockBytesMax)
    var intact: [BlockID: Int] = [:]
    for (id, _) in nvme?.blockInventory() ?? [] {
      guard let offset = nvme?.recordLocation(of: id)?.offset,
        buffer.withUnsafeMutableBytes({ (try? nvme?.read(id, into: $0)) != nil })
      else { continue }
      intact[id] = offset / Self.regionBytes
    }
    diskAtStop = intact
    condition = .down
    pausedUntil = 0
    stopProcess()
    device = device.crashed()
  }

  /// The disk is replaced by an empty one (a failed disk swapped, a pod rescheduled on fresh
  /// local storage), while the process is down.
  func replaceDisk() {
    precondition(condition != .up, "a disk is replaced while its node is down")
    device = SimulatedBlockDevice(capacityBytes: Self.deviceBytes)
    diskIsNew = true
    diskAtStop = nil
    damagedRegionStarts = []
  }

  /// The node is rescheduled onto another host while its process is down: it keeps its id and its
  /// disk (a persistent volume follows it) and comes back at a new address.
  func move() {
    precondition(condition != .up, "a node moves while it is down")
    generation += 1
  }

  /// The node comes back under a new member id at the same address, with its disk (its
  /// configured id changed, or the machine re-installed under a new host name): the old id's
  /// record stays in the membership service until its lease expires.
  func rename() {
    precondition(condition != .up, "a node is renamed while it is down")
    renames += 1
    id = "n\(index)r\(renames)"
  }

  /// A drained node leaves for good.
  func depart() {
    condition = .departed
    stopProcess()
  }

  /// The process ends: its cluster layer stops (its tasks are cancelled: the run loop settles
  /// them next, and they can no longer reach a peer), its connections close, its RAM is gone.
  private func stopProcess() {
    if let stats = tiers?.stats {
      evictedBlocks += stats.demotedBlocks + stats.cleanEvictedBlocks + stats.droppedBlocks
    }
    cluster?.stop(deregister: false)
    peerTransport?.closeAll()
    tiers?.shutdown()
    server?.cluster = nil
    cluster = nil
    lossesCounted = 0
    peerTransport = nil
    tiers = nil
    nvme = nil
    server = nil
    stoppingSince = nil
    draining = false
    sessionActive = false
    watching = false
    seenRevision = 0
    membershipLease = 0
  }

  /// The node's configuration (pipeline limits, tokens, the cluster token).
  static func configuration() -> NodeConfiguration {
    var configuration = NodeConfiguration()
    configuration.listen = HostPort(host: "127.0.0.1", port: 0)
    configuration.limits.blockBytesMax = .kibibytes(UInt64(Self.blockBytesMax >> 10))
    configuration.limits.leasesMax = Self.leasesMax
    configuration.limits.leasesPerNamespaceMax = Self.leasesMax
    configuration.limits.leasesPerConnectionMax = 16
    configuration.limits.leaseDuration = DurationSetting(milliseconds: Self.leaseDurationMilliseconds)
    configuration.auth.tokens = [.init(token: Self.tenantToken, namespace: Self.namespace)]
    configuration.cluster.token = Self.clusterToken
    // etcd mode (member ids are node ids); never contacted: the simulator passes its model.
    configuration.cluster.etcd = "http://membership.simulated:2379"
    return configuration
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

  /// Whether this node holds `id`, or, down after a graceful stop, its disk keeps it.
  func keeps(_ id: BlockID) -> Bool { holds(id) || (!isUp && diskAtStop?[id] != nil) }

  /// Whether this node's copies of `id` are whole: its RAM copy matches its checksum, and no bit
  /// a disk fault flipped lies in its NVMe record (either is found only when that copy is read).
  func copyIsIntact(_ id: BlockID) -> Bool {
    guard tiers?.ramCopyIsIntact(id)?.intact != false else { return false }
    guard let record = nvme?.recordLocation(of: id) else { return true }
    return !device.holdsFlippedBits(in: record.offset..<(record.offset + record.recordBytes))
  }

  /// Whether this node's storage holds `id` (RAM or NVMe index), read directly.
  func holds(_ id: BlockID) -> Bool {
    guard isUp, let tiers else { return false }
    return tiers.lookup([id]).first != .absent
  }
}

/// Frames of what a node answered, each with the payload that follows it.
func answeredFrames(_ bytes: [UInt8]) -> [(FrameHeader, WireMessage, [UInt8])] {
  FrameAssembler.frames(in: bytes, receiving: .response)
}
