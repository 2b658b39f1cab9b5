// Copies to other nodes (replication, drain, repair): a block leaves only after its RAM bytes
// were checked against the checksum stored when it was written, and travels with that stored
// checksum, so a bit flipped in memory is never passed on under a fresh, valid checksum. The same
// check runs when a client reports a block it received damaged (VERIFY).

public import StrataCore

/// Blocks pinned for copying to other nodes; release `lease` when the copies are done.
public struct CopyLease: Sendable {
  public let lease: BlockLease
  /// One entry per requested id: the block, its bytes matching its stored checksum; nil where
  /// the block is absent or was found corrupt.
  public let blocks: [LeasedBlock?]
  /// Blocks whose bytes no longer matched their stored checksum: removed from this node.
  public let corrupt: [BlockID]
}

/// What `TierManager.check` found of one block.
public enum StoredCopyCheck: Sendable, Hashable {
  /// It matches its stored checksum, and stays.
  case intact
  /// It failed its stored checksum and was removed.
  case corrupt
  /// The node holds no copy (or a read of its only copy, on NVMe, failed and dropped it).
  case absent
}

extension TierManager {
  /// Pins `ids` like `lease`, then checks each present block's bytes against its stored
  /// checksum (CRC-32C over the block, the cost of one read of it). A block that fails is
  /// corrupt: it is removed from every tier at once (never served or copied again; its slot is
  /// reused once the lease ends) and counted in `stats.checksumFailures`.
  public func leaseForCopy(_ ids: [BlockID]) async throws(StrataError) -> CopyLease {
    let lease = try await lease(ids)
    var blocks: [LeasedBlock?] = []
    var corrupt: [BlockID] = []
    for block in lease.blocks {
      guard let block else {
        blocks.append(nil)
        continue
      }
      if CRC32C.checksum(block.bytes) == block.checksum {
        blocks.append(block)
      } else {
        corrupt.append(block.id)
        blocks.append(nil)
      }
    }
    quarantine(corrupt)
    return CopyLease(lease: lease, blocks: blocks, corrupt: corrupt)
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
      release(copy.lease)
      checks.append(copy.blocks[0] != nil ? .intact : copy.corrupt.isEmpty ? .absent : .corrupt)
    }
    return checks
  }

  /// The blocks in RAM now (a snapshot, by key), for a scrub.
  public func ramBlockIDs() -> [BlockID] {
    state.withLock { Array($0.ram.keys) }.sorted { ($0.namespace.name, $0.key.hex) < ($1.namespace.name, $1.key.hex) }
  }

  /// Checks the RAM copy of `id` against its stored checksum, as `check` does, without counting a
  /// read (no hit, no access for eviction: a scrub is not a reader): pinned while it is read, and
  /// quarantined if it fails (unless `removeIfDamaged` is false: a look only, for the simulator's
  /// accounting). Nil when the block is not in RAM (any more); otherwise its size and whether it
  /// passed.
  public func scrubRAM(_ id: BlockID, removeIfDamaged: Bool = true) -> (bytes: Int, intact: Bool)? {
    let pinned = state.withLock { state -> (LeaseID, UnsafeRawBufferPointer, UInt32)? in
      guard let entry = state.ram[id] else { return nil }
      let lease = state.leases.pinForTransfer([id])
      return (lease, UnsafeRawBufferPointer(arena.buffer(entry.slot, bytes: entry.bytes)), entry.checksum)
    }
    guard let (lease, bytes, checksum) = pinned else { return nil }
    let intact = CRC32C.checksum(bytes) == checksum
    state.withLock { state in state.unpinned(state.leases.release(lease)) }
    if !intact && removeIfDamaged { quarantine([id]) }
    return (bytes.count, intact)
  }

  /// Blocks found not to match their stored checksum: counted in `stats.checksumFailures`,
  /// removed from every tier (never served or copied again; a pinned slot is reused once its pins
  /// end) and reported to the damaged-block handler (`setDamagedHandler`).
  public func quarantine(_ corrupt: [BlockID]) {
    guard !corrupt.isEmpty else { return }
    state.withLock { $0.stats.checksumFailures += corrupt.count }
    for id in corrupt { remove(id) }
    damagedHandler.withLock { $0 }?(corrupt)
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
