// Copies to other nodes (replication, drain, repair): a block leaves only after its RAM bytes
// were checked against the checksum stored when it was written, and travels with that stored
// checksum, so a bit flipped in memory is never passed on under a fresh, valid checksum. The same
// check runs when a client reports a block it received damaged (VERIFY).

public import StrataCore

/// Blocks held for copying to other nodes; release it (`TierManager.release`) when the copies are
/// done.
public struct CopyLease: @unchecked Sendable {
  // @unchecked: `buffers` are owned by this value until `TierManager.release` frees them; the
  // blocks pointing into them are only read.
  let leases: [BlockLease]
  /// Blocks read from NVMe into memory of the copy's own, freed at release.
  let buffers: [UnsafeMutableRawBufferPointer]
  let bufferBytes: Int
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
  /// The most bytes all copies together read from NVMe into buffers of their own at once: an
  /// eighth of the RAM tier, at most 256 MiB, at least one block of the largest size. A copy
  /// finding the budget taken promotes the rest of its blocks into RAM instead (and never waits).
  public var copyBufferBytesMax: Int {
    max(configuration.blockBytesMax, min(256 << 20, configuration.ramBytes / 8))
  }

  /// Holds `ids` for copying to other nodes, without counting a read (`asRead: false`), and checks
  /// each present block's bytes against its stored checksum (CRC-32C over the block, the cost of
  /// one read of it). A block only on NVMe is read into a buffer of the copy's own, not promoted
  /// into RAM: a repair after a lost node reads every block it co-owned, and moving them all
  /// through RAM would evict the blocks clients read (within `copyBufferBytesMax`; beyond it, the
  /// block is promoted). Blocks in RAM are pinned as `lease` does. A RAM copy that fails its check
  /// is removed (never served or copied again; its slot is reused once the lease ends) and
  /// counted in `stats.checksumFailures`; where the block is on NVMe too, that copy is read (and
  /// so checked) and used instead (`recovered`), otherwise the block is `corrupt`.
  public func leaseForCopy(_ ids: [BlockID]) async throws(StrataError) -> CopyLease {
    var parts = CopyParts()
    do {
      var blocks = try await hold(ids, into: &parts)
      let failedAt = blocks.indices.filter { index in
        blocks[index].map { CRC32C.checksum($0.bytes) != $0.checksum } ?? false
      }
      let failed = failedAt.map { ids[$0] }
      for index in failedAt { blocks[index] = nil }
      quarantine(failed)
      var recovered: [BlockID] = []
      let onDiskAt = failedAt.filter { nvme?.contains(ids[$0]) == true }
      if !onDiskAt.isEmpty {
        for (position, block) in zip(onDiskAt, try await hold(onDiskAt.map { ids[$0] }, into: &parts)) {
          guard let block, CRC32C.checksum(block.bytes) == block.checksum else { continue }
          blocks[position] = block
          recovered.append(block.id)
        }
      }
      let kept = Set(recovered)
      return parts.lease(blocks: blocks, corrupt: failed.filter { !kept.contains($0) }, recovered: recovered)
    } catch {
      release(parts.lease(blocks: [], corrupt: [], recovered: []))
      throw error
    }
  }

  /// A block a copy read from NVMe into memory of its own; `block` is nil when the read failed.
  struct DirectRead: @unchecked Sendable {
    // @unchecked: `memory` belongs to the copy that read it, until `release` frees it.
    let block: LeasedBlock?
    let memory: UnsafeMutableRawBufferPointer
  }

  /// What a copy holds so far: leases on RAM blocks and buffers of NVMe blocks.
  struct CopyParts {
    var leases: [BlockLease] = []
    var buffers: [UnsafeMutableRawBufferPointer] = []
    var bufferBytes = 0

    func lease(blocks: [LeasedBlock?], corrupt: [BlockID], recovered: [BlockID]) -> CopyLease {
      CopyLease(
        leases: leases, buffers: buffers, bufferBytes: bufferBytes, blocks: blocks, corrupt: corrupt,
        recovered: recovered)
    }
  }

