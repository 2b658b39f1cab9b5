// Write-behind: every block committed to RAM is written to NVMe soon after, oldest commit first,
// keeping its RAM copy. A crash then loses only blocks acknowledged within the last moments (the
// lag, which the disk keeps under `writebackWindowMilliseconds` while it keeps up), and evicting
// a block already written behind costs nothing.
//
// A write that fails leaves its block in RAM, to be written again once its retry is due
// (`WriteBehindRetry`: waits that double while passes keep failing), woken by a once-a-second look
// when no commit comes.
//
// Blocks go in batches of consecutive commits, one NVMe tier call each, which puts a run of small
// records in one device write (`NVMeTier.batchWriteBytesMax`); a large block is a batch alone.
//
// Bounds: the queue names blocks held in RAM (compacted to a multiple of their count), a batch
// holds at most `writeBehindBatchBlocksMax` blocks, and at most `writeBehindConcurrency` batches
// are written at once on the shared I/O pool. When the disk cannot keep
// up, blocks wait in RAM: the lag grows, late writes are counted, and once RAM fills a PUT evicts
// inline, writing its victim first (the demotion path), so PUTs slow to the disk's pace instead
// of RAM or the queue growing without bound.

import StrataCore

extension TierManager {
  /// Writes behind at once: half the I/O threads, so that promotions and demotions keep the rest.
  var writeBehindConcurrency: Int { max(1, configuration.ioThreads / 2) }

  struct WriteBehindJob: Sendable {
    let id: BlockID
    let slot: ArenaSlot
    let bytes: Int
    let checksum: UInt32
    let storedAtMilliseconds: UInt64
  }

