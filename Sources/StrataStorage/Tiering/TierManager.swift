// The tier manager: decides where every block of a node lives (RAM arena or NVMe), admits,
// evicts, demotes, promotes and pins blocks, and never returns bytes that failed a checksum.

public import StrataConfig
public import StrataCore
import Synchronization

/// Settings of one node's tiers (from `NodeConfiguration`; see docs/configuration.md).
public struct TierConfiguration: Sendable {
  public var ramBytes: Int
  public var blockBytesMax: Int
  public var lockMemory: Bool
  public var hugePages: Bool
  public var admission: AdmissionPolicy
  public var leasesMax: Int
  /// The longest client lease; longer requests are cut to it.
  public var leaseDurationMilliseconds: UInt64
  public var leasesPerNamespaceMax: Int
  public var pinnedBytesPerNamespaceMax: Int
  /// Threads doing disk I/O; bounded so that disk stalls never take every thread.
  public var ioThreads: Int
  /// Disk operations queued at most before callers are told `resourceExhausted`.
  public var ioQueueDepthMax: Int
  /// Disk operations queued at most for one namespace's requests (a quarter of the queue), so
  /// that one tenant's backlog never fills the queue the others need; the namespaces take turns
  /// for the I/O threads (`WorkerPool`).
  public var ioShareDepthMax: Int { max(1, ioQueueDepthMax / 4) }
  /// Background demotion starts above this fill of the RAM tier and stops below `lowWatermark`.
  public var highWatermark: Double
  public var lowWatermark: Double
  /// Each namespace's RAM, NVMe and pinned-bytes quota (docs/security.md, "Tenants").
  public var quotas: NamespaceQuotas
  /// Write-behind: committed blocks are written to NVMe in commit order, keeping their RAM copy,
  /// aiming to be within this many milliseconds of their commit; 0 turns it off (blocks then reach
  /// NVMe only when demoted or flushed). Only with an NVMe tier and `admission: always`.
  public var writebackWindowMilliseconds: UInt64

  public init(
    ramBytes: Int, blockBytesMax: Int, lockMemory: Bool = false, hugePages: Bool = true,
    admission: AdmissionPolicy = .always, leasesMax: Int = 65536, leaseDurationMilliseconds: UInt64 = 30_000,
    leasesPerNamespaceMax: Int? = nil, pinnedBytesPerNamespaceMax: Int = .max,
    ioThreads: Int = 4, ioQueueDepthMax: Int = 1024, highWatermark: Double = 0.95, lowWatermark: Double = 0.85,
    writebackWindowMilliseconds: UInt64 = 0, quotas: NamespaceQuotas = NamespaceQuotas()
  ) {
    self.writebackWindowMilliseconds = writebackWindowMilliseconds
    self.quotas = quotas
    self.leasesPerNamespaceMax = leasesPerNamespaceMax ?? leasesMax
    self.pinnedBytesPerNamespaceMax = pinnedBytesPerNamespaceMax
    self.ramBytes = ramBytes
    self.blockBytesMax = blockBytesMax
    self.lockMemory = lockMemory
    self.hugePages = hugePages
    self.admission = admission
    self.leasesMax = leasesMax
    self.leaseDurationMilliseconds = leaseDurationMilliseconds
    self.ioThreads = ioThreads
    self.ioQueueDepthMax = ioQueueDepthMax
    self.highWatermark = highWatermark
    self.lowWatermark = lowWatermark
  }

  public init(_ node: NodeConfiguration) {
    self.init(
      ramBytes: Int(node.ram.capacity.bytes), blockBytesMax: Int(node.limits.blockBytesMax.bytes),
      lockMemory: node.ram.lock, hugePages: node.ram.hugePages, admission: node.nvme.admission,
      leasesMax: node.limits.leasesMax, leaseDurationMilliseconds: node.limits.leaseDuration.milliseconds,
      leasesPerNamespaceMax: node.limits.leasesPerNamespaceMax,
      pinnedBytesPerNamespaceMax: node.pinnedBytesPerNamespaceMax,
      writebackWindowMilliseconds: node.nvme.writebackWindow.milliseconds, quotas: node.quotas)
  }
}

/// Counters and gauges of the tiers, read at one instant.
public struct TierStats: Sendable, Hashable {
  public var ramBlocks = 0
  public var ramUsedBytes = 0
  public var ramCapacityBytes = 0
  public var nvmeBlocks = 0
  public var nvmeUsedBytes = 0
  public var nvmeCapacityBytes = 0
  public var puts = 0
  public var putBytes = 0
  public var duplicatePuts = 0
  public var hitsRAM = 0
  public var hitsNVMe = 0
  public var misses = 0
  public var demotedBlocks = 0
  public var demotedBytes = 0
  public var promotedBlocks = 0
  public var promotedBytes = 0
  /// Blocks evicted from RAM without going to disk (admission said no, or there is no NVMe tier).
  public var droppedBlocks = 0
  /// Blocks evicted from RAM at no cost because their copy was on NVMe already (written behind,
  /// or promoted from there).
  public var cleanEvictedBlocks = 0
  /// Blocks and bytes written behind to NVMe (the RAM copy kept).
  public var writebackBlocks = 0
  public var writebackBytes = 0
  /// Blocks written behind later than `writebackWindowMilliseconds` after their commit: the disk
  /// did not keep up.
  public var writebackLateBlocks = 0
  /// Write-behind writes that failed (I/O error, no NVMe region free); the block stays in RAM and
  /// is written again once its retry is due (`WriteBehindRetry`), or when demoted or flushed.
  public var writebackFailedBlocks = 0
  /// Blocks whose write-behind failed that wait in RAM for their retry.
  public var writebackRetryBlocks = 0
  /// Blocks (and payload bytes) in RAM that write-behind has not put on NVMe yet.
  public var writebackPendingBlocks = 0
  public var writebackPendingBytes = 0
  /// How long the oldest block waiting for write-behind (queued or being written) has waited
  /// since its commit; 0 when none waits.
  public var writebackLagMilliseconds: UInt64 = 0
  public var checksumFailures = 0
  public var ioErrors = 0
  /// Disk reads and writes refused because the I/O pool's queue was full (in all, or for the
  /// namespace whose request needed them); a refused read is a miss. Not disk faults.
  public var ioQueueRefusals = 0
  /// Jobs in the I/O pool now, waiting for a thread or running.
  public var ioQueueJobs = 0
  /// Blocks on NVMe answered as missing because no RAM could be freed to read them into: every
  /// evictable block pinned (by transfers and leases in flight, or the rest of the batch), the
  /// namespace's RAM quota held by pinned blocks, or the demotion that would free room refused.
  public var promotionsWithoutRoom = 0
  /// Blocks a copy to another node (replication, repair, drain, VERIFY) read from NVMe into a
  /// buffer of its own rather than promoting them into RAM, and the bytes such buffers hold now
  /// (at most `TierManager.copyBufferBytesMax`).
  public var copyReadsFromNVMe = 0
  public var copyBufferBytes = 0
  /// Disk operations in flight for `DiskStallMonitor.stallMilliseconds` or longer, and the oldest
  /// operation's age (a node's devices only: both 0 without a stall monitor).
  public var diskOperationsStalled = 0
  public var diskOldestOperationMilliseconds: UInt64 = 0
  /// Blocks whose demotion failed (the NVMe write erred) and that left RAM anyway: without a
  /// handler (a single node), or when the handler found them held elsewhere.
  public var demotionFailedDropped = 0
  /// Blocks whose demotion failed and that stayed in RAM because the handler said no other copy
  /// is safe (the write needing their room was refused).
  public var demotionFailedKept = 0
  public var leasesActive = 0
  /// Transfers in progress holding pins (GET sends, copies to peers).
  public var transferPins = 0
  public var pinnedBlocks = 0
  /// Blocks a namespace at its RAM quota evicted of its own to make room (docs/security.md).
  public var quotaEvictedBlocks = 0
  /// Blocks leaving RAM that were dropped, not written, because their namespace was at its NVMe quota.
  public var nvmeQuotaDroppedBlocks = 0
}

