// The NVMe tier's bookkeeping as a pure value: regions (free, open, sealed, reclaiming), the block
// index, sequence numbers and counters. It does no I/O; NVMeTier holds it in a Mutex and does the I/O.

import StrataConfig
import StrataCore

/// A block's identity inside the index: its key and its namespace interned to a small number,
/// so an entry does not carry a string.
struct IndexKey: Hashable, Sendable {
  var key: BlockKey
  var namespaceID: UInt16
}

/// Where a block's record lies and what it holds: 16 bytes, so the index stays compact.
struct RecordLocation: Hashable, Sendable {
  var region: UInt32
  var offsetInRegion: UInt32
  /// Payload length in the low 31 bits; the top bit set: the stored bytes are masked
  /// (`BlockRecordHeader.maskSeed`). Blocks are at most 1 GiB (`limits.max_block_size`).
  private var payloadBytesAndMask: UInt32
  /// Stored length in the low 31 bits, the codec in the top bit (set: lz4). Lengths are capped
  /// below 2 GiB by liblz4's input limit, so the bit is free.
  private var storedBytesAndCodec: UInt32
  /// CRC-32C of the stored bytes, as in the header: a read of the stored bytes alone is verified
  /// against it (`NVMeTier.readVerified`).
  var storedChecksum: UInt32

  init(
    region: Int, offsetInRegion: Int, payloadBytes: Int, storedBytes: Int, codec: CompressionCodec,
    storedChecksum: UInt32, masked: Bool
  ) {
    self.region = UInt32(region)
    self.offsetInRegion = UInt32(offsetInRegion)
    payloadBytesAndMask = UInt32(payloadBytes) | (masked ? 1 << 31 : 0)
    storedBytesAndCodec = UInt32(storedBytes) | (codec == .lz4 ? 1 << 31 : 0)
    self.storedChecksum = storedChecksum
  }

  var payloadBytes: UInt32 { payloadBytesAndMask & ~(1 << 31) }
  var masked: Bool { payloadBytesAndMask >> 31 == 1 }
  var storedBytes: Int { Int(storedBytesAndCodec & ~(1 << 31)) }
  var codec: CompressionCodec { storedBytesAndCodec >> 31 == 1 ? .lz4 : .none }
}

/// A place in the log handed to one writer: the writer puts its record there, then calls
/// `finishWrite` (or `abandonWrite` when the I/O failed).
struct Reservation: Sendable {
  var region: Int
  var device: Int
  var deviceOffset: Int
  var offsetInRegion: Int
  var recordBytes: Int
  var generation: UInt32
  var sequence: UInt64
}

/// Counters of things that went wrong or were worked around; they only grow.
struct RegionLogCounters: Sendable {
  var corruptBlocksDetected = 0
  var ioErrors = 0
  var evictedRegions = 0
  var evictedBlocks = 0
  var reinsertedBlocks = 0
  var admissionsRefused = 0
  /// Writes that found no free region while another thread was reclaiming one, and waited for it.
  var reclaimWaits = 0
  var reclaimFullScans = 0
  var tombstonesWritten = 0
  var tombstonesRefused = 0
  var recordWrites = 0
  var recordsWritten = 0
  var maskedRecordsWritten = 0
}

struct RegionLog: Sendable {
  enum Phase: Sendable {
    /// Holds nothing live; its first block is invalid, so recovery finds no record in it.
    case free
    /// Appended to by writers; at most one region is open.
    case open
    /// Full (or recovered); read only, waiting to be reclaimed oldest first.
    case sealed
    /// Being emptied by one reclaimer: its blocks stay readable until it becomes free.
    case reclaiming
  }

  struct Region: Sendable {
    let device: Int
    let deviceOffset: Int
    var phase: Phase = .free
    /// Bytes from the region start that hold records (written or reserved).
    var writeOffset = 0
    /// Bumped each time the region is freed, so a reader can tell its bytes were reused under it.
    var generation: UInt32 = 0
    /// Reservations whose I/O has not finished; a region with any is never reclaimed.
    var pendingWrites = 0
    var liveBlocks = 0
    /// Whether it holds a tombstone, which must not be reclaimed before the region of the copy it
    /// hides (only `writesFailing` reclaims out of age order, and never such a region).
    var holdsTombstones = false
    /// Sequence of the first record: the region's age, oldest reclaimed first.
    var firstSequence: UInt64 = 0
  }

