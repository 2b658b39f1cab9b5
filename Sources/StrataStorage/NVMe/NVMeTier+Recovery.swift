// Warm restart of the NVMe tier: every region is walked (devices in parallel), each record's
// checksums are verified, and the index is rebuilt with the highest sequence number of each block.

import Dispatch
public import StrataCore
import Synchronization

extension NVMeTier {
  /// Opens a tier over devices that hold an earlier tier's records (same `regionBytes`) and
  /// rebuilds its index from them. Torn and decayed records are dropped and counted; an I/O error
  /// costs the rest of that region, never the recovery. Regions holding live blocks are sealed and
  /// evicted oldest first; new writes go to the free ones.
  public static func recover(
    devices: [any BlockDevice], regionBytes: Int, compression: CompressionCodec,
    blockBytesMax: Int = NVMeTier.defaultBlockBytesMax, stagingBufferCount: Int = NVMeTier.defaultStagingBufferCount
  ) throws(StrataError) -> (NVMeTier, RecoveryReport) {
    let clock = ContinuousClock()
    let start = clock.now
    let tier = try NVMeTier(
      unformatted: devices, regionBytes: regionBytes, compression: compression, blockBytesMax: blockBytesMax,
      stagingBufferCount: stagingBufferCount)
    let scans = tier.scanAllRegions()
    let adopted = tier.log.withLock { $0.adopt(scans, sequenceFloor: wallClockNanoseconds()) }
    var report = RecoveryReport()
    report.regionsScanned = scans.count
    report.corruptDropped = scans.reduce(0) { $0 + $1.corrupt } + adopted.unnamed
    report.ioErrors = scans.reduce(0) { $0 + $1.ioErrors }
    report.duplicatesDropped = adopted.duplicates
    for region in adopted.invalidate {
      // Only superseded copies live here; should the invalidation fail, they are superseded again
      // by the next recovery, so a failure costs nothing but a count.
      let placement = tier.log.withLock { $0.regionInfo(region) }
      do {
        try tier.invalidateRegionStart(device: placement.device, deviceOffset: placement.deviceOffset)
      } catch {
        report.ioErrors += 1
      }
    }
    report.blocksRecovered = tier.blockCount
    tier.log.withLock { $0.counters.ioErrors += report.ioErrors }
    let elapsed = clock.now - start
    report.durationSeconds =
      Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return (tier, report)
  }

  /// Walks every region, verifying stored bytes; one thread per device at most (the devices work
  /// in parallel, a device's regions in order), bounded by Dispatch's width of the machine.
  func scanAllRegions() -> [RegionScan] {
    let placements = log.withLock { log in log.regions.map { (device: $0.device, deviceOffset: $0.deviceOffset) } }
    let perDevice = Mutex([[RegionScan]](repeating: [], count: devices.count))
    DispatchQueue.concurrentPerform(iterations: devices.count) { device in
      let lease = pool.lease()
      var scans: [RegionScan] = []
      for placement in placements where placement.device == device {
        var records: [RegionScan.Record] = []
        var scan = walk(
          device: device, deviceOffset: placement.deviceOffset, limitBytes: regionBytes, buffer: lease.buffer,
          verifyStored: true
        ) { header, offsetInRegion, _ in
          records.append(
            RegionScan.Record(
              namespace: header.namespace, key: header.key, sequence: header.sequence,
              offsetInRegion: offsetInRegion, payloadBytes: header.payloadBytes, storedBytes: header.storedBytes,
              codec: header.codec, isTombstone: header.isTombstone))
        }
        scan.records = records
        scans.append(scan)
      }
      perDevice.withLock { $0[device] = scans }
    }
    // Regions are numbered device by device, so concatenating in device order restores their order.
    return perDevice.withLock { $0.flatMap { $0 } }
  }
}
