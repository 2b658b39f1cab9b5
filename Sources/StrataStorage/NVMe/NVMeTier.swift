// The NVMe tier of a node: blocks appended as checksummed records into a log of fixed-size regions
// on one or more devices, whole regions evicted oldest first with hot blocks reinserted (the design
// of CacheLib's BlockCache). Reads verify every checksum; a warm restart rebuilds the index from disk.

public import StrataConfig
public import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Counters and sizes of an NVMe tier at one instant.
public struct NVMeTierStatistics: Hashable, Sendable {
  public var blockCount = 0
  /// Bytes of live records (headers and alignment padding included).
  public var usedBytes = 0
  /// Bytes of all regions together.
  public var capacityBytes = 0
  public var regionCount = 0
  public var freeRegionCount = 0
  /// Blocks found corrupt on read or reclaim and dropped (never returned).
  public var corruptBlocksDetected = 0
  /// Failed device reads, writes and syncs (reclaims and restart scans included); the blocks
  /// involved were not admitted or were dropped.
  public var ioErrors = 0
  public var evictedRegions = 0
  public var evictedBlocks = 0
  /// Hot blocks rewritten into the open region when their region was evicted.
  public var reinsertedBlocks = 0
  /// Writes refused because no region was free while another thread's reclaim was running, and
  /// none was freed within `NVMeTier.reclaimWaitMilliseconds`.
  public var admissionsRefused = 0
  /// Writes that found no free region while another thread was reclaiming one, and waited for it.
  public var reclaimWaits = 0
  /// Operations that found every staging buffer in use and allocated one of their own.
  public var stagingOverflowAllocations = 0
  /// Reclaims whose header walk missed blocks (a hole after a failed write) and scanned the index.
  public var reclaimFullScans = 0
  /// Tombstones written by `remove`, so removed blocks stay removed across a restart.
  public var tombstonesWritten = 0
  /// Tombstones not written because no region was free at that moment: the removed block is gone
  /// from the index now, but its record may bring it back after a restart (with its own bytes).
  public var tombstonesRefused = 0
  /// Device writes that carried new blocks' records, and the records they carried: a batch
  /// write puts a run of small records in one device write, so the first is the smaller.
  public var recordWrites = 0
  public var recordsWritten = 0
  /// Records written masked because their stored bytes held the header magic where the device is
  /// aligned (see `RecordMask`): nearly never by chance, so a count that grows is a tenant trying.
  public var maskedRecordsWritten = 0
  /// Estimated bytes the block index occupies (hash table buckets, keys and values).
  public var indexBytes = 0

  /// Index memory per indexed block; between 75 and 150 bytes depending on where the hash table
  /// is in its doubling cycle.
  public var indexBytesPerBlock: Double { blockCount == 0 ? 0 : Double(indexBytes) / Double(blockCount) }
}

/// What a warm restart found.
public struct RecoveryReport: Hashable, Sendable {
  public var blocksRecovered = 0
  /// Records whose header or stored bytes failed their checksum (torn writes, decay).
  public var corruptDropped = 0
  /// Older copies of a block superseded by a higher sequence number.
  public var duplicatesDropped = 0
  public var regionsScanned = 0
  public var ioErrors = 0
  /// Regions whose records are of an older format version, which this build does not read: their
  /// blocks are gone from this tier, and the regions are reused.
  public var olderFormatRegions = 0
  public var durationSeconds = 0.0
}

/// How far a warm restart has read, reported after each region (from the reading threads, one
/// report at a time, counts never going back).
public struct RecoveryProgress: Hashable, Sendable {
  public var regionsRead = 0
  public var regionsTotal = 0
  /// Bytes of the regions read (each whole region, whatever it holds).
  public var bytesRead = 0
  /// Sound records found in the regions read (superseded copies not yet told apart).
  public var recordsFound = 0

  public init(regionsRead: Int = 0, regionsTotal: Int = 0, bytesRead: Int = 0, recordsFound: Int = 0) {
    self.regionsRead = regionsRead
    self.regionsTotal = regionsTotal
    self.bytesRead = bytesRead
    self.recordsFound = recordsFound
  }
}

/// Where a block's record lies on disk; for diagnostics and fault-injection tests.
public struct NVMeRecordLocation: Hashable, Sendable {
  public var device: Int
  /// Byte offset of the record's header on the device.
  public var offset: Int
  /// Header, stored bytes and padding.
  public var recordBytes: Int
  public var storedBytes: Int
  public var payloadBytes: Int
  public var codec: CompressionCodec
}

/// A region-structured block store on NVMe. Thread-safe: any number of threads may read, write
/// and remove at once; the lock guards only bookkeeping, never I/O. Every call is synchronous and
/// blocks its thread for its I/O, so call it from a bounded I/O thread pool, not from async tasks.
public final class NVMeTier: Sendable {
  /// Default largest payload; staging buffers are sized from it.
  public static let defaultBlockBytesMax = 4 << 20
  /// Default staging buffers: one per thread of the caller's I/O pool, plus a few for reclaim.
  public static let defaultStagingBufferCount = 16

