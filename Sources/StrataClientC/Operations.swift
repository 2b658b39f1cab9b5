// The calls of the C ABI made ready to run: each `prepare…` checks its arguments on the caller's
// thread, copies the keys and segment lists, and returns the async body that performs the call and
// writes the caller's result arrays. The blocking calls (strata_lookup_leased, strata_getv, …) run
// that body and wait; the submissions (Submission.swift) run it in a task and post a completion.

import StrataClient
import StrataCore
import StrataWire

/// A caller's result array, written by the task that performs the call (the caller keeps it valid
/// and untouched until the call returns or its completion is polled).
struct Out<Element>: @unchecked Sendable {
  let pointer: UnsafeMutablePointer<Element>?
  init(_ pointer: UnsafeMutablePointer<Element>?) { self.pointer = pointer }
  func callAsFunction(_ index: Int, _ value: Element) { pointer?[index] = value }
}

/// What a finished call reports besides its result arrays: a lookup's leading run and lease.
struct CallSummary: Sendable {
  var leadingRun: UInt64 = 0
  var lease: UInt64 = 0
}

typealias PreparedCall = @Sendable () async throws(StrataError) -> CallSummary

/// The operation numbers of strata_completion.operation.
enum Operation: UInt32 {
  case lookup = 1
  case get = 2
  case put = 3
  case delete = 4
}

/// Per-key results of strata_getv beyond strata_get's: the block's length differs from the total
/// of a scattered destination's segments.
let getSizeMismatch: Int64 = -5

/// The most segments one key takes.
let segmentsPerKeyMax = 1 << 16

/// One `strata_segment`: `{ void *base; uint64_t length; }` (16 bytes on a 64-bit machine).
private func segment(_ segments: UnsafeRawPointer, _ index: Int) -> (UnsafeMutableRawPointer?, UInt64) {
  let entry = segments + index * 16
  return (
    UnsafeMutableRawPointer(bitPattern: entry.loadUnaligned(as: UInt.self)),
    entry.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
  )
}

/// The segments of every key: `segmentCounts[i]` consecutive entries of `segments` per key, as
/// slices (zero-length segments dropped; a key keeps at least one slice).
private func segmentSlices(
  _ box: ClientBox, _ segments: UnsafeRawPointer?, _ segmentCounts: UnsafePointer<Int>?, count: Int
) throws(StrataError) -> [[RegionSlice]] {
  guard count > 0 else { return [] }
  let counts = try required(segmentCounts, "segment_counts")
  var total = 0
  for index in 0..<count {
    guard (1...segmentsPerKeyMax).contains(counts[index]) else {
      throw invalid("segment_counts[\(index)] \(UInt(bitPattern: counts[index])) is not 1 to \(segmentsPerKeyMax)")
    }
    total += counts[index]
  }
  try checkCount(total, "segments in all")
  let segments = try required(segments, "segments")
  var slices: [[RegionSlice]] = []
  slices.reserveCapacity(count)
  var cursor = 0
  for index in 0..<count {
    var keySlices: [RegionSlice] = []
    for part in 0..<counts[index] {
      let (base, length) = segment(segments, cursor)
      let name = "segments[\(cursor)] (key \(index), segment \(part))"
      cursor += 1
      let slice = try box.hostSlice(base, count: try byteCount(length, "\(name).length"), name: name)
      if slice.length > 0 || (keySlices.isEmpty && part == counts[index] - 1) { keySlices.append(slice) }
    }
    slices.append(keySlices)
  }
  return slices
}

// MARK: Lookup

func prepareLookup(
  _ box: ClientBox, _ keys: UnsafePointer<UInt8>?, _ count: Int, leaseMilliseconds: UInt32,
  _ tiersOut: UnsafeMutablePointer<UInt8>?, _ sizesOut: UnsafeMutablePointer<UInt64>?
) throws(StrataError) -> PreparedCall {
  let client = box.client
  let keys = try blockKeys(keys, count: count)
  let tiersOut = Out(tiersOut)
  let sizesOut = Out(sizesOut)
  let parts = batches(keys, client)
  guard leaseMilliseconds == 0 || parts.count <= 1 else {
    throw invalid(
      "a lease covers one batch: at most \(client.configuration.limits.itemsPerBatchMax) keys, not \(count)")
  }
  return { () async throws(StrataError) -> CallSummary in
    var tiers: [BlockTier] = []
    var leadingRun = 0
    var lease: UInt64 = 0
    var unbroken = true
    var sizes: [UInt64] = []
    let wantsSizes = sizesOut.pointer != nil
    for part in parts {
      let answer = try await client.lookup(part, leaseMilliseconds: leaseMilliseconds, sizes: wantsSizes)
      guard answer.tiers.count == part.count else { throw mismatch("tiers", answer.tiers.count, part.count) }
      tiers += answer.tiers
      sizes += answer.sizes
      if unbroken { leadingRun += min(answer.leadingRun, part.count) }
      unbroken = unbroken && answer.leadingRun >= part.count
      lease = answer.leaseID
    }
    for (index, tier) in tiers.enumerated() { tiersOut(index, tier.rawValue) }
    if wantsSizes {
      guard sizes.count == tiers.count else { throw mismatch("sizes", sizes.count, tiers.count) }
      for (index, size) in sizes.enumerated() { sizesOut(index, size) }
    }
    return CallSummary(leadingRun: UInt64(leadingRun), lease: lease)
  }
}

// MARK: Get

