// The deterministic simulation of a whole cluster in one process: N nodes (the real request
// pipeline, tier manager, lease table and NVMe tier of each, over in-memory connections), a
// membership service with etcd's semantics, clients doing prefix lookups, loads and stores, and
// the faults a seed draws. One thread runs every event in (time, sequence) order; every choice
// comes from the seeded generator; nothing reads the wall clock. What is real and what is
// modelled: docs/simulation.md.

import Logging
import StrataCore
import StrataNode
import StrataPlacement
import StrataStorage
import StrataWire

/// A bug the simulator must find, switched on only here (never in the node).
public enum SimulationMutation: String, Sendable, CaseIterable {
  /// The modelled write path skips the copy of one block in a thousand to one owner and counts it
  /// as made: the PUT is acknowledged with fewer copies than its write quorum.
  case skipReplication = "skip-replication"
  /// Blocks a node drops as damaged (its disk, its RAM) are not read back from their other
  /// owners: the node's damaged-block handler is replaced by one that does nothing.
  case noReadBack = "no-read-back"
  /// A graceful stop skips writing RAM blocks to the disk (a lifecycle that lost its storage
  /// step): the process exits with blocks only in its RAM.
  case stopWithoutFlush = "stop-without-flush"
}

/// What one seed runs with.
public struct SimulationOptions: Sendable {
  public var seed: UInt64
  public var mutation: SimulationMutation?
  /// Keep every trace line in the result (otherwise only the last ones, for a failure report).
  public var keepTrace: Bool
  /// Whether the seed draws graceful stops (`Fault.stop`). The finding seeds run without them:
  /// they were found before stops were drawn, and a stop would move the faults that exercise what
  /// they found (a node stopped when its drain was to start).
  public var gracefulStops: Bool
  /// Whether the seed may draw RAM pressure (about three in ten do): every node's RAM tier holds a
  /// few dozen blocks instead of all it will get, so PUTs evict (demoting to NVMe or evicting
  /// blocks already written behind for free) and reads promote. Off unless asked for
  /// (`strata-sim --ram-pressure`): it is new, and its seeds are not yet all clean
  /// (docs/simulation.md, "RAM pressure").
  public var ramPressure: Bool

  public init(
    seed: UInt64, mutation: SimulationMutation? = nil, keepTrace: Bool = false, gracefulStops: Bool = true,
    ramPressure: Bool = false
  ) {
    self.seed = seed
    self.mutation = mutation
    self.keepTrace = keepTrace
    self.gracefulStops = gracefulStops
    self.ramPressure = ramPressure
  }
}

/// What one seed did.
public struct SimulationResult: Sendable {
  public var seed: UInt64
  public var nodes: Int
  public var replicas: Int
  /// FNV-1a of the trace: two runs of one seed must agree.
  public var traceHash: UInt64
  public var traceLines: Int
  /// The first invariant violated, nil when the run was clean.
  public var failure: String?
  public var faultSchedule: [String]
  /// Every trace line (`keepTrace`), or the last ones.
  public var trace: [String]
  public var acknowledgedBlocks: Int
  public var clientOperations: Int
  /// Background peer calls that took their message delay in simulated time, and those among them
  /// whose request arrived but whose answer was lost (the peer went down or was cut off meanwhile).
  public var timedPeerCalls: Int
  public var answersLost: Int
  /// Each node's RAM tier, and whether it was drawn small (RAM pressure).
  public var ramBytes: Int
  public var underRAMPressure: Bool
  /// Blocks the nodes' RAM tiers evicted, all processes together.
  public var evictedBlocks: Int

  /// A report to print: the seed, its faults, and on failure the failure and the trace's end.
  public var report: String {
    var lines = [
      "seed \(seed): \(failure == nil ? "clean" : "FAILED") — \(nodes) nodes, R=\(replicas), \(clientOperations) client operations, \(acknowledgedBlocks) blocks acknowledged, trace \(traceLines) lines, hash \(String(traceHash, radix: 16))"
    ]
    lines.append("fault schedule:")
    lines += faultSchedule.isEmpty ? ["  (none)"] : faultSchedule.map { "  \($0)" }
    if let failure {
      lines.append("failure: \(failure)")
      lines.append("trace (last \(trace.count) lines; the whole trace: strata-sim --seed \(seed) --trace):")
      lines += trace.map { "  \($0)" }
    }
    return lines.joined(separator: "\n")
  }
}

