// ClusterNode: the cluster layer of one node. It keeps the ring (from static configuration or from
// etcd), answers RING requests (ring, members, drain), decides ownership for ring-aware clients,
// copies client PUTs to the other owners, reads misses through from previous owners after a ring
// change, probes static peers, and runs a drain. The data plane reaches it through ClusterHooks.

import Foundation
public import Logging
public import StrataConfig
public import StrataCore
public import StrataNode
public import StrataPlacement
public import StrataStorage
public import StrataTCP
import Synchronization

/// Member ids by address, shared by the ring upkeep (writer) and peer connections (readers).
final class MemberIdentities: Sendable {
  private let byAddress = Mutex<[HostPort: [String]]>([:])

  func record(_ addresses: [String: HostPort]) {
    var next: [HostPort: [String]] = [:]
    for (id, address) in addresses { next[address, default: []].append(id) }
    byAddress.withLock { $0 = next }
  }

  func ids(at address: HostPort) -> [String] { byAddress.withLock { $0[address] ?? [] } }
}

/// The cluster's TLS material as of the last start or config reload. `generation` grows with
/// every replacement, so peer connection pools can tell their clients are out of date.
final class ClusterCredentials: Sendable {
  struct Values {
    var peerTLS: TLSContext?
    var etcdTLS: TLSContext?
    var memberCertificate = ""
    var memberAuthority: CertificateAuthority?
    var generation = 0
  }
  private let values = Mutex(Values())

  var current: Values { values.withLock { $0 } }

  func update(_ change: (inout Values) -> Void) {
    values.withLock { values in
      change(&values)
      values.generation += 1
    }
  }
}

public final class ClusterNode: ClusterHooks {
  /// What the cluster layer needs from the node's configuration.
  public struct Settings: Sendable {
    public var mode: MembershipMode
    /// This node as a ring member (in static mode its id is its address).
    public var me: Member
    public var nodeID: String
    public var staticPeers: [HostPort]
    public var etcd: String
    public var etcdPrefix: String
    public var leaseTTLSeconds: Int64
    public var replicas: Int?
    /// `cluster.write_quorum`; nil: auto (WriteQuorum.swift).
    public var writeQuorum: Int?
    public var replicationQueueMax: Int
    public var fillWindowMilliseconds: UInt64
    public var probeIntervalMilliseconds: UInt64
    /// The namespaces of the configured tokens: those whose blocks are copied to peers.
    public var namespaces: [Namespace]
    /// What a node presents to its peers (`cluster.token`); empty on an open node (no tokens).
    public var clusterToken: String
    public var blockBytesMax: Int
    public var peerTimeoutMilliseconds: UInt64 = 10_000
    /// The timeout of copies to a peer the probes found down.
    public var suspectPeerTimeoutMilliseconds: UInt64 = 2_000
    /// How long after blocks became under-replicated a repair of them is tried with no ring change
    /// to start one; doubled after each retry that leaves some, up to `underReplicatedRetryMaxMilliseconds`.
    public var underReplicatedRetryMilliseconds: UInt64 = 5_000
    public var underReplicatedRetryMaxMilliseconds: UInt64 = 300_000
    /// When a block dropped as damaged that no other owner gave back is tried again.
    public var readBackSchedule = ReadBackSchedule.standard
    /// TLS to peers (`TLSContext.client` with the node certificate and the cluster CA); nil:
    /// plaintext. Each peer's certificate must name its member id (in static mode, whose ids are
    /// addresses: the address's host).
    public var peerTLS: TLSContext? {
      get { credentials.current.peerTLS }
      nonmutating set { credentials.update { $0.peerTLS = newValue } }
    }
    /// TLS to an `https://` etcd (`cluster.etcd_ca`, else `tls.ca`; the client certificate of
    /// `cluster.etcd_cert`); nil for `http://`.
    public var etcdTLS: TLSContext? {
      get { credentials.current.etcdTLS }
      nonmutating set { credentials.update { $0.etcdTLS = newValue } }
    }
    /// This node's certificate chain (PEM, certificates only), published in its etcd member record.
    public var memberCertificate: String {
      get { credentials.current.memberCertificate }
      nonmutating set { credentials.update { $0.memberCertificate = CertificateCheck.certificatesOnly(newValue) } }
    }
    /// The cluster CA that etcd member records' certificates must chain to; nil (no TLS): every
    /// well-formed record is honoured.
    public var memberAuthority: CertificateAuthority? {
      get { credentials.current.memberAuthority }
      nonmutating set { credentials.update { $0.memberAuthority = newValue } }
    }
    /// The TLS material above, shared by every copy of these settings: a config reload replaces it
    /// (`ClusterNode.reloadCredentials`) while the node runs.
    let credentials = ClusterCredentials()
    /// etcd user and password (`cluster.etcd_user`, `cluster.etcd_password`); empty: none.
    public var etcdUser: String
    public var etcdPassword: String
    /// The member ids known at each address (kept by `adopt`), read when connecting to a peer.
    let identities = MemberIdentities()
    /// This process's instance (the data plane's STAT `instance`), written into the etcd member
    /// record so that a restart within the lease TTL is seen; 0: none.
    public var instance: Int = 0
    /// The clock of the fill window, the drain and repair schedules and member certificate checks
    /// (tests pass a `ManualClock`).
    public var clock: any NodeClock = SystemClock()
    /// How the cluster layer reaches its peers; nil: TCP (TLS when configured). The simulator
    /// passes in-memory connections into the other nodes' request pipelines.
    public var peerTransport: (any PeerTransport)?
    /// Where the node's background work (replicator, drain, repair, probes) runs; nil: Swift's
    /// global executor. The simulator passes an executor its run loop drives.
    public var executor: (any TaskExecutor)?
    /// Points per member on the ring; only the simulator changes it (fewer, for speed).
    public var virtualNodes = Ring.defaultVirtualNodes