/// One block of `TierManager.inventory()`.
public struct InventoryEntry: Sendable, Hashable {
  public var id: BlockID
  public var bytes: Int
  /// `ram` or `nvme`.
  public var tier: BlockTier
  /// Reads since the block was written to RAM (0 for NVMe-only blocks).
  public var reads: Int
}

/// A block pinned by a lease: its bytes stay valid and unchanged until the lease ends.
public struct LeasedBlock: @unchecked Sendable {
  // @unchecked: `bytes` points into the arena; the lease guarantees the slot is neither freed
  // nor rewritten while it is held, and blocks are immutable, so concurrent reads are safe.
  public let id: BlockID
  public let bytes: UnsafeRawBufferPointer
  public let checksum: UInt32
  /// Where the block was when the lease was asked for (an NVMe block is promoted first).
  public let foundIn: BlockTier
}

/// What a lease is for, which decides its limits and its end.
public enum LeaseKind: Hashable, Sendable {
  /// Pins for bytes being moved out of the pinned slots right now (a GET's send, a copy to a peer):
  /// never refused for lease limits and never expiring, so a slot is not reused under a send in
  /// progress. The transfer has its own deadline and must release the lease however it ends.
  case transfer
  /// A client's LOOKUP lease: counted against the node's and the namespace's limits, and ending
  /// after `durationMilliseconds` cut to the configured lease duration.
  case client(namespace: Namespace, durationMilliseconds: UInt64)
}

/// Pins on some blocks; pass it back to `release` when the transfer is done.
public struct BlockLease: Sendable {
  public let id: LeaseID
  /// One entry per requested id, nil where the block is absent (or failed its checksum).
  public let blocks: [LeasedBlock?]
  /// When a client lease ends (`UInt64.max` for a transfer's pins).
  public let expiresAtMilliseconds: UInt64
  /// How long a client lease was granted for, after the configured cap (0 for a transfer's pins).
  public let grantedMilliseconds: UInt64

  /// The number of leading requested blocks that are present: the usable prefix.
  public var leadingRunCount: Int { blocks.firstIndex(where: { $0 == nil }) ?? blocks.count }
}

/// What to do with a block whose demotion to NVMe failed: asked before it leaves RAM.
public enum DemotionFailureVerdict: Sendable, Hashable {
  /// Let it leave RAM (a copy elsewhere is safe, or losing it is accepted).
  case drop
  /// Keep it in RAM; the caller that needed its room is refused with the disk's error.
  case keep
}

/// Decides about one block whose NVMe write failed during demotion; `block.bytes` stay valid for
/// the call (the demotion holds the slot). It may take a network round trip, bounded by its own
/// deadlines.
public typealias DemotionFailureHandler = @Sendable (LeasedBlock, StrataError) async -> DemotionFailureVerdict

/// A slot reserved for a PUT, to be filled (e.g. received from a socket straight into the arena)
/// and then committed or aborted.
public struct PutReservation: @unchecked Sendable {
  // @unchecked: the slot belongs to this reservation alone until commit or abort.
  public let id: BlockID
  public let buffer: UnsafeMutableRawBufferPointer
  let slot: ArenaSlot
}

public final class TierManager: Sendable {
  struct RAMEntry {
    var slot: ArenaSlot
    var bytes: Int
    var checksum: UInt32
    /// When the block was stored on this node (its NVMe region's write time after a promotion).
    var storedAtMilliseconds: UInt64 = 0
    /// Reads since the write: "seen twice" admission asks for at least one.
    var reads: Int = 0
    /// Being written to NVMe (demoted or written behind): readable, not evictable.
    var demoting = false
    /// Committed with write-behind on and not on NVMe yet.
    var dirty = false
  }

  struct State {
    var allocator: SlabAllocator
    var policy: QuotaPartitionedPolicy
    var ram = RAMIndex()
    var leases: LeaseTable
    /// PUTs and promotions in progress.
    var reservations: [BlockID: ArenaSlot] = [:]
    /// Promotions in progress, each with the calls waiting for it (at most one per concurrent
    /// `lease` asking for the block: bounded by the connections and their batches).
    var promotions: [BlockID: [CheckedContinuation<Void, Never>]] = [:]
    /// Slots of blocks removed while pinned, freed once no lease pins their id.
    var doomed: [BlockID: [ArenaSlot]] = [:]
    /// Blocks removed while their demotion was writing them to NVMe: the demotion owns their slot
    /// and, when its write ends, releases the slot and drops the NVMe copy it made.
    var removedWhileDemoting: Set<BlockID> = []
    /// Blocks a `lease` call is assembling (in RAM already, or promoted by it) before its lease
    /// pins them: a later promotion of the same batch must not evict an earlier one.
    var batchPins: [BlockID: Int] = [:]
    /// Blocks waiting for write-behind, oldest commit first, and those being written behind now
    /// with their commit times (TierManager+WriteBehind.swift).
    var writeBehind = WriteBehindQueue()
    var writingBehind: [BlockID: UInt64] = [:]
    /// Blocks whose write-behind failed, written again once due.
    var writeBehindRetry = WriteBehindRetry()
    /// Demotions writing their block to NVMe now (each held by the eviction that started it), until
    /// the write returns.
    var demotionsInFlight = 0
    /// Writes to NVMe (demotions and write-behind batches) ended so far, and the calls that found
    /// nothing to evict while some were in flight, each woken when one ends (at most one per
    /// PUT or promotion waiting for room: bounded as those are).
    var writesToNVMeEnded: UInt64 = 0
    var roomWaiters: [CheckedContinuation<Bool, Never>] = []
    /// When the last write to NVMe failed, on the node's clock; nil once one succeeds after it
    /// (`nvmeWritesFailing`).
    var nvmeWriteFailedAtMilliseconds: UInt64?
    var stats = TierStats()

    /// Counts a write to NVMe as ended (its block is evictable now, or its slot free) and hands
    /// back the calls waiting for one, to wake outside the lock.
    mutating func endWriteToNVMe() -> [CheckedContinuation<Bool, Never>] {
      writesToNVMeEnded &+= 1
      defer { roomWaiters = [] }
      return roomWaiters
    }

    /// Counts an NVMe read that failed, by why.
    mutating func countFailedRead(_ error: StrataError) {
      switch error.code {
      case .checksumMismatch: stats.checksumFailures += 1
      case .cancelled: break  // the request went away before its read ran: no fault of the disk's
      case .notFound: break  // the NVMe tier let the block go (its region reclaimed) before the read
      case .resourceExhausted: stats.ioQueueRefusals += 1  // the I/O pool had no room for it
      default: stats.ioErrors += 1
      }
    }

    /// The policy's next victim among blocks that are neither pinned nor being demoted: among
    /// `namespace`'s own blocks when given (it is at its RAM quota), else node-wide.
    mutating func pickVictim(from namespace: Namespace? = nil) -> BlockID? {
      let (ram, leases, batchPins, removedWhileDemoting) = (
        self.ram, self.leases, self.batchPins, self.removedWhileDemoting
      )
      let evictable = { (id: BlockID) -> Bool in
        guard let entry = ram[id] else { return true }
        // An id deleted while its old copy is still being written is not evictable: that write
        // may leave a stale NVMe record (removed once it ends) that would make a re-PUT copy look
        // clean, and evicting it then would lose the block.
        return !entry.demoting && !leases.isPinned(id) && batchPins[id] == nil && !removedWhileDemoting.contains(id)
      }
      if let namespace { return policy.evict(from: namespace, where: evictable) }
      return policy.evict(where: evictable)
    }

    /// RAM bytes (slot sizes) `namespace` holds or has reserved.
    func ramBytes(of namespace: Namespace) -> Int {
      let reserved = reservations.reduce(0) { $0 + ($1.key.namespace == namespace ? $1.value.capacityBytes : 0) }
      return (ram.usage[namespace]?.bytes ?? 0) + reserved
    }