public enum Simulator {
  /// Runs one seed to its end (or its first invariant violation).
  public static func run(_ options: SimulationOptions) -> SimulationResult {
    let simulation = Simulation(options: options)
    simulation.run()
    return simulation.result
  }
}

/// The simulated world. Every access happens on the thread running `run()`, or on a thread that
/// thread is blocked waiting for (a node's request pipeline calls back into the cluster model
/// while serving a PUT the run loop sent it, and the run loop waits for that answer): one logical
/// thread at a time, each hand-over ordered by the semaphore of `blocking`.
final class Simulation: @unchecked Sendable {
  static let virtualNodes = 64
  static let leaseTTLMilliseconds: UInt64 = 2_000
  static let keepAliveMilliseconds: UInt64 = 500
  /// The nodes' peer call timeout (`ClusterNode.Settings.peerTimeoutMilliseconds`): a message
  /// delay past it fails the call.
  static let peerTimeoutMilliseconds: UInt64 = 1_000
  static let trafficEnd: UInt64 = 10_000
  static let healAt: UInt64 = 10_500
  static let finalCheckAt: UInt64 = 20_000

  enum Event {
    case start(Int)
    case restart(Int)
    case keepAlive(Int)
    case membershipTick
    case watch(node: Int, snapshot: MembershipModel.Snapshot)
    case writeBehind(Int)
    case scrub(Int, instance: Int)
    case client
    case leasedGet(node: Int, sequence: Int, count: Int, lease: UInt64)
    case fault(Fault)
    case healPartition(Int, Int)
    case healIsolation(Int)
    case healDelay(Int)
    case healOneWayLoss(from: Int, to: Int)
    case healDiskReads(Int)
    case healMembership
    /// A paused process goes on (`Fault.pause`).
    case resume(Int)
    /// A sleeper of some node's cluster layer is due (its clock reaches it at this time).
    case wake
    /// The operator's `strata drain` asks the node for the drain's status.
    case drainStatus(Int, instance: Int)
    /// A drained node's process exits.
    case depart(Int, instance: Int)
    /// A graceful stop's copies are done (or its time is up): the process stops its cluster
    /// layer, writes its RAM to the disk and exits, to start again `restartAfter` ms later.
    case endStop(Int, instance: Int, left: (queued: Int, failed: Int), restartAfter: UInt64)
    case heal
    case finalCheck
  }

  struct Acknowledgement {
    var at: UInt64
    /// Owners holding it when the PUT was answered (at least the write quorum).
    var copies: Int
  }

  let options: SimulationOptions
  var random: SimulationRandom
  /// Memory faults' own generator: when they strike, and which blocks (`Fault.ramSchedule`).
  var ramFaultRandom: SimulationRandom
  /// Disk replacements' own generator (`Fault.restartSchedule`).
  var diskReplacementRandom: SimulationRandom
  /// Moves' own generator (`Fault.restartSchedule`).
  var moveRandom: SimulationRandom
  /// Renames' own generator (`Fault.restartSchedule`).
  var renameRandom: SimulationRandom
  /// The generator of membership outages, one-way losses and pauses (`Fault.networkSchedule`).
  var networkFaultRandom: SimulationRandom
  /// Graceful stops' own generator (`Fault.restartSchedule`).
  var stopRandom: SimulationRandom
  /// Disk read failures' own generator (`Fault.diskReadSchedule`).
  var diskReadRandom: SimulationRandom
  /// Each node's RAM tier, drawn from a generator of its own (`SimulationOptions.ramPressure`).
  let ramBytes: Int
  var events = EventQueue<Event>()
  var now: UInt64 = 0
  var nodes: [SimulatedNode] = []
  let replicas: Int
  var membership = MembershipModel(leaseTTLMilliseconds: Simulation.leaseTTLMilliseconds)
  var rings: [UInt64: Ring] = [:]
  /// Where the nodes' cluster layers run their background tasks: only when the run loop settles.
  let tasks = ManualExecutor()
  /// Times a `.wake` is scheduled for.
  var wakes: Set<UInt64> = []
  let logger: Logger

