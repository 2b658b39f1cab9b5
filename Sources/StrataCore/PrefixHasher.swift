// The chained prefix hash: key[i] = SHA-256(domain ‖ key[i-1] ‖ tokens[i] as u32le ‖ extras[i]).
// Byte-level specification and test vectors: docs/keys.md, Tests/Fixtures/key-vectors.json.

/// Computes the keys of a token sequence's full blocks under one layout and salt.
public struct PrefixHasher: Sendable {
  public static let rootDomain: [UInt8] = Array("strata/v1/root".utf8) + [0]
  public static let blockDomain: [UInt8] = Array("strata/v1/block".utf8) + [0]
  public static let saltBytesMax = 1024
  public static let extrasBytesMax = 65536

  public let layout: LayoutTag
  public let salt: [UInt8]
  /// The parent of the first block: SHA-256(root domain ‖ layout ‖ u32le salt length ‖ salt).
  public let root: BlockKey

  public init(layout: LayoutTag, salt: [UInt8] = []) throws(StrataError) {
    guard salt.count <= PrefixHasher.saltBytesMax else {
      throw StrataError(.invalidArgument, "salt: at most \(PrefixHasher.saltBytesMax) bytes, got \(salt.count)")
    }
    self.layout = layout
    self.salt = salt
    let hasher = SHA256()
    hasher.update(PrefixHasher.rootDomain)
    hasher.update(layout.canonicalBytes)
    var header: [UInt8] = []
    header.appendLittleEndian(UInt32(salt.count))
    hasher.update(header)
    hasher.update(salt)
    root = hasher.finalize()
  }

  /// The number of full blocks in `tokenCount` tokens; a partial tail is never keyed.
  public func fullBlocks(tokenCount: Int) -> Int { tokenCount / Int(layout.tokensPerBlock) }

  /// The keys of every full block of `tokens`, in order. `extras[i]` (if present) are the extra
  /// bytes of block i; blocks past the end of `extras` have none.
  public func keys(tokens: [UInt32], extras: [[UInt8]] = []) throws(StrataError) -> [BlockKey] {
    let blockCount = fullBlocks(tokenCount: tokens.count)
    guard extras.count <= blockCount else {
      throw StrataError(
        .invalidArgument,
        "extras: \(extras.count) given for \(blockCount) full block(s); extras of partial blocks are never keyed")
    }
    for (index, extra) in extras.enumerated() where extra.count > PrefixHasher.extrasBytesMax {
      throw StrataError(
        .invalidArgument, "extras[\(index)]: at most \(PrefixHasher.extrasBytesMax) bytes, got \(extra.count)")
    }
    let tokensPerBlock = Int(layout.tokensPerBlock)
    let hasher = SHA256()
    var parent = root
    var keys: [BlockKey] = []
    keys.reserveCapacity(blockCount)
    // Tokens are hashed as u32 little-endian; on a little-endian host that is their memory image.
    var scratch = [UInt32](repeating: 0, count: tokensPerBlock)
    for block in 0..<blockCount {
      hasher.update(PrefixHasher.blockDomain)
      hasher.update(parent)
      let base = block * tokensPerBlock
      for index in 0..<tokensPerBlock { scratch[index] = tokens[base + index].littleEndian }
      scratch.withUnsafeBytes { hasher.update($0) }
      if block < extras.count { hasher.update(extras[block]) }
      parent = hasher.finalize()
      keys.append(parent)
    }
    return keys
  }
}