  enum ReserveOutcome {
    /// Space is reserved for the first records asked for (one at least, in order, back to back in
    /// one region, with increasing sequence numbers: one device write can carry them all); when
    /// `reclaim` is set the caller must reclaim that region after its write.
    case reserved([Reservation], reclaim: Int?)
    /// No space and no reclaim running: the caller must reclaim this region now and try again.
    case mustReclaim(Int)
    /// No space, and another thread's reclaim has not yet freed any.
    case busy
  }

  enum Admission {
    case admitted(IndexKey)
    /// In the index already, or being written by another thread.
    case present
    case namespacesExhausted
  }

  let regionBytes: Int
  let alignmentBytes: Int
  private(set) var regions: [Region]
  private var freeRegions: [Int]
  /// Oldest first.
  private var sealedRegions: [Int] = []
  private var openRegion: Int?
  private var reclaimInProgress = false
  /// Whether a thread is reclaiming a region now (`reserve` answers `.busy` to others meanwhile).
  var isReclaiming: Bool { reclaimInProgress }
  /// Whether a write failed since the last one that succeeded, and whether a region holding live
  /// blocks was reclaimed since then. A failed write can seal the open region (see
  /// `abandonWrite`); were every one of them to reclaim a region of live blocks, a disk failing
  /// writes would empty the tier in as many writes as it has regions. While writes fail, one such
  /// reclaim is allowed (so that a write can find out whether the disk works again); after that
  /// only regions holding no live block are reclaimed, and with none, space is refused.
  private var writesFailing = false
  private var liveReclaimWhileFailing = false
  private(set) var nextSequence: UInt64
  private(set) var index: [IndexKey: RecordLocation] = [:]
  private var inFlight: Set<IndexKey> = []
  private var namespaceIDs: [Namespace: UInt16] = [:]
  private var namespaces: [Namespace] = []
  /// Bytes of live records, alignment padding included.
  private(set) var liveBytes = 0
  /// Live records and their bytes per interned namespace, kept as records come and go (metrics
  /// read it without walking the index).
  private(set) var usageByNamespaceID: [UInt16: TierUsage] = [:]
  var counters = RegionLogCounters()

  /// A log whose regions are all free; `regionPlacements` lists (device, byte offset) per region.
  init(
    regionPlacements: [(device: Int, deviceOffset: Int)], regionBytes: Int, alignmentBytes: Int, firstSequence: UInt64
  ) {
    self.regionBytes = regionBytes
    self.alignmentBytes = alignmentBytes
    regions = regionPlacements.map { Region(device: $0.device, deviceOffset: $0.deviceOffset) }
    freeRegions = Array(regions.indices)
    nextSequence = firstSequence
  }

  var freeRegionCount: Int { freeRegions.count }
  var blockCount: Int { index.count }

  func recordBytes(storedBytes: Int) -> Int {
    BlockRecordHeader.recordBytes(storedBytes: storedBytes, alignmentBytes: alignmentBytes)
  }

  // MARK: Identity

  func indexKey(of id: BlockID) -> IndexKey? {
    namespaceIDs[id.namespace].map { IndexKey(key: id.key, namespaceID: $0) }
  }

  func namespace(ofID namespaceID: UInt16) -> Namespace { namespaces[Int(namespaceID)] }

  func blockID(of key: IndexKey) -> BlockID {
    BlockID(namespace: namespaces[Int(key.namespaceID)], key: key.key)
  }

  /// The namespace's number, assigned on first sight; nil once 65,536 are in use. Numbers are never
  /// released (namespaces are tenants: few and long-lived), which keeps every IndexKey valid.
  mutating func intern(_ namespace: Namespace) -> UInt16? {
    if let known = namespaceIDs[namespace] { return known }
    guard namespaces.count <= Int(UInt16.max) else { return nil }
    let id = UInt16(namespaces.count)
    namespaces.append(namespace)
    namespaceIDs[namespace] = id
    return id
  }

  func location(of id: BlockID) -> RecordLocation? {
    indexKey(of: id).flatMap { index[$0] }
  }

  // MARK: Writing

  /// Claims the right to write `id`, unless it is present or already being written.
  mutating func admit(_ id: BlockID) -> Admission {
    guard let namespaceID = intern(id.namespace) else { return .namespacesExhausted }
    let key = IndexKey(key: id.key, namespaceID: namespaceID)
    if index[key] != nil || inFlight.contains(key) { return .present }
    inFlight.insert(key)
    return .admitted(key)
  }