  // Network model.
  var partitions: Set<[Int]> = []
  var isolated: Set<Int> = []
  /// Directed pairs [from, to] whose messages are lost (`Fault.oneWayLoss`).
  var oneWayLosses: Set<[Int]> = []
  /// The membership service is down for everyone (`Fault.membershipOutage`).
  var membershipDown = false
  var delays: [Int: UInt64] = [:]

  // Workload.
  var sequences: [Int] = []
  var sequenceLengths: [Int: Int] = [:]
  var keys: [Int: [BlockKey]] = [:]
  var contents: [BlockKey: (sequence: Int, index: Int)] = [:]
  /// Blocks a client ever sent (acknowledged or not): no node may report another.
  var written: Set<BlockKey> = []
  var acknowledged: [BlockKey: Acknowledgement] = [:]
  /// When each node failed (crash, or a disk that lost data): an acknowledged block may be lost
  /// only once R distinct nodes failed after its acknowledgement.
  var failures: [(node: Int, at: UInt64)] = []
  /// Blocks whose copy on a node a memory fault damaged, and when: that node failed for them.
  var damagedCopies: [BlockKey: [(node: Int, at: UInt64)]] = [:]
  var clientConnections: [Int: InMemoryConnection] = [:]
  var requestID: UInt64 = 1
  /// The cluster layer's background tasks are running (`settle`): their peer calls (replication,
  /// repair, drains) take their message delay in simulated time. Other peer calls are made inside
  /// a request the run loop waits for (a client's write quorum or read-through, the final
  /// check's reads), so they cannot wait for simulated time and take none.
  var runningTasks = false
  /// Peer requests being served now, one inside another: a peer call made while serving one (a
  /// node whose demotion failed asks the block's other owners, inside the PUT that needed the
  /// room) is inside a request its caller waits for, so it takes no time either, background task
  /// or not.
  var servingPeerRequests = 0
  /// Background peer calls each node has in flight (travelling in simulated time): the blocks
  /// they copy stay pinned meanwhile.
  var peerCallsInFlight: [Int: Int] = [:]
  var timedPeerCalls = 0
  var answersLost = 0
  var clientOperations = 0
  let clientOperationCount: Int

  // Trace.
  var trace: [String] = []
  var traceHash = TraceHash()
  var traceLines = 0
  var faultSchedule: [String] = []
  var failure: String?

  init(options: SimulationOptions) {
    self.options = options
    random = SimulationRandom(seed: options.seed)
    ramFaultRandom = SimulationRandom(seed: options.seed ^ 0x5241_4D46_4155_4C54)
    diskReplacementRandom = SimulationRandom(seed: options.seed ^ 0x4449_534B_5245_504C)
    moveRandom = SimulationRandom(seed: options.seed ^ 0x4D4F_5645_4E4F_4445)
    renameRandom = SimulationRandom(seed: options.seed ^ 0x5245_4E41_4D45_4944)
    networkFaultRandom = SimulationRandom(seed: options.seed ^ 0x4E45_5457_4F52_4B53)
    stopRandom = SimulationRandom(seed: options.seed ^ 0x5354_4F50_5354_4F50)
    diskReadRandom = SimulationRandom(seed: options.seed ^ 0x4449_534B_5245_4144)
    var ramRandom = SimulationRandom(seed: options.seed ^ 0x5241_4D50_5245_5353)
    ramBytes =
      options.ramPressure && ramRandom.int(0...99) < 30
      ? [64 << 10, 128 << 10, 256 << 10][ramRandom.int(0...2)] : SimulatedNode.roomyRAMBytes
    let count = random.int(3...5)
    replicas = random.int(2...min(3, count))
    clientOperationCount = random.int(150...260)
    var logger = Logger(label: "strata-sim")
    logger.logLevel = .critical
    self.logger = logger
    for index in 0..<count { nodes.append(SimulatedNode(index: index, ramBytes: ramBytes)) }
  }

