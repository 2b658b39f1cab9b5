// Blocks under-replicated now: those this node holds as an owner (or took a client's PUT for)
// whose copy to some other owner failed and has not been made since, by a later copy, the
// replicator, or a repair pass. Kept per block with the owners that lack it, bounded; the size is
// the gauge strata_under_replicated_blocks, and what did not fit is counted
// (strata_under_replicated_overflow_total), so the gauge never reads 0 while blocks are missing
// unseen without the counter saying so.

import StrataCore
import StrataStorage
import Synchronization

/// The set itself (pure): block → owners (data addresses) known to lack it.
struct UnderReplicatedSet: Sendable {
  /// Blocks tracked at most: 65,536 blocks × (one id + one or two addresses) is a few MiB.
  static let defaultLimit = 65_536

  let limit: Int
  private(set) var missing: [BlockID: Set<HostPort>] = [:]
  /// Failures not tracked because the set was full.
  private(set) var overflowed = 0

  init(limit: Int = Self.defaultLimit) {
    precondition(limit > 0, "UnderReplicatedSet: limit \(limit) must be positive")
    self.limit = limit
  }

  var count: Int { missing.count }

  /// Copies of `ids` to `owner` failed.
  mutating func failed(_ ids: some Sequence<BlockID>, to owner: HostPort) {
    for id in ids {
      if missing[id] != nil {
        missing[id]!.insert(owner)
      } else if missing.count < limit {
        missing[id] = [owner]
      } else {
        overflowed += 1
      }
    }
  }

  /// `owner` holds `ids` now (a copy stored, or found present).
  mutating func copied(_ ids: some Sequence<BlockID>, to owner: HostPort) {
    for id in ids {
      guard var owners = missing[id] else { continue }
      owners.remove(owner)
      missing[id] = owners.isEmpty ? nil : owners
    }
  }

  /// This node no longer holds `ids` (evicted, removed, corrupt): it cannot repair them.
  mutating func forget(_ ids: some Sequence<BlockID>) {
    for id in ids { missing[id] = nil }
  }

  /// Keeps only the blocks for which `keep` holds (a repair pass: those this node still owns and
  /// holds).
  mutating func retain(where keep: (BlockID) -> Bool) {
    missing = missing.filter { keep($0.key) }
  }
}

/// The node's set, shared by the write quorum, the replicator and repair.
final class UnderReplicatedTracker: Sendable {
  private let blocks: Mutex<UnderReplicatedSet>
  private let failure: AsyncStream<Void>.Continuation
  /// Yields after copies failed (the latest only): what the repair's retry waits for while the
  /// set is empty, so a healthy node sets no timer.
  let failures: AsyncStream<Void>

  init(limit: Int = UnderReplicatedSet.defaultLimit) {
    blocks = Mutex(UnderReplicatedSet(limit: limit))
    (failures, failure) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
  }

  func failed(_ ids: some Sequence<BlockID>, to owner: HostPort) {
    blocks.withLock { $0.failed(ids, to: owner) }
    failure.yield()
  }
  func copied(_ ids: some Sequence<BlockID>, to owner: HostPort) { blocks.withLock { $0.copied(ids, to: owner) } }
  func forget(_ ids: some Sequence<BlockID>) { blocks.withLock { $0.forget(ids) } }
  func retain(where keep: (BlockID) -> Bool) { blocks.withLock { $0.retain(where: keep) } }

  /// Blocks under-replicated now, and failures not tracked since start because the set was full.
  var counts: (blocks: Int, overflowed: Int, limit: Int) { blocks.withLock { ($0.count, $0.overflowed, $0.limit) } }

  /// The owners each of `ids` is known to lack (empty where none is).
  func lacking(_ ids: [BlockID]) -> [Set<HostPort>] { blocks.withLock { set in ids.map { set.missing[$0] ?? [] } } }

  /// The blocks under-replicated now (a repair's retry of them).
  var ids: Set<BlockID> { blocks.withLock { Set($0.missing.keys) } }
}