  /// Gives up a claim from `admit` without writing.
  mutating func withdraw(_ key: IndexKey) {
    inFlight.remove(key)
  }

  /// Reserves `recordBytes` in the open region, opening a free one when it is full. Only a caller
  /// that `mayReclaim` (a foreground write, not a reinsertion) is asked to reclaim.
  mutating func reserve(recordBytes: Int, mayReclaim: Bool) -> ReserveOutcome {
    reserve(run: CollectionOfOne(recordBytes), mayReclaim: mayReclaim)
  }

  /// Reserves a run of records, each of `run`'s sizes in order, contiguous in one region: as many
  /// as fit where the open region ends, or, when not even the first does, as many as fit in the
  /// region opened for them. The records left over go to a later call (which opens the next
  /// region), so a run lays records out exactly as that many single reservations would.
  ///
  /// Opening the last free region starts a reclaim. While the log keeps cold blocks
  /// (`keepsColdBlocks`), the last free region is the reclaim's: a foreground write
  /// (`mayReclaim`) never opens it while a region can be reclaimed, and opening the one before it
  /// starts the reclaim. So that reclaim has the rest of the open region and a whole free one for
  /// its reinsertions, room for every live block of its victim: it evicts none, even from a region
  /// that is all live. (A log without that much dead space evicts cold blocks anyway, and keeps no
  /// region back: on a tier of few regions that would cost one of them.)
  mutating func reserve(run: some Collection<Int>, mayReclaim: Bool) -> ReserveOutcome {
    precondition(
      !run.isEmpty && run.allSatisfy { $0 > 0 && $0 <= regionBytes && $0 % alignmentBytes == 0 },
      "RegionLog.reserve: records of \(Array(run)) bytes in regions of \(regionBytes)")
    if let open = openRegion, regions[open].writeOffset + run.first! <= regionBytes {
      return .reserved(take(run, in: open), reclaim: nil)
    }
    let keepsSpare = mayReclaim && freeRegions.count == 1 && keepsColdBlocks
    if keepsSpare && !reclaimInProgress, let victim = startReclaim() { return .mustReclaim(victim) }
    if !freeRegions.isEmpty && !(keepsSpare && reclaimInProgress) {
      let next = freeRegions.removeFirst()
      if let open = openRegion { seal(open) }
      regions[next].phase = .open
      regions[next].writeOffset = 0
      openRegion = next
      let reservations = take(run, in: next)
      var victim: Int? = nil
      if mayReclaim && !reclaimInProgress && (freeRegions.isEmpty || freeRegions.count == 1 && keepsColdBlocks) {
        victim = startReclaim()
      }
      return .reserved(reservations, reclaim: victim)
    }
    guard mayReclaim, !reclaimInProgress else { return .busy }
    // Nothing free and nobody freeing: the open region cannot take this record, so it is sealed
    // (and may itself be the victim when it is the only one) and the caller reclaims at once.
    if let open = openRegion { seal(open) }
    guard let victim = startReclaim() else { return .busy }
    return .mustReclaim(victim)
  }

  /// Whether a reclaim keeps the cold blocks of its region too (rewrites them ahead, as it does hot
  /// ones): while live blocks fill at most three quarters of the tier and a region's worth of the
  /// log written (`writtenBytes`) is records of blocks removed since (released by a repair,
  /// deleted, evicted by an operator) waiting for their regions' turn. Evicting live blocks to
  /// make room the disk has would leave their owners a copy short. The reclaim has room for them
  /// (`reserve(run:mayReclaim:)`); a reclaim of a region that is all live frees nothing, and the
  /// next one goes on. Over one wrap of a log of many regions, reclaims rewrite about three bytes
  /// at most for each they free. Otherwise the reclaim evicts the region's cold blocks, oldest
  /// region first (the log's FIFO, a cache's order).
  var keepsColdBlocks: Bool {
    Self.keepsColdBlocks(
      liveBytes: liveBytes, writtenBytes: writtenBytes, capacityBytes: regions.count * regionBytes,
      regionBytes: regionBytes)
  }

  static func keepsColdBlocks(liveBytes: Int, writtenBytes: Int, capacityBytes: Int, regionBytes: Int) -> Bool {
    liveBytes * 4 <= capacityBytes * 3 && writtenBytes - liveBytes >= regionBytes
  }