  var result: SimulationResult {
    SimulationResult(
      seed: options.seed, nodes: nodes.count, replicas: replicas, traceHash: traceHash.value,
      traceLines: traceLines, failure: failure, faultSchedule: faultSchedule,
      trace: options.keepTrace ? trace : Array(trace.suffix(60)), acknowledgedBlocks: acknowledged.count,
      clientOperations: clientOperations, timedPeerCalls: timedPeerCalls, answersLost: answersLost,
      ramBytes: ramBytes, underRAMPressure: ramBytes < SimulatedNode.roomyRAMBytes,
      evictedBlocks: nodes.reduce(0) { $0 + $1.evictedBlocks })
  }

  func note(_ line: String) {
    let entry = "\(now) \(line)"
    traceHash.add(entry)
    traceLines += 1
    trace.append(entry)
    if !options.keepTrace && trace.count > 400 { trace.removeFirst(trace.count - 200) }
  }

  /// Records the first invariant violated; the run stops after the current event.
  func fail(_ message: String) {
    guard failure == nil else { return }
    failure = "t=\(now) ms: \(message)"
    note("INVARIANT VIOLATED: \(message)")
  }

  // MARK: Run loop

  func run() {
    for node in nodes { events.schedule(.start(node.index), at: UInt64(node.index)) }
    events.schedule(.membershipTick, at: 100)
    for _ in 0..<clientOperationCount {
      events.schedule(.client, at: random.milliseconds(1_000...Self.trafficEnd))
    }
    let faults = Fault.schedule(
      count: random.int(2...7), nodes: nodes.count, window: 1_500...9_000, random: &random)
    let ramFaults = Fault.ramSchedule(nodes: nodes.count, window: 1_500...9_000, random: &ramFaultRandom)
    // Disk replacements in about a fifth of the seeds, moves in about a sixth.
    let diskReplacements = Fault.restartSchedule(
      percent: 20, nodes: nodes.count, window: 1_500...9_000, random: &diskReplacementRandom, Fault.replaceDisk)
    let moves = Fault.restartSchedule(
      percent: 16, nodes: nodes.count, window: 1_500...9_000, random: &moveRandom, Fault.move)
    let networkFaults = Fault.networkSchedule(nodes: nodes.count, window: 1_500...9_000, random: &networkFaultRandom)
    let renames = Fault.restartSchedule(
      percent: 12, nodes: nodes.count, window: 1_500...9_000, random: &renameRandom, Fault.rename)
    // Graceful stops in about a fifth, early enough that the stop's copies (at most
    // `stopCopiesMilliseconds`) and the restart end well before the final check.
    let stops = Fault.restartSchedule(
      percent: options.gracefulStops ? 20 : 0, nodes: nodes.count, window: 1_500...7_000, random: &stopRandom,
      Fault.stop)
    if ramBytes != SimulatedNode.roomyRAMBytes {
      faultSchedule.append("RAM pressure: each node's RAM tier holds \(ramBytes >> 10) KiB")
      note("RAM pressure: each node's RAM tier holds \(ramBytes >> 10) KiB")
    }
    let diskReads = Fault.diskReadSchedule(
      nodes: nodes.count, regions: SimulatedNode.deviceBytes / SimulatedNode.regionBytes, window: 1_500...9_000,
      random: &diskReadRandom)
    for (time, fault) in faults + ramFaults + diskReplacements + moves + networkFaults + renames + stops + diskReads {
      faultSchedule.append("t=\(time) ms: \(fault)")
      events.schedule(.fault(fault), at: time)
    }
    events.schedule(.heal, at: Self.healAt)
    events.schedule(.finalCheck, at: Self.finalCheckAt)
    while failure == nil, let (time, event) = events.next() {
      if time > Self.finalCheckAt { break }
      now = time
      // A paused process's clock stands still (its timers do not fire) and catches up at once
      // when it goes on.
      for node in nodes where node.isUp && !node.isPaused(at: now) { node.advanceClock(to: now) }
      settle()
      handle(event)
      settle()
      recordLostCopies()
    }
    for node in nodes { node.crashIfUpForTeardown() }
    _ = tasks.runUntilIdle()
  }

