// The seam between the NVMe tier and storage: a fixed-size, byte-addressed device doing aligned I/O.
// FileBlockDevice is the real one (O_DIRECT on a file or block device); SimulatedBlockDevice injects faults.

public import StrataCore

/// A device of `capacityBytes` that the NVMe tier reads and writes in place. Every offset, length
/// and buffer address passed to it is a multiple of `alignmentBytes` (what O_DIRECT demands);
/// anything else is a programmer error and stops the process. All methods may be called from
/// many threads at once; writes to disjoint ranges never interfere.
public protocol BlockDevice: Sendable {
  /// Usable bytes, a multiple of `alignmentBytes`.
  var capacityBytes: Int { get }
  /// The granularity of offsets, lengths and buffer addresses (512 or 4096 in practice).
  var alignmentBytes: Int { get }
  /// Fills `buffer` with the bytes at `offset`.
  func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError)
  /// Stores `buffer` at `offset`. Durable against a crash only after `sync()`.
  func write(at offset: Int, from buffer: UnsafeRawBufferPointer) throws(StrataError)
  /// Stores `segments` back to back from `offset`: one write of their concatenation, each
  /// segment's address and length aligned like a buffer's (a record written straight from RAM:
  /// its header, its payload where it lies, its tail). Durable against a crash only after `sync()`.
  func write(at offset: Int, gathering segments: [UnsafeRawBufferPointer]) throws(StrataError)
  /// Makes every completed write durable.
  func sync() throws(StrataError)
  /// Says the range holds nothing worth keeping (a hint: punch hole, TRIM); may do nothing.
  func discard(at offset: Int, bytes: Int)
}

extension BlockDevice {
  /// Gathers by copying the segments into one aligned buffer and writing it with one call, so a
  /// device that models each write (faults, torn writes) sees one write, as it would from a
  /// staging buffer. FileBlockDevice writes the segments in place with `pwritev`.
  public func write(at offset: Int, gathering segments: [UnsafeRawBufferPointer]) throws(StrataError) {
    if segments.count == 1 { return try write(at: offset, from: segments[0]) }
    let total = segments.reduce(0) { $0 + $1.count }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: max(alignmentBytes, 16))
    defer { buffer.deallocate() }
    var filled = 0
    for segment in segments {
      checkAligned(
        "BlockDevice.write(gathering:)", offset: offset + filled, count: segment.count, address: segment.baseAddress)
      UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<(filled + segment.count)]).copyMemory(from: segment)
      filled += segment.count
    }
    try write(at: offset, from: UnsafeRawBufferPointer(buffer))
  }

  /// Stops the process when an I/O request breaks the alignment contract: such a request is a bug
  /// in the caller, and O_DIRECT would only fail it later with a less helpful EINVAL.
  func checkAligned(
    _ operation: StaticString, offset: Int, count: Int, address: UnsafeRawPointer?
  ) {
    let alignment = alignmentBytes
    precondition(
      offset >= 0 && count >= 0 && offset <= capacityBytes - count,
      "\(operation): range \(offset)..<\(offset + count) lies outside the device's \(capacityBytes) bytes")
    precondition(
      offset % alignment == 0 && count % alignment == 0,
      "\(operation): offset \(offset) and length \(count) must be multiples of \(alignment) bytes")
    precondition(
      count == 0 || Int(bitPattern: address) % alignment == 0,
      "\(operation): buffer address \(String(describing: address)) is not aligned to \(alignment) bytes")
  }
}

/// `value` rounded up to a multiple of `alignment` (a power of two or any positive number).
@inline(__always)
func roundUp(_ value: Int, toMultipleOf alignment: Int) -> Int {
  (value + alignment - 1) / alignment * alignment
}