  public let capacityBytes: Int
  public let regionBytes: Int
  public let compression: CompressionCodec
  public let blockBytesMax: Int
  /// The alignment every record is placed at: the largest of the devices'.
  public let alignmentBytes: Int
  /// The largest record the tier stages: one of the largest block, and one alignment block more
  /// (the reclaim walk reads headers into it while a record of the largest size is staged).
  let recordBufferBytes: Int
  /// The most bytes one device write of a run of records carries (`batchWriteBytesMax`, capped at
  /// the region size); a record larger than it is written alone.
  let runBytesMax: Int
  let devices: [any BlockDevice]
  let pool: StagingPool
  let log: Mutex<RegionLog>
  /// Notified when a reclaim has freed a region: a writer that found none free while another
  /// thread was reclaiming one waits on it (`reserveRun`).
  let regionFreed = ChangeSignal()
  /// How long a writer waits for another thread's reclaim to free a region before it refuses its
  /// block: one reclaim (the region's headers read, its hot blocks rewritten) after the write that
  /// started it, with a wide margin.
  public static let reclaimWaitMilliseconds: UInt64 = 5_000

  private struct Hooks {
    var isHot: (@Sendable (BlockID) -> Bool)?
    var onEvict: (@Sendable ([BlockID]) -> Void)?
    var onDamaged: (@Sendable ([BlockID]) -> Void)?
  }

  private let hooks = Mutex(Hooks())

  /// Asked, for each live block of a region about to be evicted, whether to keep it by rewriting
  /// it into the open region. Called without any tier lock held, on the thread that triggered the
  /// eviction; it must be quick and must not block on that thread's work.
  public var isHot: (@Sendable (BlockID) -> Bool)? {
    get { hooks.withLock { $0.isHot } }
    set { hooks.withLock { $0.isHot = newValue } }
  }

  /// Told the blocks that left the tier by eviction (one call per evicted region, after they left
  /// the index). Blocks taken out by `remove` or dropped as corrupt on read are not reported: their
  /// caller learns of it directly. Called without any tier lock held.
  public var onEvict: (@Sendable ([BlockID]) -> Void)? {
    get { hooks.withLock { $0.onEvict } }
    set { hooks.withLock { $0.onEvict = newValue } }
  }

  /// Told the blocks a read dropped: the record failed its verification, or the device failed to
  /// read it (never returned either way); and those a reclaim, rewriting them ahead, found damaged.
  /// A cluster node reads such a block back from its other owners. Called without any tier lock
  /// held, on the reading (or reclaiming) thread: it must not block.
  public var onDamaged: (@Sendable ([BlockID]) -> Void)? {
    get { hooks.withLock { $0.onDamaged } }
    set { hooks.withLock { $0.onDamaged = newValue } }
  }

  /// A tier over empty devices: every region is formatted (its first block invalidated), so no
  /// record of an earlier life can come back in a later recovery. Each device is split into
  /// `regionBytes` regions (a remainder smaller than a region is unused).
  /// - Parameters:
  ///   - blockBytesMax: the largest payload `write` accepts; staging buffers hold one record of it,
  ///     or a run of records for one write (`batchWriteBytesMax`), whichever is larger.
  ///   - stagingBufferCount: concurrent operations served without allocating; size it to the I/O pool.
  ///     Staging memory is this many buffers, at most `max(record of blockBytesMax + alignment,
  ///     batchWriteBytesMax)` bytes each, allocated once (pages untouched cost nothing).
  public convenience init(
    devices: [any BlockDevice], regionBytes: Int, compression: CompressionCodec,
    blockBytesMax: Int = NVMeTier.defaultBlockBytesMax, stagingBufferCount: Int = NVMeTier.defaultStagingBufferCount
  ) throws(StrataError) {
    try self.init(
      unformatted: devices, regionBytes: regionBytes, compression: compression, blockBytesMax: blockBytesMax,
      stagingBufferCount: stagingBufferCount)
    let regionStarts = log.withLock { log in log.regions.map { ($0.device, $0.deviceOffset) } }
    for (device, offset) in regionStarts {
      try invalidateRegionStart(device: device, deviceOffset: offset)
    }
  }

  /// Validates the layout and builds a tier whose regions are all free, touching no device.
  init(
    unformatted devices: [any BlockDevice], regionBytes: Int, compression: CompressionCodec, blockBytesMax: Int,
    stagingBufferCount: Int
  ) throws(StrataError) {
    guard !devices.isEmpty, devices.count <= Int(UInt16.max) else {
      throw StrataError(.invalidConfiguration, "NVMe tier: \(devices.count) devices (1 to 65535 allowed)")
    }
    let alignment = devices.map(\.alignmentBytes).max()!
    for (number, device) in devices.enumerated() where alignment % device.alignmentBytes != 0 {
      throw StrataError(
        .invalidConfiguration,
        "NVMe tier: device \(number) alignment \(device.alignmentBytes) does not divide \(alignment)")
    }
    guard regionBytes > 0, regionBytes % alignment == 0, regionBytes <= Int(UInt32.max) else {
      throw StrataError(
        .invalidConfiguration,
        "NVMe tier: region size \(regionBytes) bytes must be a positive multiple of \(alignment) bytes, at most 4 GiB")
    }
    guard blockBytesMax >= 0, blockBytesMax <= LZ4Codec.inputBytesMax else {
      throw StrataError(
        .invalidConfiguration, "NVMe tier: largest block \(blockBytesMax) bytes (at most \(LZ4Codec.inputBytesMax))")
    }
    let recordBytesMax = BlockRecordHeader.recordBytes(storedBytes: blockBytesMax, alignmentBytes: alignment)
    guard recordBytesMax <= regionBytes else {
      throw StrataError(
        .invalidConfiguration,
        "NVMe tier: a record of the largest block (\(recordBytesMax) bytes) does not fit a region of \(regionBytes) bytes"
      )
    }
    var placements: [(device: Int, deviceOffset: Int)] = []
    for (number, device) in devices.enumerated() {
      for start in stride(from: 0, through: device.capacityBytes - regionBytes, by: regionBytes) {
        placements.append((number, start))
      }
    }
    // Two regions at least: one to write into while another is reclaimed.
    guard placements.count >= 2 else {
      throw StrataError(
        .invalidConfiguration,
        "NVMe tier: devices of \(devices.map(\.capacityBytes)) bytes hold \(placements.count) regions of \(regionBytes) bytes; 2 needed"
      )
    }
    guard stagingBufferCount >= 1 else {
      throw StrataError(.invalidConfiguration, "NVMe tier: staging buffer count \(stagingBufferCount)")
    }
    self.devices = devices
    self.regionBytes = regionBytes
    self.compression = compression
    self.blockBytesMax = blockBytesMax
    alignmentBytes = alignment
    capacityBytes = placements.count * regionBytes
    // One extra block: the reclaim walk reads headers into it while reinsertion stages a record of
    // the largest size in front of it. A buffer also holds a run of small records for one write.
    recordBufferBytes = recordBytesMax + alignment
    runBytesMax = max(alignment, min(Self.batchWriteBytesMax, regionBytes) / alignment * alignment)
    pool = StagingPool(
      count: stagingBufferCount, bufferBytes: max(recordBufferBytes, runBytesMax), alignmentBytes: alignment)
    log = Mutex(
      RegionLog(
        regionPlacements: placements, regionBytes: regionBytes, alignmentBytes: alignment,
        firstSequence: wallClockNanoseconds()))
  }