    /// Whether a new block of `bytes` would take `namespace` past its RAM quota (nil: none).
    func exceedsRAMQuota(_ quota: Int?, adding bytes: Int, to namespace: Namespace) -> Bool {
      guard let quota else { return false }
      return ramBytes(of: namespace) + (allocator.slotBytes(for: bytes) ?? bytes) > quota
    }

    mutating func pinForBatch(_ id: BlockID) { batchPins[id, default: 0] += 1 }

    mutating func unpinForBatch(_ ids: some Sequence<BlockID>) {
      for id in ids {
        guard let count = batchPins[id] else { continue }
        batchPins[id] = count > 1 ? count - 1 : nil
      }
    }

    mutating func unpinned(_ ids: [BlockID]) {
      for id in ids {
        if let slots = doomed.removeValue(forKey: id) { for slot in slots { allocator.free(slot) } }
      }
    }
  }

  public let configuration: TierConfiguration
  public let arena: RAMArena
  public let nvme: NVMeTier?
  /// The NVMe devices' operations in flight (a node's tiers; nil in tests that make their own).
  public let diskStalls: DiskStallMonitor?
  let clock: any NodeClock
  let io: WorkerPool
  let state: Mutex<State>
  /// When NVMe regions were last written, for eviction by age (TierManager+Admin.swift).
  let nvmeAges: NVMeRegionAges
  private let pressure: AsyncStream<Void>.Continuation
  private let pressureSignals: AsyncStream<Void>
  private let demotionFailureHandler = Mutex<DemotionFailureHandler?>(nil)
  /// Notified each time a write's reservation ends (committed, given back, or a promotion done).
  let reservationsEnded = ChangeSignal()

  /// Asks `handler` about every block whose demotion fails from now on (the cluster layer: is
  /// the block safe on another owner?). Without one such a block leaves RAM (a single node).
  public func setDemotionFailureHandler(_ handler: @escaping DemotionFailureHandler) {
    demotionFailureHandler.withLock { $0 = handler }
  }
  /// Tells `handler` every block this node dropped as damaged from now on: a RAM copy that failed
  /// its stored checksum (`quarantine`: a copy's check, a reader's report, a transport that read
  /// it) or a disk record a read dropped (`NVMeTier.onDamaged`). A cluster node reads the blocks
  /// it owns back from their other owners. Called without any tier lock held, on the thread that
  /// found the damage: it must not block.
  public func setDamagedHandler(_ handler: @escaping @Sendable ([BlockID]) -> Void) {
    damagedHandler.withLock { $0 = handler }
    nvme?.onDamaged = handler
  }
  let damagedHandler = Mutex<(@Sendable ([BlockID]) -> Void)?>(nil)

  /// Whether commits are written behind to NVMe (see `TierConfiguration.writebackWindowMilliseconds`).
  public let writeBehindEnabled: Bool
  let writeBehindWake: AsyncStream<Void>.Continuation
  let writeBehindSignals: AsyncStream<Void>

  /// A tier manager over a fresh arena and (when given) an NVMe tier already opened or recovered.
  /// `shouldStop` may end the arena's pre-fault early (`RAMArena.init`): `init` then fails with
  /// `cancelled`.
  public init(
    configuration: TierConfiguration, nvme: NVMeTier?, clock: any NodeClock = SystemClock(),
    diskStalls: DiskStallMonitor? = nil, shouldStop: (@Sendable () -> Bool)? = nil
  ) throws(StrataError) {
    guard configuration.blockBytesMax > 0, configuration.ramBytes >= configuration.blockBytesMax else {
      throw StrataError(
        .invalidConfiguration,
        "ram.capacity (\(configuration.ramBytes) bytes) must hold at least one block of limits.max_block_size (\(configuration.blockBytesMax) bytes)"
      )
    }
    self.configuration = configuration
    arena = try RAMArena(
      capacityBytes: configuration.ramBytes, lockMemory: configuration.lockMemory, hugePages: configuration.hugePages,
      shouldStop: shouldStop)
    self.nvme = nvme
    self.diskStalls = diskStalls
    self.clock = clock
    io = WorkerPool(
      label: "strata.io", threads: configuration.ioThreads, queueDepthMax: configuration.ioQueueDepthMax,
      shareDepthMax: configuration.ioShareDepthMax)
    state = Mutex(
      State(
        allocator: SlabAllocator(capacityBytes: configuration.ramBytes, blockBytesMax: configuration.blockBytesMax),
        policy: QuotaPartitionedPolicy(capacityBytes: configuration.ramBytes, quotas: configuration.quotas),
        leases: LeaseTable(
          limits: LeaseLimits(
            leasesMax: configuration.leasesMax, leasesPerNamespaceMax: configuration.leasesPerNamespaceMax,
            pinnedBytesPerNamespaceMax: configuration.pinnedBytesPerNamespaceMax,
            pinnedBytesByNamespace: configuration.quotas.overrides.mapValues(\.pinnedBytesMax)))))
    (pressureSignals, pressure) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    (writeBehindSignals, writeBehindWake) = AsyncStream.makeStream(
      of: Void.self, bufferingPolicy: .bufferingNewest(1))
    writeBehindEnabled =
      nvme != nil && configuration.admission == .always && configuration.writebackWindowMilliseconds > 0
    nvmeAges = NVMeRegionAges(recovered: nvme, atMilliseconds: clock.nowMilliseconds())
    // A block in RAM is one in use: when the NVMe tier reclaims the region of its disk copy, the
    // copy is rewritten into the open region rather than evicted, so a restart (RAM empty) finds
    // the blocks that were hot, and evicting the RAM copy later costs no write. (Called by the
    // NVMe tier without its locks held; no tier call is made under this lock.)
    nvme?.isHot = { [weak self] id in self?.state.withLock { $0.ram[id] != nil } ?? false }
  }

  // MARK: Inventory

  /// Every block held, hottest first: RAM blocks by reads since written (most first), then the
  /// NVMe-only blocks. A snapshot: blocks may come and go while the caller walks it (a drain
  /// hands blocks off in this order).
  public func inventory() -> [InventoryEntry] {
    var entries = state.withLock { state in
      state.ram.map { InventoryEntry(id: $0.key, bytes: $0.value.bytes, tier: .ram, reads: $0.value.reads) }
    }
    // Hottest first; ties (and the NVMe-only blocks) by key, so the order never depends on a
    // dictionary's.
    entries.sort { $0.reads != $1.reads ? $0.reads > $1.reads : $0.id.key.prefix64 < $1.id.key.prefix64 }
    if let nvme {
      let inRAM = Set(entries.map(\.id))
      entries += nvme.blockInventory().filter { !inRAM.contains($0.0) }
        .map { InventoryEntry(id: $0.0, bytes: $0.1, tier: .nvme, reads: 0) }
        .sorted { $0.id.key.prefix64 < $1.id.key.prefix64 }
    }
    return entries
  }

  /// Whether the node holds no block in either tier: one look at two counts, where `inventory()`
  /// lists and sorts every block.
  public var holdsNoBlocks: Bool { state.withLock { $0.ram.count == 0 } && (nvme?.blockCount ?? 0) == 0 }

  /// The entries of those of `ids` this node holds, in their order (as `inventory()` gives them,
  /// with no read counts): what a repair of a few known blocks walks instead of every block.
  public func inventory(of ids: [BlockID]) -> [InventoryEntry] {
    zip(ids, lookupSizes(ids)).compactMap { id, found in
      found.tier == .absent ? nil : InventoryEntry(id: id, bytes: Int(found.bytes), tier: found.tier, reads: 0)
    }
  }

  // MARK: Reading

  /// Presence and tier of each id, without pinning or moving anything. A block removed while its
  /// write to NVMe was in flight is absent from the moment `remove` returns, though that write
  /// may index its record until its completion deletes it again.
  public func lookup(_ ids: [BlockID]) -> [BlockTier] { lookupSizes(ids).map(\.tier) }