    public init(configuration: NodeConfiguration, nodeID: String, advertise: HostPort, capacityBytes: UInt64) {
      mode = configuration.cluster.mode
      self.nodeID = nodeID
      let isStatic = mode != .etcd
      me = Member(
        id: isStatic ? advertise.description : nodeID, address: advertise.description, adminAddress: nil,
        capacityBytes: isStatic ? 0 : capacityBytes, zone: isStatic ? "" : configuration.node.zone,
        transports: ["tcp"], state: .active)
      staticPeers = configuration.cluster.peers
      etcd = configuration.cluster.etcd
      etcdPrefix = configuration.cluster.etcdPrefix
      leaseTTLSeconds = Int64(configuration.cluster.leaseTTL.milliseconds / 1000)
      replicas = configuration.cluster.replicas
      writeQuorum = configuration.cluster.writeQuorum
      replicationQueueMax = configuration.cluster.replicationQueueMax
      fillWindowMilliseconds = configuration.cluster.fillWindow.milliseconds
      probeIntervalMilliseconds = configuration.cluster.probeInterval.milliseconds
      namespaces = Array(Set(configuration.auth.tokens.map(\.namespace))).sorted { $0.name < $1.name }
      clusterToken = configuration.cluster.token
      etcdUser = configuration.cluster.etcdUser
      etcdPassword = configuration.cluster.etcdPassword
      blockBytesMax = Int(configuration.limits.blockBytesMax.bytes)
    }
  }

  struct State {
    var history: RingHistory
    var addresses: [String: HostPort] = [:]
    var health: [String: PeerHealth] = [:]
    /// The process instance each peer last answered probes as.
    var instances: [String: Int] = [:]
    /// etcd member records not honoured (MemberRecord.swift).
    var rejectedMembers = MemberRejections()
    /// Records superseded now by another record at their address (`AddressClaims`): id to the id
    /// holding it; and how many distinct supersessions were seen since start.
    var supersededMembers: [String: String] = [:]
    var supersededTotal = 0
    var service: MembershipServiceState = .notUsed
    var stopped = false
    /// From the drain's start: this node is draining in every ring it adopts, whatever the
    /// membership says (its own announcement may not have come back yet, and after it deregisters
    /// it hears nothing more), so it never owns a key again.
    var draining = false
    /// The first ring epoch at which the membership published this node draining (its own record
    /// come back from etcd; 1 in static mode, where the announcement is local). A peer that
    /// answers at this epoch or later owns without this node, so it never drops a handed copy
    /// because this node held one (the drain's `holdersFrom`).
    var drainPublishedAtEpoch: UInt64?
  }

  public let settings: Settings
  let tiers: TierManager
  let logger: Logger
  let state: Mutex<State>
  /// Held while a ring is adopted, and while a repair pass checks that it does not own a block and
  /// drops it (Repair.swift): no ring is adopted between the two. A lock of its own, so that a
  /// drop's disk write (a tombstone) never holds `state`, which every response reads for its epoch.
  let ringChange = Mutex(())
  let peers: PeerClients
  /// Peer connections for the copies a PUT waits for (WriteQuorum.swift): a pool of their own, so
  /// they never queue behind the asynchronous replicator's batches.
  let syncPeers: PeerClients
  let quorumStats = Mutex(WriteQuorumStats())
  let replicator: Replicator
  let readThrough: ReadThrough
  let drain = HandoffTracker()
  /// Blocks that copies to other nodes refused because their RAM bytes failed their stored checksum.
  let corruptCopies = CorruptCopyCounter()
  /// Blocks whose copy to another owner failed and has not been made since (UnderReplicated.swift).
  let underReplicated = UnderReplicatedTracker()
  /// Owned blocks dropped as damaged, being read back from their other owners.
  let damagedPending: Mutex<DamagedReadBack>
  /// Blocks whose demotion to NVMe failed, by what became of them (DiskFailure.swift).
  let demotionFailures = Mutex(DemotionFailureStats())
  /// The latest repair pass: after members leave, this node copies the blocks it owns to their
  /// other owners that lack them, so every block regains R copies (Repair.swift).
  let repair = HandoffTracker()
  let repairState = Mutex(RepairState())
  private let onDrained = Mutex<(@Sendable () -> Void)?>(nil)
  private let membership = Mutex<(any MembershipSource)?>(nil)
  /// The replicator's loop and the drain and repair passes: cancelled at `stop`.
  let tasks: OwnedTasks

