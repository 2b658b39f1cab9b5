// Writing blocks to the NVMe tier. A call stages its blocks' records (compressed when it pays)
// back to back in one staging buffer; each run of them reserved contiguously in the open region
// goes to the device in one write of at most `batchWriteBytesMax` bytes, and is indexed only once
// that write returned. Writing one block is a batch of one. The on-disk records are exactly those
// of single writes: recovery reads a run as the records it holds. A large block stored raw at an
// aligned address is not copied: its record's stored bytes start aligned
// (`BlockRecordHeader.alignedBodyBytesMin`), so only its header and its unaligned tail are
// staged, and the device write gathers its aligned bulk from where the caller holds it (the RAM
// arena). Smaller blocks are copied: below that size a copy costs less than pinning the caller's
// pages for the device.

import StrataConfig
public import StrataCore

/// One block for `NVMeTier.write(_:)`. The payload must stay valid and unchanged until the call
/// returns; `checksum` is its CRC-32C, and `checksumOfStoredCopy` says the caller computed it
/// over these very bytes when it stored them (see `NVMeTier.write(_:payload:checksum:checksumOfStoredCopy:)`).
public struct NVMeBlockWrite {
  public var id: BlockID
  public var payload: UnsafeRawBufferPointer
  public var checksum: UInt32
  public var checksumOfStoredCopy: Bool

  public init(id: BlockID, payload: UnsafeRawBufferPointer, checksum: UInt32, checksumOfStoredCopy: Bool = false) {
    self.id = id
    self.payload = payload
    self.checksum = checksum
    self.checksumOfStoredCopy = checksumOfStoredCopy
  }
}

/// What a write did with one block that it did not refuse.
public enum NVMeWriteOutcome: Hashable, Sendable {
  /// Written by this call, and in the index now.
  case written
  /// In the index already, or being written by another call (or earlier in the same batch):
  /// blocks are immutable, so the first copy stands and nothing was written.
  case present
}

extension NVMeTier {
  /// The most bytes one device write carries when a batch's small records are written together:
  /// a run ends before the record that would take it past this (or past the open region's end).
  /// A record larger than this on its own is written alone.
  public static let batchWriteBytesMax = 1 << 20

  /// Stores a block, unless it is present (or being written by another thread): blocks are
  /// immutable, so the first copy stands and the call does nothing. `checksum` is the CRC-32C of
  /// `payload`, checked before anything is written. The block is in the index when this returns.
  /// Throws `.ioError` when the device failed (the block is not admitted; the tier stays usable),
  /// `.resourceExhausted` when no region was freed within `reclaimWaitMilliseconds` while another
  /// thread was reclaiming one,
  /// `.checksumMismatch` when `payload` does not match `checksum`.
  ///
  /// `checksumOfStoredCopy`: the caller computed `checksum` over these very bytes when it stored
  /// them (the tier manager at commit, over the arena slot that has been immutable since), so the
  /// tier does not checksum the payload again. Damage to the bytes since then is still caught: the
  /// record carries `checksum`, not one computed now, so the first read or scrub of it fails
  /// verification and the block is dropped, never served.
  public func write(
    _ id: BlockID, payload: UnsafeRawBufferPointer, checksum: UInt32, checksumOfStoredCopy: Bool = false
  ) throws(StrataError) {
    let block = NVMeBlockWrite(id: id, payload: payload, checksum: checksum, checksumOfStoredCopy: checksumOfStoredCopy)
    if case .failure(let error) = write([block])[0] { throw error }
  }