  /// Writes behind until `shutdown`: each commit wakes a pass that drains the queue.
  func runWriteBehind() async {
    guard writeBehindEnabled, let nvme else { return }
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await self.wakeForWriteBehindRetries() }
      for await _ in writeBehindSignals { _ = await writeBehindPass(nvme) }
      group.cancelAll()
    }
  }

  /// How often the write-behind service looks whether failed writes are due again (no commit may
  /// come to wake it).
  static let writeBehindRetryPollMilliseconds: UInt64 = 1_000

  /// Wakes the write-behind service when blocks whose write failed are due again, until cancelled.
  private func wakeForWriteBehindRetries() async {
    while !Task.isCancelled {
      await clock.sleep(milliseconds: Self.writeBehindRetryPollMilliseconds)
      let now = clock.nowMilliseconds()
      let due = state.withLock { !$0.writeBehindRetry.isEmpty && now >= $0.writeBehindRetry.dueAtMilliseconds }
      if due { writeBehindWake.yield() }
    }
  }

  /// Blocks in one write-behind batch at most; with `NVMeTier.batchWriteBytesMax` this bounds what
  /// one batch holds out of eviction (marked as being written) at a time.
  static var writeBehindBatchBlocksMax: Int { 256 }

  /// Writes every queued block, in batches of consecutive blocks (about one device write of
  /// `NVMeTier.batchWriteBytesMax` each, so small blocks cost few writes), `writeBehindConcurrency`
  /// batches at a time; then makes the writes durable on the devices (fdatasync) so they survive a
  /// power loss too, not only a process crash. Returns the number of blocks written. Tests call it
  /// directly to drive write-behind in steps.
  @discardableResult
  public func writeBehindPass() async -> Int {
    guard writeBehindEnabled, let nvme else { return 0 }
    return await writeBehindPass(nvme)
  }

  private func writeBehindPass(_ nvme: NVMeTier) async -> Int {
    let concurrency = writeBehindConcurrency
    let written = await withTaskGroup(of: Int.self) { group -> Int in
      var running = 0
      var written = 0
      while true {
        while running < concurrency, case let batch = takeWriteBehind(nvme), !batch.isEmpty {
          group.addTask { await self.writeBehind(batch, to: nvme) }
          running += 1
        }
        guard running > 0, let wrote = await group.next() else { return written }
        running -= 1
        written += wrote
      }
    }
    if written > 0 {
      do throws(StrataError) {
        try await io.run { () throws(StrataError) in try nvme.sync() }
      } catch {
        state.withLock { $0.stats.ioErrors += 1 }
      }
    }
    let now = clock.nowMilliseconds()
    state.withLock { $0.writeBehindRetry.passEnded(wrote: written, now: now) }
    return written
  }

  /// The oldest blocks waiting for write-behind, each marked as being written (readable, not
  /// evictable): as many as one device write of `NVMeTier.batchWriteBytesMax` takes (their
  /// records uncompressed), at most `writeBehindBatchBlocksMax`, and one at least while any
  /// waits. Empty when none waits.
  private func takeWriteBehind(_ nvme: NVMeTier) -> [WriteBehindJob] {
    let now = clock.nowMilliseconds()
    return state.withLock { state in
      // An id whose deleted copy is still being written waits: that write's completion queues
      // the re-PUT copy again (`requeueAfterDeletedWrite`).
      let deletedWhileWriting = state.removedWhileDemoting
      let isWaiting = { (id: BlockID, ram: RAMIndex) -> Bool in
        guard let entry = ram[id] else { return false }
        return entry.dirty && !entry.demoting && !deletedWhileWriting.contains(id)
      }
      var batch: [WriteBehindJob] = []
      var batchBytes = 0
      // Blocks whose write failed before go first once their retry is due (they are the oldest).
      var retry = state.writeBehindRetry.takeDue(now: now)[...]
      defer { state.writeBehindRetry.putBack(Array(retry)) }
      while batch.count < Self.writeBehindBatchBlocksMax {
        if let first = retry.first, !isWaiting(first, state.ram) {
          retry.removeFirst()
          continue
        }
        let retried = retry.first
        guard
          let id = retried
            ?? state.withWriteBehindQueue({ queue, ram in queue.first(where: { isWaiting($0, ram) }) }),
          var entry = state.ram[id]
        else { break }
        let recordBytes = BlockRecordHeader.recordBytes(storedBytes: entry.bytes, alignmentBytes: nvme.alignmentBytes)
        // The block the batch has no room for stays first (in the queue or the retry), for the next batch.
        if !batch.isEmpty, batchBytes + recordBytes > NVMeTier.batchWriteBytesMax { break }
        if retried != nil {
          retry.removeFirst()
        } else {
          _ = state.withWriteBehindQueue { queue, ram in queue.popFirst(where: { isWaiting($0, ram) }) }
        }
        entry.demoting = true
        state.ram[id] = entry
        state.writingBehind[id] = entry.storedAtMilliseconds
        batch.append(
          WriteBehindJob(
            id: id, slot: entry.slot, bytes: entry.bytes, checksum: entry.checksum,
            storedAtMilliseconds: entry.storedAtMilliseconds))
        batchBytes += recordBytes
      }
      return batch
    }
  }

  /// Writes a batch of blocks behind, in one call of the NVMe tier; returns how many reached NVMe.
  private func writeBehind(_ jobs: [WriteBehindJob], to nvme: NVMeTier) async -> Int {
    // The slots stay put: the entries are marked demoting, so they are neither evicted nor freed
    // (a remove meanwhile leaves the slot to this write, which releases it below).
    let room = nvmeQuotaRoom()
    var batchBytes: [Namespace: Int] = [:]
    var writing: [WriteBehindJob] = []
    for job in jobs {
      // Within its namespace's NVMe quota with the batch's earlier blocks counted; otherwise it
      // stays in RAM only, as eviction would leave it (dropped, not written, when it leaves RAM).
      let before = batchBytes[job.id.namespace, default: 0]
      guard room(job.id.namespace, before + job.bytes) else {
        finishWriteBehind(job, written: nil, nvme: nvme)
        continue
      }
      batchBytes[job.id.namespace] = before + job.bytes
      writing.append(job)
    }
    guard !writing.isEmpty else {
      endedWriteToNVMe()
      return 0
    }
    let blocks = writing.map { job in
      NVMeBlockWrite(
        id: job.id, payload: UnsafeRawBufferPointer(arena.buffer(job.slot, bytes: job.bytes)),
        checksum: job.checksum, checksumOfStoredCopy: true)
    }
    // Failures are counted as I/O errors (or I/O queue refusals) by writeToNVMe, and below as
    // failed write-behinds.
    let failures: [StrataError?]
    do throws(StrataError) {
      failures = try await writeToNVMe(nvme, blocks, for: nil)
    } catch {
      failures = Array(repeating: error, count: blocks.count)
    }
    var written = 0
    for (job, failure) in zip(writing, failures) {
      finishWriteBehind(job, written: failure == nil, nvme: nvme)
      if failure == nil { written += 1 }
    }
    endedWriteToNVMe()
    return written
  }

  /// Ends one block's write-behind: `written` says whether it reached NVMe, nil when its namespace
  /// had no NVMe quota left for it (not tried).
  private func finishWriteBehind(_ job: WriteBehindJob, written: Bool?, nvme: NVMeTier) {
    guard let written else {
      state.withLock { state in
        state.writingBehind[job.id] = nil
        if state.removedWhileDemoting.remove(job.id) != nil {
          if state.leases.isPinned(job.id) {
            state.doomed[job.id, default: []].append(job.slot)
          } else {
            state.allocator.free(job.slot)
          }
        } else if var current = state.ram[job.id] {
          current.demoting = false
          current.dirty = false
          state.ram[job.id] = current
        }
      }
      return
    }
    let now = clock.nowMilliseconds()
    // A block deleted while it was being written must not come back from NVMe; its record goes
    // before the id leaves `removedWhileDemoting` (see `pickVictim`).
    if written, state.withLock({ $0.removedWhileDemoting.contains(job.id) }) { _ = nvme.remove(job.id) }
    state.withLock { state in
      state.writingBehind[job.id] = nil
      if written {
        state.stats.writebackBlocks += 1
        state.stats.writebackBytes += job.bytes
        if now > job.storedAtMilliseconds + configuration.writebackWindowMilliseconds {
          state.stats.writebackLateBlocks += 1
        }
      } else {
        state.stats.writebackFailedBlocks += 1
      }
      if state.removedWhileDemoting.remove(job.id) != nil {
        if state.leases.isPinned(job.id) {
          state.doomed[job.id, default: []].append(job.slot)
        } else {
          state.allocator.free(job.slot)
        }
        state.requeueAfterDeletedWrite(job.id, writeBehind: true)
        return
      }
      if var current = state.ram[job.id] {
        current.demoting = false
        if written { current.dirty = false } else { state.writeBehindRetry.failed(job.id) }
        state.ram[job.id] = current
      }
    }
  }

  /// Records that a RAM block's copy is on NVMe now (written by `persist`).
  func markClean(_ id: BlockID) {
    state.withLock { state in
      guard var entry = state.ram[id], entry.dirty, !entry.demoting else { return }
      entry.dirty = false
      state.ram[id] = entry
    }
  }
}

