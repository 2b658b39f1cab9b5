// Tenants: what a token is stored as (a SHA-256 digest, never the secret), what it may do (scopes),
// and what its namespace may hold and ask (quotas, rates). Pure values; the node's data plane and
// admin API enforce them (docs/security.md, "Tenants").

/// The SHA-256 digest of a token's secret: what the configuration stores and the node compares.
/// Written `sha256:` followed by 64 hex digits (`strata token hash` prints it).
public struct TokenDigest: Hashable, Sendable, CustomStringConvertible {
  public static let prefix = "sha256:"
  public let bytes: [UInt8]

  /// The digest of a presented secret (the bytes a client sends in HELLO or a Bearer header).
  public init(secret: [UInt8]) {
    var out = [UInt8](repeating: 0, count: 32)
    SHA256.digest(secret).store(into: &out)
    bytes = out
  }

  public init(secret: String) { self.init(secret: Array(secret.utf8)) }

  /// Parses `sha256:<64 hex digits>`; throws `invalidArgument` naming what is wrong.
  public init(parsing text: String) throws(StrataError) {
    guard text.hasPrefix(Self.prefix) else {
      throw StrataError(.invalidArgument, "a token digest is written sha256:<64 hex digits>")
    }
    let hex = text.dropFirst(Self.prefix.count)
    guard hex.utf8.count == 64, let decoded = Hex.decode(hex) else {
      throw StrataError(
        .invalidArgument,
        "a token digest is written sha256:<64 hex digits>; got \(hex.utf8.count) characters after sha256:")
    }
    bytes = decoded
  }

  /// Whether `text` is written as a digest rather than as a plain secret.
  public static func isDigestForm(_ text: String) -> Bool { text.hasPrefix(prefix) }

  public var description: String { Self.prefix + Hex.encode(bytes) }

  /// Equality in time that does not depend on where the digests differ.
  public func constantTimeEquals(_ other: TokenDigest) -> Bool {
    guard bytes.count == other.bytes.count else { return false }
    var difference: UInt8 = 0
    for index in bytes.indices { difference |= bytes[index] ^ other.bytes[index] }
    return difference == 0
  }
}

extension BlockKey {
  /// Writes the key's 32 bytes into `bytes` (which must hold 32).
  func store(into bytes: inout [UInt8]) {
    precondition(bytes.count == BlockKey.byteCount, "BlockKey.store(into:) needs 32 bytes")
    bytes.withUnsafeMutableBytes { store(to: $0.baseAddress!) }
  }
}

/// What a token may do. Data-plane operations: `read` (LOOKUP, GET, and the tenant's own view in
/// STAT and RING members), `write` (PUT), `delete` (DELETE). `operator` is separate: the admin API,
/// RING drain, drain_status and sync, and the node-wide STAT and RING members (with `operator`
/// alone a token may use STAT and RING, nothing else of the data plane).
public struct TokenScopes: OptionSet, Hashable, Sendable, CustomStringConvertible {
  public let rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }

  public static let read = TokenScopes(rawValue: 1 << 0)
  public static let write = TokenScopes(rawValue: 1 << 1)
  public static let delete = TokenScopes(rawValue: 1 << 2)
  public static let `operator` = TokenScopes(rawValue: 1 << 3)

  /// What a token without `scopes` or `admin` gets (the tenant default before scopes existed).
  public static let tenantDefault: TokenScopes = [.read, .write]
  /// What `admin: true` means: everything.
  public static let all: TokenScopes = [.read, .write, .delete, .operator]

  /// Every scope with its name, in order.
  public static let named: [(String, TokenScopes)] = [
    ("read", .read), ("write", .write), ("delete", .delete), ("operator", .operator),
  ]

  /// The scope called `name`, or nil.
  public init?(name: String) {
    guard let found = Self.named.first(where: { $0.0 == name }) else { return nil }
    self = found.1
  }

  public var names: [String] { Self.named.filter { contains($0.1) }.map(\.0) }
  public var description: String { names.isEmpty ? "none" : names.joined(separator: ",") }
}

/// A refusal for a missing scope: the operation, the scope it needs and the scopes held.
public struct ScopeRefusal: Error, Hashable, Sendable {
  public var operation: String
  public var missing: TokenScopes
  public var held: TokenScopes

  public init(operation: String, missing: TokenScopes, held: TokenScopes) {
    self.operation = operation
    self.missing = missing
    self.held = held
  }

  /// `permissionDenied`, naming the scope.
  public var error: StrataError {
    StrataError(
      .permissionDenied,
      "\(operation) needs scope '\(missing)'; this token has scopes \(held) (auth.tokens[].scopes)")
  }

  /// Throws the refusal unless `held` contains `needed`.
  public static func check(_ operation: String, needs needed: TokenScopes, held: TokenScopes) throws(ScopeRefusal) {
    let missing = needed.subtracting(held)
    guard missing.isEmpty else { throw ScopeRefusal(operation: operation, missing: missing, held: held) }
  }
}

/// What one namespace may hold and ask of a node. nil means no limit of that kind.
public struct NamespaceQuota: Hashable, Sendable {
  /// RAM-tier bytes (slot sizes) the namespace's blocks may take; beyond it its own blocks are evicted.
  public var ramBytesMax: Int?
  /// NVMe-tier bytes (record sizes); beyond it its blocks leaving RAM are dropped, not written.
  public var nvmeBytesMax: Int?
  /// RAM the namespace may pin through leases.
  public var pinnedBytesMax: Int
  /// Payload bytes of its requests in flight at once.
  public var inflightBytesMax: Int
  /// Requests per second (a token bucket holding one second's worth).
  public var requestsPerSecond: Int?
  /// Keys LOOKUP may ask about per second (probe limit).
  public var lookupKeysPerSecond: Int?
  /// Misses (LOOKUP keys absent, GET items missing) per second (probe limit).
  public var missesPerSecond: Int?

