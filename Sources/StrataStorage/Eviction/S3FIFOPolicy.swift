// S3-FIFO replacement (Yang et al., SOSP'23, "FIFO queues are all you need for cache eviction"):
// a small probation FIFO filters one-hit wonders (prefix scans) out before they reach the main FIFO.

/// Three FIFO queues: small `S` (about `smallFraction` of capacity bytes) where new entries start,
/// main `M` for entries that proved themselves, and ghost `G`, keys recently evicted from `S`, so a key
/// that comes back soon enters `M` directly. Each entry has a read counter capped at 3.
///
/// Reads only bump a counter (no list movement), which is why a hit is cheaper than in LRU. Evictions
/// follow the paper: from `S`, an entry read at least twice moves to `M`, any other leaves and is
/// remembered in `G`; from `M`, an entry with a count is reinserted at the head with the count
/// lowered, one without leaves. The tier calls `evict` once per victim it needs; `M` may run over its
/// share for a moment after promotions, and later evictions take from `M` until it is back.
public struct S3FIFOPolicy<Key: Hashable>: EvictionPolicy {
  public enum Queue: Sendable {
    case small
    case main
  }

  struct Entry {
    var key: Key
    var bytes: Int
    var frequency: UInt8
    var queue: Queue
    var reused: Bool
  }

  /// Two bits of counter, as in the paper: enough to tell "read once" from "read often" without letting
  /// a once-hot entry survive many passes of `M` after it went cold.
  static var frequencyMax: UInt8 { 3 }

  /// The tier's capacity; only the split between `S` and `M` depends on it, the tier decides when to evict.
  public let capacityBytes: Int
  /// The share of `S`: while `S` holds at least this many bytes, evictions take from `S`.
  public let smallCapacityBytes: Int

  private var slots = LinkedSlots<Entry>()
  private var small = SlotListEnds()
  private var main = SlotListEnds()
  private var slotByKey: [Key: Int] = [:]
  private var ghost: GhostQueue<Key>
  public private(set) var smallBytes = 0
  public private(set) var mainBytes = 0

  public init(capacityBytes: Int, smallFraction: Double = 0.1) {
    precondition(capacityBytes > 0, "S3FIFOPolicy: capacityBytes must be positive, got \(capacityBytes)")
    precondition(
      smallFraction > 0 && smallFraction < 1, "S3FIFOPolicy: smallFraction must be in (0, 1), got \(smallFraction)")
    self.capacityBytes = capacityBytes
    smallCapacityBytes = Int(Double(capacityBytes) * smallFraction)
    // The paper keeps as many ghosts as M holds entries; in bytes that is M's share of the capacity,
    // which keeps the ghost's memory proportional to M's however big the blocks are.
    ghost = GhostQueue(capacityBytes: capacityBytes - smallCapacityBytes)
  }

  public var count: Int { slotByKey.count }
  public var bytes: Int { smallBytes + mainBytes }
  /// Keys remembered in the ghost queue.
  public var ghostCount: Int { ghost.count }

  /// Which queue holds `key`, or nil when it is not in the tier.
  public func queue(of key: Key) -> Queue? {
    slotByKey[key].map { slots[$0].queue }
  }

  /// The read counter of `key` (0...3), or nil when it is not in the tier.
  public func frequency(of key: Key) -> Int? {
    slotByKey[key].map { Int(slots[$0].frequency) }
  }

  /// Whether `key` was evicted from `S` recently enough to be remembered.
  public func isGhost(_ key: Key) -> Bool { ghost.contains(key) }

  public mutating func insert(_ key: Key, bytes: Int) {
    precondition(bytes >= 0, "S3FIFOPolicy.insert: negative size \(bytes) for \(key)")
    precondition(slotByKey[key] == nil, "S3FIFOPolicy.insert: \(key) is already present")
    let queue: Queue = ghost.take(key) ? .main : .small
    let slot = slots.make(Entry(key: key, bytes: bytes, frequency: 0, queue: queue, reused: false))
    slotByKey[key] = slot
    switch queue {
    case .small:
      slots.pushHead(slot, onto: &small)
      smallBytes += bytes
    case .main:
      slots.pushHead(slot, onto: &main)
      mainBytes += bytes
    }
  }

  public mutating func access(_ key: Key) {
    guard let slot = slotByKey[key] else { return }
    slots.update(slot) { entry in
      entry.frequency = min(entry.frequency + 1, Self.frequencyMax)
      entry.reused = true
    }
  }

  public mutating func remove(_ key: Key) {
    guard let slot = slotByKey.removeValue(forKey: key) else { return }
    let entry = slots[slot]
    switch entry.queue {
    case .small:
      slots.unlink(slot, from: &small)
      smallBytes -= entry.bytes
    case .main:
      slots.unlink(slot, from: &main)
      mainBytes -= entry.bytes
    }
    _ = slots.destroy(slot)
  }

