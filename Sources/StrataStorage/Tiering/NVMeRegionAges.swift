// How old NVMe-resident blocks are, at least, without a timestamp per block: the time of the
// latest write into each region (per region generation). Eviction by age uses it.

import Synchronization

/// For each NVMe region, the generation it had and the latest time the tier manager wrote a block
/// into it. A block in a region was written no later than that time, so "older than T" is decided
/// conservatively: a block is never taken for older than it is. Records moved by the NVMe tier
/// itself (hot reinsertion) land in the open region, whose time is at least as recent as theirs.
final class NVMeRegionAges: Sendable {
  private struct Stamp {
    var generation: UInt32
    var milliseconds: UInt64
  }

  private let stamps = Mutex<[Int: Stamp]>([:])

  /// Blocks recovered at start were written before `now`: their regions are stamped with it.
  init(recovered nvme: NVMeTier?, atMilliseconds now: UInt64) {
    guard let nvme else { return }
    stamps.withLock { stamps in
      for (region, generation) in nvme.occupiedRegions() {
        stamps[region] = Stamp(generation: generation, milliseconds: now)
      }
    }
  }

  /// Records that `id` was just written to `nvme`.
  func written(_ id: BlockID, in nvme: NVMeTier, atMilliseconds now: UInt64) {
    guard let (region, generation) = nvme.regionAndGeneration(of: id) else { return }
    stamps.withLock { stamps in
      if let stamp = stamps[region], stamp.generation == generation, stamp.milliseconds >= now { return }
      stamps[region] = Stamp(generation: generation, milliseconds: now)
    }
  }

  /// The latest time `id` can have been written, or nil when unknown (its region was reused and
  /// has not been written by the tier manager since): an unknown age is never "old".
  func storedAt(_ id: BlockID, in nvme: NVMeTier) -> UInt64? {
    guard let (region, generation) = nvme.regionAndGeneration(of: id) else { return nil }
    return stamps.withLock { stamps in
      guard let stamp = stamps[region], stamp.generation == generation else { return nil }
      return stamp.milliseconds
    }
  }
}