  // MARK: Queries

  public func contains(_ id: BlockID) -> Bool {
    log.withLock { $0.location(of: id) != nil }
  }

  /// The block's uncompressed size: what a `read` destination must hold.
  public func payloadBytes(of id: BlockID) -> Int? {
    log.withLock { $0.location(of: id).map { Int($0.payloadBytes) } }
  }

  public func recordLocation(of id: BlockID) -> NVMeRecordLocation? {
    log.withLock { log in
      guard let location = log.location(of: id) else { return nil }
      let region = log.regions[Int(location.region)]
      return NVMeRecordLocation(
        device: region.device, offset: region.deviceOffset + Int(location.offsetInRegion),
        recordBytes: log.recordBytes(storedBytes: location.storedBytes), storedBytes: location.storedBytes,
        payloadBytes: Int(location.payloadBytes), codec: location.codec)
    }
  }

  public var blockCount: Int { log.withLock { $0.blockCount } }

  /// Every block in the index with its payload size (a snapshot).
  public func blockInventory() -> [(id: BlockID, bytes: Int)] {
    log.withLock { log in log.index.map { (log.blockID(of: $0.key), Int($0.value.payloadBytes)) } }
  }
  public var usedBytes: Int { log.withLock { $0.liveBytes } }

  public var statistics: NVMeTierStatistics {
    var statistics = log.withLock { log in
      var statistics = NVMeTierStatistics()
      statistics.blockCount = log.blockCount
      statistics.usedBytes = log.liveBytes
      statistics.regionCount = log.regions.count
      statistics.freeRegionCount = log.freeRegionCount
      statistics.corruptBlocksDetected = log.counters.corruptBlocksDetected
      statistics.ioErrors = log.counters.ioErrors
      statistics.evictedRegions = log.counters.evictedRegions
      statistics.evictedBlocks = log.counters.evictedBlocks
      statistics.reinsertedBlocks = log.counters.reinsertedBlocks
      statistics.admissionsRefused = log.counters.admissionsRefused
      statistics.reclaimWaits = log.counters.reclaimWaits
      statistics.reclaimFullScans = log.counters.reclaimFullScans
      statistics.tombstonesWritten = log.counters.tombstonesWritten
      statistics.tombstonesRefused = log.counters.tombstonesRefused
      statistics.recordWrites = log.counters.recordWrites
      statistics.recordsWritten = log.counters.recordsWritten
      statistics.maskedRecordsWritten = log.counters.maskedRecordsWritten
      statistics.indexBytes = NVMeTier.estimatedIndexBytes(capacity: log.index.capacity)
      return statistics
    }
    statistics.capacityBytes = capacityBytes
    statistics.stagingOverflowAllocations = pool.overflowCount
    return statistics
  }

  /// Bytes of a Swift dictionary of IndexKey → RecordLocation that can hold `capacity` entries:
  /// a power-of-two bucket count at most 3/4 full, each bucket a key, a value and an occupancy bit.
  static func estimatedIndexBytes(capacity: Int) -> Int {
    guard capacity > 0 else { return 0 }
    var buckets = 1
    while buckets * 3 / 4 < capacity { buckets *= 2 }
    let bucketBytes = MemoryLayout<IndexKey>.stride + MemoryLayout<RecordLocation>.stride
    return buckets * bucketBytes + buckets / 8
  }

  // MARK: Reading

  private enum RecordCheck {
    case valid(payloadBytes: Int, checksum: UInt32)
    case invalid(String)
  }

  /// Copies the block's payload into `destination` (at least `payloadBytes(of:)` long) and returns
  /// its length. Every checksum is verified first: a block that fails any is dropped from the tier
  /// and `.checksumMismatch` is thrown, with `destination` zeroed (corrupt bytes never reach a
  /// caller). `.notFound` when the block is absent; `.ioError` when the device failed (the block is
  /// dropped too: the next read would meet the same sector).
  public func read(_ id: BlockID, into destination: UnsafeMutableRawBufferPointer) throws(StrataError) -> Int {
    try readVerified(id, into: destination).bytes
  }

