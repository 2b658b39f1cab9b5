// Registered host memory (strata_register / strata_unregister): a worker registers its pinned KV
// pool once; every later call whose buffer lies inside a registered range reuses that range's
// memory region (over RDMA: registered with the device once, not per call). Over TCP the ranges
// are validated and recorded. Buffers outside every registered range still work: they get a
// region of their own for the call.

import StrataClient
import StrataCore
import Synchronization

/// The registered ranges of one client, sorted by base address, never overlapping.
struct RegisteredMemory {
  /// The most ranges one client keeps.
  static let rangesMax = 4096

  struct Range {
    var base: UInt
    var count: Int
    var region: MemoryRegion
    var end: UInt { base + UInt(count) }
  }

  private(set) var ranges: [Range] = []

  /// The index of the first range whose end lies above `address`.
  private func firstEnding(after address: UInt) -> Int {
    var low = 0
    var high = ranges.count
    while low < high {
      let middle = (low + high) / 2
      if ranges[middle].end <= address { low = middle + 1 } else { high = middle }
    }
    return low
  }

  mutating func add(base: UInt, count: Int, region: () -> MemoryRegion) throws(StrataError) {
    guard count > 0 else { throw StrataError(.invalidArgument, "length is 0: there is nothing to register") }
    guard base <= UInt.max - UInt(count) else {
      throw StrataError(.invalidArgument, "the range wraps the address space")
    }
    let index = firstEnding(after: base)
    if index < ranges.count, ranges[index].base < base + UInt(count) {
      let other = ranges[index]
      if other.base == base && other.count == count {
        throw StrataError(.alreadyExists, "\(count) bytes at 0x\(String(base, radix: 16)) are registered already")
      }
      throw StrataError(
        .invalidArgument,
        "\(count) bytes at 0x\(String(base, radix: 16)) overlap the registered \(other.count) bytes at "
          + "0x\(String(other.base, radix: 16))")
    }
    guard ranges.count < Self.rangesMax else {
      throw StrataError(.resourceExhausted, "\(Self.rangesMax) ranges are registered: unregister one first")
    }
    ranges.insert(Range(base: base, count: count, region: region()), at: index)
  }

  mutating func remove(base: UInt) throws(StrataError) {
    let index = firstEnding(after: base)
    guard index < ranges.count, ranges[index].base == base else {
      throw StrataError(.notFound, "no registered range starts at 0x\(String(base, radix: 16))")
    }
    ranges.remove(at: index)
  }

  /// The registered region holding all of `count` bytes at `base`, and the offset there.
  func containing(base: UInt, count: Int) -> (MemoryRegion, Int)? {
    let index = firstEnding(after: base)
    guard index < ranges.count else { return nil }
    let range = ranges[index]
    guard range.base <= base, base - range.base <= UInt(range.count),
      count <= range.count - Int(base - range.base)
    else { return nil }
    return (range.region, Int(base - range.base))
  }
}

extension ClientBox {
  /// `count` bytes of host memory at `base` as a slice: of its registered range when it lies in
  /// one, otherwise of a region made for this call. NULL is allowed only for 0 bytes.
  func hostSlice(_ base: UnsafeRawPointer?, count: Int, name: @autoclosure () -> String) throws(StrataError)
    -> RegionSlice
  {
    guard let base else {
      guard count == 0 else { throw invalid("\(name()) is NULL with a length of \(count) bytes") }
      return try client.register(UnsafeMutableRawBufferPointer(start: emptyBuffer, count: 0)).slice(length: 0)
    }
    let address = UInt(bitPattern: base)
    if let (region, offset) = registered.withLock({ $0.containing(base: address, count: count) }) {
      return try region.slice(offset: offset, length: count)
    }
    // The client only reads a put's source: the mutable view is what a region is made of.
    return try client.register(
      UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(mutating: base), count: count)
    )
    .slice(length: count)
  }
}

@_cdecl("strata_register")
public func strataRegister(_ handle: OpaquePointer?, _ base: UnsafeMutableRawPointer?, _ length: UInt64) -> Int32 {
  guarded("strata_register") { () throws(StrataError) in
    let box = try box(handle)
    let base = try required(base, "base")
    let count = try byteCount(length, "length")
    try box.registered.withLock { (memory) throws(StrataError) in
      try memory.add(base: UInt(bitPattern: base), count: count) {
        box.client.register(UnsafeMutableRawBufferPointer(start: base, count: count))
      }
    }
  }
}

@_cdecl("strata_unregister")
public func strataUnregister(_ handle: OpaquePointer?, _ base: UnsafeMutableRawPointer?) -> Int32 {
  guarded("strata_unregister") { () throws(StrataError) in
    let box = try box(handle)
    let base = try required(base, "base")
    try box.registered.withLock { (memory) throws(StrataError) in try memory.remove(base: UInt(bitPattern: base)) }
  }
}
