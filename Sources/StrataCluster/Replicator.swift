// Asynchronous replication: after a client's PUT is acknowledged, the blocks are queued for the
// key's other owners. The queue is bounded (cluster.replication_queue); a full queue, a peer that
// cannot be reached, or a namespace without credentials drops the copy, and every drop is counted
// by reason. Workers take batches, pin the blocks with a lease, check each block's bytes against
// its stored checksum (a block that fails is corrupt: dropped from this node, never sent), and PUT
// them to each target from the arena's memory with that stored checksum.

import Logging
import StrataCore
import StrataStorage
import StrataWire
import Synchronization

/// Counters of the replicator, read at one instant.
public struct ReplicationStats: Sendable, Hashable {
  public var queued = 0
  public var queueMax = 0
  public var sentBlocks = 0
  public var sentBytes = 0
  /// Copies the target already held.
  public var alreadyPresent = 0
  public var droppedQueueFull = 0
  public var droppedUnreachable = 0
  public var droppedNoCredentials = 0
  /// The block left this node before its copy went out (evicted or removed).
  public var droppedGone = 0
  /// The block is still here but could not be read for the copy (only on NVMe, with neither a copy
  /// buffer nor RAM room to read it into): left short of its targets, for repair's next pass.
  public var droppedUnreadable = 0
  public var droppedRefused = 0
  /// The block's RAM bytes no longer matched its stored checksum: not sent, removed here.
  public var droppedCorrupt = 0
  public var dropped: Int {
    droppedQueueFull + droppedUnreachable + droppedNoCredentials + droppedGone + droppedUnreadable + droppedRefused
      + droppedCorrupt
  }
}

/// A peer to copy to; `suspect` when the probes last found it down (tried with a short timeout).
struct ReplicationTarget: Sendable, Hashable {
  var address: HostPort
  var suspect: Bool

  var name: String { "\(address)\(suspect ? " (suspect)" : "")" }
}

/// One block to copy to some peers.
struct ReplicationTask: Sendable {
  var id: BlockID
  var targets: [ReplicationTarget]
}

final class Replicator: Sendable {
  private struct State {
    var queue: [ReplicationTask] = []
    var head = 0
    var stats = ReplicationStats()
    var stopped = false
    /// Copies ever finished (sent or dropped). One loop takes the queue in order, so a copy is
    /// done once `finishedTotal` passes its place, `finishedTotal + stats.queued` at its queueing.
    var finishedTotal = 0
    var queuedTotal: Int { finishedTotal + stats.queued }
    /// Callers of `waitForQueuedCopies`, by id: each waits until `finishedTotal` reaches its mark.
    var waiters: [UInt64: (mark: Int, continuation: CheckedContinuation<Void, Never>)] = [:]
    var nextWaiter: UInt64 = 0

    /// Takes out the waiters whose copies are all done (all of them once stopped).
    mutating func takeReadyWaiters() -> [CheckedContinuation<Void, Never>] {
      let ready = waiters.filter { stopped || $0.value.mark <= finishedTotal }
      for id in ready.keys { waiters[id] = nil }
      return ready.values.map(\.continuation)
    }
  }

  private let tiers: TierManager
  private let peers: PeerClients
  let suspectPeers: PeerClients
  private let logger: Logger
  private let corruptCopies: CorruptCopyCounter
  private let underReplicated: UnderReplicatedTracker
  private let state: Mutex<State>
  private let wake: AsyncStream<Void>.Continuation
  private let wakes: AsyncStream<Void>
  static let batchBlocks = 32

  init(
    tiers: TierManager, peers: PeerClients, suspectPeers: PeerClients, queueMax: Int,
    corruptCopies: CorruptCopyCounter, underReplicated: UnderReplicatedTracker, logger: Logger
  ) {
    self.tiers = tiers
    self.underReplicated = underReplicated
    self.corruptCopies = corruptCopies
    self.peers = peers
    self.suspectPeers = suspectPeers
    self.logger = logger
    var initial = State()
    initial.stats.queueMax = queueMax
    state = Mutex(initial)
    (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
  }

  var stats: ReplicationStats { state.withLock { $0.stats } }

  /// Queues copies; those over the bound are dropped (and counted) at once.
  func enqueue(_ tasks: [ReplicationTask]) {
    let droppedTasks = state.withLock { state -> [ReplicationTask] in
      var dropped: [ReplicationTask] = []
      for task in tasks {
        if state.stats.queued >= state.stats.queueMax {
          dropped.append(task)
          continue
        }
        state.queue.append(task)
        state.stats.queued += 1
      }
      state.stats.droppedQueueFull += dropped.count
      return dropped
    }
    let dropped = droppedTasks.count
    for task in droppedTasks {
      for target in task.targets { underReplicated.failed([task.id], to: target.address) }
    }
    if dropped > 0 {
      logger.warning(
        "replication queue full: copies dropped",
        metadata: ["dropped": "\(dropped)", "limit": "cluster.replication_queue"])
    }
    wake.yield()
  }

  /// Runs the copy loop until `stop`.
  func run() async {
    for await _ in wakes {
      while let batch = take() {
        await copy(batch)
        finish(batch.count)
      }
      if state.withLock({ $0.stopped }) { return }
    }
  }

  /// Ends the copy loop after its batch in flight; copies still queued are not sent, and every
  /// `waitForQueuedCopies` returns.
  func stop() {
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.stopped = true
      return state.takeReadyWaiters()
    }
    for waiter in waiters { waiter.resume() }
    wake.yield()
    wake.finish()
    suspectPeers.closeAll()
  }