  /// `read`, also returning the block's CRC-32C, which the read has just verified against the
  /// bytes it copied into `destination`: a caller keeping them need not checksum them again.
  public func readVerified(
    _ id: BlockID, into destination: UnsafeMutableRawBufferPointer
  ) throws(StrataError) -> (bytes: Int, checksum: UInt32) {
    let lease = pool.lease()
    // A read races eviction: the region may be reused under it. Such a read fails its checks but
    // finds the index moved on, and looks again; a second race in a row is as good as absent.
    for _ in 0..<3 {
      let found = log.withLock { log -> (IndexKey, RecordLocation, RegionLog.Region)? in
        guard let key = log.indexKey(of: id), let location = log.index[key] else { return nil }
        return (key, location, log.regionInfo(Int(location.region)))
      }
      guard let (key, location, region) = found else { break }
      guard destination.count >= Int(location.payloadBytes) else {
        throw StrataError(
          .invalidArgument,
          "\(id): destination of \(destination.count) bytes is smaller than the block's \(location.payloadBytes)")
      }
      let deviceOffset = region.deviceOffset + Int(location.offsetInRegion)
      let outcome: RecordCheck
      do {
        outcome = try readRecord(
          id, at: location, deviceOffset: deviceOffset, region: region, staging: lease, into: destination)
      } catch {
        let dropped = log.withLock { log in
          let dropped = log.removeIfUnchanged(key, at: location, generation: region.generation)
          if dropped { log.counters.ioErrors += 1 }
          return dropped
        }
        if dropped {
          hooks.withLock { $0.onDamaged }?([id])
          throw error
        }
        continue
      }
      switch outcome {
      case .valid(let payloadBytes, let checksum):
        return (payloadBytes, checksum)
      case .invalid(let reason):
        destination.initializeMemory(as: UInt8.self, repeating: 0)
        let dropped = log.withLock { log in
          let dropped = log.removeIfUnchanged(key, at: location, generation: region.generation)
          if dropped { log.counters.corruptBlocksDetected += 1 }
          return dropped
        }
        guard dropped else { continue }
        hooks.withLock { $0.onDamaged }?([id])
        throw StrataError(
          .checksumMismatch,
          "\(id): NVMe record on device \(region.device) at offset \(deviceOffset) failed verification (\(reason)); block dropped"
        )
      }
    }
    throw StrataError(.notFound, "\(id): not in the NVMe tier")
  }

  /// Reads the block's record and checks it into `destination`. A large record stored raw (no
  /// codec, no mask) is read by its stored bytes alone: one aligned read of exactly the block's
  /// size (a 2 MiB block, one 2 MiB read), straight into `destination` when it is aligned and
  /// long enough, verified against the stored checksum the index keeps; the region's generation,
  /// unchanged after the read, shows no reuse began under it. Any other record is read whole
  /// and its header checked too. Throws only for a device error.
  private func readRecord(
    _ id: BlockID, at location: RecordLocation, deviceOffset: Int, region: RegionLog.Region,
    staging: borrowing StagingLease, into destination: UnsafeMutableRawBufferPointer
  ) throws(StrataError) -> RecordCheck {
    let storedBytes = location.storedBytes
    guard location.codec == .none, !location.masked, storedBytes >= BlockRecordHeader.alignedBodyBytesMin else {
      let recordBytes = BlockRecordHeader.recordBytes(storedBytes: storedBytes, alignmentBytes: alignmentBytes)
      let record = staging.prefix(recordBytes)
      try devices[region.device].read(at: deviceOffset, into: record)
      return check(UnsafeRawBufferPointer(record), of: id, at: location, deviceOffset: deviceOffset, into: destination)
    }
    let bodyOffset = BlockRecordHeader.bodyOffset(storedBytes: storedBytes, alignmentBytes: alignmentBytes)
    let readBytes = roundUp(storedBytes, toMultipleOf: alignmentBytes)
    let payload = UnsafeMutableRawBufferPointer(rebasing: destination[0..<storedBytes])
    let checksum: UInt32
    if let address = destination.baseAddress, Int(bitPattern: address) % alignmentBytes == 0,
      destination.count >= readBytes
    {
      try devices[region.device].read(
        at: deviceOffset + bodyOffset, into: UnsafeMutableRawBufferPointer(rebasing: destination[0..<readBytes]))
      checksum = CRC32C.checksum(UnsafeRawBufferPointer(payload))
    } else {
      let body = staging.prefix(readBytes)
      try devices[region.device].read(at: deviceOffset + bodyOffset, into: body)
      checksum = CRC32C.copy(UnsafeRawBufferPointer(rebasing: body[0..<storedBytes]), to: payload)
    }
    guard checksum == location.storedChecksum else { return .invalid("stored bytes checksum mismatch") }
    guard log.withLock({ $0.regionInfo(Int(location.region)).generation == region.generation }) else {
      return .invalid("its region was reused during the read")
    }
    return .valid(payloadBytes: storedBytes, checksum: checksum)
  }

