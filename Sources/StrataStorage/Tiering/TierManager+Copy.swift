// Copies to other nodes (replication, drain, repair): a block leaves only after its RAM bytes
// were checked against the checksum stored when it was written, and travels with that stored
// checksum, so a bit flipped in memory is never passed on under a fresh, valid checksum. The same
// check runs when a client reports a block it received damaged (VERIFY).

public import StrataCore

/// Blocks pinned for copying to other nodes; release it (`TierManager.release`) when the copies
/// are done.
public struct CopyLease: Sendable {
  let leases: [BlockLease]
  /// One entry per requested id: the block, its bytes matching its stored checksum; nil where
  /// the block is absent or was found corrupt.
  public let blocks: [LeasedBlock?]
  /// Blocks whose bytes no longer matched their stored checksum and that this node holds no
  /// other copy of: removed from it.
  public let corrupt: [BlockID]
  /// Blocks whose RAM copy no longer matched its stored checksum (removed) and whose NVMe copy,
  /// read and checked instead, did: their entries in `blocks` are that copy.
  public let recovered: [BlockID]
}

/// What `TierManager.check` found of one block.
public enum StoredCopyCheck: Sendable, Hashable {
  /// It matches its stored checksum, and stays.
  case intact
  /// Its RAM copy failed its stored checksum and was removed (an NVMe copy that passes stays).
  case corrupt
  /// The node holds no copy (or a read of its only copy, on NVMe, failed and dropped it).
  case absent
}

extension TierManager {
  /// Pins `ids` like `lease`, then checks each present block's bytes against its stored
  /// checksum (CRC-32C over the block, the cost of one read of it). A RAM copy that fails is
  /// removed (never served or copied again; its slot is reused once the lease ends) and counted
  /// in `stats.checksumFailures`; where the block is on NVMe too, that copy is read (and so
  /// checked) and used instead (`recovered`), otherwise the block is `corrupt`.
  public func leaseForCopy(_ ids: [BlockID]) async throws(StrataError) -> CopyLease {
    let lease = try await lease(ids, asRead: false)
    var blocks = lease.blocks.map { block in block.flatMap { CRC32C.checksum($0.bytes) == $0.checksum ? $0 : nil } }
    let failedAt = blocks.indices.filter { lease.blocks[$0] != nil && blocks[$0] == nil }
    let failed = failedAt.map { ids[$0] }
    quarantine(failed)
    var leases = [lease]
    var recovered: [BlockID] = []
    let onDiskAt = failedAt.filter { nvme?.contains(ids[$0]) == true }
    if !onDiskAt.isEmpty {
      let second: BlockLease
      do {
        second = try await self.lease(onDiskAt.map { ids[$0] }, asRead: false)
      } catch {
        release(lease)
        throw error
      }
      leases.append(second)
      for (position, block) in zip(onDiskAt, second.blocks) {
        guard let block, CRC32C.checksum(block.bytes) == block.checksum else { continue }
        blocks[position] = block
        recovered.append(block.id)
      }
    }
    let kept = Set(recovered)
    let corrupt = failed.filter { !kept.contains($0) }
    return CopyLease(leases: leases, blocks: blocks, corrupt: corrupt, recovered: recovered)
  }

  /// Ends the pins of a copy.
  public func release(_ copy: CopyLease) {
    for lease in copy.leases { release(lease) }
  }

  /// Checks each of `ids` the node holds against its stored checksum, as a copy does (a block
  /// only on NVMe is read, and so verified, on the way), and removes each copy that fails. Asked
  /// for by a client whose GET found a block's bytes damaged (VERIFY): a copy that passes stays,
  /// so a report can never remove a good block.
  /// One block at a time: a report pins at most one block, never a batch of them (which would
  /// hold their RAM from eviction while other tenants' PUTs need it).
  public func check(_ ids: [BlockID]) async throws(StrataError) -> [StoredCopyCheck] {
    var checks: [StoredCopyCheck] = []
    checks.reserveCapacity(ids.count)
    for id in ids {
      let copy = try await leaseForCopy([id])
      release(copy)
      checks.append(
        copy.corrupt.isEmpty && copy.recovered.isEmpty ? (copy.blocks[0] != nil ? .intact : .absent) : .corrupt)
    }
    return checks
  }

  /// The blocks in RAM now (a snapshot, by key), for a scrub.
  public func ramBlockIDs() -> [BlockID] {
    state.withLock { Array($0.ram.keys) }.sorted { ($0.namespace.name, $0.key.hex) < ($1.namespace.name, $1.key.hex) }
  }

  /// Checks the RAM copy of `id` against its stored checksum, as `check` does, without counting a
  /// read (no hit, no access for eviction: a scrub is not a reader): pinned while it is read, and
  /// quarantined if it fails. Nil when the block is not in RAM (any more); otherwise its size and
  /// whether it passed.
  public func scrubRAM(_ id: BlockID) -> (bytes: Int, intact: Bool)? {
    guard let found = ramCopyIsIntact(id) else { return nil }
    if !found.intact { quarantine([id]) }
    return found
  }

  /// Whether the RAM copy of `id` matches its stored checksum, changing nothing (no quarantine, no
  /// read counted): a look for the simulator's accounting of intact copies. Nil when the block is
  /// not in RAM.
  public func ramCopyIsIntact(_ id: BlockID) -> (bytes: Int, intact: Bool)? {
    let pinned = state.withLock { state -> (LeaseID, UnsafeRawBufferPointer, UInt32)? in
      guard let entry = state.ram[id] else { return nil }
      let lease = state.leases.pinForTransfer([id])
      return (lease, UnsafeRawBufferPointer(arena.buffer(entry.slot, bytes: entry.bytes)), entry.checksum)
    }
    guard let (lease, bytes, checksum) = pinned else { return nil }
    let intact = CRC32C.checksum(bytes) == checksum
    state.withLock { state in state.unpinned(state.leases.release(lease)) }
    return (bytes.count, intact)
  }

  /// RAM copies found not to match their stored checksum: counted in `stats.checksumFailures` and
  /// removed (never served or copied again; a pinned slot is reused once its pins end). A block
  /// written to NVMe keeps that copy, which every read checks on its own (written after the damage,
  /// it fails there and is dropped then): a single node does not lose a block its disk holds whole.
  /// Blocks left on no tier are reported to the damaged-block handler (`setDamagedHandler`).
  public func quarantine(_ corrupt: [BlockID]) {
    guard !corrupt.isEmpty else { return }
    state.withLock { $0.stats.checksumFailures += corrupt.count }
    var gone: [BlockID] = []
    for id in corrupt {
      let onDisk = nvme?.contains(id) == true
      remove(id, keepingNVMe: onDisk)
      if !onDisk { gone.append(id) }
    }
    if !gone.isEmpty { damagedHandler.withLock { $0 }?(gone) }
  }

  /// Flips one bit of a RAM-resident block's bytes in place, leaving its stored checksum as it
  /// was: a memory fault, for fault-injection tests (the admin API offers it only when the node
  /// runs with fault injection on). Returns false when the block is not in RAM.
  public func flipBitInRAMForTesting(_ id: BlockID, byte: Int = 0, bit: Int = 0) -> Bool {
    state.withLock { state in
      guard let entry = state.ram[id], entry.bytes > 0 else { return false }
      let bytes = arena.buffer(entry.slot, bytes: entry.bytes)
      bytes[min(max(byte, 0), entry.bytes - 1)] ^= UInt8(1) << UInt8(bit & 7)
      return true
    }
  }
}
