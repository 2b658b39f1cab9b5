// EngineKeys: an inference engine's own identity of a block (a vLLM block hash, an SGLang HiCache
// page hash, an LMCache key string, a plain string key) mapped to a Strata key by
// strata-engine-key-v1 (docs/keys.md, "Engine keys"), with the layout folded in so that blocks of
// incompatible layouts never share a key. The Python client (python/strata_kv/keys.py) implements
// the same scheme; both reproduce Tests/Fixtures/engine-key-vectors.json.

/// strata-engine-key-v1.
public enum EngineKeys {
  public static let engineDomain: [UInt8] = Array("strata/v1/engine".utf8) + [0]
  public static let stringDomain: [UInt8] = Array("strata/v1/string".utf8) + [0]
  /// The longest engine digest taken (bytes).
  public static let hashBytesMax = 64
  /// The longest string key or LMCache key string (UTF-8 bytes).
  public static let stringBytesMax = 4096

  /// A vLLM `request.block_hashes` entry: a digest (sha256, sha256_cbor: 32 bytes) or an integer
  /// (the xxhash and builtin-hash variants).
  public enum VLLMBlockHash: Hashable, Sendable {
    case digest([UInt8])
    case integer(Int128)
  }

  /// What an SGLang page holds: K and V together (MLA), or one of them.
  public enum SGLangKind: UInt8, Sendable, CaseIterable {
    case kv = 0
    case k = 1
    case v = 2

    public init(parsing text: String) throws(StrataError) {
      switch text {
      case "kv": self = .kv
      case "k": self = .k
      case "v": self = .v
      default: throw StrataError(.invalidArgument, "kind: '\(text)' is not one of k, kv, v")
      }
    }
  }

  /// SHA-256(engineDomain ‖ u8(len(engine)) ‖ engine ‖ u16le(len(L)) ‖ L ‖ u32le(len(salt)) ‖ salt ‖ identity),
  /// L being the layout's canonical bytes (empty when the identity names the layout itself).
  public static func key(engine: String, layout: LayoutTag?, salt: [UInt8], identity: [UInt8]) throws(StrataError)
    -> BlockKey
  {
    guard (1...32).contains(engine.utf8.count), engine.utf8.allSatisfy({ $0 < 0x80 }) else {
      throw StrataError(.invalidArgument, "engine: '\(engine)' must be 1 to 32 ASCII characters")
    }
    guard salt.count <= PrefixHasher.saltBytesMax else {
      throw StrataError(.invalidArgument, "salt: at most \(PrefixHasher.saltBytesMax) bytes, got \(salt.count)")
    }
    let layoutBytes = layout?.canonicalBytes ?? []
    var input = engineDomain
    input.append(UInt8(engine.utf8.count))
    input.append(contentsOf: engine.utf8)
    input.appendLittleEndian(UInt16(layoutBytes.count))
    input += layoutBytes
    input.appendLittleEndian(UInt32(salt.count))
    input += salt
    input += identity
    return SHA256.digest(input)
  }

  /// A vLLM block: identity u32le(kvGroup) ‖ (0x01 ‖ u8(len) ‖ digest | 0x02 ‖ i128le(value)).
  public static func vllm(_ hash: VLLMBlockHash, layout: LayoutTag, salt: [UInt8] = [], kvGroup: UInt32 = 0)
    throws(StrataError) -> BlockKey
  {
    var identity: [UInt8] = []
    identity.appendLittleEndian(kvGroup)
    switch hash {
    case .digest(let digest):
      guard (1...hashBytesMax).contains(digest.count) else {
        throw StrataError(.invalidArgument, "block_hash: \(digest.count) bytes, must be 1 to \(hashBytesMax)")
      }
      identity += [1, UInt8(digest.count)] + digest
    case .integer(let value):
      identity.append(2)
      identity.appendLittleEndian(UInt128(bitPattern: value))
    }
    return try key(engine: "vllm", layout: layout, salt: salt, identity: identity)
  }

  /// An SGLang HiCache page: identity u32le(rank) ‖ u8(kind) ‖ the page hash's bytes (hex, any case).
  public static func sglang(
    pageHashHex: String, layout: LayoutTag, rank: UInt32 = 0, kind: SGLangKind = .kv, salt: [UInt8] = []
  ) throws(StrataError) -> BlockKey {
    guard pageHashHex.utf8.count <= 2 * hashBytesMax, let hash = Hex.decode(pageHashHex.lowercased()),
      !hash.isEmpty
    else {
      throw StrataError(.invalidArgument, "page_hash_hex: '\(pageHashHex.prefix(80))' is not 1 to 64 bytes of hex")
    }
    var identity: [UInt8] = []
    identity.appendLittleEndian(rank)
    identity.append(kind.rawValue)
    identity += hash
    return try key(engine: "sglang", layout: layout, salt: salt, identity: identity)
  }

  /// An LMCache chunk: `model@world_size@worker_id@chunk_hash@dtype` (more '@' fields allowed, as
  /// the multiprocess form has); the string names the layout, so it is the identity (UTF-8).
  public static func lmcache(_ keyString: String, salt: [UInt8] = []) throws(StrataError) -> BlockKey {
    let fields = keyString.split(separator: "@", omittingEmptySubsequences: false)
    guard fields.count >= 5, fields.prefix(5).allSatisfy({ !$0.isEmpty }) else {
      throw StrataError(
        .invalidArgument, "key_str: '\(keyString.prefix(80))' is not model@world_size@worker_id@chunk_hash@dtype")
    }
    guard let world = decimal(fields[1]), let worker = decimal(fields[2]) else {
      throw StrataError(
        .invalidArgument, "key_str: world_size '\(fields[1])' and worker_id '\(fields[2])' must be integers")
    }
    guard worker < world else {
      throw StrataError(.invalidArgument, "key_str: worker_id \(worker) must be less than world_size \(world)")
    }
    guard keyString.utf8.count <= stringBytesMax else {
      throw StrataError(
        .invalidArgument, "key_str: \(keyString.utf8.count) bytes exceeds the limit of \(stringBytesMax)")
    }
    return try key(engine: "lmcache", layout: nil, salt: salt, identity: Array(keyString.utf8))
  }

  /// A string key (Mooncake style): SHA-256(stringDomain ‖ UTF-8 bytes).
  public static func string(_ text: String) throws(StrataError) -> BlockKey {
    guard text.utf8.count <= stringBytesMax else {
      throw StrataError(.invalidArgument, "key: \(text.utf8.count) UTF-8 bytes exceeds the limit of \(stringBytesMax)")
    }
    return SHA256.digest(stringDomain + Array(text.utf8))
  }

  /// ASCII digits only (no sign, no spaces), as a non-negative integer that fits.
  private static func decimal(_ text: Substring) -> UInt64? {
    guard !text.isEmpty, text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
      return nil
    }
    return UInt64(text)
  }
}