  /// Verifies a record read from disk and decodes its payload into `destination`.
  private func check(
    _ record: UnsafeRawBufferPointer, of id: BlockID, at location: RecordLocation, deviceOffset: Int,
    into destination: UnsafeMutableRawBufferPointer
  ) -> RecordCheck {
    let header: BlockRecordHeader
    do {
      header = try BlockRecordHeader.decode(record, expecting: id.namespace, key: id.key)
    } catch {
      return .invalid(error.description)
    }
    guard header.storedBytes == location.storedBytes, header.payloadBytes == Int(location.payloadBytes),
      header.codec == location.codec
    else { return .invalid("header lengths or codec disagree with the index") }
    guard header.deviceOffset == deviceOffset else {
      return .invalid("record claims device offset \(header.deviceOffset): a misdirected write")
    }
    let storedStart = header.bodyOffset(alignmentBytes: alignmentBytes)
    let stored = UnsafeRawBufferPointer(rebasing: record[storedStart..<(storedStart + header.storedBytes)])
    let payload = UnsafeMutableRawBufferPointer(rebasing: destination[0..<header.payloadBytes])
    switch header.codec {
    case .none:
      // Checksummed as it is copied out, in one pass over the staging buffer (for raw records the
      // decoder has checked that payload and stored checksums are one value); on a mismatch the
      // caller zeroes `destination`.
      guard CRC32C.copy(stored, to: payload) == header.storedChecksum else {
        return .invalid("stored bytes checksum mismatch")
      }
      if header.maskSeed != 0 {
        RecordMask.apply(seed: header.maskSeed, to: payload)
        guard CRC32C.checksum(UnsafeRawBufferPointer(payload)) == header.payloadChecksum else {
          return .invalid("payload checksum mismatch after unmasking")
        }
      }
    case .lz4:
      guard CRC32C.checksum(stored) == header.storedChecksum else { return .invalid("stored bytes checksum mismatch") }
      guard let produced = LZ4Codec.decompress(stored, into: payload), produced == header.payloadBytes else {
        return .invalid("lz4 data does not decode to \(header.payloadBytes) bytes")
      }
      guard CRC32C.checksum(UnsafeRawBufferPointer(payload)) == header.payloadChecksum else {
        return .invalid("payload checksum mismatch after decompression")
      }
    }
    return .valid(payloadBytes: header.payloadBytes, checksum: header.payloadChecksum)
  }

  // MARK: Removing and syncing

  /// Takes the block out of the tier at once. Its record stays on disk until its region is
  /// reused, so a warm restart before then brings it back (harmless for immutable, content-
  /// addressed blocks; a tenant purge must not rely on `remove` alone).
  @discardableResult
  public func remove(_ id: BlockID) -> Bool {
    let removed = log.withLock { log -> Bool in
      guard let key = log.indexKey(of: id) else { return false }
      return log.remove(key) != nil
    }
    // The record stays on disk until its region is reused; a tombstone (a header-only record
    // with a higher sequence) keeps recovery from bringing it back. Should writing it fail, the
    // block is out of the index now and may return after a restart: same bytes, never others.
    if removed { writeTombstone(id) }
    return removed
  }

  /// Space in the open region for the first records of a run of `bytes` (one at least, back to
  /// back: see `RegionLog.reserve(run:mayReclaim:)`), and a region the caller must reclaim after
  /// writing (if any). When no region is free while another thread reclaims one (which that thread
  /// does after its own write), waits for that reclaim, `reclaimWaitMilliseconds` at most: a
  /// refused write-behind leaves an acknowledged block with no copy on disk, so under a sustained
  /// load writers take turns at the disk's pace instead. nil when the wait ran out, or when writes
  /// are failing and no region is left to reclaim. Each pass reserves, reclaims one region or waits
  /// for one; a region count of passes always suffices unless other threads keep taking what this
  /// one frees. A reclaim this write makes may keep cold blocks (`RegionLog.keepsColdBlocks`) in
  /// the first half of the passes and before the wait's deadline; after that it evicts them, so a
  /// write never waits long behind a compaction that frees little (regions all live, the dead
  /// records in the newest).
  func reserveRun(bytes: [Int]) -> ([Reservation], Int?)? {
    let deadline = Deadline.after(milliseconds: Self.reclaimWaitMilliseconds)
    let passes = log.withLock { $0.regions.count } + 1
    for pass in 0..<passes {
      let (outcome, reclaiming, reclaimed) = log.withLock {
        ($0.reserve(run: bytes, mayReclaim: true), $0.isReclaiming, $0.counters.evictedRegions)
      }
      switch outcome {
      case .reserved(let granted, let reclaim): return (granted, reclaim)
      case .mustReclaim(let region):
        reclaim(region, mayKeepCold: pass * 2 < passes && !deadline.hasPassed(now: MonotonicTime.nowNanoseconds))
      case .busy:
        guard reclaiming else { return nil }
        log.withLock { $0.counters.reclaimWaits += 1 }
        let freed = regionFreed.wait(until: deadline) { log.withLock { $0.counters.evictedRegions } != reclaimed }
        guard freed else { return nil }
      }
    }
    return nil
  }

  private func writeTombstone(_ id: BlockID) {
    let lease = pool.lease()
    guard let (reservations, victim) = reserveRun(bytes: [alignmentBytes]), let reservation = reservations.first else {
      log.withLock { $0.counters.tombstonesRefused += 1 }
      return
    }
    var header = BlockRecordHeader(
      codec: .none, namespace: id.namespace, key: id.key, payloadBytes: 0, storedBytes: 0, payloadChecksum: 0,
      storedChecksum: 0, sequence: reservation.sequence, deviceOffset: reservation.deviceOffset)
    header.isTombstone = true
    let record = UnsafeMutableRawBufferPointer(rebasing: lease.buffer[0..<alignmentBytes])
    record.initializeMemory(as: UInt8.self, repeating: 0)
    header.encode(into: record)
    do {
      try devices[reservation.device].write(at: reservation.deviceOffset, from: UnsafeRawBufferPointer(record))
      log.withLock { $0.finishTombstone(reservation) }
    } catch {
      log.withLock { $0.abandonWrite(reservation, key: nil) }
    }
    if let victim { reclaim(victim) }
  }

