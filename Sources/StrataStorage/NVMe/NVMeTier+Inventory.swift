// What the NVMe tier holds, for operators: its block ids, usage per namespace, and which region
// (and region generation) holds a block. Used by the admin operations (evict, verify, metrics).

public import StrataCore

/// Blocks and bytes held by one tier (or one namespace within it).
public struct TierUsage: Sendable, Hashable {
  public var blocks = 0
  public var bytes = 0

  public init(blocks: Int = 0, bytes: Int = 0) {
    self.blocks = blocks
    self.bytes = bytes
  }
}

extension NVMeTier {
  /// Every indexed block, at one instant. O(blocks) under the index lock: for admin operations,
  /// not for the data path.
  public func blockIDs() -> [BlockID] {
    log.withLock { log in log.index.keys.map { log.blockID(of: $0) } }
  }

  /// Live records per namespace: blocks, and bytes on disk (headers and alignment padding
  /// included, so the namespaces add up to `statistics.usedBytes`). O(namespaces): the log keeps
  /// these counts as records come and go.
  public func usageByNamespace() -> [Namespace: TierUsage] {
    log.withLock { log in
      var usage: [Namespace: TierUsage] = [:]
      for (namespaceID, counts) in log.usageByNamespaceID { usage[log.namespace(ofID: namespaceID)] = counts }
      return usage
    }
  }

  /// The region holding `id` and that region's generation (bumped whenever it is reused).
  func regionAndGeneration(of id: BlockID) -> (region: Int, generation: UInt32)? {
    log.withLock { log in
      guard let location = log.location(of: id) else { return nil }
      let region = Int(location.region)
      return (region, log.regionInfo(region).generation)
    }
  }

  /// The regions that hold at least one block, each with its generation.
  func occupiedRegions() -> [(region: Int, generation: UInt32)] {
    log.withLock { log in
      log.regions.enumerated().compactMap { index, region in
        region.liveBlocks > 0 ? (index, region.generation) : nil
      }
    }
  }
}