  /// `lookup` with each block's length in bytes (0 where absent), in one look at each index: a
  /// LOOKUP of 1,024 keys hashes each key once per dictionary, not once per question.
  public func lookupSizes(_ ids: [BlockID]) -> [(tier: BlockTier, bytes: UInt64)] {
    let inRAM = state.withLock { state in
      let removed = state.removedWhileDemoting
      return ids.map { id -> (bytes: Int?, removed: Bool) in
        if let entry = state.ram[id] { return (entry.bytes, false) }
        return (nil, !removed.isEmpty && removed.contains(id))
      }
    }
    return zip(ids, inRAM).map { id, found -> (tier: BlockTier, bytes: UInt64) in
      if let bytes = found.bytes { return (.ram, UInt64(bytes)) }
      if found.removed { return (.absent, 0) }
      return nvme?.payloadBytes(of: id).map { (.nvme, UInt64($0)) } ?? (.absent, 0)
    }
  }

  /// Pins the present blocks among `ids` (promoting NVMe-resident ones into RAM first), for a
  /// transfer in progress or as a client's lease (see `LeaseKind`). With `asRead` false (a copy to
  /// a peer, a write to NVMe: the node's own work, not a reader's) nothing counts as a read: no hit
  /// or miss, no access for eviction, and no read for `seen_twice` admission or the hottest-first
  /// order.
  public func lease(_ ids: [BlockID], _ kind: LeaseKind = .transfer, asRead: Bool = true) async throws(StrataError)
    -> BlockLease
  {
    if let lease = try leaseResident(ids, kind, asRead: asRead) { return lease }
    // Promote what lives only on NVMe; a failed promotion is a miss, never an error for the batch.
    // The batch's blocks stay pinned while it is assembled, so that promoting one block never
    // evicts another of the same batch (which would turn a hit into a miss).
    var batchPinned = state.withLock { state in
      ids.filter { id in
        guard state.ram[id] != nil else { return false }
        state.pinForBatch(id)
        return true
      }
    }
    var promoted = Set<BlockID>()
    for (id, promotion) in await promoteAll(ids.filter { lookup([$0])[0] == .nvme }) {
      switch promotion {
      case .promoted:
        promoted.insert(id)
        batchPinned.append(id)
      case .resident: batchPinned.append(id)
      case .missed: break
      }
    }
    let now = clock.nowMilliseconds()
    return try state.withLock { state throws(StrataError) -> BlockLease in
      defer { state.unpinForBatch(batchPinned) }
      state.unpinned(state.leases.expire(now: now))
      return try grant(ids, promoted: promoted, kind, asRead: asRead, now: now, state: &state)
    }
  }

  /// `lease` without waiting, for the common case of a request whose blocks are all in RAM (or
  /// absent): pins them at once on the calling thread. Nil when a block lives only on NVMe and must
  /// be promoted first: the caller then takes the async `lease`. Same pins, limits and counters.
  public func leaseResident(_ ids: [BlockID], _ kind: LeaseKind = .transfer, asRead: Bool = true) throws(StrataError)
    -> BlockLease?
  {
    let now = clock.nowMilliseconds()
    return try state.withLock { state throws(StrataError) -> BlockLease? in
      if let nvme, ids.contains(where: { state.ram[$0] == nil && nvme.contains($0) }) { return nil }
      state.unpinned(state.leases.expire(now: now))
      return try grant(ids, promoted: [], kind, asRead: asRead, now: now, state: &state)
    }
  }

  /// Pins the RAM-resident blocks among `ids` under one lease, counting hits and misses (`asRead`).
  private func grant(
    _ ids: [BlockID], promoted: Set<BlockID>, _ kind: LeaseKind, asRead: Bool, now: UInt64, state: inout State
  ) throws(StrataError) -> BlockLease {
    var blocks: [LeasedBlock?] = []
    var present: [(BlockID, Int)] = []
    blocks.reserveCapacity(ids.count)
    for id in ids {
      guard var entry = state.ram[id] else {
        if asRead { state.stats.misses += 1 }
        blocks.append(nil)
        continue
      }
      let wasPromoted = promoted.contains(id)
      if asRead {
        entry.reads += 1
        state.ram[id] = entry
        state.policy.access(id)
        if wasPromoted { state.stats.hitsNVMe += 1 } else { state.stats.hitsRAM += 1 }
      }
      present.append((id, entry.bytes))
      blocks.append(
        LeasedBlock(
          id: id, bytes: UnsafeRawBufferPointer(arena.buffer(entry.slot, bytes: entry.bytes)),
          checksum: entry.checksum, foundIn: wasPromoted ? .nvme : .ram))
    }
    switch kind {
    case .transfer:
      let leaseID = state.leases.pinForTransfer(present.map(\.0))
      return BlockLease(id: leaseID, blocks: blocks, expiresAtMilliseconds: .max, grantedMilliseconds: 0)
    case .client(let namespace, let requested):
      let duration = max(1, min(requested, configuration.leaseDurationMilliseconds))
      let leaseID = try state.leases.grant(present, namespace: namespace, expiresAt: now + duration)
      return BlockLease(
        id: leaseID, blocks: blocks, expiresAtMilliseconds: now + duration, grantedMilliseconds: duration)
    }
  }

  /// The storage clock's now, on which lease expiries are stated.
  public var nowMilliseconds: UInt64 { clock.nowMilliseconds() }

  /// Ends a lease early (the transfer finished). Releasing twice, or after expiry, does nothing.
  public func release(_ lease: BlockLease) {
    state.withLock { state in state.unpinned(state.leases.release(lease.id)) }
  }

  /// Copies a block into `destination`; returns its length, or nil when the block is absent.
  /// Throws `invalidArgument` when `destination` is too small.
  public func read(_ id: BlockID, into destination: UnsafeMutableRawBufferPointer) async throws(StrataError) -> Int? {
    let lease = try await lease([id])
    defer { release(lease) }
    guard let block = lease.blocks[0] else { return nil }
    guard destination.count >= block.bytes.count else {
      throw StrataError(
        .invalidArgument,
        "destination of \(destination.count) bytes is smaller than block \(id) (\(block.bytes.count) bytes)")
    }
    destination.baseAddress!.copyMemory(from: block.bytes.baseAddress!, byteCount: block.bytes.count)
    return block.bytes.count
  }

  // MARK: Writing

  /// Reserves arena space for a new block of `bytes`; nil when the block is present or being
  /// written already (blocks are immutable: the first write wins).
  public func reserve(_ id: BlockID, bytes: Int) async throws(StrataError) -> PutReservation? {
    switch try reserveNow(id, bytes: bytes) {
    case .reserved(let reservation): return reservation
    case .present: return nil
    case .needsRoom: break
    }
    let slot = try await makeRoom(bytes: bytes, for: id.namespace)
    return claim(slot, for: id, bytes: bytes)
  }

  /// What `reserveNow` did.
  public enum ImmediateReservation: Sendable {
    case reserved(PutReservation)
    /// The block is present or being written already.
    case present
    /// The arena (or the namespace's RAM quota) has no room without evicting, which may write to
    /// NVMe and so waits: `reserve` does that.
    case needsRoom
  }

  /// `reserve` without waiting: reserves when the arena has room now (a thread that must not
  /// hop to a task for the common case calls this first, and `reserve` only on `needsRoom`).
  public func reserveNow(_ id: BlockID, bytes: Int) throws(StrataError) -> ImmediateReservation {
    guard bytes > 0, bytes <= configuration.blockBytesMax else {
      throw StrataError(
        .invalidArgument, "block \(id) has \(bytes) bytes; blocks hold 1 to \(configuration.blockBytesMax) bytes")
    }
    // A PUT of a block held already is acknowledged by the copy here: that copy is checked
    // first (its RAM bytes against its stored checksum; a copy only on NVMe is checked when read),
    // and one damaged since it was stored is removed and replaced by the bytes this PUT brings,
    // never acknowledged (simulation seed 46017).
    if isPresentOrPending(id), scrubRAM(id)?.intact != false {
      state.withLock { $0.stats.duplicatePuts += 1 }
      return .present
    }
    let quota = configuration.quotas[id.namespace].ramBytesMax
    let slot = state.withLock { state -> ArenaSlot? in
      state.exceedsRAMQuota(quota, adding: bytes, to: id.namespace) ? nil : state.allocator.allocate(bytes: bytes)
    }
    guard let slot else { return .needsRoom }
    return claim(slot, for: id, bytes: bytes).map { .reserved($0) } ?? .present
  }