  /// Makes every completed write durable on every device; a failure is counted in `ioErrors`.
  public func sync() throws(StrataError) {
    do throws(StrataError) {
      for device in devices { try device.sync() }
    } catch {
      log.withLock { $0.counters.ioErrors += 1 }
      throw error
    }
  }

  // MARK: Reclaiming

  /// Empties `victim`: each live block is reinserted when `isHot` says so, or while the log keeps
  /// cold blocks (`RegionLog.keepsColdBlocks`) and `mayKeepCold`, and there is room; else evicted.
  /// Then the region's first block is invalidated and the region is freed. I/O failures here cost
  /// blocks, never correctness, so they are counted, not thrown.
  func reclaim(_ victim: Int, mayKeepCold: Bool = true) {
    let isHot = hooks.withLock { $0.isHot }
    let (region, keepsCold) = log.withLock {
      ($0.regionInfo(victim), mayKeepCold && $0.keepsColdBlocks)
    }
    let lease = pool.lease()
    var evicted: [BlockID] = []
    var damaged: [BlockID] = []
    // Headers are read one at a time into the block after a record of the largest size, since
    // reinsertion stages whole records at the front of the same buffer.
    let recordBytesMax = recordBufferBytes - alignmentBytes
    let scan = walk(
      device: region.device, deviceOffset: region.deviceOffset, limitBytes: region.writeOffset,
      window: UnsafeMutableRawBufferPointer(rebasing: lease.buffer[recordBytesMax..<recordBufferBytes]),
      recordBuffer: lease.buffer, verifyStored: false
    ) { header, offsetInRegion, recordBytes in
      let live = log.withLock { log -> (IndexKey, RecordLocation)? in
        guard let key = log.indexKey(of: BlockID(namespace: header.namespace, key: header.key)),
          let location = log.isLive(key, region: victim, offsetInRegion: offsetInRegion)
        else { return nil }
        return (key, location)
      }
      guard let (key, location) = live else { return }
      let id = BlockID(namespace: header.namespace, key: header.key)
      var outcome = Reinsertion.notKept
      if keepsCold || isHot?(id) == true {
        outcome = reinsert(
          header, key: key, from: location, region: region, recordBytes: recordBytes, buffer: lease.buffer)
      }
      if outcome == .kept { return }
      let removed = log.withLock { $0.remove(key) != nil }
      if removed && outcome == .damaged { damaged.append(id) } else if removed { evicted.append(id) }
    }
    let stranded = log.withLock { log in
      log.counters.ioErrors += scan.ioErrors
      log.counters.corruptBlocksDetected += scan.corrupt
      return log.removeRemaining(in: victim)
    }
    evicted += stranded
    do {
      try invalidateRegionStart(device: region.device, deviceOffset: region.deviceOffset)
    } catch {
      // The region is reused anyway: its first new record overwrites the block this failed to.
      log.withLock { $0.counters.ioErrors += 1 }
    }
    log.withLock { $0.finishReclaim(victim, evictedBlocks: evicted.count) }
    regionFreed.notify()
    if !evicted.isEmpty, let onEvict = hooks.withLock({ $0.onEvict }) { onEvict(evicted) }
    // Like a read's, a reclaim's find of a damaged record is told: a cluster node reads the block
    // back from its other owners (evicted unread, it would have stayed an owner short).
    if !damaged.isEmpty, let onDamaged = hooks.withLock({ $0.onDamaged }) { onDamaged(damaged) }
  }

  enum Reinsertion {
    case kept
    /// No room, or an I/O error: the block is evicted.
    case notKept
    /// Its stored bytes failed their checksum: dropped, and told to `onDamaged`.
    case damaged
  }