  /// Stores many blocks, with few device writes: records are placed back to back in the open
  /// region in the order given, and each run of them (at most `batchWriteBytesMax` bytes, within
  /// one region) is written by one device write. Returns one outcome per block, in order, each
  /// what `write(_:payload:checksum:checksumOfStoredCopy:)` would have given it: a failed device
  /// write fails every block of its run (none of them is indexed; later runs go on), a refused
  /// reservation refuses the blocks staged for it. A block is indexed only after the write
  /// carrying its record returned, so a reader never finds a block whose bytes are not on disk.
  /// Blocks staged but not yet written stay claimed (`present` to other writers) until then.
  public func write(_ blocks: [NVMeBlockWrite]) -> [Result<NVMeWriteOutcome, StrataError>] {
    var outcomes = [Result<NVMeWriteOutcome, StrataError>](repeating: .success(.present), count: blocks.count)
    var checked: [Int] = []
    for (number, block) in blocks.enumerated() {
      do throws(StrataError) {
        try check(block)
        checked.append(number)
      } catch {
        outcomes[number] = .failure(error)
      }
    }
    var admitted: [(block: Int, key: IndexKey)] = []
    log.withLock { log in
      for number in checked {
        switch log.admit(blocks[number].id) {
        case .present: break
        case .namespacesExhausted:
          outcomes[number] = .failure(
            StrataError(
              .resourceExhausted, "\(blocks[number].id): the NVMe tier holds the most namespaces it can (65536)"))
        case .admitted(let key): admitted.append((number, key))
        }
      }
    }
    guard !admitted.isEmpty else { return outcomes }

    let lease = pool.lease()
    var staged: [StagedRecord] = []
    // Staging buffer bytes used, and device bytes of the run: a record never stages more than it
    // writes, so a run within its bound fits the buffer.
    var stagedBytes = 0
    var runBytes = 0
    var next = 0
    while next < admitted.count || !staged.isEmpty {
      // Stage records after those left over from the last run, while the run stays within its bound
      // (judged by each record's size uncompressed, which it never exceeds).
      while next < admitted.count {
        let (number, key) = admitted[next]
        let recordBytesMax = BlockRecordHeader.recordBytes(
          storedBytes: blocks[number].payload.count, alignmentBytes: alignmentBytes)
        if !staged.isEmpty, runBytes + recordBytesMax > runBytesMax { break }
        let record = stage(blocks[number], block: number, key: key, into: lease.buffer, at: stagedBytes)
        staged.append(record)
        stagedBytes += record.stagedBytes
        runBytes += record.recordBytes
        next += 1
      }
      let taken = writeRun(staged, of: blocks, from: lease.buffer, outcomes: &outcomes)
      guard taken < staged.count else {
        staged.removeAll(keepingCapacity: true)
        stagedBytes = 0
        runBytes = 0
        continue
      }
      // The records the open region had no room for go first in the next run (a new region).
      let leftStart = staged[taken].offset
      let left = UnsafeMutableRawBufferPointer(rebasing: lease.buffer[0..<(stagedBytes - leftStart)])
      left.copyMemory(from: UnsafeRawBufferPointer(rebasing: lease.buffer[leftStart..<stagedBytes]))
      staged.removeFirst(taken)
      for index in staged.indices { staged[index].offset -= leftStart }
      stagedBytes -= leftStart
      runBytes = staged.reduce(0) { $0 + $1.recordBytes }
    }
    return outcomes
  }

  /// A block's record in the staging buffer, its header not yet written (it needs the reservation).
  private struct StagedRecord {
    var block: Int
    var key: IndexKey
    /// Where the record starts in the staging buffer.
    var offset: Int
    /// Bytes it takes there: the whole record, or (written in place) its header and its tail.
    var stagedBytes: Int
    var recordBytes: Int
    var storedBytes: Int
    var codec: CompressionCodec
    var storedChecksum: UInt32
    /// Nonzero when the stored bytes are the payload masked (see `RecordMask`).
    var maskSeed: UInt64 = 0
    /// The payload's aligned bulk, written from where the caller holds it, between the staged
    /// header and the staged tail; nil when the whole record is staged.
    var inPlace: UnsafeRawBufferPointer?

