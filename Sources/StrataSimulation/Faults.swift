// The faults a seed injects, drawn before the run starts so the whole schedule can be printed.

/// One fault, at one simulated instant.
enum Fault: CustomStringConvertible {
  /// The process dies (RAM lost, disk kept); it restarts after the delay, or at the heal.
  case crash(node: Int, restartAfter: UInt64?)
  /// Two nodes cannot reach each other.
  case partition(Int, Int, milliseconds: UInt64)
  /// A node cannot reach the membership service (its lease expires; its watch is cut).
  case isolate(node: Int, milliseconds: UInt64)
  /// Messages to and from a node take `extra` longer (a copy past its timeout fails).
  case delay(node: Int, extra: UInt64, milliseconds: UInt64)
  /// The disk stops keeping up: write-behind passes wait.
  case slowDisk(node: Int, milliseconds: UInt64)
  /// Bits flip on the disk (found by record checksums on read or recovery).
  case corruptDisk(node: Int, flips: Int)
  /// One bit flipped in each of up to `blocks` blocks in the node's RAM (their stored checksums
  /// left as they were): a memory fault. Drawn from a stream of its own (`Fault.ramSchedule`).
  case corruptRAM(node: Int, blocks: Int)
  /// The node's process dies and comes back after `restartAfter` ms on an empty disk: everything
  /// it held is gone. Drawn from a stream of its own (`Fault.restartSchedule`).
  case replaceDisk(node: Int, restartAfter: UInt64)
  /// The node's process dies and comes back after `restartAfter` ms on another host: same id and
  /// disk, a new address. From a stream of its own (`Fault.restartSchedule`).
  case move(node: Int, restartAfter: UInt64)
  /// The membership service is down for every node: no keep-alive, registration or watch, and no
  /// lease expires; when it comes back every lease runs a full TTL again (an etcd cluster's new
  /// leader extends every lease). From a stream of its own (`Fault.networkSchedule`).
  case membershipOutage(milliseconds: UInt64)
  /// Messages from one node to another are lost, those the other way arrive: the first's calls to
  /// the second go unheard and time out; the second's calls to the first run there and their
  /// answers are lost. From a stream of its own (`Fault.networkSchedule`).
  case oneWayLoss(from: Int, to: Int, milliseconds: UInt64)
  /// The process stops for a while (SIGSTOP, a long pause of the runtime or of its VM): its timers
  /// do not fire, it sends no keep-alive and writes nothing behind, it answers no one (callers
  /// time out; a request that reaches it runs once it goes on, if its caller still waits) and watch
  /// events wait. Then it goes on where it stopped: the work it had begun first, under the ring it
  /// knew, and the watch catches up after. From the network faults' stream (`Fault.networkSchedule`).
  case pause(node: Int, milliseconds: UInt64)
  /// The node's process dies and comes back after `restartAfter` ms under a new member id at the
  /// same address, with its disk. From a stream of its own (`Fault.restartSchedule`).
  case rename(node: Int, restartAfter: UInt64)
  /// An operator or supervisor stops the node gracefully (SIGTERM) and starts it again after
  /// `restartAfter` ms, as `strata serve` stops: the data plane closes, the replication copies
  /// it had queued go out (and one pass retries those that failed), the cluster layer stops,
  /// and every RAM block is written to the disk. Not a failure: nothing it held may be lost. From
  /// a stream of its own (`Fault.restartSchedule`).
  case stop(node: Int, restartAfter: UInt64)
  /// The next disk writes fail with EIO.
  case failDiskWrites(node: Int, count: Int)
  /// Every read of one region of the disk (`region`), or of the whole disk (nil), fails with EIO
  /// for a while: a read that fails drops its block, which a cluster node reads back from the
  /// other owners. Until the process restarts (a new device) or the time is up. From a stream of
  /// its own (`Fault.diskReadSchedule`).
  case failDiskReads(node: Int, region: Int?, milliseconds: UInt64)
  /// The node's monotonic clock jumps forward (a paused VM): its leases expire early.
  case clockJump(node: Int, milliseconds: UInt64)
  /// An operator drains the node: it hands its blocks off and leaves.
  case drain(node: Int)
  /// A new node joins.
  case join

  var description: String {
    switch self {
    case .crash(let node, let after):
      "crash n\(node)" + (after.map { " (restart after \($0) ms)" } ?? " (restart at heal)")
    case .partition(let a, let b, let ms): "partition n\(a) | n\(b) for \(ms) ms"
    case .isolate(let node, let ms): "isolate n\(node) from membership for \(ms) ms"
    case .delay(let node, let extra, let ms): "delay n\(node) messages by \(extra) ms for \(ms) ms"
    case .slowDisk(let node, let ms): "slow disk n\(node) for \(ms) ms"
    case .corruptDisk(let node, let flips): "corrupt disk n\(node) (\(flips) bit flips)"
    case .corruptRAM(let node, let blocks): "corrupt RAM n\(node) (\(blocks) blocks)"
    case .replaceDisk(let node, let after): "replace disk n\(node) (down for \(after) ms)"
    case .move(let node, let after): "move n\(node) to a new address (down for \(after) ms)"
    case .membershipOutage(let ms): "membership service down for \(ms) ms"
    case .oneWayLoss(let from, let to, let ms): "messages n\(from) -> n\(to) lost for \(ms) ms"
    case .pause(let node, let ms): "pause n\(node) for \(ms) ms"
    case .rename(let node, let after): "rename n\(node): back under a new id at its address (down for \(after) ms)"
    case .stop(let node, let after): "graceful stop n\(node) (started again after \(after) ms)"
    case .failDiskWrites(let node, let count): "fail next \(count) disk writes on n\(node)"
    case .failDiskReads(let node, let region, let ms):
      "fail disk reads on n\(node) (\(region.map { "region \($0)" } ?? "whole disk")) for \(ms) ms"
    case .clockJump(let node, let ms): "clock jump n\(node) +\(ms) ms"
    case .drain(let node): "drain n\(node)"
    case .join: "join a new node"
    }
  }

