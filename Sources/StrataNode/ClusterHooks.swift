// The seam between the data plane and the cluster layer. The node's connections call these hooks;
// the cluster module (StrataCluster) implements them. A node without a cluster (the embedded
// default) has none, and then serves every key it is asked for.

public import StrataCore
public import StrataStorage

/// What a connection asks of the cluster layer.
public protocol ClusterHooks: Sendable {
  /// The ring epoch this node works at; sent in every response header and in HELLO.
  var epoch: UInt64 { get }

  /// Answers a RING request. The body is the cluster module's own (JSON); `isAdmin` says whether
  /// the connection may run admin-scoped operations (drain).
  func answerRing(_ body: [UInt8], isAdmin: Bool) async throws(StrataError) -> [UInt8]

  /// The first of `keys` that this node does not own at its epoch, if any. Checked only for
  /// ring-aware clients (a request header with a nonzero epoch), so a client routing on an old
  /// ring learns of the new one (`staleEpoch`) instead of writing where nobody reads.
  func firstUnowned(_ keys: [BlockKey]) -> BlockKey?

  /// A client (not a peer) stored these blocks here: copy them to their other owners.
  func stored(_ ids: [BlockID])

  /// A client asked for these blocks and this node lacks them: read them through from the keys'
  /// previous owners (after a ring change) and keep them. Returns how many were filled.
  func fill(_ ids: [BlockID]) async -> Int
}
