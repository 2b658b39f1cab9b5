// Leases: read pins that keep blocks resident until the transfer that needs them completes or
// the lease expires. A pure value: time is passed in, so tests drive expiry exactly.

public import StrataCore

/// A grant of pins on some blocks, named by a number unique within one tier manager.
public struct LeaseID: Hashable, Sendable, CustomStringConvertible {
  public let rawValue: UInt64
  public init(rawValue: UInt64) { self.rawValue = rawValue }
  public var description: String { "lease-\(rawValue)" }
}

/// Which leases exist, what they pin and when they expire.
struct LeaseTable {
  private struct Lease {
    var blocks: [BlockID]
    var expiresAtMilliseconds: UInt64
  }

  let leasesMax: Int
  private var leases: [LeaseID: Lease] = [:]
  private var pins: [BlockID: Int] = [:]
  /// Min-heap of (expiry, lease), so expiry costs O(log n) per lease whatever the durations.
  private var expiries: [(UInt64, LeaseID)] = []
  private var nextID: UInt64 = 1

  init(leasesMax: Int) {
    precondition(leasesMax > 0, "leasesMax must be positive")
    self.leasesMax = leasesMax
  }

  var count: Int { leases.count }
  var pinnedBlockCount: Int { pins.count }

  func isPinned(_ id: BlockID) -> Bool { pins[id] != nil }

  /// Pins `blocks` until `release` or `expiresAt`. Throws `resourceExhausted` at the lease limit.
  mutating func grant(_ blocks: [BlockID], expiresAt: UInt64) throws(StrataError) -> LeaseID {
    guard leases.count < leasesMax else {
      throw StrataError(.resourceExhausted, "lease limit reached: \(leasesMax) leases are held (limits.max_leases)")
    }
    let id = LeaseID(rawValue: nextID)
    nextID += 1
    leases[id] = Lease(blocks: blocks, expiresAtMilliseconds: expiresAt)
    for block in blocks { pins[block, default: 0] += 1 }
    push((expiresAt, id))
    return id
  }

  /// Ends a lease; returns the blocks that are no longer pinned by any lease. Unknown or already
  /// expired leases are ignored (a release racing an expiry is normal).
  mutating func release(_ id: LeaseID) -> [BlockID] {
    guard let lease = leases.removeValue(forKey: id) else { return [] }
    return unpin(lease.blocks)
  }

  /// Ends every lease that expired at or before `now`; returns the blocks no longer pinned.
  mutating func expire(now: UInt64) -> [BlockID] {
    var unpinned: [BlockID] = []
    while let (expiry, id) = expiries.first, expiry <= now {
      pop()
      // Entries of released leases stay in the heap until they surface; skip them.
      if let lease = leases[id], lease.expiresAtMilliseconds == expiry {
        leases[id] = nil
        unpinned += unpin(lease.blocks)
      }
    }
    if expiries.count > 4 * max(leases.count, 64) { compactHeap() }
    return unpinned
  }

  private mutating func unpin(_ blocks: [BlockID]) -> [BlockID] {
    var unpinned: [BlockID] = []
    for block in blocks {
      guard let count = pins[block] else { continue }
      if count <= 1 {
        pins[block] = nil
        unpinned.append(block)
      } else {
        pins[block] = count - 1
      }
    }
    return unpinned
  }

  private mutating func compactHeap() {
    expiries = leases.map { ($0.value.expiresAtMilliseconds, $0.key) }
    expiries.sort { $0.0 < $1.0 }  // a sorted array is a valid min-heap
  }

  private mutating func push(_ item: (UInt64, LeaseID)) {
    expiries.append(item)
    var child = expiries.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      guard expiries[child].0 < expiries[parent].0 else { break }
      expiries.swapAt(child, parent)
      child = parent
    }
  }

  private mutating func pop() {
    let last = expiries.removeLast()
    guard !expiries.isEmpty else { return }
    expiries[0] = last
    var parent = 0
    while true {
      let left = 2 * parent + 1
      let right = left + 1
      var smallest = parent
      if left < expiries.count, expiries[left].0 < expiries[smallest].0 { smallest = left }
      if right < expiries.count, expiries[right].0 < expiries[smallest].0 { smallest = right }
      guard smallest != parent else { return }
      expiries.swapAt(parent, smallest)
      parent = smallest
    }
  }
}