  /// Bytes of records in the regions that are not free: live ones and dead ones.
  var writtenBytes: Int { regions.reduce(0) { $0 + ($1.phase == .free ? 0 : $1.writeOffset) } }

  /// The longest prefix of `run` that fits in `region` from its write offset (the first record
  /// always does), reserved.
  private mutating func take(_ run: some Collection<Int>, in region: Int) -> [Reservation] {
    var reservations: [Reservation] = []
    for recordBytes in run {
      guard regions[region].writeOffset + recordBytes <= regionBytes else { break }
      reservations.append(take(recordBytes, in: region))
    }
    return reservations
  }

  private mutating func take(_ recordBytes: Int, in region: Int) -> Reservation {
    let offset = regions[region].writeOffset
    let sequence = nextSequence
    nextSequence += 1
    regions[region].writeOffset += recordBytes
    regions[region].pendingWrites += 1
    if offset == 0 { regions[region].firstSequence = sequence }
    return Reservation(
      region: region, device: regions[region].device, deviceOffset: regions[region].deviceOffset + offset,
      offsetInRegion: offset, recordBytes: recordBytes, generation: regions[region].generation, sequence: sequence)
  }

  private mutating func seal(_ region: Int) {
    precondition(regions[region].phase == .open, "RegionLog.seal: region \(region) is \(regions[region].phase)")
    regions[region].phase = .sealed
    sealedRegions.append(region)
    if openRegion == region { openRegion = nil }
  }

  /// The oldest sealed region with no write in flight, now marked as being reclaimed. While writes
  /// fail (see `writesFailing`), the oldest holding neither a live block nor a tombstone comes
  /// first (reclaiming it evicts nothing), and once one holding live blocks was reclaimed no other
  /// such is.
  private mutating func startReclaim() -> Int? {
    var found: Int? = nil
    if writesFailing {
      found = sealedRegions.indices.first { position in
        let region = regions[sealedRegions[position]]
        return region.pendingWrites == 0 && region.liveBlocks == 0 && !region.holdsTombstones
      }
    }
    if found == nil, !(writesFailing && liveReclaimWhileFailing) {
      found = sealedRegions.indices.first { regions[sealedRegions[$0]].pendingWrites == 0 }
      if found != nil, writesFailing { liveReclaimWhileFailing = true }
    }
    guard let position = found else { return nil }
    let victim = sealedRegions.remove(at: position)
    regions[victim].phase = .reclaiming
    reclaimInProgress = true
    return victim
  }

  /// Indexes the record a writer finished, and ends its claim from `admit`.
  mutating func finishWrite(_ reservation: Reservation, key: IndexKey, location: RecordLocation) {
    regions[reservation.region].pendingWrites -= 1
    inFlight.remove(key)
    writesFailing = false
    liveReclaimWhileFailing = false
    // A region with writes in flight is never reclaimed, so its generation cannot have moved.
    precondition(
      regions[reservation.region].generation == reservation.generation,
      "RegionLog.finishWrite: region \(reservation.region) was reused under a pending write")
    precondition(index[key] == nil, "RegionLog.finishWrite: \(key) was indexed by another writer")
    index[key] = location
    regions[reservation.region].liveBlocks += 1
    liveBytes += reservation.recordBytes
    account(key, location, +1)
  }

  /// Ends a reservation whose write failed. When it is the open region's last reservation, the
  /// region's write offset goes back to where it began: the next record is written over the hole,
  /// so a failed write costs no space. Otherwise (a later reservation holds the space after it)
  /// the open region is sealed, so that no later record sits behind the hole: the hole may hold an
  /// older use's records, which recovery takes for the region's end (a sound record with a lower
  /// sequence). A run's reservations are abandoned last first, so a failed run goes back whole.
  mutating func abandonWrite(_ reservation: Reservation, key: IndexKey?) {
    regions[reservation.region].pendingWrites -= 1
    if let key { inFlight.remove(key) }
    if openRegion == reservation.region {
      if regions[reservation.region].writeOffset == reservation.offsetInRegion + reservation.recordBytes {
        regions[reservation.region].writeOffset = reservation.offsetInRegion
      } else {
        seal(reservation.region)
      }
    }
    writesFailing = true
    counters.ioErrors += 1
  }