  /// A schedule of `count` faults over `window` (ms), against nodes 0..<nodes.
  static func schedule(
    count: Int, nodes: Int, window: ClosedRange<UInt64>, random: inout SimulationRandom
  ) -> [(time: UInt64, fault: Fault)] {
    var faults: [(UInt64, Int, Fault)] = []
    for _ in 0..<count {
      let time = random.milliseconds(window)
      let node = random.int(0...(nodes - 1))
      let fault: Fault
      switch random.int(0...99) {
      case 0..<22:
        fault = .crash(node: node, restartAfter: random.chance(70) ? random.milliseconds(200...4_000) : nil)
      case 22..<36:
        var other = random.int(0...(nodes - 2))
        if other >= node { other += 1 }
        fault = .partition(node, other, milliseconds: random.milliseconds(300...5_000))
      case 36..<46: fault = .isolate(node: node, milliseconds: random.milliseconds(500...6_000))
      case 46..<56:
        fault = .delay(
          node: node, extra: random.chance(50) ? random.milliseconds(10...400) : random.milliseconds(900...3_000),
          milliseconds: random.milliseconds(300...3_000))
      case 56..<63: fault = .slowDisk(node: node, milliseconds: random.milliseconds(500...5_000))
      case 63..<71: fault = .corruptDisk(node: node, flips: random.int(1...64))
      case 71..<77: fault = .failDiskWrites(node: node, count: random.int(1...8))
      case 77..<87: fault = .clockJump(node: node, milliseconds: random.milliseconds(500...20_000))
      case 87..<94: fault = .drain(node: node)
      default: fault = .join
      }
      faults.append((time, faults.count, fault))
    }
    return faults.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map { ($0.0, $0.2) }
  }

  /// A process that dies and comes back after 200 ms to 4 s (`make` names what happened to it:
  /// a replaced disk, a move), from its own generator (as memory faults): in `percent` of the
  /// seeds, once.
  static func restartSchedule(
    percent: Int, nodes: Int, window: ClosedRange<UInt64>, random: inout SimulationRandom,
    _ make: (_ node: Int, _ restartAfter: UInt64) -> Fault
  ) -> [(time: UInt64, fault: Fault)] {
    guard random.chance(percent) else { return [] }
    let time = random.milliseconds(window)
    return [(time, make(random.int(0...(nodes - 1)), random.milliseconds(200...4_000)))]
  }

  /// Memory faults, from their own generator (`random`), so that adding them left the schedule
  /// every seed drew before unchanged: in about a third of the seeds one or two.
  static func ramSchedule(nodes: Int, window: ClosedRange<UInt64>, random: inout SimulationRandom)
    -> [(time: UInt64, fault: Fault)]
  {
    guard random.chance(35) else { return [] }
    return (0..<random.int(1...2)).map { _ in
      (random.milliseconds(window), .corruptRAM(node: random.int(0...(nodes - 1)), blocks: random.int(1...8)))
    }.sorted { $0.0 < $1.0 }
  }

  /// Disk read failures, from their own generator (`random`), so that adding them left the
  /// schedule every seed drew before unchanged: in about a fifth of the seeds one, of one region
  /// (of `regions`) or, in a third of those, of the whole disk.
  static func diskReadSchedule(
    nodes: Int, regions: Int, window: ClosedRange<UInt64>, random: inout SimulationRandom
  ) -> [(time: UInt64, fault: Fault)] {
    guard random.chance(20) else { return [] }
    let time = random.milliseconds(window)
    let node = random.int(0...(nodes - 1))
    let region = random.chance(33) ? nil : random.int(0...(regions - 1))
    return [(time, .failDiskReads(node: node, region: region, milliseconds: random.milliseconds(300...4_000)))]
  }

  /// Faults of the network, the membership service and a process's scheduling, from their own
  /// generator (`random`), so that adding them left the schedule every seed drew before
  /// unchanged: in about a quarter of the seeds a membership outage (sometimes longer than a
  /// lease's TTL), in about a quarter one or two one-way losses, in about a fifth a pause (half of
  /// them longer than a lease's TTL).
  static func networkSchedule(nodes: Int, window: ClosedRange<UInt64>, random: inout SimulationRandom)
    -> [(time: UInt64, fault: Fault)]
  {
    var faults: [(time: UInt64, fault: Fault)] = []
    if random.chance(25) {
      let length = random.chance(50) ? random.milliseconds(300...1_900) : random.milliseconds(2_000...8_000)
      faults.append((random.milliseconds(window), .membershipOutage(milliseconds: length)))
    }
    if random.chance(25) {
      for _ in 0..<random.int(1...2) {
        let from = random.int(0...(nodes - 1))
        var to = random.int(0...(nodes - 2))
        if to >= from { to += 1 }
        faults.append(
          (random.milliseconds(window), .oneWayLoss(from: from, to: to, milliseconds: random.milliseconds(300...5_000)))
        )
      }
    }
    if random.chance(20) {
      let length = random.chance(50) ? random.milliseconds(100...1_500) : random.milliseconds(1_500...6_000)
      faults.append((random.milliseconds(window), .pause(node: random.int(0...(nodes - 1)), milliseconds: length)))
    }
    return faults.sorted { $0.time < $1.time }
  }
}