  /// Holds `slot` for `id` unless another writer got there first (then the slot is freed: nil).
  private func claim(_ slot: ArenaSlot, for id: BlockID, bytes: Int) -> PutReservation? {
    let claimed = state.withLock { state -> Bool in
      guard state.ram[id] == nil, state.reservations[id] == nil else {
        state.allocator.free(slot)
        return false
      }
      state.reservations[id] = slot
      return true
    }
    guard claimed else { return nil }
    return PutReservation(id: id, buffer: arena.buffer(slot, bytes: bytes), slot: slot)
  }

  /// Verifies the reserved bytes against `expectedChecksum` (CRC-32C; nil computes it) and
  /// publishes the block. A mismatch frees the slot and throws `checksumMismatch`: nothing is stored.
  /// `landedChecksum`: the CRC-32C of the reserved bytes, computed over the slot by whoever wrote
  /// them, as they landed (a transport receiving a PUT); the slot is then not read again. Nil: the
  /// commit computes it.
  public func commit(
    _ reservation: PutReservation, expectedChecksum: UInt32?, landedChecksum: UInt32? = nil
  ) throws(StrataError) {
    defer { reservationsEnded.notify() }
    let checksum = landedChecksum ?? CRC32C.checksum(UnsafeRawBufferPointer(reservation.buffer))
    let id = reservation.id
    let overHighWatermark = try state.withLock { state throws(StrataError) -> Bool in
      precondition(state.reservations[id] == reservation.slot, "commit of a reservation that is not held: \(id)")
      state.reservations[id] = nil
      if let expectedChecksum, expectedChecksum != checksum {
        state.allocator.free(reservation.slot)
        state.stats.checksumFailures += 1
        throw StrataError(
          .checksumMismatch,
          "block \(id): payload checksum is \(Hex.word32(checksum)), the sender said \(Hex.word32(expectedChecksum)); not stored"
        )
      }
      state.ram[id] = RAMEntry(
        slot: reservation.slot, bytes: reservation.buffer.count, checksum: checksum,
        storedAtMilliseconds: clock.nowMilliseconds(), dirty: writeBehindEnabled)
      if writeBehindEnabled { state.queueForWriteBehind(id) }
      state.policy.insert(id, bytes: reservation.slot.capacityBytes)
      state.stats.puts += 1
      state.stats.putBytes += reservation.buffer.count
      return Double(state.allocator.usedBytes) > configuration.highWatermark * Double(configuration.ramBytes)
    }
    if writeBehindEnabled { writeBehindWake.yield() }
    if overHighWatermark { pressure.yield() }
  }

  /// Gives a reservation back unused.
  public func abort(_ reservation: PutReservation) {
    state.withLock { state in
      precondition(state.reservations[reservation.id] == reservation.slot, "abort of a reservation that is not held")
      state.reservations[reservation.id] = nil
      state.allocator.free(reservation.slot)
    }
    reservationsEnded.notify()
  }

  /// Stores a block from `payload` (copied into the arena), verifying `expectedChecksum` if given.
  @discardableResult
  public func put(
    _ id: BlockID, payload: UnsafeRawBufferPointer, expectedChecksum: UInt32? = nil
  ) async throws(StrataError) -> PutOutcome {
    guard let reservation = try await reserve(id, bytes: payload.count) else { return .alreadyPresent }
    reservation.buffer.baseAddress!.copyMemory(from: payload.baseAddress!, byteCount: payload.count)
    try commit(reservation, expectedChecksum: expectedChecksum)
    return .stored
  }

  /// Stores a block from an array (copied into the arena), verifying `expectedChecksum` if given.
  @discardableResult
  public func put(_ id: BlockID, bytes: [UInt8], expectedChecksum: UInt32? = nil) async throws(StrataError)
    -> PutOutcome
  {
    guard let reservation = try await reserve(id, bytes: bytes.count) else { return .alreadyPresent }
    bytes.withUnsafeBytes { reservation.buffer.copyMemory(from: $0) }
    try commit(reservation, expectedChecksum: expectedChecksum)
    return .stored
  }

  /// A copy of a block's bytes, or nil when it is absent.
  public func read(_ id: BlockID) async throws(StrataError) -> [UInt8]? {
    let lease = try await lease([id])
    defer { release(lease) }
    return lease.blocks[0].map { Array($0.bytes) }
  }

  /// Removes a block from every tier (from RAM only with `keepingNVMe`). A pinned block leaves the
  /// index now; its memory is reused once its leases end.
  public func remove(_ id: BlockID, keepingNVMe: Bool = false) {
    state.withLock { state in
      if let entry = state.ram.removeValue(forKey: id) {
        state.policy.remove(id)
        if entry.demoting {
          // The demotion still reads the slot: it releases it (`evictOne`), exactly once.
          state.removedWhileDemoting.insert(id)
        } else if state.leases.isPinned(id) {
          state.doomed[id, default: []].append(entry.slot)
        } else {
          state.allocator.free(entry.slot)
        }
      }
    }
    if !keepingNVMe { _ = nvme?.remove(id) }
  }

  // MARK: Moving between tiers

  /// Writes a RAM-resident block to NVMe now (if it is not there yet). Returns whether the block
  /// is on NVMe afterwards.
  @discardableResult
  public func persist(_ id: BlockID) async throws(StrataError) -> Bool {
    guard let nvme else { return false }
    if nvme.contains(id) { return true }
    let lease = try await lease([id], asRead: false)
    defer { release(lease) }
    guard let block = lease.blocks[0] else { return false }
    let write = NVMeBlockWrite(id: block.id, payload: block.bytes, checksum: block.checksum, checksumOfStoredCopy: true)
    if let failure = try await writeToNVMe(nvme, [write], for: nil)[0] { throw failure }
    markClean(id)
    return true
  }