    /// The record's bytes in device order: one range of `buffer`, or header, bulk in place, tail.
    func segments(in buffer: UnsafeMutableRawBufferPointer, bodyOffset: Int) -> [UnsafeRawBufferPointer] {
      guard let inPlace else { return [UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + recordBytes)])] }
      var segments = [UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + bodyOffset)]), inPlace]
      if stagedBytes > bodyOffset {
        segments.append(UnsafeRawBufferPointer(rebasing: buffer[(offset + bodyOffset)..<(offset + stagedBytes)]))
      }
      return segments
    }
  }

  /// The checks a block passes before it is claimed: its size, and its checksum unless the caller
  /// vouches for it.
  private func check(_ block: NVMeBlockWrite) throws(StrataError) {
    guard block.payload.count <= blockBytesMax else {
      throw StrataError(
        .invalidArgument, "\(block.id): block of \(block.payload.count) bytes exceeds the NVMe tier's \(blockBytesMax)")
    }
    // Otherwise the last check before a long-lived copy: bytes the caller did not checksum itself
    // must not be persisted with a checksum that would then vouch for them.
    let actual = block.checksumOfStoredCopy ? block.checksum : CRC32C.checksum(block.payload)
    guard actual == block.checksum else {
      throw StrataError(
        .checksumMismatch,
        "\(block.id): payload checksum 0x\(String(actual, radix: 16)) differs from the given 0x\(String(block.checksum, radix: 16))"
      )
    }
  }

  /// Puts a block's stored bytes (lz4 when that saves at least a sixteenth) and zeroed padding in
  /// `buffer` at `offset`, after room for its header; or, for a large raw payload at an aligned
  /// address, only the tail after its aligned bulk, which is then written in place. `buffer` holds
  /// a record of the block uncompressed from `offset` on.
  private func stage(
    _ source: NVMeBlockWrite, block: Int, key: IndexKey, into buffer: UnsafeMutableRawBufferPointer, at offset: Int
  ) -> StagedRecord {
    let payload = source.payload
    var codec = CompressionCodec.none
    var storedBytes = payload.count
    var storedChecksum = source.checksum
    var inPlace: UnsafeRawBufferPointer? = nil
    var stagedBody = payload.count
    // Compressed bytes go where a record of the payload's size would put them, and move to the
    // front when they turn out small enough for a record whose stored bytes follow the header.
    let rawBodyOffset = BlockRecordHeader.bodyOffset(storedBytes: payload.count, alignmentBytes: alignmentBytes)
    var bodyStart = offset + rawBodyOffset
    let keptBytesMax = LZ4Codec.keptBytesMax(payloadBytes: payload.count)
    if compression == .lz4, keptBytesMax > 0,
      let compressed = LZ4Codec.compress(
        payload, into: UnsafeMutableRawBufferPointer(rebasing: buffer[bodyStart..<(bodyStart + keptBytesMax)]))
    {
      codec = .lz4
      storedBytes = compressed
      stagedBody = compressed
      let compressedStart =
        offset + BlockRecordHeader.bodyOffset(storedBytes: compressed, alignmentBytes: alignmentBytes)
      if compressedStart != bodyStart {
        // The ranges may overlap: copyMemory is a memmove.
        (buffer.baseAddress! + compressedStart).copyMemory(from: buffer.baseAddress! + bodyStart, byteCount: compressed)
        bodyStart = compressedStart
      }
      storedChecksum = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[bodyStart..<(bodyStart + compressed)]))
    } else if payload.count >= BlockRecordHeader.alignedBodyBytesMin,
      Int(bitPattern: payload.baseAddress) % alignmentBytes == 0
    {
      let bulk = payload.count / alignmentBytes * alignmentBytes
      inPlace = UnsafeRawBufferPointer(rebasing: payload[0..<bulk])
      stagedBody = payload.count - bulk
      UnsafeMutableRawBufferPointer(rebasing: buffer[bodyStart..<(bodyStart + stagedBody)])
        .copyMemory(from: UnsafeRawBufferPointer(rebasing: payload[bulk...]))
    } else if payload.count > 0 {
      UnsafeMutableRawBufferPointer(rebasing: buffer[bodyStart..<(bodyStart + payload.count)]).copyMemory(from: payload)
    }
    // Stored bytes that hold the magic where the device is aligned are written raw and masked, so
    // that recovery never reads a tenant's bytes as a header (see `RecordMask`).
    var maskSeed: UInt64 = 0
    let stored =
      codec == .lz4 ? UnsafeRawBufferPointer(rebasing: buffer[bodyStart..<(bodyStart + storedBytes)]) : payload
    if RecordMask.holdsMagicAtAlignedOffsets(stored, bodyOffset: bodyStart - offset, alignmentBytes: alignmentBytes) {
      bodyStart = offset + rawBodyOffset
      let body = UnsafeMutableRawBufferPointer(rebasing: buffer[bodyStart..<(bodyStart + payload.count)])
      for _ in 0..<RecordMask.seedTriesMax {
        maskSeed = RecordMask.newSeed()
        body.copyMemory(from: payload)
        RecordMask.apply(seed: maskSeed, to: body)
        if !RecordMask.holdsMagicAtAlignedOffsets(
          UnsafeRawBufferPointer(body), bodyOffset: rawBodyOffset, alignmentBytes: alignmentBytes)
        {
          break
        }
      }
      codec = .none
      storedBytes = payload.count
      stagedBody = payload.count
      inPlace = nil
      storedChecksum = CRC32C.checksum(UnsafeRawBufferPointer(body))
    }
    let recordBytes = BlockRecordHeader.recordBytes(storedBytes: storedBytes, alignmentBytes: alignmentBytes)
    // A record written in place stages its header unit and its tail; any other, all of it.
    let stagedBytes =
      inPlace == nil ? recordBytes : bodyStart - offset + roundUp(stagedBody, toMultipleOf: alignmentBytes)
    // Zeroed padding after the header and after the stored bytes: what lands on disk is a function
    // of the block alone, never of stale memory.
    UnsafeMutableRawBufferPointer(rebasing: buffer[(offset + BlockRecordHeader.byteCount)..<bodyStart])
      .initializeMemory(as: UInt8.self, repeating: 0)
    UnsafeMutableRawBufferPointer(rebasing: buffer[(bodyStart + stagedBody)..<(offset + stagedBytes)])
      .initializeMemory(as: UInt8.self, repeating: 0)
    return StagedRecord(
      block: block, key: key, offset: offset, stagedBytes: stagedBytes, recordBytes: recordBytes,
      storedBytes: storedBytes, codec: codec, storedChecksum: storedChecksum, maskSeed: maskSeed, inPlace: inPlace)
  }

  /// Reserves room for the first records of `staged` (those the open region, or the next one,
  /// takes; they start at the buffer's front), writes them with one device write, and indexes
  /// them, filling in their outcomes. Returns how many records it took: all of them when no region
  /// was free (each refused), else those reserved, written or failed.
  private func writeRun(
    _ staged: [StagedRecord], of blocks: [NVMeBlockWrite], from buffer: UnsafeMutableRawBufferPointer,
    outcomes: inout [Result<NVMeWriteOutcome, StrataError>]
  ) -> Int {
    guard let (reservations, victim) = reserveRun(bytes: staged.map(\.recordBytes)) else {
      log.withLock { log in
        for record in staged {
          log.withdraw(record.key)
          log.counters.admissionsRefused += 1
        }
      }
      for record in staged {
        outcomes[record.block] = .failure(
          StrataError(
            .resourceExhausted,
            "\(blocks[record.block].id): no free NVMe region (another write's reclaim freed none within \(NVMeTier.reclaimWaitMilliseconds) ms, or writes are failing and no region without live blocks is left to reuse); block not admitted"
          ))
      }
      return staged.count
    }
    let run = staged[0..<reservations.count]
    for (record, reservation) in zip(run, reservations) {
      let block = blocks[record.block]
      var header = BlockRecordHeader(
        codec: record.codec, namespace: block.id.namespace, key: block.id.key, payloadBytes: block.payload.count,
        storedBytes: record.storedBytes, payloadChecksum: block.checksum, storedChecksum: record.storedChecksum,
        sequence: reservation.sequence, deviceOffset: reservation.deviceOffset)
      header.maskSeed = record.maskSeed
      header.encode(into: UnsafeMutableRawBufferPointer(rebasing: buffer[record.offset...]))
    }
    let first = reservations[0]
    // The run's bytes in device order, neighbouring staged ranges joined into one segment.
    var segments: [UnsafeRawBufferPointer] = []
    for record in run {
      let bodyOffset = BlockRecordHeader.bodyOffset(storedBytes: record.storedBytes, alignmentBytes: alignmentBytes)
      for segment in record.segments(in: buffer, bodyOffset: bodyOffset) {
        if let last = segments.last, last.baseAddress! + last.count == segment.baseAddress {
          segments[segments.count - 1] = UnsafeRawBufferPointer(
            start: last.baseAddress, count: last.count + segment.count)
        } else {
          segments.append(segment)
        }
      }
    }
    do {
      try devices[first.device].write(at: first.deviceOffset, gathering: segments)
      log.withLock { log in
        for (record, reservation) in zip(run, reservations) {
          let location = RecordLocation(
            region: reservation.region, offsetInRegion: reservation.offsetInRegion,
            payloadBytes: blocks[record.block].payload.count, storedBytes: record.storedBytes, codec: record.codec,
            storedChecksum: record.storedChecksum, masked: record.maskSeed != 0)
          log.finishWrite(reservation, key: record.key, location: location)
        }
        log.counters.recordWrites += 1
        log.counters.recordsWritten += run.count
        log.counters.maskedRecordsWritten += run.count { $0.maskSeed != 0 }
      }
      for record in run { outcomes[record.block] = .success(.written) }
    } catch {
      log.withLock { log in
        // Last first: the run's space goes back to the open region whole (see `abandonWrite`).
        for (record, reservation) in zip(run, reservations).reversed() {
          log.abandonWrite(reservation, key: record.key)
        }
      }
      for record in run {
        let context = run.count == 1 ? "" : " (a write of \(run.count) records)"
        outcomes[record.block] = .failure(
          StrataError(.ioError, "\(blocks[record.block].id): \(error.message)\(context); block not admitted"))
      }
    }
    if let victim { reclaim(victim) }
    return reservations.count
  }
}