  func handle(_ event: Event) {
    switch event {
    case .start(let index): startNode(index)
    case .restart(let index):
      if nodes[index].condition == .down { startNode(index) }
    case .keepAlive(let index): keepAlive(index)
    case .membershipTick:
      // A service that is down expires nothing (no leader keeps time).
      let deleted = membershipDown ? [] : membership.expire(now: now)
      if !deleted.isEmpty {
        note("membership: leases expired, deleted \(deleted.joined(separator: ",")) (revision \(membership.revision))")
        broadcast()
      }
      events.schedule(.membershipTick, at: now + 100)
    case .watch(let index, let snapshot): deliver(snapshot, to: index)
    case .writeBehind(let index): writeBehind(index)
    case .scrub(let index, let instance): scrub(index, instance: instance)
    case .client: clientOperation()
    case .leasedGet(let node, let sequence, let count, let lease): leasedGet(node, sequence, count, lease)
    case .fault(let fault): inject(fault)
    case .healPartition(let a, let b):
      partitions.remove([a, b])
      note("heal partition n\(a) | n\(b)")
    case .healIsolation(let index):
      isolated.remove(index)
      note("heal isolation n\(index)")
    case .healDelay(let index):
      delays[index] = nil
      note("heal delay n\(index)")
    case .healDiskReads(let index):
      nodes[index].device.clearReadFaults()
      note("heal disk reads n\(index)")
    case .healOneWayLoss(let from, let to):
      oneWayLosses.remove([from, to])
      note("heal one-way loss n\(from) -> n\(to)")
    case .healMembership: restoreMembership()
    case .resume(let index):
      if nodes[index].isUp && nodes[index].pausedUntil == now { note("n\(index) goes on after its pause") }
    case .wake: wakes.remove(now)
    case .drainStatus(let index, let instance): pollDrain(index, instance: instance)
    case .depart(let index, let instance): depart(index, instance: instance)
    case .endStop(let index, let instance, let left, let after):
      endStop(index, instance: instance, left: left, restartAfter: after)
    case .heal: healAll()
    case .finalCheck: finalCheck()
    }
  }

  // MARK: Nodes and membership

  func startNode(_ index: Int) {
    let node = nodes[index]
    do throws(StrataError) {
      let recovered = try node.start(now: now, logger: logger)
      note("start n\(index) instance \(node.instance): disk \(recovered)")
      if let expected = node.diskAtStop {
        node.diskAtStop = nil
        let recoveredIDs = Set(node.nvme?.blockInventory().map(\.id) ?? [])
        let missing = expected.filter { !recoveredIDs.contains($0.key) }
        // Behind a region's damaged first header recovery cannot tell the region's records from
        // an older use's and drops them (docs/nvme-format.md): a disk fault that loses data, a
        // failure of the node from now on. Any other block missing is a bug.
        let (excused, lost) = (
          missing.filter { node.damagedRegionStarts.contains($0.value) },
          missing.filter { !node.damagedRegionStarts.contains($0.value) }
        )
        if !lost.isEmpty {
          fail(
            "n\(index) came back from its graceful stop without \(lost.count) of the \(expected.count) blocks its disk held when it stopped (\(lost.keys.map { $0.key.hex.prefix(12) }.sorted().prefix(3).joined(separator: ", ")))"
          )
        }
        if !excused.isEmpty {
          note("  n\(index) lost \(excused.count) blocks behind damaged first headers of regions (a disk fault)")
          failures.append((index, now))
        }
      }
      // The cluster layer's start registers with the membership service.
      try startCluster(index)
    } catch  where error.code == .ioError && nodes[index].condition == .down {
      // Its disk failed the start (a new disk's format met armed write faults): its supervisor
      // starts it again, as Kubernetes or systemd would.
      note("n\(index) could not start: \(error.message); started again in 1 s")
      events.schedule(.restart(index), at: now + 1_000)
      return
    } catch {
      fail("n\(index) could not start: \(error.message)")
      return
    }
    events.schedule(.keepAlive(index), at: now + Self.keepAliveMilliseconds)
    events.schedule(.writeBehind(index), at: now + 100)
    events.schedule(.scrub(index, instance: nodes[index].instance), at: now + Self.scrubIntervalMilliseconds)
  }

