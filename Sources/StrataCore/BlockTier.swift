// Where a block lives on a node and what a PUT did with it: one spelling for the tier manager that
// decides, the wire that carries it (the raw values are the protocol's bytes) and the client that
// reads it (docs/protocol.md).

/// Where a block lives on a node: the tier manager's answer and the byte a LOOKUP answer carries.
public enum BlockTier: UInt8, Hashable, Sendable, CaseIterable {
  case absent = 0
  case ram = 1
  case nvme = 2
}

/// What the node did with one PUT item. The tier manager answers `stored` or `alreadyPresent`;
/// the request pipeline adds the refusals.
public enum PutOutcome: UInt8, Hashable, Sendable, CaseIterable {
  case stored = 0
  /// The key exists already; blocks are immutable, so this is success (and cheap).
  case alreadyPresent = 1
  /// The received bytes did not match the item's checksum: nothing was stored.
  case checksumMismatch = 2
  /// The block exceeds the node's block size limit.
  case tooLarge = 3
  /// No space could be reserved for the block.
  case noSpace = 4
}
