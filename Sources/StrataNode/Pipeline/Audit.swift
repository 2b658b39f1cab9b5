// Audit lines for tenant security events (authentication failures, scope refusals, quota and
// probe-limit refusals, sessions closed by a reload) and their counters. A line never holds a
// token: at most a fingerprint, the first 12 hex digits of the token's SHA-256 digest. Lines are
// rate-limited per event (an attacker must not be able to fill the disk with them); the counters
// are not, and a line after a quiet spell says how many were left out.

import Logging
public import StrataCore

/// The kinds of audit event; the metric label and the `event` field of the line.
public enum AuditEvent: String, Sendable, CaseIterable {
  case authFailure = "auth_failure"
  case scopeDenied = "scope_denied"
  case quotaRefused = "quota_refused"
  case probeLimit = "probe_limit"
  case sessionRevoked = "session_revoked"
}

/// Counts of audit events by kind and detail (the refusing limit, the missing scope, the reason),
/// and by namespace where one is known. Bounded: details are a fixed set of names, namespaces
/// those of configured tokens.
public struct AuditCounters: Sendable, Hashable {
  public struct Key: Sendable, Hashable {
    public var event: AuditEvent
    public var detail: String
    public var namespace: String
  }
  public private(set) var counts: [Key: Int] = [:]
  /// Lines left out by the rate limit.
  public private(set) var suppressedLines = 0

  mutating func add(_ event: AuditEvent, detail: String, namespace: String) {
    counts[Key(event: event, detail: detail, namespace: namespace), default: 0] += 1
  }

  mutating func suppressed() { suppressedLines += 1 }

  /// The total of one event kind, over details and namespaces.
  public func total(_ event: AuditEvent) -> Int { counts.filter { $0.key.event == event }.values.reduce(0, +) }
}

/// The per-event rate limit of audit lines: 20 a second, bursts of 100.
struct AuditLineLimiter {
  static let linesPerSecond = 20
  static let burst = 100
  private var buckets: [AuditEvent: TokenBucket] = [:]
  private var leftOut: [AuditEvent: Int] = [:]

  /// Whether a line of `event` may be written now, and how many were left out before it.
  mutating func admit(_ event: AuditEvent, now: UInt64) -> (write: Bool, leftOut: Int) {
    var bucket =
      buckets[event] ?? TokenBucket(ratePerSecond: Self.linesPerSecond, capacity: Self.burst, now: now)
    defer { buckets[event] = bucket }
    guard bucket.take(1, now: now) else {
      leftOut[event, default: 0] += 1
      return (false, 0)
    }
    return (true, leftOut.removeValue(forKey: event) ?? 0)
  }
}

/// The fingerprint of a token for logs: 12 hex digits of its digest, never the secret.
public func tokenFingerprint(_ digest: TokenDigest) -> String { String(digest.description.dropFirst(7).prefix(12)) }

extension NodeServer {
  /// Counts an audit event from another part of the node (the admin API) and writes its line.
  public func recordAudit(
    _ event: AuditEvent, detail: String, source: String, message: String, fingerprint: String?
  ) {
    audit(event, detail: detail, namespace: nil, source: source, message: message, fingerprint: fingerprint)
  }

  /// Counts an audit event and writes its line (rate-limited) at warning level.
  func audit(
    _ event: AuditEvent, detail: String, namespace: Namespace?, source: String, message: String,
    fingerprint: String? = nil
  ) {
    let (write, leftOut) = auditState { state in
      state.counters.add(event, detail: detail, namespace: namespace?.name ?? "")
      let decision = state.limiter.admit(event, now: MonotonicTime.nowNanoseconds)
      if !decision.write { state.counters.suppressed() }
      return decision
    }
    guard write else { return }
    var metadata: Logger.Metadata = [
      "audit": "\(event.rawValue)", "detail": "\(detail)", "source": "\(source)", "reason": "\(message)",
    ]
    if let namespace { metadata["namespace"] = "\(namespace.name)" }
    if let fingerprint { metadata["token_fingerprint"] = "\(fingerprint)" }
    if leftOut > 0 { metadata["lines_left_out"] = "\(leftOut)" }
    logger.warning("audit", metadata: metadata)
  }
}