extension TierManager.State {
  /// After a write of a deleted block's old copy ends: a re-PUT copy committed meanwhile (dirty,
  /// skipped by write-behind while the old write ran) is queued again.
  mutating func requeueAfterDeletedWrite(_ id: BlockID, writeBehind: Bool) {
    guard writeBehind, let entry = ram[id], entry.dirty, !entry.demoting else { return }
    queueForWriteBehind(id)
  }

  /// Queues a block just committed for write-behind.
  mutating func queueForWriteBehind(_ id: BlockID) {
    withWriteBehindQueue { queue, ram in
      queue.append(id)
      queue.compact(above: 2 * ram.count + 64) { ram[$0]?.dirty == true }
    }
  }

  /// Runs `body` on the queue with the RAM index to read, without copying either (the queue is
  /// moved out for the call, so both are uniquely referenced when mutated again).
  mutating func withWriteBehindQueue<Result>(
    _ body: (inout WriteBehindQueue, RAMIndex) -> Result
  ) -> Result {
    var queue = writeBehind
    writeBehind = WriteBehindQueue()
    defer { writeBehind = queue }
    return body(&queue, ram)
  }

  /// Blocks whose write-behind failed that wait for their retry (still in RAM, not yet written).
  var writeBehindRetryWaiting: Int {
    Set(writeBehindRetry.ids).count { ram[$0]?.dirty == true }
  }

  /// How long the oldest block waiting for write-behind (queued or being written) has waited.
  mutating func writeBehindLag(now: UInt64) -> UInt64 {
    var oldest = writingBehind.values.min() ?? .max
    let queued = withWriteBehindQueue { queue, ram in
      queue.first(where: { ram[$0]?.dirty == true }).flatMap { ram[$0]?.storedAtMilliseconds }
    }
    if let queued { oldest = min(oldest, queued) }
    for id in writeBehindRetry.ids {
      guard let entry = ram[id], entry.dirty else { continue }
      oldest = min(oldest, entry.storedAtMilliseconds)
    }
    return oldest == .max ? 0 : now - min(now, oldest)
  }
}