  /// Points a block moved by reinsertion at its new record, if it still lies at `old`.
  /// Returns false when the block left the index meanwhile (its new record is then dead space).
  mutating func finishReinsert(_ reservation: Reservation, key: IndexKey, from old: RecordLocation) -> Bool {
    regions[reservation.region].pendingWrites -= 1
    guard index[key] == old else { return false }
    var moved = old
    moved.region = UInt32(reservation.region)
    moved.offsetInRegion = UInt32(reservation.offsetInRegion)
    index[key] = moved
    regions[Int(old.region)].liveBlocks -= 1
    regions[reservation.region].liveBlocks += 1
    counters.reinsertedBlocks += 1
    return true
  }

  /// Ends the reservation of a tombstone record that was written: it indexes nothing.
  mutating func finishTombstone(_ reservation: Reservation) {
    regions[reservation.region].pendingWrites -= 1
    regions[reservation.region].holdsTombstones = true
    counters.tombstonesWritten += 1
  }

  // MARK: Removing

  /// Takes the block out of the index; its record becomes dead space in its region.
  @discardableResult
  mutating func remove(_ key: IndexKey) -> RecordLocation? {
    guard let location = index.removeValue(forKey: key) else { return nil }
    regions[Int(location.region)].liveBlocks -= 1
    liveBytes -= recordBytes(storedBytes: location.storedBytes)
    account(key, location, -1)
    return location
  }

  private mutating func account(_ key: IndexKey, _ location: RecordLocation, _ sign: Int) {
    var usage = usageByNamespaceID[key.namespaceID] ?? TierUsage()
    usage.blocks += sign
    usage.bytes += sign * recordBytes(storedBytes: location.storedBytes)
    usageByNamespaceID[key.namespaceID] = usage.blocks == 0 ? nil : usage
  }

  /// Removes the block only if it still lies at `location` in the same region generation: the
  /// caller read those bytes and found them bad, and must not drop a newer copy.
  mutating func removeIfUnchanged(_ key: IndexKey, at location: RecordLocation, generation: UInt32) -> Bool {
    guard index[key] == location, regions[Int(location.region)].generation == generation else { return false }
    remove(key)
    return true
  }

  /// Whether `key` is live at `offsetInRegion` of `region`.
  func isLive(_ key: IndexKey, region: Int, offsetInRegion: Int) -> RecordLocation? {
    guard let location = index[key], location.region == UInt32(region),
      location.offsetInRegion == UInt32(offsetInRegion)
    else { return nil }
    return location
  }

  // MARK: Reclaiming

  func regionInfo(_ region: Int) -> Region { regions[region] }

  /// Removes every block still indexed in `region`: the ones a header walk could not reach (it
  /// stops at a hole left by a failed write or at a decayed header). O(index size), so only used
  /// when the walk left some behind.
  mutating func removeRemaining(in region: Int) -> [BlockID] {
    guard regions[region].liveBlocks > 0 else { return [] }
    counters.reclaimFullScans += 1
    let stranded = index.filter { $0.value.region == UInt32(region) }
    for key in stranded.keys { remove(key) }
    // In key order, not the dictionary's (which differs from process to process).
    return stranded.keys.map(blockID(of:)).sorted { ($0.key, $0.namespace.name) < ($1.key, $1.namespace.name) }
  }

  /// Makes a reclaimed region free; its blocks have left the index.
  mutating func finishReclaim(_ region: Int, evictedBlocks: Int) {
    precondition(
      regions[region].phase == .reclaiming && regions[region].liveBlocks == 0,
      "RegionLog.finishReclaim: region \(region) is \(regions[region].phase) with \(regions[region].liveBlocks) blocks")
    regions[region].phase = .free
    regions[region].writeOffset = 0
    regions[region].generation &+= 1
    regions[region].firstSequence = 0
    regions[region].holdsTombstones = false
    freeRegions.append(region)
    reclaimInProgress = false
    counters.evictedRegions += 1
    counters.evictedBlocks += evictedBlocks
  }

  // MARK: Recovery