  public init(settings: Settings, tiers: TierManager, logger: Logger) {
    self.settings = settings
    self.tiers = tiers
    self.logger = logger
    tasks = OwnedTasks(executor: settings.executor)
    peers = PeerClients(settings: settings, timeoutMilliseconds: settings.peerTimeoutMilliseconds)
    syncPeers = PeerClients(
      settings: settings, timeoutMilliseconds: settings.peerTimeoutMilliseconds,
      connections: PeerClients.syncConnections)
    replicator = Replicator(
      tiers: tiers, peers: peers,
      suspectPeers: PeerClients(settings: settings, timeoutMilliseconds: settings.suspectPeerTimeoutMilliseconds),
      queueMax: settings.replicationQueueMax, corruptCopies: corruptCopies, underReplicated: underReplicated,
      logger: logger)
    readThrough = ReadThrough(tiers: tiers, peers: peers, blockBytesMax: settings.blockBytesMax)
    damagedPending = Mutex(DamagedReadBack(limit: Self.damagedPendingMax, schedule: settings.readBackSchedule))
    let first = Self.makeRing(members: [settings.me], epoch: 0, settings: settings)
    state = Mutex(
      State(
        history: RingHistory(current: first, previous: nil, changedAtMilliseconds: settings.clock.nowMilliseconds())))
    tiers.setDamagedHandler { [weak self] ids in self?.readBackDamaged(ids) }
  }

  /// A ring over `members` with the configured (or default) replication factor.
  static func makeRing(members: [Member], epoch: UInt64, settings: Settings) -> Ring {
    let active = members.filter { $0.state == .active }.count
    return Ring(
      members: members, epoch: epoch,
      replicationFactor: settings.replicas ?? Ring.defaultReplicationFactor(activeMembers: active),
      virtualNodes: settings.virtualNodes)
  }

  /// Starts membership (static list or etcd, or `membership` when given: the simulator's model of
  /// etcd), the replicator and, in static mode, peer probes.
  public func start(membership given: (any MembershipSource)? = nil) throws(StrataError) {
    let source: any MembershipSource
    switch (given, settings.mode) {
    case (let given?, _): source = given
    case (nil, .single), (nil, .staticPeers): source = StaticMembership(node: self)
    case (nil, .etcd): source = try EtcdMembership(node: self)
    }
    membership.withLock { $0 = source }
    // Weak: the tier manager outlives neither this node nor its stop, and must not keep it alive.
    tiers.setDemotionFailureHandler { [weak self] block, error in
      await self?.demotionFailed(block, error: error) ?? .keep
    }
    let replicator = self.replicator
    tasks.start { await replicator.run() }
    tasks.start { [self] in await retryUnderReplicated() }
    source.start()
  }

  /// Waits, at most `milliseconds` (on the node's clock), until every replication copy queued
  /// so far has been sent or dropped, then, in what is left of that time, makes one pass over the
  /// blocks whose copy failed earlier (a peer away or slow for a moment: their retry would come
  /// after the stop). Returns how many copies were still queued or in flight, and blocks still
  /// short of an owner. A graceful stop calls it before `stop`, which drops what is queued (those
  /// blocks would stay short of their owners until a repair pass elsewhere).
  public func finishReplication(withinMilliseconds milliseconds: UInt64) async -> (queued: Int, failed: Int) {
    let replicator = self.replicator
    let clock = settings.clock
    let end = clock.nowMilliseconds() + milliseconds
    await finish(by: end) { await replicator.waitForQueuedCopies() }
    let failed = underReplicated.ids
    if !failed.isEmpty && clock.nowMilliseconds() < end {
      // On the node's task set, which `stop` cancels: the wait below ends at `end` whatever the
      // pass is doing then.
      let (passed, done) = AsyncStream<Void>.makeStream()
      tasks.start { [self] in
        _ = await repairPass(only: failed)
        done.finish()
      }
      await finish(by: end) { for await _ in passed {} }
    }
    return (replicator.stats.queued, underReplicated.ids.count)
  }