  /// Returns once every copy queued before the call has been sent or dropped (copies queued
  /// later are not waited for, so a steady stream of PUTs cannot hold it forever), or at once
  /// when the replicator stops or the calling task is cancelled.
  func waitForQueuedCopies() async {
    let id = state.withLock { state -> UInt64 in
      state.nextWaiter += 1
      return state.nextWaiter
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let done = state.withLock { state -> Bool in
          // A cancellation before this point has run its handler already, finding nothing to resume.
          guard !Task.isCancelled && !state.stopped && state.finishedTotal < state.queuedTotal else { return true }
          state.waiters[id] = (state.queuedTotal, continuation)
          return false
        }
        if done { continuation.resume() }
      }
    } onCancel: {
      state.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume()
    }
  }

  private func take() -> [ReplicationTask]? {
    state.withLock { state in
      guard state.head < state.queue.count else { return nil }
      let end = min(state.queue.count, state.head + Self.batchBlocks)
      let batch = Array(state.queue[state.head..<end])
      state.head = end
      if state.head > 4096 && state.head * 2 > state.queue.count {
        state.queue.removeFirst(state.head)
        state.head = 0
      }
      return batch
    }
  }

  private func finish(_ count: Int) {
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.stats.queued -= count
      state.finishedTotal += count
      return state.takeReadyWaiters()
    }
    for waiter in waiters { waiter.resume() }
  }

  private func count(_ update: (inout ReplicationStats) -> Void) {
    state.withLock { update(&$0.stats) }
  }

  /// Copies one batch: pins the blocks and checks them against their stored checksums, then PUTs
  /// them to each target (grouped per target and namespace) straight from arena memory.
  private func copy(_ batch: [ReplicationTask]) async {
    let copy: CopyLease
    do {
      copy = try await tiers.leaseForCopy(batch.map(\.id))
    } catch {
      unread(batch, unreadable: heldHere(batch.map(\.id)))
      return
    }
    defer { tiers.release(copy) }
    if !copy.corrupt.isEmpty {
      count { $0.droppedCorrupt += copy.corrupt.count }
      corruptCopies.refused(copy.corrupt, by: "replication", logger: logger)
    }
    corruptCopies.recovered(copy.recovered, by: "replication", logger: logger)
    let corrupt = Set(copy.corrupt)
    var groups: [ReplicationTarget: [Namespace: [LeasedBlock]]] = [:]
    let notRead = zip(batch, copy.blocks).filter { $0.1 == nil && !corrupt.contains($0.0.id) }.map(\.0)
    unread(notRead, unreadable: heldHere(notRead.map(\.id)))
    for (task, block) in zip(batch, copy.blocks) {
      guard let block else {
        if corrupt.contains(task.id) { underReplicated.forget([task.id]) }
        continue
      }
      for target in task.targets { groups[target, default: [:]][task.id.namespace, default: []].append(block) }
    }
    for (target, namespace, blocks) in inPeerOrder(groups, by: \.name) {
      await send(blocks, to: target, namespace: namespace)
    }
  }

  /// The blocks of `tasks` still held here (in `unreadable`) stay short of their targets, so that
  /// repair's next pass copies them (simulation seed 4497 under RAM pressure: a block only on NVMe,
  /// with no room to read it, was counted gone and its owner never got it); the others left this
  /// node, and are not its to copy any more.
  private func unread(_ tasks: [ReplicationTask], unreadable: Set<BlockID>) {
    for task in tasks {
      if unreadable.contains(task.id) {
        for target in task.targets { underReplicated.failed([task.id], to: target.address) }
      } else {
        underReplicated.forget([task.id])
      }
    }
    count { stats in
      stats.droppedUnreadable += unreadable.count
      stats.droppedGone += tasks.count - unreadable.count
    }
  }

  private func heldHere(_ ids: [BlockID]) -> Set<BlockID> {
    Set(zip(ids, tiers.lookup(ids)).filter { $0.1 != .absent }.map(\.0))
  }

  private func send(_ blocks: [LeasedBlock], to target: ReplicationTarget, namespace: Namespace) async {
    guard let client = (target.suspect ? suspectPeers : peers).client(target.address, namespace) else {
      count { $0.droppedNoCredentials += blocks.count }
      underReplicated.failed(blocks.map(\.id), to: target.address)
      return
    }
    do {
      let outcomes = try await client.put(copies: blocks, deadline: .never)
      let held = zip(blocks, outcomes).filter { $0.1 == .stored || $0.1 == .alreadyPresent }.map(\.0.id)
      underReplicated.copied(held, to: target.address)
      underReplicated.failed(Set(blocks.map(\.id)).subtracting(held), to: target.address)
      count { stats in
        for (block, outcome) in zip(blocks, outcomes) {
          switch outcome {
          case .stored:
            stats.sentBlocks += 1
            stats.sentBytes += block.bytes.count
          case .alreadyPresent: stats.alreadyPresent += 1
          default: stats.droppedRefused += 1
          }
        }
      }
    } catch {
      count { $0.droppedUnreachable += blocks.count }
      underReplicated.failed(blocks.map(\.id), to: target.address)
      logger.debug(
        "replication to a peer failed", metadata: ["peer": "\(target.address)", "reason": "\(error.message)"])
    }
  }
}
