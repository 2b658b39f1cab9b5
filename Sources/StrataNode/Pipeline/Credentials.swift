// The tokens in force and the live sessions each granted, under one lock: a config reload that
// removes a token, moves it to another namespace or narrows its scopes closes the sessions it
// granted (TCP and RDMA), and a session registered after such a reload is refused on its first
// request. Tokens are matched by SHA-256 digest in constant time; secrets are never kept.

import StrataConfig
public import StrataCore

/// How a session was granted: by a tenant token (its digest), by the open embedded default (no
/// tokens configured), or as a peer node (the cluster token).
public enum SessionCredential: Hashable, Sendable {
  case token(TokenDigest)
  case open
  case peer
}

/// The tokens in force and the sessions they granted. A pure value; the server keeps one under a
/// lock and runs the closers `replace` returns after releasing it.
struct CredentialTable {
  struct LiveSession {
    var credential: SessionCredential
    var namespace: Namespace
    var scopes: TokenScopes
    var close: @Sendable () -> Void
    var revoked = false
  }

  private(set) var tokens: [NodeConfiguration.Auth.Token]
  private var sessions: [Int: LiveSession] = [:]
  private var nextSession = 0

  init(tokens: [NodeConfiguration.Auth.Token]) { self.tokens = tokens }

  /// Whether a session granted as `credential` in `namespace` with `scopes` would still be
  /// granted at least that under the tokens in force.
  func stillGranted(_ credential: SessionCredential, namespace: Namespace, scopes: TokenScopes) -> Bool {
    switch credential {
    case .peer: return true
    case .open: return tokens.isEmpty
    case .token(let digest):
      var granted = false
      for token in tokens where token.digest.constantTimeEquals(digest) {
        granted = token.namespace == namespace && token.scopes.isSuperset(of: scopes)
      }
      return granted
    }
  }

  /// Registers a session; it is revoked at once if the tokens changed since it was granted.
  mutating func register(
    _ credential: SessionCredential, namespace: Namespace, scopes: TokenScopes, close: @escaping @Sendable () -> Void
  ) -> Int {
    let id = nextSession
    nextSession += 1
    var session = LiveSession(credential: credential, namespace: namespace, scopes: scopes, close: close)
    session.revoked = !stillGranted(credential, namespace: namespace, scopes: scopes)
    sessions[id] = session
    return id
  }

  mutating func unregister(_ id: Int) { sessions[id] = nil }

  func isRevoked(_ id: Int) -> Bool { sessions[id]?.revoked ?? true }

  /// Puts `new` in force; returns the closers of the sessions it revokes (each once) and their
  /// namespaces, for the audit log.
  mutating func replace(_ new: [NodeConfiguration.Auth.Token]) -> [(namespace: Namespace, close: @Sendable () -> Void)]
  {
    tokens = new
    var closers: [(Namespace, @Sendable () -> Void)] = []
    for (id, session) in sessions where !session.revoked {
      guard !stillGranted(session.credential, namespace: session.namespace, scopes: session.scopes) else { continue }
      sessions[id]!.revoked = true
      closers.append((session.namespace, session.close))
    }
    return closers
  }
}
