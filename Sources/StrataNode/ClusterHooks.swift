// The seam between the data plane and the cluster layer. The node's connections call these hooks;
// the cluster module (StrataCluster) implements them. A node without a cluster (the embedded
// default) has none, and then serves every key it is asked for.

public import StrataCore
public import StrataStorage
import StrataWire

#if canImport(Glibc)
  import Glibc
#endif

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

  /// A client (not a peer) stored blocks here (`stored`), or sent blocks this node already held
  /// (`present`): copy them to their other owners so that each is held by `writeQuorum` of its
  /// owners (0: the node's `cluster.write_quorum`) before the PUT is acknowledged, all by
  /// `deadline`. Returns nil when every block reached its quorum, else the error to answer with
  /// (`quorumNotReached`, naming how many copies exist). Copies not made now are queued.
  func replicate(stored: [BlockID], present: [BlockID], writeQuorum: UInt8, deadline: Deadline) async -> StrataError?

  /// Whether misses are read through now (a ring change happened within the fill window): when
  /// false, the data plane does not even look for missing blocks.
  var readsThrough: Bool { get }

  /// A client asked for these blocks and this node lacks them: read them through from the keys'
  /// previous owners (after a ring change) and keep them, by `deadline` (the request's: a fill
  /// outliving it only makes its answer late). Returns how many were filled.
  func fill(_ ids: [BlockID], deadline: Deadline) async -> Int

  /// Whether writes are taken, a peer's copies (replication, repair, handoff, write-quorum copies)
  /// and a client's PUTs: false once this node is draining. It owns no key then and is leaving: a
  /// copy it took would leave with it, while the sender (whose ring may not show the drain yet)
  /// counted it as made; a client's PUT it coordinated could leave an owner without its copy.
  var takesCopies: Bool { get }

  /// The id of a current ring member that `names` accepts (called with each member's id and its
  /// address's host): a node certificate's identity checked against the ring.
  func member(named names: (String) -> Bool) -> String?
}

/// The cluster steps of a data-plane request, the same for both transports (Connection.swift,
/// RDMA/RDMASession.swift): they apply to a client's requests on a cluster node, never to a
/// peer's (replication, read-through and handoff traffic).
extension NodeServer {
  /// The cluster, when a request on a connection so marked should be routed by it.
  func routingCluster(isPeer: Bool) -> (any ClusterHooks)? { isPeer ? nil : cluster }

  /// Refuses every PUT while this node is draining (`ClusterHooks.takesCopies`): a peer's copy
  /// (the sender's ring is older than the drain), and a client's, which a ring-aware client never
  /// sends (the node owns no key). A node about to leave cannot stand behind a write: its ring may
  /// be older than the cluster's (a node joined meanwhile), and the copy an owner missed would wait
  /// in a queue that leaves with it, with no other node knowing that owner lacks the block
  /// (simulation seeds 36801, 45984, 52640, 60603, 89694, 98433). A per-request refusal: the
  /// connection stays, and a client's reads are served until the node exits.
  func checkTakesWrites(isPeer: Bool) throws(StrataError) {
    guard let cluster, !cluster.takesCopies else { return }
    throw StrataError(
      .staleEpoch,
      isPeer
        ? "node \(configuration.nodeID) is draining: it owns no key and takes no copies; send them to the owners in the current ring"
        : "node \(configuration.nodeID) is draining: it owns no key and takes no writes; write to the owners in the current ring"
    )
  }

  /// Refuses a ring-aware client's request (`ringEpoch` ≠ 0) for a key this node does not own.
  func checkOwnership(_ keys: [BlockKey], ringEpoch: UInt64, isPeer: Bool) throws(StrataError) {
    guard ringEpoch != 0, let cluster = routingCluster(isPeer: isPeer), let key = cluster.firstUnowned(keys) else {
      return
    }
    throw StrataError(
      .staleEpoch,
      "node \(configuration.nodeID) does not own key \(key.hex.prefix(16))… at ring epoch \(cluster.epoch) (request at epoch \(ringEpoch)); fetch the ring and retry"
    )
  }

  /// Reads blocks this node lacks through from their previous owners (after a ring change).
  func fillMissing(_ ids: [BlockID], isPeer: Bool, deadline: Deadline) throws(StrataError) {
    guard let cluster = routingCluster(isPeer: isPeer), cluster.readsThrough else { return }
    let missing = zip(ids, tiers.lookup(ids)).compactMap { id, tier in tier == .absent ? id : nil }
    guard !missing.isEmpty else { return }
    _ = try waitForTask { () throws(StrataError) in await cluster.fill(missing, deadline: deadline) }
    // A fill that met a copy of the same block being written (a peer's repair or replication)
    // left it to that write: wait a little for it to commit, so the read finds the block.
    _ = tiers.waitForWrites(of: missing, until: .after(milliseconds: Self.fillWriteWaitMilliseconds))
  }

  /// How long a read that filled blocks waits for concurrent writes of them to commit.
  static let fillWriteWaitMilliseconds: UInt64 = 200

  /// Hands the blocks a client PUT to the cluster, to be copied to their other owners; returns
  /// once the write quorum holds each (or throws `quorumNotReached`), within `deadline`. The
  /// connection's thread waits for the copies; what it holds meanwhile (its in-flight bytes, the
  /// PUT's blocks) is bounded by the admission limits, and every copy by the deadline.
  func replicate(
    _ items: [PutRequest.Item], outcomes: [PutOutcome], namespace: Namespace, isPeer: Bool,
    writeQuorum: UInt8, deadline: Deadline
  ) throws(StrataError) {
    guard let cluster = routingCluster(isPeer: isPeer) else { return }
    var stored: [BlockID] = []
    var present: [BlockID] = []
    for (item, outcome) in zip(items, outcomes) {
      switch outcome {
      case .stored: stored.append(BlockID(namespace: namespace, key: item.key))
      case .alreadyPresent: present.append(BlockID(namespace: namespace, key: item.key))
      default: continue
      }
    }
    guard !stored.isEmpty || !present.isEmpty else { return }
    let failure = try waitForTask { [stored, present] () throws(StrataError) in
      await cluster.replicate(stored: stored, present: present, writeQuorum: writeQuorum, deadline: deadline)
    }
    if let failure { throw failure }
  }
}