  /// Holds `ids` for a copy: NVMe-only blocks read into buffers (`readForCopy`), the rest leased
  /// (`asRead: false`); one entry per id. What it took is in `parts` even when it throws.
  private func hold(_ ids: [BlockID], into parts: inout CopyParts) async throws(StrataError) -> [LeasedBlock?] {
    let direct = await readForCopy(ids)
    for read in direct.values {
      parts.buffers.append(read.memory)
      parts.bufferBytes += read.memory.count
    }
    let leasedAt = ids.indices.filter { direct[$0] == nil }
    let lease = try await self.lease(leasedAt.map { ids[$0] }, asRead: false)
    parts.leases.append(lease)
    var blocks = ids.indices.map { index in direct[index]?.block }
    for (index, block) in zip(leasedAt, lease.blocks) { blocks[index] = block }
    return blocks
  }

  /// Reads the blocks of `ids` that live only on NVMe into buffers of their own, as many as
  /// `copyBufferBytesMax` leaves room for (taken at once: nothing waits for it), `ioThreads` at a
  /// time (one after another without I/O threads, as in the simulator). By index in `ids`: each
  /// block read, or an entry without a block where the read failed (counted as a promotion's
  /// failure is; the NVMe tier drops a record that fails its checks): the block is then missing
  /// from the copy. Ids without an entry are for `lease`.
  private func readForCopy(_ ids: [BlockID]) async -> [Int: DirectRead] {
    guard let nvme else { return [:] }
    let budget = copyBufferBytesMax
    let wanted = state.withLock { state -> [(index: Int, id: BlockID, bytes: Int)] in
      var wanted: [(index: Int, id: BlockID, bytes: Int)] = []
      for (index, id) in ids.enumerated() where state.ram[id] == nil && state.reservations[id] == nil {
        guard let bytes = nvme.payloadBytes(of: id), state.stats.copyBufferBytes + bytes <= budget else { continue }
        state.stats.copyBufferBytes += bytes
        wanted.append((index, id, bytes))
      }
      return wanted
    }
    @Sendable func read(_ id: BlockID, bytes: Int) async -> DirectRead {
      // Page-aligned: the NVMe tier reads a large block's stored bytes straight into it.
      let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 4096)
      nonisolated(unsafe) let destination = memory
      do throws(StrataError) {
        let read = try await io.run(for: id.namespace) { () throws(StrataError) in
          try nvme.readVerified(id, into: destination)
        }
        guard read.bytes == bytes else {
          state.withLock { $0.stats.ioErrors += 1 }
          return DirectRead(block: nil, memory: memory)
        }
        state.withLock { $0.stats.copyReadsFromNVMe += 1 }
        let bytes = UnsafeRawBufferPointer(rebasing: memory[0..<bytes])
        return DirectRead(
          block: LeasedBlock(id: id, bytes: bytes, checksum: read.checksum, foundIn: .nvme), memory: memory)
      } catch {
        state.withLock { $0.countFailedRead(error) }
        return DirectRead(block: nil, memory: memory)
      }
    }
    let width = configuration.ioThreads
    guard width > 0 else {
      var reads: [Int: DirectRead] = [:]
      for (index, id, bytes) in wanted { reads[index] = await read(id, bytes: bytes) }
      return reads
    }
    return await withTaskGroup(of: (Int, DirectRead).self) { group in
      var reads: [Int: DirectRead] = [:]
      for (position, (index, id, bytes)) in wanted.enumerated() {
        if position >= width, let (done, read) = await group.next() { reads[done] = read }
        group.addTask { (index, await read(id, bytes: bytes)) }
      }
      while let (done, read) = await group.next() { reads[done] = read }
      return reads
    }
  }

  /// Ends a copy: its pins end and its buffers are freed.
  public func release(_ copy: CopyLease) {
    for lease in copy.leases { release(lease) }
    for buffer in copy.buffers { buffer.deallocate() }
    if copy.bufferBytes > 0 { state.withLock { $0.stats.copyBufferBytes -= copy.bufferBytes } }
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
