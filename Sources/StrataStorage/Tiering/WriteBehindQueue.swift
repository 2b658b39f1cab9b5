// The blocks waiting to be written behind to NVMe, oldest commit first. A pure value: the tier
// manager appends at commit and takes from the front; entries whose block has left RAM or reached
// NVMe meanwhile are dropped when met, and a compaction keeps the queue within a multiple of the
// RAM tier's block count however many such entries pile up.

import StrataCore

struct WriteBehindQueue {
  private var ids = FIFO<BlockID>()

  /// Entries held, stale ones included.
  var count: Int { ids.count }

  mutating func append(_ id: BlockID) { ids.append(id) }

  /// Removes and returns the oldest entry for which `isWaiting` holds, dropping those before it.
  mutating func popFirst(where isWaiting: (BlockID) -> Bool) -> BlockID? {
    while let id = ids.removeFirst() {
      if isWaiting(id) { return id }
    }
    return nil
  }

  /// The oldest entry for which `isWaiting` holds, dropping (only) the stale ones before it.
  mutating func first(where isWaiting: (BlockID) -> Bool) -> BlockID? {
    while let id = ids.first {
      if isWaiting(id) { return id }
      ids.removeFirst()
    }
    return nil
  }

  /// Keeps only the entries for which `isWaiting` holds, when more than `limit` are held.
  mutating func compact(above limit: Int, keeping isWaiting: (BlockID) -> Bool) {
    guard count > limit else { return }
    ids = FIFO(ids.filter(isWaiting))
  }
}

/// Blocks whose write-behind failed (an I/O error, no region free in time), still only in RAM: they
/// are written again once the retry is due, so that a disk error that passes does not leave them
/// undurable until their eviction. A pure value; the tier manager passes the time. The wait after
/// a pass that failed doubles with each such pass in a row, from `firstWaitMilliseconds` to
/// `longestWaitMilliseconds` (a disk that keeps failing is tried a few times a minute, not churned),
/// and a pass that wrote and failed nothing starts it over.
struct WriteBehindRetry {
  static let firstWaitMilliseconds: UInt64 = 1_000
  static let longestWaitMilliseconds: UInt64 = 30_000

  /// The blocks to write again, in the order their writes failed (a block may appear twice).
  private(set) var ids: [BlockID] = []
  /// Passes in a row that failed a write.
  private(set) var failedPasses = 0
  /// When the blocks are written again.
  private(set) var dueAtMilliseconds: UInt64 = 0
  private var failedThisPass = false

  var isEmpty: Bool { ids.isEmpty }

  mutating func failed(_ id: BlockID) {
    ids.append(id)
    failedThisPass = true
  }

  /// The wait before the next try, after `failedPasses` failing passes in a row.
  static func wait(afterFailedPasses passes: Int) -> UInt64 {
    guard passes > 0 else { return 0 }
    return min(longestWaitMilliseconds, firstWaitMilliseconds << UInt64(min(passes - 1, 16)))
  }

  /// Ends a pass: one that failed a write puts the next try off; one that wrote without failing
  /// any starts the waits over.
  mutating func passEnded(wrote: Int, now: UInt64) {
    if failedThisPass {
      failedPasses += 1
      dueAtMilliseconds = now + Self.wait(afterFailedPasses: failedPasses)
      failedThisPass = false
    } else if wrote > 0 {
      failedPasses = 0
    }
  }

  /// The blocks to write again when the retry is due (each once), none before, and none in a pass
  /// that failed a write already (it would try them again at once).
  mutating func takeDue(now: UInt64) -> [BlockID] {
    guard !ids.isEmpty, !failedThisPass, now >= dueAtMilliseconds else { return [] }
    var seen = Set<BlockID>()
    let due = ids.filter { seen.insert($0).inserted }
    ids = []
    return due
  }

  /// Gives back blocks taken but not written in this batch: due at once, for the pass's next batch.
  mutating func putBack(_ rest: [BlockID]) {
    ids = rest + ids
  }
}
