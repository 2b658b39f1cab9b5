// Least-recently-used replacement: the baseline policy, and the one to compare S3-FIFO against.

/// Evicts the entry read or inserted longest ago. Every operation is O(1) (a dictionary and one
/// index-linked list); an eviction that meets pinned entries skips them, at most `count` of them.
public struct LRUPolicy<Key: Hashable>: EvictionPolicy {
  struct Entry {
    var key: Key
    var bytes: Int
    var reused: Bool
  }

  private var slots = LinkedSlots<Entry>()
  /// Head is the most recently used entry, tail the next victim.
  private var recency = SlotListEnds()
  private var slotByKey: [Key: Int] = [:]
  public private(set) var bytes = 0

  public init() {}

  public var count: Int { slotByKey.count }

  public mutating func insert(_ key: Key, bytes: Int) {
    precondition(bytes >= 0, "LRUPolicy.insert: negative size \(bytes) for \(key)")
    precondition(slotByKey[key] == nil, "LRUPolicy.insert: \(key) is already present")
    let slot = slots.make(Entry(key: key, bytes: bytes, reused: false))
    slots.pushHead(slot, onto: &recency)
    slotByKey[key] = slot
    self.bytes += bytes
  }

  public mutating func access(_ key: Key) {
    guard let slot = slotByKey[key] else { return }
    slots.update(slot) { $0.reused = true }
    slots.moveToHead(slot, in: &recency)
  }

  public mutating func remove(_ key: Key) {
    guard let slot = slotByKey.removeValue(forKey: key) else { return }
    slots.unlink(slot, from: &recency)
    bytes -= slots.destroy(slot).bytes
  }

  public mutating func evict(where isEvictable: (Key) -> Bool) -> Key? {
    // Pinned entries stay where they are: a lease is not a read, so it must not make them look hot.
    var slot = recency.tail
    while slot != LinkedSlots<Entry>.none {
      let key = slots[slot].key
      if isEvictable(key) {
        slots.unlink(slot, from: &recency)
        slotByKey[key] = nil
        bytes -= slots.destroy(slot).bytes
        return key
      }
      slot = slots.previous(slot)
    }
    return nil
  }

  public func wasReused(_ key: Key) -> Bool {
    guard let slot = slotByKey[key] else { return false }
    return slots[slot].reused
  }
}

extension LRUPolicy.Entry: Sendable where Key: Sendable {}
extension LRUPolicy: Sendable where Key: Sendable {}