  func canReachMembership(_ index: Int) -> Bool { nodes[index].isUp && !membershipDown && !isolated.contains(index) }

  /// The membership service is back: every lease runs a full TTL from now (etcd's new leader
  /// extends every lease it recovers), and the nodes' keep-alives re-open their watches.
  func restoreMembership() {
    guard membershipDown else { return }
    membershipDown = false
    membership.extendAll(now: now)
    note("membership service back: every lease extended to \(now + membership.leaseTTLMilliseconds) ms")
  }

  /// Grants a lease and puts this node's member key (EtcdMembership's registration).
  func register(_ index: Int) {
    let node = nodes[index]
    node.sessionActive = true
    guard canReachMembership(index) else { return }
    node.membershipLease = membership.grant(now: now)
    let record = MembershipModel.Record(
      member: node.member(state: node.draining ? .draining : .active), lease: node.membershipLease,
      instance: node.instance)
    if membership.put(record) {
      note("membership: n\(index) registered (lease \(node.membershipLease), revision \(membership.revision))")
      broadcast()
    }
    relist(index)
  }

  func keepAlive(_ index: Int) {
    let node = nodes[index]
    guard node.isUp, node.sessionActive else { return }
    events.schedule(.keepAlive(index), at: now + Self.keepAliveMilliseconds)
    guard !node.isPaused(at: now) else { return }
    guard canReachMembership(index) else {
      node.watching = false
      return
    }
    if !membership.keepAlive(node.membershipLease, now: now) {
      note("membership: n\(index) lease lost, registering again")
      register(index)
    } else {
      putDrainingRecord(index)
      if !node.watching { relist(index) }
    }
  }

  /// A watch (re)started: the node reads the current state.
  func relist(_ index: Int) {
    nodes[index].watching = true
    events.schedule(.watch(node: index, snapshot: membership.snapshot), at: now + messageDelay(index))
  }

  /// Every watching node hears of the new revision, after its message delay.
  func broadcast() {
    let snapshot = membership.snapshot
    for node in nodes where node.isUp && node.watching && canReachMembership(node.index) {
      events.schedule(.watch(node: node.index, snapshot: snapshot), at: now + messageDelay(node.index))
    }
  }

  func ring(for snapshot: MembershipModel.Snapshot) -> Ring {
    if let ring = rings[snapshot.revision] { return ring }
    let ring = Ring(
      members: snapshot.records.map(\.member), epoch: snapshot.revision, replicationFactor: replicas,
      virtualNodes: Self.virtualNodes)
    rings[snapshot.revision] = ring
    return ring
  }

  /// The node hears of a membership revision: its cluster layer adopts the ring of its members
  /// and notes their process instances, as EtcdMembership does with each change.
  func deliver(_ snapshot: MembershipModel.Snapshot, to index: Int) {
    let node = nodes[index]
    guard node.isUp, node.sessionActive, node.watching, canReachMembership(index),
      snapshot.revision > node.seenRevision, let cluster = node.cluster
    else { return }
    // A paused process reads the event when it goes on (after the work it had begun).
    if node.isPaused(at: now) {
      return events.schedule(.watch(node: index, snapshot: snapshot), at: node.pausedUntil)
    }
    node.seenRevision = snapshot.revision
    cluster.adopt(
      members: snapshot.records.map(\.member), epoch: snapshot.revision,
      written: Dictionary(uniqueKeysWithValues: snapshot.records.map { ($0.member.id, $0.written) }))
    var instances: [String: Int] = [:]
    for record in snapshot.records { instances[record.member.id] = record.instance }
    cluster.noteInstances(instances)
  }

  func writeBehind(_ index: Int) {
    let node = nodes[index]
    guard node.isUp, let tiers = node.tiers else { return }
    events.schedule(.writeBehind(index), at: now + 100)
    guard now >= node.slowDiskUntil, !node.isPaused(at: now) else { return }
    let written = (try? waitForTask { () throws(StrataError) in await tiers.writeBehindPass() }) ?? 0
    if written > 0 { note("n\(index) wrote \(written) blocks behind") }
  }