  /// Writes every RAM-resident block that admission allows to NVMe: run at graceful shutdown so
  /// that a restart finds them (warm restart). Returns the number of blocks written. A block whose
  /// write fails is passed over, the rest are still written and synced, and then the flush throws
  /// the first failure's code, saying how many blocks were not written (lost with the RAM).
  ///
  /// The flush's own writes can fill the NVMe tier, whose reclaim then evicts the oldest region,
  /// and with it the disk copies of blocks still in RAM: each pass writes the RAM blocks not on
  /// NVMe, oldest commit first, until none is left. A block this flush wrote that is off the disk
  /// again means the NVMe tier has cycled through all its regions (it cannot hold the RAM tier's
  /// blocks): the flush stops there, or after `flushPassesMax` passes, and throws, saying how many
  /// are not on NVMe.
  ///
  /// `progress` hears the count so far after each block written (and once before the first), so
  /// that a stop can say how far its flush has got and wait as long as it moves on.
  @discardableResult
  public func flush(progress: (@Sendable (FlushProgress) -> Void)? = nil) async throws(StrataError) -> Int {
    guard let nvme, configuration.admission != .never else { return 0 }
    var written = 0
    var counted = FlushProgress()
    var failed: (count: Int, first: StrataError)?
    // Failed, or over their namespace's NVMe quota (which keeps only what it has on disk): not
    // tried again.
    var passedOver = Set<BlockID>()
    var writtenHere = Set<BlockID>()
    for _ in 0..<Self.flushPassesMax {
      let missing = state.withLock { state in
        state.ram.compactMap { id, entry in
          passedOver.contains(id) || nvme.contains(id) ? nil : (id, entry.storedAtMilliseconds, entry.bytes)
        }
      }.sorted { ($0.1, $0.0.key.prefix64) < ($1.1, $1.0.key.prefix64) }
      guard !missing.isEmpty, !missing.contains(where: { writtenHere.contains($0.0) }) else { break }
      counted.blocksToWrite = counted.blocksWritten + missing.count
      counted.bytesToWrite = counted.bytesWritten + missing.reduce(0) { $0 + $1.2 }
      progress?(counted)
      let quotaRoom = nvmeQuotaRoom()
      for (id, _, bytes) in missing where !nvme.contains(id) {
        guard quotaRoom(id.namespace, bytes) else {
          passedOver.insert(id)
          continue
        }
        do throws(StrataError) {
          if try await persist(id) {
            written += 1
            writtenHere.insert(id)
            counted.blocksWritten += 1
            counted.bytesWritten += bytes
            progress?(counted)
          }
        } catch {
          passedOver.insert(id)
          failed = ((failed?.count ?? 0) + 1, failed?.first ?? error)
        }
      }
    }
    try await io.run { () throws(StrataError) in try nvme.sync() }
    if let failed {
      throw StrataError(
        failed.first.code,
        "\(failed.count) RAM block(s) could not be written to NVMe (\(written) were): \(failed.first.message)")
    }
    let evicted = state.withLock { state in
      state.ram.keys.count { !passedOver.contains($0) && !nvme.contains($0) }
    }
    guard evicted == 0 else {
      throw StrataError(
        .resourceExhausted,
        "\(evicted) RAM block(s) are not on NVMe after the flush (\(written) written): writing the others made the NVMe tier evict their copies; an NVMe tier (nvme.capacity) larger than the RAM tier (ram.capacity) holds them all"
      )
    }
    return written
  }

  /// At most this many passes of `flush`: the first writes what write-behind had not, the next
  /// what the NVMe tier evicted meanwhile (most often none).
  static let flushPassesMax = 8

  /// Demotes until the RAM tier is below its low watermark. The background service calls this
  /// when a commit crosses the high watermark; tests call it directly.
  public func relievePressure() async throws(StrataError) {
    let target = Int(configuration.lowWatermark * Double(configuration.ramBytes))
    while state.withLock({ $0.allocator.usedBytes }) > target {
      guard try await evictOne(for: nil) else { return }
    }
  }

  /// The background services until `shutdown`: demotion when a commit crosses the high watermark,
  /// and write-behind (when enabled).
  public func run() async {
    async let writingBehind: Void = runWriteBehind()
    await runDemotion()
    await writingBehind
  }

  private func runDemotion() async {
    for await _ in pressureSignals {
      do throws(StrataError) {
        try await relievePressure()
      } catch {
        // Counted in stats by the failing step; the next commit signals again.
      }
    }
  }

  /// Ends the background service.
  public func shutdown() {
    pressure.finish()
    writeBehindWake.finish()
  }

  public var stats: TierStats {
    var stats = state.withLock { state in
      var stats = state.stats
      stats.ramBlocks = state.ram.count
      stats.ramUsedBytes = state.allocator.usedBytes
      stats.ramCapacityBytes = configuration.ramBytes
      stats.leasesActive = state.leases.count
      stats.transferPins = state.leases.transferPinCount
      stats.pinnedBlocks = state.leases.pinnedBlockCount
      stats.writebackPendingBlocks = state.ram.dirtyBlocks
      stats.writebackPendingBytes = state.ram.dirtyBytes
      stats.writebackLagMilliseconds = state.writeBehindLag(now: clock.nowMilliseconds())
      stats.writebackRetryBlocks = state.writeBehindRetryWaiting
      return stats
    }
    stats.ioQueueJobs = io.queuedCount
    if let nvme {
      let nvmeStats = nvme.statistics
      stats.nvmeBlocks = nvmeStats.blockCount
      stats.nvmeUsedBytes = nvmeStats.usedBytes
      stats.nvmeCapacityBytes = nvmeStats.capacityBytes
    }
    if let diskStalls {
      (stats.diskOperationsStalled, stats.diskOldestOperationMilliseconds) = diskStalls.stalls
    }
    return stats
  }

  // MARK: Internals

  /// Whether a write of `id` has reserved its slot and not yet committed (or aborted).
  public func isBeingWritten(_ id: BlockID) -> Bool { state.withLock { $0.reservations[id] != nil } }

  /// Blocks the calling thread until no write of `ids` holds a reservation (each has committed or
  /// been given back) or `deadline` passes; returns whether none does. Woken by the writes' ends.
  public func waitForWrites(of ids: [BlockID], until deadline: Deadline) -> Bool {
    reservationsEnded.wait(until: deadline) { !ids.contains(where: isBeingWritten) }
  }

  private func isPresentOrPending(_ id: BlockID) -> Bool {
    if state.withLock({ $0.ram[id] != nil || $0.reservations[id] != nil }) { return true }
    return nvme?.contains(id) == true
  }

  /// RAM `namespace` may pin through client leases now, in bytes.
  public func pinnedBytes(of namespace: Namespace) -> Int {
    state.withLock { $0.leases.usage(of: namespace).pinnedBytes }
  }

  /// A slot of at least `bytes` for a block of `namespace`: first, while the namespace would go
  /// over its RAM quota, it evicts its own blocks (never another tenant's); then victims by the
  /// policy until a slot is free.
  private func makeRoom(bytes: Int, for namespace: Namespace) async throws(StrataError) -> ArenaSlot {
    if let quota = configuration.quotas[namespace].ramBytesMax {
      while true {
        let ended = state.withLock { state -> UInt64? in
          state.exceedsRAMQuota(quota, adding: bytes, to: namespace) ? state.writesToNVMeEnded : nil
        }
        guard let ended else { break }
        if try await evictOne(from: namespace, for: namespace) { continue }
        guard await roomComes(after: ended) else {
          throw StrataError(
            .resourceExhausted,
            "namespace '\(namespace.name)' is at its RAM quota (\(quota) bytes, limits.max_ram_bytes_per_namespace or namespaces[].ram) and every one of its blocks is pinned"
          )
        }
      }
    }
    while true {
      let (slot, ended) = state.withLock { state in (state.allocator.allocate(bytes: bytes), state.writesToNVMeEnded) }
      if let slot { return slot }
      if try await evictOne(for: namespace) { continue }
      guard await roomComes(after: ended) else { throw ramFull() }
    }
  }