  /// Rewrites one record of a region being reclaimed into the open region, unchanged but for a new
  /// sequence number, unless there is no room, an I/O error, or its bytes are damaged.
  private func reinsert(
    _ header: BlockRecordHeader, key: IndexKey, from location: RecordLocation, region: RegionLog.Region,
    recordBytes: Int, buffer: UnsafeMutableRawBufferPointer
  ) -> Reinsertion {
    let record = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<recordBytes])
    do {
      try devices[region.device].read(at: region.deviceOffset + Int(location.offsetInRegion), into: record)
    } catch {
      log.withLock { $0.counters.ioErrors += 1 }
      return .notKept
    }
    let storedStart = header.bodyOffset(alignmentBytes: alignmentBytes)
    let stored = UnsafeRawBufferPointer(rebasing: record[storedStart..<(storedStart + header.storedBytes)])
    guard CRC32C.checksum(stored) == header.storedChecksum else {
      // Copying it would give decayed bytes a fresh sequence number; dropping them is the cure.
      log.withLock { $0.counters.corruptBlocksDetected += 1 }
      return .damaged
    }
    guard
      case .reserved(let reservations, _) = log.withLock({ $0.reserve(recordBytes: recordBytes, mayReclaim: false) }),
      let reservation = reservations.first
    else { return .notKept }
    var moved = header
    moved.sequence = reservation.sequence
    moved.deviceOffset = reservation.deviceOffset
    moved.encode(into: record)
    do {
      try devices[reservation.device].write(at: reservation.deviceOffset, from: UnsafeRawBufferPointer(record))
    } catch {
      log.withLock { $0.abandonWrite(reservation, key: nil) }
      return .notKept
    }
    // A block removed meanwhile stays removed; its new record is dead space and is not evicted twice.
    _ = log.withLock { $0.finishReinsert(reservation, key: key, from: location) }
    return .kept
  }

  /// Zeroes the first alignment block of a region, so that a recovery finds no record in it.
  func invalidateRegionStart(device: Int, deviceOffset: Int) throws(StrataError) {
    let lease = pool.lease()
    let block = lease.prefix(alignmentBytes)
    block.initializeMemory(as: UInt8.self, repeating: 0)
    try devices[device].write(at: deviceOffset, from: UnsafeRawBufferPointer(block))
  }

  // MARK: Walking a region

  /// Visits the records of one region in order, from its start, until a header is missing, a
  /// sequence number fails to increase (the stale tail of the region's previous use), or
  /// `limitBytes` is reached. With `verifyStored`, records whose stored bytes fail their checksum
  /// are counted as corrupt and skipped; the walk goes on past them, since their header is sound.
  /// A header that is unsound (torn, decayed) or misplaced is counted as corrupt, and the walk
  /// goes on at the next record it can find (`nextRecord`): one damaged header costs one block,
  /// not the rest of its region.
  ///
  /// The region is read through `window` (see `RegionReader`): a window of one alignment block
  /// reads each header on its own, as the reclaim walk does; a larger one reads ahead, so that a
  /// region of small records costs a few large reads. With `verifyStored`, a record larger than
  /// the window is read whole into `recordBuffer`, which must hold `recordBufferBytes`; without it,
  /// `recordBuffer` is not touched. The walk reads only forward, so `visit` may overwrite bytes
  /// of the window that lie before the end of the record it is given.
  func walk(
    device: Int, deviceOffset: Int, limitBytes: Int, window: UnsafeMutableRawBufferPointer,
    recordBuffer: UnsafeMutableRawBufferPointer, verifyStored: Bool,
    visit: (_ header: BlockRecordHeader, _ offsetInRegion: Int, _ recordBytes: Int) -> Void
  ) -> RegionScan {
    precondition(
      window.count >= alignmentBytes && window.count % alignmentBytes == 0
        && (!verifyStored || recordBuffer.count >= recordBufferBytes),
      "NVMeTier.walk: window of \(window.count) bytes, record buffer of \(recordBuffer.count) bytes")
    var scan = RegionScan()
    var reader = RegionReader(
      device: devices[device], regionOffset: deviceOffset, limitBytes: limitBytes, window: window,
      alignmentBytes: alignmentBytes)
    var offset = 0
    var previousSequence: UInt64? = nil
    /// After the damaged header at `damaged`: the next aligned block holding a sound header that
    /// sits where it says, if its sequence is above the last sound record's in this region (a
    /// lower one is the stale tail of the region's previous use: the walk ends there). Only after a
    /// sound record: a region whose first header is damaged cannot tell its own records from an
    /// older use's, and its walk ends. nil: no such record, or a read failed.
    func nextRecord(after damaged: Int) -> Int? {
      guard let previousSequence else { return nil }
      var candidate = damaged + alignmentBytes
      while candidate + alignmentBytes <= limitBytes {
        let block: UnsafeRawBufferPointer
        do {
          block = try reader.bytes(at: candidate, count: alignmentBytes)
        } catch {
          scan.ioErrors += 1
          return nil
        }
        if let header = try? BlockRecordHeader.decode(block), header.deviceOffset == deviceOffset + candidate {
          scan.highestSequence = max(scan.highestSequence, header.sequence)
          return header.sequence > previousSequence ? candidate : nil
        }
        candidate += alignmentBytes
      }
      return nil
    }
    while offset + alignmentBytes <= limitBytes {
      let headerBlock: UnsafeRawBufferPointer
      do {
        headerBlock = try reader.bytes(at: offset, count: alignmentBytes)
      } catch {
        scan.ioErrors += 1
        break
      }
      let header: BlockRecordHeader
      do {
        header = try BlockRecordHeader.decode(headerBlock)
      } catch {
        // No magic is the normal end of a region's records; a record of a format this build does
        // not read ends it too (counted apart when it opens the region: after records of this
        // format it is a stale tail); anything else is a torn or decayed header. Either way a
        // record of this use of the region after it means the header was damaged (its magic or
        // version too): counted as corrupt, and the walk goes on there.
        let endsTheRecords: Bool
        switch error {
        case .badMagic: endsTheRecords = true
        case .unsupportedVersion:
          if offset == 0 { scan.olderFormat = true }
          endsTheRecords = true
        default: endsTheRecords = false
        }
        let next = nextRecord(after: offset)
        if next != nil || !endsTheRecords { scan.corrupt += 1 }
        guard let next else { break }
        offset = next
        continue
      }
      if let previousSequence, header.sequence <= previousSequence { break }
      guard header.deviceOffset == deviceOffset + offset else {
        // Sound but misplaced: a misdirected write, or record-shaped bytes inside an older
        // record's payload met in a stale tail. Neither may be adopted.
        scan.corrupt += 1
        guard let next = nextRecord(after: offset) else { break }
        offset = next
        continue
      }
      scan.highestSequence = max(scan.highestSequence, header.sequence)
      let recordBytes = header.recordBytes(alignmentBytes: alignmentBytes)
      guard recordBytes <= limitBytes - offset else {
        scan.corrupt += 1
        guard let next = nextRecord(after: offset) else { break }
        offset = next
        continue
      }
      previousSequence = header.sequence
      guard recordBytes <= recordBufferBytes else {
        // Written under a larger block limit than this tier's: sound, but it cannot be staged.
        scan.corrupt += 1
        offset += recordBytes
        scan.endOffset = offset
        continue
      }
      if verifyStored {
        let record: UnsafeRawBufferPointer
        do {
          if recordBytes <= window.count {
            record = try reader.bytes(at: offset, count: recordBytes)
          } else {
            // Larger than the window: the header block already read, then the rest after it.
            let whole = UnsafeMutableRawBufferPointer(rebasing: recordBuffer[0..<recordBytes])
            UnsafeMutableRawBufferPointer(rebasing: whole[0..<alignmentBytes]).copyMemory(from: headerBlock)
            try devices[device].read(
              at: deviceOffset + offset + alignmentBytes,
              into: UnsafeMutableRawBufferPointer(rebasing: whole[alignmentBytes...]))
            record = UnsafeRawBufferPointer(whole)
          }
        } catch {
          scan.ioErrors += 1
          break
        }
        let storedStart = header.bodyOffset(alignmentBytes: alignmentBytes)
        let stored = UnsafeRawBufferPointer(rebasing: record[storedStart..<(storedStart + header.storedBytes)])
        if CRC32C.checksum(stored) != header.storedChecksum {
          scan.corrupt += 1
          offset += recordBytes
          scan.endOffset = offset
          continue
        }
      }
      visit(header, offset, recordBytes)
      offset += recordBytes
      scan.endOffset = offset
    }
    return scan
  }
}