  /// Runs `work` until it returns or the node's clock reaches `end`, whichever comes first
  /// (`work` is cancelled then and must end at once).
  private func finish(by end: UInt64, _ work: @escaping @Sendable () async -> Void) async {
    let clock = settings.clock
    let now = clock.nowMilliseconds()
    guard now < end else { return }
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await work() }
      group.addTask { await clock.sleep(milliseconds: end - now) }
      await group.next()
      group.cancelAll()
    }
  }

  /// Stops membership (deregistering from etcd when `deregister`), replication and probes.
  public func stop(deregister: Bool) {
    state.withLock { $0.stopped = true }
    // Taken out: a membership source holds its node, which must not outlive its stop.
    membership.withLock { source in
      defer { source = nil }
      return source
    }?.stop(deregister: deregister)
    replicator.stop()
    tasks.cancelAll()
    peers.closeAll()
    syncPeers.closeAll()
  }

  /// Called once a drain has handed off every block and left the ring.
  public func setOnDrained(_ action: @escaping @Sendable () -> Void) {
    onDrained.withLock { $0 = action }
  }

  public var ring: Ring { state.withLock { $0.history.current } }
  public var replicationStats: ReplicationStats { replicator.stats }
  public var writeQuorumStats: WriteQuorumStats { quorumStats.withLock { $0 } }
  /// Blocks under-replicated now (UnderReplicated.swift), failures not tracked because the set
  /// was full, and its limit.
  public var underReplicatedCounts: (blocks: Int, overflowed: Int, limit: Int) { underReplicated.counts }
  public var demotionFailureStats: DemotionFailureStats { demotionFailures.withLock { $0 } }
  public var fillStats: FillStats { readThrough.stats }
  /// Blocks dropped as damaged: waiting to be read back, and the totals since start.
  public var damagedReadBack: DamagedReadBack.Counts { damagedPending.withLock { $0.counts } }
  public var drainProgress: HandoffProgress { drain.withLock { $0 } }
  /// Blocks refused by replication, drain and repair since start because their RAM bytes no
  /// longer matched their stored checksum (each removed from this node).
  public var corruptCopyBlocks: Int { corruptCopies.total }
  /// Times etcd membership found its watch behind on a relist and resynced.
  public var membershipWatchResyncs: Int { membership.withLock { $0?.watchResyncs ?? 0 } }
  public var serviceState: MembershipServiceState { state.withLock { $0.service } }
  var isStopped: Bool { state.withLock { $0.stopped } }

  /// Adopts a new ring (from membership); logs the change.
  /// `written`: the revision each member's record was last written at (etcd's), which decides
  /// between records that claim one address (`AddressClaims`); nil where no two can (static
  /// membership, whose ids are addresses, and this node's own re-adoption of its ring).
  public func adopt(members given: [Member], epoch: UInt64, written: [String: UInt64]? = nil) {
    let me = settings.me.id
    var members = given
    if let written {
      let claims = AddressClaims.resolve(given, written: written)
      noteSuperseded(claims.superseded)
      members = claims.kept
    }
    if let index = members.firstIndex(where: { $0.id == me }) {
      let published = members[index].state == .draining
      let draining = state.withLock { state -> Bool in
        if state.draining, published, state.drainPublishedAtEpoch == nil { state.drainPublishedAtEpoch = epoch }
        return state.draining
      }
      if draining { members[index].state = .draining }
    }
    let next = Self.makeRing(members: members, epoch: epoch, settings: settings)
    let (changed, first, departed, joined) = ringChange.withLock { _ in
      state.withLock { state -> (Bool, Bool, [String], [String]) in
        let first = state.history.current.epoch == 0
        let before = Set(state.history.current.activeMembers.map(\.id))
        let changed = state.history.adopt(next, atMilliseconds: settings.clock.nowMilliseconds())
        if changed && first {
          // The first real ring: this node has just joined (or come back). Its keys' previous
          // owners are those of the ring without it, who held them meanwhile: read through from them.
          state.history.previous = Ring(
            members: next.members.filter { $0.id != me }, epoch: next.epoch, replicationFactor: next.replicationFactor,
            virtualNodes: next.virtualNodes)
        }
        if changed {
          // The new ring's address of a member wins: one that moved to another host (a pod
          // rescheduled: same id, a new address) is reached there, not at its old address from
          // the previous ring (simulation seed 129).
          state.addresses = [:]
          for member in (state.history.previous?.members ?? []) + next.members {
            if let address = try? HostPort(parsing: member.address) { state.addresses[member.id] = address }
          }
          settings.identities.record(state.addresses)
          // What is known of members no longer in either ring is forgotten with them.
          let known = Set(state.addresses.keys)
          state.health = state.health.filter { known.contains($0.key) }
          state.instances = state.instances.filter { known.contains($0.key) }
        }
        let departed = first || !changed ? [] : before.subtracting(next.activeMembers.map(\.id)).sorted()
        let joined = first || !changed ? [] : Set(next.activeMembers.map(\.id)).subtracting(before).sorted()
        return (changed, first, departed, joined)
      }
    }
    if changed {
      // Channels to members of the previous ring only are made again if a read-through asks.
      let members = Set(next.members.compactMap { try? HostPort(parsing: $0.address) })
      for pool in [peers, syncPeers, replicator.suspectPeers] { pool.keep(only: members) }
      logger.info(
        "ring changed",
        metadata: [
          "epoch": "\(epoch)", "members": "\(next.activeMembers.map(\.id).joined(separator: ","))",
          "draining": "\(next.members.filter { $0.state == .draining }.map(\.id).joined(separator: ","))",
          "replicas": "\(next.replicationFactor)",
        ])
    }
    // Members that left: their blocks are down to one copy. Members that joined (a restarted
    // node, or a new one) own keys they lack, and a key's other copy may now sit on a node that
    // no longer owns it: either way a repair pass gives every owned block its owners again, so
    // the next single failure loses no acknowledged block.
    // This node's first ring: the blocks it recovered from its disk, or took while it served
    // alone, may be owned by others, who do not know this node holds them: its own pass offers them.
    let firstWithBlocks = changed && first && !tiers.holdsNoBlocks
    if (!departed.isEmpty || !joined.isEmpty || firstWithBlocks) && next.activeMembers.contains(where: { $0.id == me })
    {
      let reasons = [
        departed.isEmpty ? nil : "members left: \(departed.joined(separator: ","))",
        joined.isEmpty ? nil : "members joined: \(joined.joined(separator: ","))",
        firstWithBlocks ? "first ring, with blocks held" : nil,
      ]
      scheduleRepair(reason: reasons.compactMap { $0 }.joined(separator: "; "))
    }
  }

  /// Records a probe's finding. A peer that comes back after being found down, or that answers as
  /// a new process instance (it restarted, maybe faster than a probe interval), may have lost its
  /// RAM blocks: a repair pass copies it the blocks it owns that this node holds.
  func setHealth(_ id: String, _ health: PeerHealth, instance: Int? = nil) {
    let (changed, restarted) = state.withLock { state -> (Bool, Bool) in
      let before = state.health[id]
      state.health[id] = health
      var restarted = before == .down && health == .up
      if let instance, instance != 0 {
        if let known = state.instances[id], known != instance { restarted = true }
        state.instances[id] = instance
      }
      return (before != health, restarted)
    }
    if changed { logger.info("peer health", metadata: ["peer": "\(id)", "health": "\(health.rawValue)"]) }
    if restarted && !isStopped { scheduleRepair(reason: "peer \(id) came back") }
  }

  /// etcd: the process instance each member registered with. A member whose instance changed
  /// restarted, maybe within its lease TTL (its key, and so the ring, stayed): it may have lost
  /// its RAM blocks and its disk, so a repair pass copies it the blocks it owns. Each member
  /// registered is `up`: etcd holds its record only while its process keeps the lease alive (no
  /// probes run in etcd mode).
  public func noteInstances(_ instances: [String: Int]) {
    let me = settings.me.id
    let restarted = state.withLock { state -> [String] in
      for id in instances.keys where id != me { state.health[id] = .up }
      var restarted: [String] = []
      for (id, instance) in instances where id != me && instance != 0 {
        if let known = state.instances[id], known != instance { restarted.append(id) }
        state.instances[id] = instance
      }
      return restarted.sorted()
    }
    guard !restarted.isEmpty, !isStopped, ring.activeMembers.contains(where: { $0.id == me }) else { return }
    logger.info("members restarted", metadata: ["members": "\(restarted.joined(separator: ","))"])
    scheduleRepair(reason: "members restarted: \(restarted.joined(separator: ","))")
  }

  /// This node's etcd member record for `member` (its certificate when TLS is on).
  func memberRecord(_ member: Member) -> MemberRecord {
    MemberRecord(member: member, instance: settings.instance, certificate: settings.memberCertificate)
  }

  /// The CA member records must chain to (nil without TLS).
  var memberAuthority: CertificateAuthority? { settings.memberAuthority }

  /// Counts and logs (once per distinct record) the member records etcd holds that the ring does not honour.
  func noteRejectedMembers(_ rejected: [String: MemberAdmission.Rejection], records: [String: [UInt8]]) {
    let fresh = state.withLock { $0.rejectedMembers.note(rejected, values: records) }
    for (id, rejection) in fresh {
      logger.warning(
        "etcd: member record not honoured: it takes no share of the ring",
        metadata: [
          "audit": "member_rejected", "member": "\(id)", "reason": "\(rejection.label)",
          "detail": "\(rejection.words)",
        ])
    }
  }

  /// Counts and logs (once each) records newly superseded by another record at their address.
  private func noteSuperseded(_ superseded: [String: String]) {
    let fresh = state.withLock { state -> [(String, String)] in
      let fresh = superseded.filter { state.supersededMembers[$0.key] != $0.value }.sorted { $0.key < $1.key }
      state.supersededMembers = superseded
      state.supersededTotal += fresh.count
      return fresh
    }
    for (id, holder) in fresh {
      logger.warning(
        "member record not honoured: another record claims its address; it takes no share of the ring while it stays",
        metadata: [
          "audit": "member_rejected", "member": "\(id)", "reason": "address_taken", "address_held_by": "\(holder)",
        ])
    }
  }

  /// Distinct member records rejected since start, by reason (the metric label), and how many
  /// the membership holds now (etcd's records rejected, and records another at their address
  /// supersedes: `address_taken`).
  public var memberRejections: (totals: [String: Int], now: Int) {
    state.withLock { state in
      var totals = state.rejectedMembers.totals
      if state.supersededTotal > 0 { totals["address_taken"] = state.supersededTotal }
      return (totals, state.rejectedMembers.current.count + state.supersededMembers.count)
    }
  }

  /// The reasons a member record can be rejected for (metric labels).
  public static var memberRejectionReasons: [String] { MemberAdmission.rejectionLabels + ["address_taken"] }

  /// Puts renewed TLS material in force (config reload): new peer and etcd connections present the
  /// new certificates (open ones keep theirs), and the etcd member record is written again with
  /// the new certificate chain. The node's TLS state (on or off) cannot change here.
  public func reloadCredentials(
    peerTLS: TLSContext?, etcdTLS: TLSContext?, memberCertificate: String, memberAuthority: CertificateAuthority?
  ) {
    settings.credentials.update { values in
      values.peerTLS = peerTLS
      values.etcdTLS = etcdTLS
      values.memberCertificate = CertificateCheck.certificatesOnly(memberCertificate)
      values.memberAuthority = memberAuthority
    }
    membership.withLock { $0 }?.reloadCredentials()
  }

  func setService(_ service: MembershipServiceState) {
    state.withLock { $0.service = service }
  }

  // MARK: ClusterHooks

  public var epoch: UInt64 { state.withLock { $0.history.current.epoch } }

  public func firstUnowned(_ keys: [BlockKey]) -> BlockKey? {
    let ring = state.withLock { $0.history.current }
    guard let me = ring.members.firstIndex(where: { $0.id == settings.me.id }) else { return keys.first }
    for key in keys where !ring.isOwner(memberIndex: me, of: key) { return key }
    return nil
  }

  public var readsThrough: Bool { fillWindowIsOpen(state.withLock { $0.history }) }

  public var takesCopies: Bool { !state.withLock { $0.draining } }

  /// A member of the current ring (or a configured static peer, ring member or not while it is
  /// down) that `names` accepts by its id or its address's host.
  public func member(named names: (String) -> Bool) -> String? {
    let members = state.withLock { $0.history.current.members }
    for member in members {
      if names(member.id) { return member.id }
      if let address = try? HostPort(parsing: member.address), names(address.host) { return member.id }
    }
    return settings.staticPeers.first { names($0.host) || names($0.description) }?.description
  }

  /// Within `cluster.fill_window` of the last ring change (or of this node's start).
  private func fillWindowIsOpen(_ history: RingHistory) -> Bool {
    history.previous != nil
      && settings.clock.nowMilliseconds() - history.changedAtMilliseconds < settings.fillWindowMilliseconds
  }

  public func fill(_ ids: [BlockID], deadline: Deadline) async -> Int {
    let (history, addresses) = state.withLock { ($0.history, $0.addresses) }
    guard fillWindowIsOpen(history), let previous = history.previous else { return 0 }
    let me = settings.me.id
    // Only keys this node owns now and whose owners changed.
    let wanted = ids.filter { id in
      let now = history.current.owners(of: id.key).map(\.id)
      return now.contains(me) && previous.owners(of: id.key).map(\.id) != now
    }
    guard !wanted.isEmpty else { return 0 }
    return await readThrough.fill(
      wanted, previous: previous, current: history.current, me: me, addresses: addresses, deadline: deadline)
  }

  /// Blocks this node dropped as damaged (a RAM copy that failed its stored checksum, a damaged
  /// disk record, a failed disk read): those it owns are read back from their other owners, which
  /// hold them, so the block has R copies again without waiting for a ring change (simulation
  /// seed 89694: nothing else copies a block to an owner that holds it no more). Called on the
  /// reading thread: it only records them (at most `damagedPendingMax` at once; more are left out
  /// and counted in the log line that ends the task) and starts the one task that reads them
  /// back, in batches, each block tried at once, then on `settings.readBackSchedule` (1 s, 2 s, 4 s
  /// … 5 minutes apart, 12 attempts: the other owners may be cut off or restarting, or unknown to
  /// this node's ring until it changes; seed 1891); a block no other owner holds stays gone.
  ///
  /// `needsWorkingDisk`: the blocks were let go because this node's disk failed their write (their
  /// demotion; another owner holds them on NVMe): each is first tried after the schedule's first
  /// wait, and only while the disk takes writes again, so a disk that keeps failing does not make
  /// the node read back, over and over, blocks it can only hold in RAM.
  func readBackDamaged(_ ids: [BlockID], needsWorkingDisk: Bool = false) {
    let (ring, draining) = state.withLock { ($0.history.current, $0.draining) }
    let me = settings.me.id
    // Those it owns, and those it was still to copy to owners that lack them (a block it holds
    // without owning it, or one whose copy failed): without it, those owners would never get
    // it (simulation seed 30362).
    let owned = zip(ids, underReplicated.lacking(ids)).filter { id, lacking in
      !lacking.isEmpty || ring.owners(of: id.key).contains { $0.id == me }
    }.map { (id: $0.0, lacking: $0.1) }
    guard !owned.isEmpty, !draining, !isStopped else { return }
    let now = settings.clock.nowMilliseconds()
    let start = damagedPending.withLock { pending -> Bool in
      pending.record(owned, now: now, needsWorkingDisk: needsWorkingDisk)
      guard !pending.running else { return false }
      pending.running = true
      return true
    }
    guard start else { return }
    logger.warning(
      needsWorkingDisk
        ? "blocks let go for a failing disk: reading them back from their other owners once it takes writes"
        : "blocks dropped as damaged: reading them back from their other owners",
      metadata: ["blocks": "\(owned.count)", "sample": "\(owned[0].id.key.hex.prefix(16))"])
    if !tasks.start({ [self] in await readBackPending() }) {
      damagedPending.withLock { $0.running = false }
    }
  }

  /// Whether this node let `id` go (damaged, or for a failing disk) and waits to read it back.
  public func isReadingBack(_ id: BlockID) -> Bool { damagedPending.withLock { $0.contains(id) } }

  static let damagedPendingMax = 65_536
  /// The longest the read-back task sleeps before it looks for due blocks again, so that blocks
  /// recorded while it waits for a late retry are tried within this.
  static let readBackPollMilliseconds: UInt64 = 1_000

  /// Reads the recorded damaged blocks back until none is left (read back, given up after the
  /// schedule's attempts, or no longer owned here).
  private func readBackPending() async {
    var read = 0
    var given = 0
    while !isStopped && !Task.isCancelled {
      let now = settings.clock.nowMilliseconds()
      let (batch, nextDue) = damagedPending.withLock { pending -> ([BlockID], UInt64?) in
        if pending.isEmpty { pending.running = false }
        return (pending.due(now: now), pending.nextDue)
      }
      guard let nextDue else { break }
      guard !batch.isEmpty else {
        await settings.clock.sleep(milliseconds: min(nextDue - now, Self.readBackPollMilliseconds))
        continue
      }
      let (ring, addresses) = state.withLock { ($0.history.current, $0.addresses) }
      let me = settings.me.id
      let writesFailing = tiers.nvmeWritesFailing
      let (disowned, postponed) = damagedPending.withLock { pending in
        (
          Set(batch.filter { id in !pending.hasDuty(id) && !ring.owners(of: id.key).contains { $0.id == me } }),
          writesFailing ? Set(batch.filter { pending.needsWorkingDisk($0) }) : []
        )
      }
      let wanted = batch.filter { !disowned.contains($0) && !postponed.contains($0) }
      if !wanted.isEmpty {
        _ = await readThrough.fill(
          wanted, previous: ring, current: ring, me: me, addresses: addresses,
          deadline: .after(milliseconds: settings.peerTimeoutMilliseconds))
      }
      let present = Set(zip(wanted, tiers.lookup(wanted)).filter { $0.1 != .absent }.map(\.0))
      let outcome = damagedPending.withLock { pending in
        pending.attempted(batch, present: present, disowned: disowned, now: settings.clock.nowMilliseconds())
      }
      // The copies it was to make are its again: the repair's retry of under-replicated blocks
      // makes them.
      for (id, lacking) in outcome.readBack {
        for owner in lacking { underReplicated.failed([id], to: owner) }
      }
      read += outcome.readBack.count
      given += outcome.givenUp
    }
    let overflowed = damagedPending.withLock { $0.takeLeftOut() }
    logger.log(
      level: given == 0 && overflowed == 0 ? .info : .warning, "read back blocks dropped as damaged",
      metadata: ["read_back": "\(read)", "not_found": "\(given)", "left_out": "\(overflowed)"])
  }

  /// `isAdmin`: the connection holds the `operator` scope (or is a peer node). Without it, RING
  /// `members` shows the ring's members only (no node-wide counters, which would show other
  /// tenants' traffic), and drain, drain_status and sync are refused naming the scope.
  public func answerRing(_ body: [UInt8], isAdmin: Bool) async throws(StrataError) -> [UInt8] {
    try await answerRing(RingCall(decoding: body), isAdmin: isAdmin)
  }

  /// Answers one RING call (the admin routes call this in process).
  public func answerRing(_ request: RingCall, isAdmin: Bool) async throws(StrataError) -> [UInt8] {
    if request.operation.needsOperator && !isAdmin {
      throw StrataError(
        .permissionDenied,
        "RING \(request.operation.rawValue) needs scope 'operator'; this connection's token does not have it (auth.tokens[].scopes)"
      )
    }
    switch request.operation {
    case .ring:
      return ring.jsonBytes()
    case .members:
      return try JSONCoding.encode(membersReport(full: isAdmin))
    case .drain:
      guard let node = request.node, node == settings.me.id || node == settings.nodeID else {
        throw StrataError(
          .invalidArgument,
          "this is node \(settings.nodeID) (ring id \(settings.me.id)); send the drain to the node named \(request.node ?? "(none)")"
        )
      }
      try startDrain()
      return try JSONCoding.encode(drainReport())
    case .drainStatus:
      let answer = try JSONCoding.encode(drainReport())
      // The first status that reports "done" lets the node exit: the answer still goes out,
      // since stopping waits for requests in progress.
      if drainProgress.phase == .done { exitAfterDrain() }
      return answer
    case .sync:
      // Answers once every copy queued before it has been sent (or dropped): a barrier for
      // operators and tests ("is everything written so far on R nodes?").
      await replicator.waitForQueuedCopies()
      return try JSONCoding.encode(SyncReport(replication: replicationReport()))
    }
  }

  // MARK: Drain

  /// How long a drained node waits for `strata drain` to read the final status before it exits.
  static let drainExitGraceMilliseconds: UInt64 = 10_000

  private func exitAfterDrain() {
    let action = onDrained.withLock { action -> (@Sendable () -> Void)? in
      defer { action = nil }
      return action
    }
    action?()
  }

  /// Leaves the ring's ownership (state draining), hands every block to its owners in the ring
  /// without this node, then deregisters and calls the drained action. A block counts as handed
  /// once every one of those owners holds it (BlockPlacement); an attempt that leaves some short
  /// is made again later against the ring of that time (DrainAttempts), and after the last one
  /// the node stays up, draining, and reports the blocks it could not place. Returns at once;
  /// progress is in `drainProgress`.
  func startDrain() throws(StrataError) {
    let started = drain.withLock { progress -> Bool in
      guard progress.phase != .running && progress.phase != .done else { return false }
      progress = HandoffProgress()
      progress.phase = .running
      progress.startedAt = settings.clock.date
      return true
    }
    guard started else { return }
    logger.info("drain started", metadata: ["node_id": "\(settings.nodeID)"])
    // Draining at once in this node's own ring: a PUT it takes from now on is copied to the
    // owners without it (a drained node would otherwise go on acknowledging PUTs as an owner,
    // with its own copy counted, until it exits, and take that copy with it).
    let current = state.withLock { state -> Ring in
      state.draining = true
      return state.history.current
    }
    adopt(members: current.members, epoch: current.epoch)
    if let membership = membership.withLock({ $0 }) {
      membership.announceDraining()
    } else {
      state.withLock { $0.drainPublishedAtEpoch = 0 }  // no membership: no peer sees any ring change
    }
    let handoff = Handoff(tiers: tiers, peers: peers, corruptCopies: corruptCopies, logger: logger)
    let progress = drain
    let clock = settings.clock
    tasks.start { [self] in
      await replicator.waitForQueuedCopies()
      await waitForDrainPublication(progress)
      let began = clock.nowMilliseconds()
      var attempts = DrainAttempts()
      while !isStopped && !Task.isCancelled {
        let (target, required, addresses) = drainTarget()
        let attempt = attempts.attempts + 1
        progress.withLock { progress in
          let handed = progress.handedBlocksTotal + progress.handedBlocks
          let startedAt = progress.startedAt
          progress = HandoffProgress()
          progress.phase = .running
          progress.startedAt = startedAt
          progress.handedBlocksTotal = handed
          progress.attempts = attempt
        }
        let inventory = tiers.inventory()
        logger.info(
          "drain: handing off blocks",
          metadata: ["blocks": "\(inventory.count)", "attempt": "\(attempt)", "epoch": "\(target.epoch)"])
        // Before the publication no copy counts: every block stays unplaced, and the attempt is retried.
        let holdersFrom = state.withLock { $0.drainPublishedAtEpoch } ?? .max
        let outcome = await handoff.run(
          target: target, addresses: addresses, progress: progress, inventory: inventory, required: required,
          holdersFrom: holdersFrom)
        let finishedAt = clock.nowMilliseconds() - began
        let ringChanged = state.withLock { $0.history.current.epoch } != target.epoch
        let next = attempts.finished(
          unplaced: outcome.unplaced.count, nowMilliseconds: finishedAt, ringChanged: ringChanged)
        let summary = progress.withLock { progress -> HandoffProgress in
          switch next {
          case .leave:
            progress.phase = .done
            progress.message = "every block is with all its owners in the ring without this node"
          case .retry(let at):
            progress.message =
              "attempt \(attempt) of \(attempts.limits.attemptsMax): \(progress.failedBlocks) block(s) not yet on all "
              + "their owners; trying again in \(at - finishedAt) ms"
          case .stayUp(let unplaced) where holdersFrom == .max:
            progress.phase = .failed
            progress.message =
              "\(unplaced) block(s) could not be placed after \(attempt) attempts: the membership (etcd) never "
              + "published this node draining, and no owner's copy counts before it does; the node stays up, "
              + "draining: bring etcd back and drain again"
          case .stayUp(let unplaced):
            progress.phase = .failed
            progress.message =
              "\(unplaced) block(s) could not be placed on all their owners after \(attempt) attempts (an owner down or "
              + "unreachable); the node stays up, draining: bring the owners back and drain again"
          }
          if progress.phase != .running { progress.finishedAt = clock.date }
          return progress
        }
        logger.info(
          "drain attempt finished",
          metadata: [
            "attempt": "\(attempt)", "handed_blocks": "\(summary.handedBlocks)",
            "present_blocks": "\(summary.presentBlocks)", "unplaced_blocks": "\(summary.failedBlocks)",
            "gone_blocks": "\(summary.goneBlocks)", "unplaced_sample": "\(summary.unplacedSample.map(\.key.hex))",
            "state": "\(summary.phase.rawValue)",
          ])
        switch next {
        case .leave:
          membership.withLock { $0 }?.stop(deregister: true)
          // Exit once `strata drain` has seen "done", or after a grace period without it.
          await clock.sleep(milliseconds: Self.drainExitGraceMilliseconds)
          exitAfterDrain()
          return
        case .retry(let at):
          let now = clock.nowMilliseconds() - began
          if at > now { await clock.sleep(milliseconds: at - now) }
        case .stayUp:
          logger.error("drain failed: the node stays up", metadata: ["message": "\(summary.message)"])
          return
        }
      }
    }
  }

  /// Waits, at most one membership lease, for the membership to publish this node draining: the
  /// epoch from which an owner's copy counts for the drain (`State.drainPublishedAtEpoch`). An
  /// owner still on an older ring may not own a block there, and drop its copy because this node
  /// answered "held" just before it began draining.
  private func waitForDrainPublication(_ progress: HandoffTracker) async {
    let deadline = settings.clock.nowMilliseconds() + UInt64(max(1, settings.leaseTTLSeconds)) * 1_000
    while state.withLock({ $0.drainPublishedAtEpoch }) == nil {
      if settings.clock.nowMilliseconds() >= deadline || isStopped || Task.isCancelled {
        logger.warning("drain: the membership has not published this node draining; no copy counts until it does")
        return
      }
      progress.withLock { $0.message = "waiting for the membership to publish this node draining" }
      await settings.clock.sleep(milliseconds: Self.drainPublicationPollMilliseconds)
    }
  }

  /// How often a drain looks again for its publication (an etcd watch delivers it within one
  /// round trip).
  static let drainPublicationPollMilliseconds: UInt64 = 50

  /// The ring a drain hands off to (the current ring's members, this node draining: no keys), and
  /// the copies its owners must hold of each block: as many as the ring promised with this node
  /// active, min(R, active members), so a drain never leaves a block with fewer copies.
  func drainTarget() -> (target: Ring, required: Int, addresses: [String: HostPort]) {
    let (current, addresses) = state.withLock { ($0.history.current, $0.addresses) }
    let others = current.members.filter { $0.id != settings.me.id }
    var me = settings.me
    me.state = .draining
    let target = Self.makeRing(members: others + [me], epoch: current.epoch, settings: settings)
    let before = Self.makeRing(members: others + [settings.me], epoch: current.epoch, settings: settings)
    return (target, before.effectiveReplicationFactor, addresses)
  }
}
