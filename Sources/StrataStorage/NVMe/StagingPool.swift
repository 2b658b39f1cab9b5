// Aligned staging buffers for O_DIRECT I/O, allocated once: the NVMe tier's data path borrows one
// per operation instead of allocating per block.

import Synchronization

/// `count` buffers of `bufferBytes`, each aligned for direct I/O. A caller holds one as a
/// `StagingLease`, which hands it back when it goes out of scope. When every buffer is out (more
/// concurrent callers than buffers) a lease falls back to a one-off allocation and counts it, so
/// an undersized pool shows in the statistics instead of as a stall or a refused request.
final class StagingPool: Sendable {
  let bufferBytes: Int
  let alignmentBytes: Int
  let count: Int
  // Safe to share: the memory is reached only through a lease, and `freeSlots` (under its lock)
  // hands each slot to one lease at a time, so no two threads ever touch the same buffer.
  nonisolated(unsafe) private let base: UnsafeMutableRawPointer
  private let freeSlots: Mutex<[Int]>
  private let overflowAllocations = Atomic<Int>(0)

  init(count: Int, bufferBytes: Int, alignmentBytes: Int) {
    precondition(
      count >= 1 && bufferBytes > 0 && bufferBytes % alignmentBytes == 0,
      "StagingPool: \(count) buffers of \(bufferBytes) bytes, alignment \(alignmentBytes)")
    self.count = count
    self.bufferBytes = bufferBytes
    self.alignmentBytes = alignmentBytes
    // Untouched pages cost no memory until first used, so a generous pool is cheap while idle.
    base = UnsafeMutableRawPointer.allocate(byteCount: count * bufferBytes, alignment: alignmentBytes)
    freeSlots = Mutex(Array((0..<count).reversed()))
  }

  deinit { base.deallocate() }

  /// Times a lease found every buffer out and allocated one of its own.
  var overflowCount: Int { overflowAllocations.load(ordering: .relaxed) }

  func lease() -> StagingLease {
    if let slot = freeSlots.withLock({ $0.popLast() }) {
      return StagingLease(
        pool: self, slot: slot,
        buffer: UnsafeMutableRawBufferPointer(
          start: base + slot * bufferBytes, count: bufferBytes))
    }
    overflowAllocations.add(1, ordering: .relaxed)
    let memory = UnsafeMutableRawPointer.allocate(byteCount: bufferBytes, alignment: alignmentBytes)
    return StagingLease(pool: self, slot: nil, buffer: UnsafeMutableRawBufferPointer(start: memory, count: bufferBytes))
  }

  fileprivate func giveBack(_ slot: Int) {
    freeSlots.withLock { $0.append(slot) }
  }
}

/// One borrowed staging buffer; non-copyable so it is given back exactly once, when it ends.
struct StagingLease: ~Copyable {
  private let pool: StagingPool
  private let slot: Int?
  let buffer: UnsafeMutableRawBufferPointer

  fileprivate init(pool: StagingPool, slot: Int?, buffer: UnsafeMutableRawBufferPointer) {
    self.pool = pool
    self.slot = slot
    self.buffer = buffer
  }

  /// The first `count` bytes, for an I/O of that length.
  func prefix(_ count: Int) -> UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
  }

  deinit {
    if let slot {
      pool.giveBack(slot)
    } else {
      buffer.deallocate()
    }
  }
}
