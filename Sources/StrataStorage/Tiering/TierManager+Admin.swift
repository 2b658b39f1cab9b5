// Operator actions on a node's tiers: usage per namespace (for metrics and status) and eviction
// of the blocks that match a selector (namespace, key prefixes, age), from every tier.

public import StrataCore

/// A key prefix given as hex digits (1 to 64; an odd count matches half a byte).
public struct KeyPrefix: Sendable, Hashable, CustomStringConvertible {
  /// The prefix's bytes; with an odd digit count the last byte's low half is zero and ignored.
  public let bytes: [UInt8]
  public let digits: Int

  /// Parses `hex`; throws `invalidArgument` for an empty, too long or non-hex prefix.
  public init(hex: String) throws(StrataError) {
    let text = hex.lowercased()
    guard (1...64).contains(text.utf8.count) else {
      throw StrataError(.invalidArgument, "key prefix '\(hex)' must have 1 to 64 hex digits")
    }
    guard let decoded = Hex.decode(text.utf8.count % 2 == 0 ? text : text + "0") else {
      throw StrataError(.invalidArgument, "key prefix '\(hex)' is not hex")
    }
    bytes = decoded
    digits = text.utf8.count
  }

  public func matches(_ key: BlockKey) -> Bool {
    withUnsafeTemporaryAllocation(byteCount: BlockKey.byteCount, alignment: 8) { raw in
      key.store(to: raw.baseAddress!)
      for index in 0..<(digits / 2) where raw[index] != bytes[index] { return false }
      if digits % 2 == 1 { return raw[digits / 2] >> 4 == bytes[digits / 2] >> 4 }
      return true
    }
  }

  public var description: String { String(Hex.encode(bytes).prefix(digits)) }
}

/// Which blocks an eviction takes: those matching every criterion given. At least one is needed.
public struct EvictionSelector: Sendable, Hashable {
  public var namespace: Namespace?
  /// A block matches when its key starts with any of these.
  public var keyPrefixes: [KeyPrefix]
  /// Stored on this node at least this long ago (NVMe blocks: decided per region, conservatively).
  public var olderThanMilliseconds: UInt64?

  public init(namespace: Namespace? = nil, keyPrefixes: [KeyPrefix] = [], olderThanMilliseconds: UInt64? = nil) {
    self.namespace = namespace
    self.keyPrefixes = keyPrefixes
    self.olderThanMilliseconds = olderThanMilliseconds
  }

  public var isEmpty: Bool { namespace == nil && keyPrefixes.isEmpty && olderThanMilliseconds == nil }

  func matches(_ id: BlockID) -> Bool {
    if let namespace, id.namespace != namespace { return false }
    if !keyPrefixes.isEmpty, !keyPrefixes.contains(where: { $0.matches(id.key) }) { return false }
    return true
  }
}

/// What an eviction removed.
public struct EvictionReport: Sendable, Hashable {
  /// Distinct blocks removed (a block in both tiers counts once).
  public var blocks = 0
  /// Their payload bytes.
  public var bytes = 0
  public var ramBlocks = 0
  public var nvmeBlocks = 0

  public init() {}
}

extension TierManager {
  /// Blocks and bytes per namespace in each tier (RAM bytes are slot sizes, NVMe bytes record
  /// sizes, so each tier's namespaces add up to its used bytes). O(namespaces): both tiers keep
  /// these counts as blocks come and go, so a scrape never walks the blocks under a tier lock.
  public func usageByNamespace() -> (ram: [Namespace: TierUsage], nvme: [Namespace: TierUsage]) {
    (state.withLock { $0.ram.usage }, nvme?.usageByNamespace() ?? [:])
  }

  /// Removes every block that `selector` matches from every tier, like `remove` (pinned blocks
  /// leave the index now, their memory is reused when their leases end). NVMe removals write
  /// tombstones: this blocks its thread for that I/O, so call it from a thread of its own, never
  /// from Swift's cooperative pool. Throws `invalidArgument` for an empty selector.
  public func evict(_ selector: EvictionSelector) throws(StrataError) -> EvictionReport {
    guard !selector.isEmpty else {
      throw StrataError(.invalidArgument, "an eviction needs a namespace, key prefixes or an age")
    }
    let now = clock.nowMilliseconds()
    func oldEnough(_ storedAt: UInt64?) -> Bool {
      guard let olderThan = selector.olderThanMilliseconds else { return true }
      guard let storedAt else { return false }
      return storedAt + olderThan <= now
    }
    var victims: [BlockID: Int] = [:]
    var report = EvictionReport()
    state.withLock { state in
      for (id, entry) in state.ram where selector.matches(id) && oldEnough(entry.storedAtMilliseconds) {
        victims[id] = entry.bytes
      }
    }
    if let nvme {
      for id in nvme.blockIDs()
      where victims[id] == nil && selector.matches(id) && oldEnough(nvmeAges.storedAt(id, in: nvme)) {
        victims[id] = nvme.payloadBytes(of: id) ?? 0
      }
    }
    for (id, bytes) in victims {
      let inRAM = state.withLock { $0.ram[id] != nil }
      let onNVMe = nvme?.contains(id) == true
      guard inRAM || onNVMe else { continue }
      remove(id)
      report.blocks += 1
      report.bytes += bytes
      if inRAM { report.ramBlocks += 1 }
      if onNVMe { report.nvmeBlocks += 1 }
    }
    return report
  }
}