  public mutating func evict(where isEvictable: (Key) -> Bool) -> Key? {
    if smallBytes >= smallCapacityBytes || main.count == 0, let key = evictFromSmall(isEvictable) {
      return key
    }
    if let key = evictFromMain(isEvictable) { return key }
    // S was under its share but everything in M is pinned; and a pass over S may just have promoted
    // an evictable entry into M. Each pass is bounded, so four of them still terminate.
    if let key = evictFromSmall(isEvictable) { return key }
    return evictFromMain(isEvictable)
  }

  public func wasReused(_ key: Key) -> Bool {
    guard let slot = slotByKey[key] else { return false }
    return slots[slot].reused
  }

  /// One pass over S at most: each entry is promoted, skipped (pinned, moved to the head) or evicted.
  private mutating func evictFromSmall(_ isEvictable: (Key) -> Bool) -> Key? {
    var visitsLeft = small.count
    while visitsLeft > 0 {
      visitsLeft -= 1
      let slot = small.tail
      let entry = slots[slot]
      if entry.frequency > 1 {
        // Promotion is not eviction, so a pinned entry may move too.
        slots.unlink(slot, from: &small)
        slots.update(slot) { $0.queue = .main }
        slots.pushHead(slot, onto: &main)
        smallBytes -= entry.bytes
        mainBytes += entry.bytes
      } else if !isEvictable(entry.key) {
        slots.moveToHead(slot, in: &small)
      } else {
        slots.unlink(slot, from: &small)
        smallBytes -= entry.bytes
        slotByKey[entry.key] = nil
        _ = slots.destroy(slot)
        ghost.record(entry.key, bytes: entry.bytes)
        return entry.key
      }
    }
    return nil
  }

  /// At most `frequencyMax + 1` passes over M: by then every unpinned entry's counter has reached 0
  /// and the next one met is evicted, so nil means everything in M is pinned.
  private mutating func evictFromMain(_ isEvictable: (Key) -> Bool) -> Key? {
    var visitsLeft = main.count * (Int(Self.frequencyMax) + 1)
    while visitsLeft > 0 {
      visitsLeft -= 1
      let slot = main.tail
      let entry = slots[slot]
      if entry.frequency > 0 {
        slots.update(slot) { $0.frequency -= 1 }
        slots.moveToHead(slot, in: &main)
      } else if !isEvictable(entry.key) {
        slots.moveToHead(slot, in: &main)
      } else {
        slots.unlink(slot, from: &main)
        mainBytes -= entry.bytes
        slotByKey[entry.key] = nil
        _ = slots.destroy(slot)
        return entry.key
      }
    }
    return nil
  }
}

extension S3FIFOPolicy.Entry: Sendable where Key: Sendable {}
extension S3FIFOPolicy: Sendable where Key: Sendable {}

/// Keys (no data) in eviction order, bounded by the bytes their entries had. A FIFO in an array with a
/// moving start; a key taken out early leaves a stale record behind (its stamp no longer matches),
/// and the array is compacted when stale or consumed records outnumber live ones, so every operation
/// is amortised O(1).
struct GhostQueue<Key: Hashable> {
  fileprivate struct Record {
    var key: Key
    var stamp: UInt64
  }

  let capacityBytes: Int
  private var records: [Record] = []
  private var start = 0
  private var liveByKey: [Key: (stamp: UInt64, bytes: Int)] = [:]
  private var nextStamp: UInt64 = 0
  private(set) var bytes = 0

  init(capacityBytes: Int) {
    self.capacityBytes = capacityBytes
  }

  var count: Int { liveByKey.count }

  func contains(_ key: Key) -> Bool { liveByKey[key] != nil }

  mutating func record(_ key: Key, bytes entryBytes: Int) {
    if let old = liveByKey[key] { bytes -= old.bytes }
    liveByKey[key] = (nextStamp, entryBytes)
    records.append(Record(key: key, stamp: nextStamp))
    nextStamp += 1
    bytes += entryBytes
    while bytes > capacityBytes, start < records.count {
      let oldest = records[start]
      start += 1
      if let live = liveByKey[oldest.key], live.stamp == oldest.stamp {
        liveByKey[oldest.key] = nil
        bytes -= live.bytes
      }
    }
    compactIfSparse()
  }

  /// Forgets `key` and says whether it was there (a ghost hit).
  mutating func take(_ key: Key) -> Bool {
    guard let live = liveByKey.removeValue(forKey: key) else { return false }
    bytes -= live.bytes
    compactIfSparse()
    return true
  }

  private mutating func compactIfSparse() {
    let stored = records.count - start
    guard records.count > 64, stored > 2 * liveByKey.count || start > records.count / 2 else { return }
    records = records[start...].filter { record in liveByKey[record.key]?.stamp == record.stamp }
    start = 0
  }
}

extension GhostQueue.Record: Sendable where Key: Sendable {}
extension GhostQueue: Sendable where Key: Sendable {}