  /// Rebuilds the index from scanned regions (`scans[r]` for region r): the highest sequence of a
  /// block wins, regions holding live blocks are sealed oldest first, and the rest are free. The
  /// newest region holding live blocks (the one open at the crash) stays open when its walk met no
  /// I/O error: new records are appended where its walk stopped, right after its last sound
  /// record, so a restart costs no region's free space (were it sealed, every restart would use a
  /// fresh region, and after as many restarts as the tier has regions the oldest would be evicted
  /// with live blocks however empty the tier). What lies from there on was not adopted (a torn or
  /// never-written record, the stale tail of a reused region), so overwriting it loses nothing,
  /// and the next walk reads the new records as the continuation of the old ones.
  /// Returns the regions that hold only dead records, whose first block the caller must
  /// invalidate before they are reused, and the number of duplicate records dropped.
  mutating func adopt(_ scans: [RegionScan], sequenceFloor: UInt64) -> (
    invalidate: [Int], duplicates: Int, unnamed: Int
  ) {
    precondition(scans.count == regions.count && index.isEmpty, "RegionLog.adopt: fresh log and one scan per region")
    var sequences: [IndexKey: UInt64] = [:]
    var tombstoneRegions: [IndexKey: Int] = [:]
    var duplicates = 0
    var unnamed = 0
    var highestSequence: UInt64 = 0
    for (region, scan) in scans.enumerated() {
      highestSequence = max(highestSequence, scan.highestSequence)
      for record in scan.records {
        guard let namespaceID = intern(record.namespace) else {
          unnamed += 1
          continue
        }
        let key = IndexKey(key: record.key, namespaceID: namespaceID)
        if let seen = sequences[key] {
          duplicates += 1
          if seen >= record.sequence { continue }
        }
        sequences[key] = record.sequence
        if record.isTombstone {
          index[key] = nil
          tombstoneRegions[key] = region
        } else {
          index[key] = RecordLocation(
            region: region, offsetInRegion: record.offsetInRegion, payloadBytes: record.payloadBytes,
            storedBytes: record.storedBytes, codec: record.codec, storedChecksum: record.storedChecksum,
            masked: record.masked)
          tombstoneRegions[key] = nil
        }
      }
    }
    // A region whose tombstone still hides an older copy elsewhere must outlive that copy: it
    // stays sealed (evicted in order, after the older region) instead of being freed now.
    var retained = Set<Int>()
    for region in tombstoneRegions.values { retained.insert(region) }
    for (key, location) in index {
      regions[Int(location.region)].liveBlocks += 1
      liveBytes += recordBytes(storedBytes: location.storedBytes)
      account(key, location, +1)
    }
    var invalidate: [Int] = []
    freeRegions.removeAll()
    for (region, scan) in scans.enumerated() {
      if regions[region].liveBlocks > 0 || retained.contains(region) {
        regions[region].holdsTombstones = scan.records.contains(where: \.isTombstone)
        regions[region].phase = .sealed
        regions[region].writeOffset = scan.endOffset
        regions[region].firstSequence = scan.records.first?.sequence ?? 0
        sealedRegions.append(region)
      } else {
        if scan.endOffset > 0 { invalidate.append(region) }
        freeRegions.append(region)
      }
    }
    sealedRegions.sort { regions[$0].firstSequence < regions[$1].firstSequence }
    if let newest = sealedRegions.max(by: { scans[$0].highestSequence < scans[$1].highestSequence }),
      scans[newest].ioErrors == 0, regions[newest].writeOffset + alignmentBytes <= regionBytes
    {
      sealedRegions.removeAll { $0 == newest }
      regions[newest].phase = .open
      openRegion = newest
    }
    nextSequence = max(sequenceFloor, highestSequence &+ 1)
    return (invalidate, duplicates, unnamed)
  }
}

/// What a walk over one region found.
struct RegionScan: Sendable {
  struct Record: Sendable {
    var namespace: Namespace
    var key: BlockKey
    var sequence: UInt64
    var offsetInRegion: Int
    var payloadBytes: Int
    var storedBytes: Int
    var codec: CompressionCodec
    var storedChecksum: UInt32
    var masked: Bool
    var isTombstone = false
  }

  var records: [Record] = []
  /// Where the walk stopped: the end of the last record with a sound header.
  var endOffset = 0
  /// Records whose header or stored bytes failed their checksum (torn or decayed).
  var corrupt = 0
  /// The walk stopped at a record of another format version (see `BlockRecordHeader`).
  var olderFormat = false
  var ioErrors = 0
  /// The highest sequence in any sound header met, kept or not, so new records sort after it.
  var highestSequence: UInt64 = 0
}