func prepareGet(
  _ box: ClientBox, _ keys: UnsafePointer<UInt8>?, _ count: Int, lease: UInt64, _ segments: UnsafeRawPointer?,
  _ segmentCounts: UnsafePointer<Int>?, _ offsets: UnsafePointer<UInt64>?, _ lengthsOut: UnsafeMutablePointer<Int64>?
) throws(StrataError) -> PreparedCall {
  let client = box.client
  let keys = try blockKeys(keys, count: count)
  let lengthsOut = Out(try array(lengthsOut, "lengths_out", count: count))
  let slices = try segmentSlices(box, segments, segmentCounts, count: count)
  var items: [StrataClient.GetItem] = []
  items.reserveCapacity(count)
  // With offsets: exactly the segments' total from that offset. Without: the whole block, which
  // must fit one segment, or fill several exactly.
  var exact: [Bool] = []
  for index in 0..<count {
    let parts = slices[index]
    var item = StrataClient.GetItem(key: keys[index], destination: parts[0], tail: Array(parts.dropFirst()))
    if let offsets {
      guard item.capacity > 0 else { throw invalid("key \(index): a range read needs segments of at least 1 byte") }
      item.blockOffset = offsets[index]
      item.length = UInt64(item.capacity)
    }
    exact.append(offsets == nil && parts.count > 1)
    items.append(item)
  }
  return { [items, exact] () async throws(StrataError) -> CallSummary in
    let results = try await client.get(items, leaseID: lease)
    guard results.count == items.count else { throw mismatch("results", results.count, items.count) }
    for (index, result) in results.enumerated() {
      switch result {
      case .ok(let length):
        lengthsOut(index, exact[index] && length != items[index].capacity ? getSizeMismatch : Int64(length))
      case .missing: lengthsOut(index, -1)
      case .corrupt: lengthsOut(index, -2)
      case .destinationTooSmall: lengthsOut(index, exact[index] ? getSizeMismatch : -3)
      case .outOfRange: lengthsOut(index, -4)
      }
    }
    return CallSummary()
  }
}

// MARK: Put

func preparePut(
  _ box: ClientBox, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ segments: UnsafeRawPointer?,
  _ segmentCounts: UnsafePointer<Int>?, _ outcomesOut: UnsafeMutablePointer<UInt8>?
) throws(StrataError) -> PreparedCall {
  let client = box.client
  let keys = try blockKeys(keys, count: count)
  let outcomesOut = Out(try array(outcomesOut, "outcomes_out", count: count))
  let slices = try segmentSlices(box, segments, segmentCounts, count: count)
  let items = (0..<count).map {
    StrataClient.PutItem(key: keys[$0], source: slices[$0][0], tail: Array(slices[$0].dropFirst()))
  }
  return { () async throws(StrataError) -> CallSummary in
    guard !items.isEmpty else { return CallSummary() }
    let outcomes = try await client.put(items)
    guard outcomes.count == items.count else { throw mismatch("outcomes", outcomes.count, items.count) }
    for (index, outcome) in outcomes.enumerated() { outcomesOut(index, outcome.rawValue) }
    return CallSummary()
  }
}

// MARK: Delete

func prepareDelete(
  _ box: ClientBox, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ removedOut: UnsafeMutablePointer<UInt8>?
) throws(StrataError) -> PreparedCall {
  let client = box.client
  let keys = try blockKeys(keys, count: count)
  let removedOut = Out(try array(removedOut, "removed_out", count: count))
  let parts = batches(keys, client)
  return { () async throws(StrataError) -> CallSummary in
    var index = 0
    for part in parts {
      let answer = try await client.delete(part)
      guard answer.count == part.count else { throw mismatch("results", answer.count, part.count) }
      for gone in answer {
        removedOut(index, gone ? 1 : 0)
        index += 1
      }
    }
    return CallSummary()
  }
}

// MARK: Blocking calls

@_cdecl("strata_lookup_leased")
public func strataLookupLeased(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ leaseMilliseconds: UInt32,
  _ tiersOut: UnsafeMutablePointer<UInt8>?, _ sizesOut: UnsafeMutablePointer<UInt64>?,
  _ leadingRunOut: UnsafeMutablePointer<Int>?, _ leaseOut: UnsafeMutablePointer<UInt64>?
) -> Int32 {
  guarded("strata_lookup_leased") { () throws(StrataError) in
    let call = try prepareLookup(try box(handle), keys, count, leaseMilliseconds: leaseMilliseconds, tiersOut, sizesOut)
    let summary = try wait(call)
    leadingRunOut?.pointee = Int(summary.leadingRun)
    leaseOut?.pointee = summary.lease
  }
}

@_cdecl("strata_getv")
public func strataGetv(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ lease: UInt64,
  _ segments: UnsafeRawPointer?, _ segmentCounts: UnsafePointer<Int>?, _ offsets: UnsafePointer<UInt64>?,
  _ lengthsOut: UnsafeMutablePointer<Int64>?
) -> Int32 {
  guarded("strata_getv") { () throws(StrataError) in
    _ = try wait(
      try prepareGet(try box(handle), keys, count, lease: lease, segments, segmentCounts, offsets, lengthsOut))
  }
}

@_cdecl("strata_putv")
public func strataPutv(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ segments: UnsafeRawPointer?,
  _ segmentCounts: UnsafePointer<Int>?, _ outcomesOut: UnsafeMutablePointer<UInt8>?
) -> Int32 {
  guarded("strata_putv") { () throws(StrataError) in
    _ = try wait(try preparePut(try box(handle), keys, count, segments, segmentCounts, outcomesOut))
  }
}