  /// The node's scheduled scrub of its RAM copies (`verify.interval`, a day by default), run far
  /// more often here so that a seed's 20 s see it: a copy damaged in RAM and read by no one is
  /// found and dropped by it (and, in a cluster, read back from its other owners).
  static let scrubIntervalMilliseconds: UInt64 = 2_000

  func scrub(_ index: Int, instance: Int) {
    let node = nodes[index]
    guard node.isUp, node.instance == instance, let tiers = node.tiers else { return }
    events.schedule(.scrub(index, instance: instance), at: now + Self.scrubIntervalMilliseconds)
    guard !node.isPaused(at: now) else { return }
    let dropped = tiers.ramBlockIDs().count { tiers.scrubRAM($0)?.intact == false }
    if dropped > 0 { note("n\(index) scrub dropped \(dropped) blocks damaged in RAM") }
  }

  // MARK: Network

  func messageDelay(_ a: Int, _ b: Int? = nil) -> UInt64 {
    random.milliseconds(1...20) + (delays[a] ?? 0) + (b.flatMap { delays[$0] } ?? 0)
  }

  func partitioned(_ a: Int, _ b: Int) -> Bool { partitions.contains([min(a, b), max(a, b)]) }

  // MARK: Faults

  func inject(_ fault: Fault) {
    note("fault: \(fault)")
    switch fault {
    case .crash(let index, let after):
      guard nodes[index].isUp else { return note("  skipped: n\(index) is not up") }
      crash(index)
      if let after { events.schedule(.restart(index), at: now + after) }
    case .partition(let a, let b, let duration):
      partitions.insert([min(a, b), max(a, b)])
      events.schedule(.healPartition(min(a, b), max(a, b)), at: now + duration)
    case .isolate(let index, let duration):
      isolated.insert(index)
      nodes[index].watching = false
      events.schedule(.healIsolation(index), at: now + duration)
    case .delay(let index, let extra, let duration):
      delays[index] = extra
      events.schedule(.healDelay(index), at: now + duration)
    case .membershipOutage(let duration):
      membershipDown = true
      for node in nodes { node.watching = false }
      events.schedule(.healMembership, at: now + duration)
    case .pause(let index, let duration):
      guard nodes[index].isUp else { return note("  skipped: n\(index) is not up") }
      nodes[index].pausedUntil = max(nodes[index].pausedUntil, now + duration)
      events.schedule(.resume(index), at: nodes[index].pausedUntil)
    case .oneWayLoss(let from, let to, let duration):
      guard from < nodes.count, to < nodes.count else { return note("  skipped: no such node") }
      oneWayLosses.insert([from, to])
      events.schedule(.healOneWayLoss(from: from, to: to), at: now + duration)
    case .slowDisk(let index, let duration):
      nodes[index].slowDiskUntil = max(nodes[index].slowDiskUntil, now + duration)
    case .corruptDisk(let index, let flips):
      guard nodes[index].condition != .departed else { return }
      nodes[index].diskAtStop = nil
      for _ in 0..<flips {
        let byte = random.int(0...(SimulatedNode.deviceBytes - 1))
        nodes[index].device.flipBit(atByte: byte, bit: random.int(0...7))
        if byte % SimulatedNode.regionBytes < nodes[index].device.alignmentBytes {
          nodes[index].damagedRegionStarts.insert(byte / SimulatedNode.regionBytes)
        }
      }
      failures.append((index, now))
    case .corruptRAM(let index, let count):
      corruptRAM(index, blocks: count)
    case .replaceDisk(let index, let after):
      // A node down already fails (for its blocks) as its disk is swapped.
      restart(index, after: after) { node, wasUp in
        if !wasUp { failures.append((index, now)) }
        node.replaceDisk()
      }
    case .move(let index, let after):
      restart(index, after: after) { node, _ in
        node.move()
        note("  n\(index) will listen at \(node.address)")
      }
    case .rename(let index, let after):
      restart(index, after: after) { node, _ in
        node.rename()
        note("  n\(index) will be \(node.id) at \(node.address)")
      }
    case .failDiskWrites(let index, let count):
      nodes[index].device.failNextWrites(count)
    case .failDiskReads(let index, let region, let duration):
      guard nodes[index].condition != .departed else { return }
      // A node down after a graceful stop may no longer come back with what its disk held.
      nodes[index].diskAtStop = nil
      let range =
        region.map { ($0 * SimulatedNode.regionBytes)..<(($0 + 1) * SimulatedNode.regionBytes) }
        ?? 0..<SimulatedNode.deviceBytes
      nodes[index].device.failReads(in: range)
      // A read that fails drops its block: the node failed for the blocks acknowledged before,
      // and for those after, as each is dropped (`recordLostCopies`).
      failures.append((index, now))
      events.schedule(.healDiskReads(index), at: now + duration)
    case .clockJump(let index, let milliseconds):
      nodes[index].jumpClock(by: milliseconds)
    case .stop(let index, let after):
      startStop(index, restartAfter: after)
    case .drain(let index):
      startDrain(index)
    case .join:
      let node = SimulatedNode(index: nodes.count, ramBytes: ramBytes)
      nodes.append(node)
      startNode(node.index)
    }
  }