  public init(
    ramBytesMax: Int? = nil, nvmeBytesMax: Int? = nil, pinnedBytesMax: Int = .max, inflightBytesMax: Int = .max,
    requestsPerSecond: Int? = nil, lookupKeysPerSecond: Int? = nil, missesPerSecond: Int? = nil
  ) {
    self.ramBytesMax = ramBytesMax
    self.nvmeBytesMax = nvmeBytesMax
    self.pinnedBytesMax = pinnedBytesMax
    self.inflightBytesMax = inflightBytesMax
    self.requestsPerSecond = requestsPerSecond
    self.lookupKeysPerSecond = lookupKeysPerSecond
    self.missesPerSecond = missesPerSecond
  }
}

/// The quota of every namespace: one default (from `limits.*_per_namespace`) and overrides by name
/// (`namespaces:` in the file).
public struct NamespaceQuotas: Hashable, Sendable {
  public var defaults: NamespaceQuota
  public var overrides: [Namespace: NamespaceQuota]

  public init(defaults: NamespaceQuota = NamespaceQuota(), overrides: [Namespace: NamespaceQuota] = [:]) {
    self.defaults = defaults
    self.overrides = overrides
  }

  public subscript(namespace: Namespace) -> NamespaceQuota { overrides[namespace] ?? defaults }

  /// The setting that gives `namespace` its value of `field`, for error messages: its `namespaces`
  /// entry (`entry` names the field there) when that sets a value of its own, else the `limits`
  /// default `defaultSetting`.
  public func setting<Value: Equatable>(
    _ field: KeyPath<NamespaceQuota, Value>, of namespace: Namespace, entry: String, default defaultSetting: String
  ) -> String {
    guard let override = overrides[namespace], override[keyPath: field] != defaults[keyPath: field] else {
      return defaultSetting
    }
    return "namespaces entry '\(namespace.name)', \(entry)"
  }

  /// Whether any namespace has a RAM quota (the tier manager then partitions its eviction).
  public var limitsRAM: Bool { defaults.ramBytesMax != nil || overrides.values.contains { $0.ramBytesMax != nil } }
}

/// A token bucket: `ratePerSecond` tokens a second, holding at most `capacity`. Time is passed in
/// (nanoseconds on any monotonic clock), so tests drive it exactly.
public struct TokenBucket: Hashable, Sendable {
  public let ratePerSecond: Int
  public let capacity: Int
  /// Tokens now, in billionths (one token is 1e9), so refills of a few nanoseconds are not lost.
  private var nanoTokens: Int64
  private var lastNanoseconds: UInt64

  /// A full bucket at `now`. `capacity` defaults to one second's worth.
  public init(ratePerSecond: Int, capacity: Int? = nil, now: UInt64) {
    precondition(ratePerSecond > 0, "TokenBucket: ratePerSecond must be positive, got \(ratePerSecond)")
    let capacity = capacity ?? ratePerSecond
    precondition(capacity > 0 && capacity <= Int(Int64.max / 1_000_000_000), "TokenBucket: capacity \(capacity)")
    self.ratePerSecond = ratePerSecond
    self.capacity = capacity
    nanoTokens = Int64(capacity) * 1_000_000_000
    lastNanoseconds = now
  }

  private mutating func refill(_ now: UInt64) {
    guard now > lastNanoseconds else { return }
    let elapsed = now - lastNanoseconds
    lastNanoseconds = now
    let full = Int64(capacity) * 1_000_000_000
    // Saturates: a bucket idle for long is simply full.
    let (added, overflow) = Int64(clamping: elapsed).multipliedReportingOverflow(by: Int64(ratePerSecond))
    nanoTokens = overflow ? full : min(full, nanoTokens.addingReportingOverflow(added).partialValue)
  }

  /// Whole tokens available at `now` (negative while in debt).
  public mutating func available(now: UInt64) -> Int {
    refill(now)
    return Int(nanoTokens / 1_000_000_000)
  }

  /// Takes `count` tokens if they are all there; false (taking nothing) otherwise.
  public mutating func take(_ count: Int, now: UInt64) -> Bool {
    precondition(count >= 0, "TokenBucket.take of \(count)")
    refill(now)
    let cost = Int64(min(count, capacity + 1)) * 1_000_000_000
    guard nanoTokens >= cost else { return false }
    nanoTokens -= cost
    return true
  }

  /// Takes `count` tokens whether or not they are there, going into debt down to minus one
  /// bucket at most: for costs known only afterwards (misses), paid back before more is allowed.
  public mutating func charge(_ count: Int, now: UInt64) {
    precondition(count >= 0, "TokenBucket.charge of \(count)")
    refill(now)
    let cost = Int64(min(count, 2 * capacity)) * 1_000_000_000
    nanoTokens = max(-Int64(capacity) * 1_000_000_000, nanoTokens - cost)
  }

  /// Whether at least one whole token is there (nothing taken).
  public mutating func hasCredit(now: UInt64) -> Bool { available(now: now) >= 1 }
}
