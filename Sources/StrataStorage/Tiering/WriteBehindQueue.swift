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
