// The RAM tier's index of blocks. It keeps blocks and slot bytes per namespace as entries come
// and go, so metrics and status read usage in O(namespaces) instead of walking every block
// under the tier lock.

import StrataCore

struct RAMIndex: Sequence {
  private var entries: [BlockID: TierManager.RAMEntry] = [:]
  /// Blocks and slot bytes per namespace; a namespace without blocks has no entry.
  private(set) var usage: [Namespace: TierUsage] = [:]
  /// Blocks (and their payload bytes) committed to RAM and not yet on NVMe by write-behind.
  private(set) var dirtyBlocks = 0
  private(set) var dirtyBytes = 0

  var count: Int { entries.count }
  var keys: Dictionary<BlockID, TierManager.RAMEntry>.Keys { entries.keys }

  subscript(id: BlockID) -> TierManager.RAMEntry? {
    get { entries[id] }
    set {
      let old = newValue.map { entries.updateValue($0, forKey: id) } ?? entries.removeValue(forKey: id)
      // A GET's read count or a flag changes on every hit: the usage stays, and is not rehashed.
      if let old, let newValue, old.slot.capacityBytes == newValue.slot.capacityBytes,
        old.bytes == newValue.bytes, old.dirty == newValue.dirty
      {
        return
      }
      if let old { account(id, old, -1) }
      if let newValue { account(id, newValue, +1) }
    }
  }

  @discardableResult
  mutating func removeValue(forKey id: BlockID) -> TierManager.RAMEntry? {
    guard let old = entries.removeValue(forKey: id) else { return nil }
    account(id, old, -1)
    return old
  }

  func makeIterator() -> Dictionary<BlockID, TierManager.RAMEntry>.Iterator { entries.makeIterator() }

  private mutating func account(_ id: BlockID, _ entry: TierManager.RAMEntry, _ sign: Int) {
    var counts = usage[id.namespace] ?? TierUsage()
    counts.blocks += sign
    counts.bytes += sign * entry.slot.capacityBytes
    usage[id.namespace] = counts.blocks == 0 ? nil : counts
    if entry.dirty {
      dirtyBlocks += sign
      dirtyBytes += sign * entry.bytes
    }
  }
}
