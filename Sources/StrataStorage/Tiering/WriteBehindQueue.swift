// The blocks waiting to be written behind to NVMe, oldest commit first. A pure value: the tier
// manager appends at commit and takes from the front; entries whose block has left RAM or reached
// NVMe meanwhile are dropped when met, and a compaction keeps the queue within a multiple of the
// RAM tier's block count however many such entries pile up.

import StrataCore

struct WriteBehindQueue {
  private var ids: [BlockID] = []
  private var head = 0

  /// Entries held, stale ones included.
  var count: Int { ids.count - head }

  mutating func append(_ id: BlockID) { ids.append(id) }

  /// Removes and returns the oldest entry for which `isWaiting` holds, dropping those before it.
  mutating func popFirst(where isWaiting: (BlockID) -> Bool) -> BlockID? {
    while head < ids.count {
      let id = ids[head]
      head += 1
      if isWaiting(id) {
        reclaimFront()
        return id
      }
    }
    reclaimFront()
    return nil
  }

  /// The oldest entry for which `isWaiting` holds, dropping (only) the stale ones before it.
  mutating func first(where isWaiting: (BlockID) -> Bool) -> BlockID? {
    while head < ids.count {
      if isWaiting(ids[head]) { return ids[head] }
      head += 1
    }
    reclaimFront()
    return nil
  }

  /// Keeps only the entries for which `isWaiting` holds, when more than `limit` are held.
  mutating func compact(above limit: Int, keeping isWaiting: (BlockID) -> Bool) {
    guard count > limit else { return }
    ids = ids[head...].filter(isWaiting)
    head = 0
  }

  /// Frees the consumed front once it is most of the storage (amortised O(1) per entry).
  private mutating func reclaimFront() {
    if head == ids.count {
      ids.removeAll(keepingCapacity: ids.capacity <= 4096)
      head = 0
    } else if head > 1024 && head * 2 > ids.count {
      ids.removeFirst(head)
      head = 0
    }
  }
}
