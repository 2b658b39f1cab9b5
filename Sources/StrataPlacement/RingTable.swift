// RingTable: the sorted virtual-node points of a ring, packed 8 bytes each, with a bucket index
// that turns a lookup into a jump plus a scan of a few entries.

import StrataCore

/// Immutable, shared by every copy of a `Ring` (a ring of 1,000 members holds about 2 million
/// points, so copies must not duplicate it).
final class RingTable: Sendable {
  /// Low bits of an entry that hold the member index; the high 48 bits are the ring position.
  static let indexBits: UInt64 = 16
  static let indexMask: UInt64 = (1 << indexBits) - 1
  static let positionMask: UInt64 = ~indexMask
  /// The most members a table can index.
  static let membersMax = 1 << 16

  /// Sorted ascending: `position << 16 | memberIndex`, position being a point's top 48 bits.
  let entries: [UInt64]
  /// `bucketStarts[b]` is the first entry whose top `bucketBits` bits are >= b; one extra at the end.
  let bucketStarts: [UInt32]
  let bucketShift: UInt64

  /// Builds the table from `counts[i]` points for member `i` (0 for members that own nothing).
  init(seeds: [UInt64], counts: [Int]) {
    precondition(seeds.count == counts.count && seeds.count <= RingTable.membersMax)
    let total = counts.reduce(0, +)
    precondition(total < Int(UInt32.max), "ring of \(total) points is too large")
    // About four entries per bucket: the index costs an eighth of the entries' memory.
    var bucketBits = 0
    while bucketBits < 24 && (1 << (bucketBits + 2)) < total { bucketBits += 1 }
    // A radix sort in two passes, both cache-friendly: first by the top `coarseBits` bits (256
    // sequential output streams), then each coarse range (tens of KiB) by the remaining bucket
    // bits, then an insertion sort inside each bucket. Hash points are uniform, so buckets hold a
    // handful of entries and the whole sort is linear.
    let coarseBits = min(bucketBits, 8)
    let fineBits = bucketBits - coarseBits
    let coarseCount = 1 << coarseBits
    let fineCount = 1 << fineBits
    func coarse(_ entry: UInt64) -> Int { coarseBits == 0 ? 0 : Int(truncatingIfNeeded: entry >> (64 - coarseBits)) }
    func fine(_ entry: UInt64) -> Int {
      fineBits == 0 ? 0 : Int(truncatingIfNeeded: (entry << coarseBits) >> (64 - fineBits))
    }

    // Pass 0: generate every point, in member order, counting coarse buckets.
    var coarseStarts = [Int](repeating: 0, count: coarseCount + 1)
    var generated = [UInt64](unsafeUninitializedCapacity: total) { buffer, initialized in
      var next = 0
      for (index, seed) in seeds.enumerated() where counts[index] > 0 {
        var state = seed
        for _ in 0..<counts[index] {
          let entry = (RingTable.mix(&state) & RingTable.positionMask) | UInt64(index)
          buffer[next] = entry
          coarseStarts[coarse(entry) + 1] += 1
          next += 1
        }
      }
      initialized = next
    }
    for index in 0..<coarseCount { coarseStarts[index + 1] += coarseStarts[index] }

    // Pass 1: scatter into coarse ranges.
    let scattered = [UInt64](unsafeUninitializedCapacity: total) { buffer, initialized in
      var fill = coarseStarts
      for entry in generated {
        let target = coarse(entry)
        buffer[fill[target]] = entry
        fill[target] += 1
      }
      initialized = total
    }

    // Pass 2: within each coarse range, scatter by fine bucket into `generated` (reused), then sort
    // each bucket; record where every bucket starts.
    var starts = [UInt32](repeating: 0, count: (1 << bucketBits) + 1)
    generated.withUnsafeMutableBufferPointer { sorted in
      scattered.withUnsafeBufferPointer { scattered in
        starts.withUnsafeMutableBufferPointer { starts in
          var fill = [Int](repeating: 0, count: fineCount)
          for coarseIndex in 0..<coarseCount {
            let low = coarseStarts[coarseIndex]
            let high = coarseStarts[coarseIndex + 1]
            for slot in 0..<fineCount { fill[slot] = 0 }
            for slot in low..<high { fill[fine(scattered[slot])] += 1 }
            var position = low
            for slot in 0..<fineCount {
              let size = fill[slot]
              fill[slot] = position
              starts[coarseIndex * fineCount + slot] = UInt32(truncatingIfNeeded: position)
              position += size
            }
            for slot in low..<high {
              let entry = scattered[slot]
              let target = fine(entry)
              sorted[fill[target]] = entry
              fill[target] += 1
            }
          }
          starts[starts.count - 1] = UInt32(truncatingIfNeeded: total)
          for bucket in 0..<(starts.count - 1) {
            RingTable.insertionSort(sorted, Int(starts[bucket])..<Int(starts[bucket + 1]))
          }
        }
      }
    }
    entries = generated
    bucketStarts = starts
    bucketShift = UInt64(64 - bucketBits)
  }

  /// Sorts `buffer[range]`; quadratic, so large ranges (only from a pathological hash) use `sort`.
  private static func insertionSort(_ buffer: UnsafeMutableBufferPointer<UInt64>, _ range: Range<Int>) {
    if range.count > 32 {
      var slice = UnsafeMutableBufferPointer(rebasing: buffer[range])
      slice.sort()
      return
    }
    var position = range.lowerBound + 1
    while position < range.upperBound {
      let value = buffer[position]
      var hole = position
      while hole > range.lowerBound && buffer[hole - 1] > value {
        buffer[hole] = buffer[hole - 1]
        hole -= 1
      }
      buffer[hole] = value
      position += 1
    }
  }

  var count: Int { entries.count }

  /// Bytes held by the table (entries and bucket index).
  var memoryBytes: Int { entries.count * 8 + bucketStarts.count * 4 }

  @inline(__always) func memberIndex(at slot: Int) -> Int { Int(truncatingIfNeeded: entries[slot] & Self.indexMask) }

  /// The 48-bit position (as the top bits of a UInt64) of entry `slot`.
  @inline(__always) func position(at slot: Int) -> UInt64 { entries[slot] & Self.positionMask }

  /// The slot of the first point at or after `point` clockwise (wrapping to 0); the table must
  /// not be empty.
  @inline(__always) func successor(of point: UInt64) -> Int {
    let target = point & Self.positionMask
    let bucket = bucketShift == 64 ? 0 : Int(truncatingIfNeeded: point >> bucketShift)
    return entries.withUnsafeBufferPointer { entries in
      bucketStarts.withUnsafeBufferPointer { starts in
        var slot = Int(starts[bucket])
        let end = Int(starts[bucket + 1])
        while slot < end && entries[slot] < target { slot += 1 }
        return slot == entries.count ? 0 : slot
      }
    }
  }

  /// SplitMix64's step: each member's points are its own stream, seeded from a SHA-256 of its
  /// id, so they depend on nothing else and are the same on every platform. Growing a member's
  /// count only appends points to its stream.
  @inline(__always) static func mix(_ state: inout UInt64) -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// The stream seed of a member: the first 8 bytes (big-endian) of SHA-256("strata-ring-v1:" + id).
  static func seed(memberID: String) -> UInt64 {
    SHA256.digest(Array("strata-ring-v1:".utf8) + Array(memberID.utf8)).prefix64
  }
}