  /// Whether room may still come after `makeRoom` found nothing to evict: blocks being written to
  /// NVMe (behind, or demoted by another call) become evictable, or free their slots, when their
  /// writes end. True once a write has ended since `ended` (at once when one has already); false
  /// when none is in flight.
  private func roomComes(after ended: UInt64) async -> Bool {
    await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
      let answer = state.withLock { state -> Bool? in
        if state.writesToNVMeEnded != ended { return true }
        guard state.demotionsInFlight > 0 || !state.writingBehind.isEmpty else { return false }
        state.roomWaiters.append(continuation)
        return nil
      }
      if let answer { continuation.resume(returning: answer) }
    }
  }

  /// Whether the last write to NVMe (a demotion, a write-behind batch, a flush's) failed, within
  /// the last `writeFailureMemoryMilliseconds`: the disk fails writes now, as far as this node
  /// knows. A node then waits before it reads back blocks it let go for want of a disk (they
  /// would only fill RAM again). Older, the failure no longer counts: a node that wrote nothing
  /// since would otherwise never read them back (simulation seed 4905 under RAM pressure), and
  /// the read-back's own writes show whether the disk works.
  public var nvmeWritesFailing: Bool {
    let now = clock.nowMilliseconds()
    return state.withLock { state in
      state.nvmeWriteFailedAtMilliseconds.map { now < $0 + Self.writeFailureMemoryMilliseconds } ?? false
    }
  }

  /// How long a failed write to NVMe counts as the disk failing writes (`nvmeWritesFailing`).
  public static let writeFailureMemoryMilliseconds: UInt64 = 5_000

  /// Wakes the calls waiting for room (`roomComes`): a write to NVMe has ended.
  func endedWriteToNVMe() {
    for waiter in state.withLock({ $0.endWriteToNVMe() }) { waiter.resume(returning: true) }
  }

  /// The error of a RAM tier with no block to evict, saying what holds it.
  private func ramFull() -> StrataError {
    let (used, reserved, pinned) = state.withLock { state in
      (
        state.allocator.usedBytes, state.reservations.values.reduce(0) { $0 + $1.capacityBytes },
        state.leases.pinnedBlockCount
      )
    }
    return StrataError(
      .resourceExhausted,
      "RAM tier is full (\(used) of \(configuration.ramBytes) bytes in use) and no block can be evicted: \(reserved) bytes are reserved by PUTs and promotions in progress, \(pinned) blocks pinned by leases and transfers"
    )
  }

  private enum Victim {
    case dropped
    case demote(BlockID, RAMEntry)
  }

  /// Evicts one block from RAM (one of `namespace`'s own when given), writing it to NVMe first
  /// when admitted and its namespace is under its NVMe quota; the write is the work of `share`
  /// (the namespace whose request needs the room, nil for the node's own) in the I/O pool. False
  /// when nothing is evictable.
  private func evictOne(from namespace: Namespace? = nil, for share: Namespace?) async throws(StrataError) -> Bool {
    let now = clock.nowMilliseconds()
    let nvmeRoom = nvmeQuotaRoom()
    let victim: Victim? = state.withLock { state in
      state.unpinned(state.leases.expire(now: now))
      guard let id = state.pickVictim(from: namespace), var entry = state.ram[id] else { return nil }
      if namespace != nil { state.stats.quotaEvictedBlocks += 1 }
      if admits(entry), let nvme {
        if !nvme.contains(id) {
          guard nvmeRoom(id.namespace, entry.bytes) else {
            // Its namespace is at its NVMe quota: dropped rather than written.
            state.ram[id] = nil
            state.allocator.free(entry.slot)
            state.stats.droppedBlocks += 1
            state.stats.nvmeQuotaDroppedBlocks += 1
            return .dropped
          }
          entry.demoting = true
          state.ram[id] = entry
          state.demotionsInFlight += 1
          return .demote(id, entry)
        }
        state.stats.cleanEvictedBlocks += 1
      } else {
        state.stats.droppedBlocks += 1
      }
      state.ram[id] = nil
      state.allocator.free(entry.slot)
      return .dropped
    }
    guard let victim else { return false }
    guard case .demote(let id, let entry) = victim, let nvme else { return true }
    // Calls waiting for room look again once this demotion has settled its block (slot freed, or
    // kept in RAM).
    defer { endedWriteToNVMe() }
    let bytes = UnsafeRawBufferPointer(arena.buffer(entry.slot, bytes: entry.bytes))
    var failure: StrataError?  // counted in writeToNVMe
    var notTried = false
    do throws(StrataError) {
      let block = NVMeBlockWrite(id: id, payload: bytes, checksum: entry.checksum, checksumOfStoredCopy: true)
      failure = try await writeToNVMe(nvme, [block], for: share)[0]
    } catch {
      // The I/O pool had no room for the write (or the request went away): nothing was tried, so
      // the block stays in RAM as it was, and the caller is told.
      failure = error
      notTried = true
    }
    // The write is over: a call that finds nothing to evict from here on does not wait for this
    // demotion, whose failure handler may take long (it asks other nodes for copies).
    state.withLock { $0.demotionsInFlight -= 1 }
    let written = failure == nil
    var verdict = notTried ? DemotionFailureVerdict.keep : .drop
    if !notTried, let failure, let handler = demotionFailureHandler.withLock({ $0 }),
      !state.withLock({ $0.removedWhileDemoting.contains(id) })
    {
      verdict = await handler(LeasedBlock(id: id, bytes: bytes, checksum: entry.checksum, foundIn: .ram), failure)
    }
    let kept = state.withLock { state -> Bool in
      // Kept: back to an ordinary RAM block, evictable again (unless it was deleted meanwhile).
      guard verdict == .keep, !state.removedWhileDemoting.contains(id), var current = state.ram[id] else {
        return false
      }
      current.demoting = false
      state.ram[id] = current
      state.policy.insert(id, bytes: entry.slot.capacityBytes)
      if !notTried { state.stats.demotionFailedKept += 1 }
      return true
    }
    if kept, let failure {
      if notTried { throw failure }
      throw StrataError(
        .ioError,
        "RAM tier full and block \(id) could not be written to NVMe (\(failure.message)); no other copy is safe, so it stays in RAM"
      )
    }
    // A block deleted while it was being written must not come back from NVMe: its record goes
    // before the id leaves `removedWhileDemoting`, so a re-PUT copy never looks clean because of it.
    if written, state.withLock({ $0.removedWhileDemoting.contains(id) }) { _ = nvme.remove(id) }
    _ = state.withLock { state -> Bool in  // true: deleted during the write
      if written {
        state.stats.demotedBlocks += 1
        state.stats.demotedBytes += entry.bytes
      } else {
        state.stats.droppedBlocks += 1
        state.stats.demotionFailedDropped += 1
      }
      if state.removedWhileDemoting.remove(id) != nil {
        // Deleted during the write (a re-PUT since then has its own entry and slot): release the
        // slot this demotion held, now or when the last lease on the id ends.
        if state.leases.isPinned(id) {
          state.doomed[id, default: []].append(entry.slot)
        } else {
          state.allocator.free(entry.slot)
        }
        state.requeueAfterDeletedWrite(id, writeBehind: writeBehindEnabled)
        return true
      }
      if state.leases.isPinned(id) || state.batchPins[id] != nil, var current = state.ram[id] {
        // Pinned while it was written (a lease or a batch being assembled reads it): it stays in
        // RAM, now on NVMe too, and is evictable again once its pins end.
        current.demoting = false
        if written { current.dirty = false }
        state.ram[id] = current
        state.policy.insert(id, bytes: entry.slot.capacityBytes)
        return false
      }
      state.ram[id] = nil
      state.allocator.free(entry.slot)
      return false
    }
    return true
  }

  /// Whether a block of a namespace may still go to NVMe under its NVMe quota (read once per
  /// eviction: the NVMe tier's usage per namespace is kept incrementally).
  func nvmeQuotaRoom() -> (Namespace, Int) -> Bool {
    guard let nvme,
      configuration.quotas.defaults.nvmeBytesMax != nil
        || configuration.quotas.overrides.values.contains(where: { $0.nvmeBytesMax != nil })
    else { return { _, _ in true } }
    let usage = nvme.usageByNamespace()
    let quotas = configuration.quotas
    return { namespace, bytes in
      guard let quota = quotas[namespace].nvmeBytesMax else { return true }
      return (usage[namespace]?.bytes ?? 0) + bytes <= quota
    }
  }

  private func admits(_ entry: RAMEntry) -> Bool {
    switch configuration.admission {
    case .always: return true
    case .seenTwice: return entry.reads > 0
    case .never: return false
    }
  }

  /// Writes blocks to NVMe in one call of the tier (few device writes for many small blocks), as
  /// the work of `share` in the I/O pool (the namespace whose request needs it, nil for the node's
  /// own); returns each block's failure, nil for those on NVMe now, each counted as an I/O error.
  /// Throws, having tried nothing, when the pool has no room for the write (counted as I/O queue
  /// refusals) or the calling task was cancelled before it ran.
  /// The payloads are arena slots that stay put (pinned or demoting) until this returns, and each
  /// checksum is the commit's, over its slot (immutable since): the tier does not compute it again.
  func writeToNVMe(
    _ nvme: NVMeTier, _ blocks: [NVMeBlockWrite], for share: Namespace?
  ) async throws(StrataError) -> [StrataError?] {
    nonisolated(unsafe) let writes = blocks  // the slots stay put until we return (see above)
    let outcomes: [Result<NVMeWriteOutcome, StrataError>]
    do throws(StrataError) {
      outcomes = try await io.run(for: share) { () throws(StrataError) in nvme.write(writes) }
    } catch {
      if error.code == .resourceExhausted { state.withLock { $0.stats.ioQueueRefusals += blocks.count } }
      throw error
    }
    let failures = outcomes.map { outcome -> StrataError? in
      guard case .failure(let error) = outcome else { return nil }
      return error
    }
    let now = clock.nowMilliseconds()
    for (block, failure) in zip(blocks, failures) where failure == nil {
      nvmeAges.written(block.id, in: nvme, atMilliseconds: now)
    }
    let failed = failures.count { $0 != nil }
    state.withLock { state in
      state.stats.ioErrors += failed
      state.nvmeWriteFailedAtMilliseconds = failed > 0 ? now : nil
    }
    return failures
  }

  private enum Promotion {
    /// This call read the block into RAM.
    case promoted
    /// The block is in RAM already, or another call's promotion of it put it there meanwhile.
    case resident
    /// Not on NVMe (any more), being written by a PUT, or its read failed.
    case missed
  }

  /// Where a block's promotion stands once room is made for it: decided (in RAM already, or a
  /// miss), or a RAM slot claimed for it that its NVMe read is to fill.
  private enum PromotionClaim {
    case decided(Promotion)
    case claimed(ArenaSlot, bytes: Int)
  }

  /// Promotes a batch's NVMe-resident blocks, each pinned for the batch; a failed promotion is a
  /// miss. Room is made and claimed block by block in the batch's order, so when RAM cannot hold
  /// the whole batch it is the leading blocks that get it (a worker loads the leading run); the
  /// disk reads then run as many at once as the I/O pool has threads, so a GET of several blocks
  /// keeps that many reads in flight instead of one. With no I/O threads (the simulator's tier
  /// manager, whose I/O runs in the caller) each read runs in this task before the next claim, in
  /// order, as a deterministic run needs.
  private func promoteAll(_ ids: [BlockID]) async -> [(BlockID, Promotion)] {
    let width = configuration.ioThreads
    return await withTaskGroup(of: (BlockID, Promotion).self) { group in
      var promotions: [(BlockID, Promotion)] = []
      var reading = 0
      for id in ids {
        let claim: PromotionClaim
        do throws(StrataError) {
          claim = try await claimPromotion(of: id)
        } catch {
          state.withLock { $0.stats.promotionsWithoutRoom += 1 }
          claim = .decided(.missed)
        }
        switch claim {
        case .decided(let promotion): promotions.append((id, promotion))
        case .claimed(let slot, let bytes) where width == 0:
          promotions.append((id, await completePromotion(of: id, into: slot, bytes: bytes)))
        case .claimed(let slot, let bytes):
          if reading == width, let done = await group.next() {
            promotions.append(done)
            reading -= 1
          }
          group.addTask { [self] in (id, await completePromotion(of: id, into: slot, bytes: bytes)) }
          reading += 1
        }
      }
      while let done = await group.next() { promotions.append(done) }
      return promotions
    }
  }

  /// Makes room for an NVMe block and claims a RAM slot for it. A call that finds another
  /// promotion of the same block in flight waits for that read instead of missing the block, so a
  /// client's GET racing a repair's copy of the same block still finds it.
  private func claimPromotion(of id: BlockID) async throws(StrataError) -> PromotionClaim {
    guard let nvme, let bytes = nvme.payloadBytes(of: id) else { return .decided(.missed) }
    if await joinPromotion(of: id) { return .decided(.resident) }
    let slot = try await makeRoom(bytes: bytes, for: id.namespace)
    let claimed = state.withLock { state -> Bool in
      // Removed while its NVMe write was in flight: that record is on its way out, never read.
      guard state.ram[id] == nil, state.reservations[id] == nil, !state.removedWhileDemoting.contains(id) else {
        state.allocator.free(slot)
        return false
      }
      state.reservations[id] = slot
      state.promotions[id] = []
      return true
    }
    // Another promotion began (or ended) while this call made room: take its result.
    guard claimed else { return .decided(await joinPromotion(of: id) ? .resident : .missed) }
    return .claimed(slot, bytes: bytes)
  }

  /// Reads a claimed block from NVMe into its slot and publishes it in RAM, pinned for the batch;
  /// a failed read frees the slot and is a miss (counted as an I/O error or a checksum failure,
  /// unless the request was cancelled before the read ran).
  private func completePromotion(of id: BlockID, into slot: ArenaSlot, bytes: Int) async -> Promotion {
    guard let nvme else { return .missed }
    nonisolated(unsafe) let destination = arena.buffer(slot, bytes: bytes)
    let result: Result<(bytes: Int, checksum: UInt32), StrataError>
    do throws(StrataError) {
      result = .success(
        try await io.run(for: id.namespace) { () throws(StrataError) in try nvme.readVerified(id, into: destination) })
    } catch {
      result = .failure(error)
    }
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.reservations[id] = nil
      defer { state.promotions[id] = nil }
      switch result {
      case .success(let read) where read.bytes == bytes:
        // The checksum the NVMe tier verified these bytes against: nothing reads them again here,
        // under the lock.
        let checksum = read.checksum
        state.ram[id] = RAMEntry(
          slot: slot, bytes: bytes, checksum: checksum,
          storedAtMilliseconds: nvmeAges.storedAt(id, in: nvme) ?? clock.nowMilliseconds())
        state.policy.insert(id, bytes: slot.capacityBytes)
        state.pinForBatch(id)
        state.stats.promotedBlocks += 1
        state.stats.promotedBytes += bytes
      case .success:
        state.allocator.free(slot)
        state.stats.ioErrors += 1
      case .failure(let error):
        state.allocator.free(slot)
        state.countFailedRead(error)
      }
      return state.promotions[id] ?? []
    }
    reservationsEnded.notify()
    for waiter in waiters { waiter.resume() }
    if case .success(let read) = result, read.bytes == bytes { return .promoted }
    return .missed
  }

  /// Waits for another call's promotion of `id`, if one is in flight; then true when `id` is in
  /// RAM (pinned for the calling batch). Never waits on a PUT of the same id: a slow writer must
  /// not hold readers up.
  private func joinPromotion(of id: BlockID) async -> Bool {
    if state.withLock({ $0.promotions[id] != nil }) {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let waits = state.withLock { state -> Bool in
          guard state.promotions[id] != nil else { return false }
          state.promotions[id, default: []].append(continuation)
          return true
        }
        if !waits { continuation.resume() }
      }
    }
    return state.withLock { state in
      guard state.ram[id] != nil else { return false }
      state.pinForBatch(id)
      return true
    }
  }
}

/// How far a `flush` has got: blocks and bytes written to NVMe, of those it found to write (a
/// later pass adds the blocks the NVMe tier evicted meanwhile).
public struct FlushProgress: Sendable, Hashable {
  public var blocksWritten = 0
  public var bytesWritten = 0
  public var blocksToWrite = 0
  public var bytesToWrite = 0

  public init() {}

  /// Whole percent of the bytes to write that are written (100 with nothing to write).
  public var percent: Int { bytesToWrite > 0 ? min(100, bytesWritten * 100 / bytesToWrite) : 100 }

  /// One line for a status: "writing RAM blocks to NVMe: 1200 of 4800 blocks (25%, 2.3 GiB of 9.4 GiB)".
  public var summary: String {
    "writing RAM blocks to NVMe: \(blocksWritten) of \(blocksToWrite) blocks (\(percent)%, "
      + "\(ByteSize(bytes: UInt64(bytesWritten))) of \(ByteSize(bytes: UInt64(bytesToWrite))))"
  }
}