/// One region's bytes, read front to back through a window buffer for `NVMeTier.walk`. A request
/// for bytes already in the window costs nothing; otherwise the window is moved to start at the
/// request (bytes it already holds from there on are kept, moved to its front) and filled by one
/// read. Each read fetches what was asked for and, ahead of it, up to the window's size: the first
/// read of a region is one alignment block (a free region costs no more than a header read), and
/// each later read is 8 times larger than the one before, so a region of small records costs a few
/// large sequential reads, while the bytes read beyond a region's last record stay below one window
/// and about 8 times what its records took. Should a read ahead fail, the reader falls back to reading only what is asked
/// for, for the rest of the region, so an I/O error ends the walk at the very record it hits.
struct RegionReader {
  static let readGrowth = 8

  let device: any BlockDevice
  /// Device offset of the region's first byte.
  let regionOffset: Int
  /// Bytes of the region that may be read.
  let limitBytes: Int
  let window: UnsafeMutableRawBufferPointer
  private var readsAhead = true
  private var nextReadBytes: Int
  /// Offset in the region of the window's first byte, and how many bytes from there it holds.
  private var start = 0
  private var count = 0

  init(
    device: any BlockDevice, regionOffset: Int, limitBytes: Int, window: UnsafeMutableRawBufferPointer,
    alignmentBytes: Int
  ) {
    self.device = device
    self.regionOffset = regionOffset
    self.limitBytes = limitBytes
    self.window = window
    nextReadBytes = alignmentBytes
  }

  /// The region's bytes `offset..<(offset + needed)`, valid until the next call. `offset` and
  /// `needed` are aligned, `needed` at most the window, and the range within `limitBytes`.
  mutating func bytes(at offset: Int, count needed: Int) throws(StrataError) -> UnsafeRawBufferPointer {
    precondition(
      offset >= 0 && needed <= window.count && offset + needed <= limitBytes,
      "RegionReader: \(needed) bytes at \(offset) of a \(limitBytes)-byte region, window \(window.count)")
    if offset >= start, offset + needed <= start + count {
      return UnsafeRawBufferPointer(rebasing: window[(offset - start)..<(offset - start + needed)])
    }
    let kept = offset >= start && offset < start + count ? start + count - offset : 0
    if kept > 0, offset != start {
      memmove(window.baseAddress!, window.baseAddress! + (offset - start), kept)
    }
    start = offset
    count = kept
    let wanted = readsAhead ? max(needed, min(nextReadBytes, window.count)) : needed
    let end = min(offset + wanted, limitBytes)
    do {
      try read(upTo: end)
    } catch {
      guard readsAhead, end > offset + needed else { throw error }
      // The failed range may lie beyond the record asked for: from here on, read only what is asked.
      readsAhead = false
      try read(upTo: offset + needed)
    }
    if readsAhead { nextReadBytes = min(nextReadBytes * Self.readGrowth, window.count) }
    return UnsafeRawBufferPointer(rebasing: window[0..<needed])
  }

  /// Reads the region's bytes from the window's end up to `end`, into the window.
  private mutating func read(upTo end: Int) throws(StrataError) {
    let target = UnsafeMutableRawBufferPointer(rebasing: window[count..<(end - start)])
    try device.read(at: regionOffset + start + count, into: target)
    count = end - start
  }
}

/// Nanoseconds since 1970: where a tier's sequence numbers start, so that a new life's records
/// always sort after any an earlier life left on the same disk (no tier writes one record a nanosecond).
func wallClockNanoseconds() -> UInt64 {
  var now = timespec()
  clock_gettime(CLOCK_REALTIME, &now)
  return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