  /// A process that dies (if it is up), is changed by `change` while it is down (told whether it
  /// was up), and comes back `after` ms later (one that was down already comes back when it was
  /// to); a node that has left is skipped.
  func restart(_ index: Int, after: UInt64, changing change: (SimulatedNode, _ wasUp: Bool) -> Void) {
    guard nodes[index].condition != .departed else { return note("  skipped: n\(index) has left") }
    let wasUp = nodes[index].isUp
    if wasUp { crash(index) }
    change(nodes[index], wasUp)
    if wasUp { events.schedule(.restart(index), at: now + after) }
  }

  /// Flips one bit in each of up to `count` blocks in node `index`'s RAM, chosen by the memory
  /// faults' generator among the blocks there (by key).
  func corruptRAM(_ index: Int, blocks count: Int) {
    guard nodes[index].isUp, let tiers = nodes[index].tiers else { return note("  skipped: n\(index) is not up") }
    var inRAM = tiers.inventory().filter { $0.tier == .ram }.sorted { keyOrder($0.id.key, $1.id.key) }
    for _ in 0..<count where !inRAM.isEmpty {
      let entry = inRAM.remove(at: ramFaultRandom.int(0...(inRAM.count - 1)))
      let byte = ramFaultRandom.int(0...(entry.bytes - 1))
      guard tiers.flipBitInRAMForTesting(entry.id, byte: byte, bit: ramFaultRandom.int(0...7)) else { continue }
      damagedCopies[entry.id.key, default: []].append((index, now))
      note("  block \(entry.id.key.hex.prefix(12)) damaged in n\(index)'s RAM (byte \(byte))")
    }
  }

  func crash(_ index: Int) {
    recordLostCopies()
    nodes[index].crash()
    settle()
    clientConnections[index] = nil
    failures.append((index, now))
    checkNoAcknowledgedBlockLost()
  }

  /// The end of the faults: partitions, isolations and delays healed, crashed nodes restarted.
  func healAll() {
    note("heal: every fault ends")
    partitions = []
    isolated = []
    delays = [:]
    oneWayLosses = []
    restoreMembership()
    for node in nodes {
      node.slowDiskUntil = 0
      // Disk writes armed to fail and not yet tried fail no more (seed 4905 under RAM pressure:
      // with few writes after the faults, the last failed at 17.7 s, and its node waited for its
      // disk past the final check before it read back the block it let go).
      node.device.failNextWrites(0)
      node.device.clearReadFaults()
      if node.isPaused(at: now) {
        node.pausedUntil = now + 1
        events.schedule(.resume(node.index), at: now + 1)
      }
      if node.condition == .down { startNode(node.index) }
    }
  }
}

extension SimulatedNode {
  /// Ends the process at the end of a run (the disk image is dropped with the node).
  func crashIfUpForTeardown() {
    if isUp { depart() }
  }
}
