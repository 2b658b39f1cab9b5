// The block checksum of the data path: CRC-32C, by the fastest method this CPU has (see
// Sources/CCRC32C/crc32c.c).

import CCRC32C

public enum CRC32C {
  /// CRC-32C of `bytes`, continuing from `crc` (0 to start).
  public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    strata_crc32c(crc, bytes.baseAddress, bytes.count)
  }

  public static func checksum(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { checksum($0, continuing: crc) }
  }

  /// Copies `source` into `destination` (as large at least; they must not overlap) and returns the
  /// CRC-32C of the bytes copied, reading the source once (the same-host path's GET).
  public static func copy(
    _ source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawBufferPointer, continuing crc: UInt32 = 0
  ) -> UInt32 {
    precondition(destination.count >= source.count, "CRC32C.copy: \(source.count) bytes into \(destination.count)")
    return strata_crc32c_copy(crc, destination.baseAddress, source.baseAddress, source.count)
  }

  /// The checksum of A followed by B, from A's checksum, B's (computed from 0) and B's length.
  public static func combine(_ first: UInt32, _ second: UInt32, secondLength: Int) -> UInt32 {
    strata_crc32c_combine(first, second, secondLength)
  }

  /// Below this many bytes in all, `copy(_:threads:)` stays on the calling thread: handing parts
  /// to other threads would cost more than it saves.
  public static let spreadFromBytes = 1 << 20
  /// The most `copy(_:threads:)` hands a thread at a time (large enough for streaming stores).
  public static let spreadPartBytes = 1 << 20

  /// Copies each source to its destination (as large at least) as `copy(_:to:)` does and returns
  /// each pair's checksum. From `spreadFromBytes` in all, the pairs are cut into parts of at most
  /// `spreadPartBytes`, copied by up to `threads` threads at once (`SharedParts.run`), and the
  /// parts' checksums combined: a batch moves at the memory's bandwidth rather
  /// than one core's. Every checksum is still of the bytes written.
  public static func copy(
    _ pairs: [(from: UnsafeRawBufferPointer, to: UnsafeMutableRawBufferPointer)], threads: Int
  ) -> [UInt32] {
    let total = pairs.reduce(0) { $0 + $1.from.count }
    guard threads > 1 && total >= spreadFromBytes else { return pairs.map { copy($0.from, to: $0.to) } }
    var parts: [(pair: Int, offset: Int, count: Int)] = []
    for (index, pair) in pairs.enumerated() {
      precondition(pair.to.count >= pair.from.count, "CRC32C.copy: \(pair.from.count) bytes into \(pair.to.count)")
      var offset = 0
      repeat {
        let count = min(pair.from.count - offset, spreadPartBytes)
        parts.append((index, offset, count))
        offset += count
      } while offset < pair.from.count
    }
    var sums = [UInt32](repeating: 0, count: parts.count)
    sums.withUnsafeMutableBufferPointer { sums in
      // Each index of `sums` is written by the one thread that took its part; `pairs` is only read.
      nonisolated(unsafe) let (sums, pairs) = (sums, pairs)
      let parts = parts
      SharedParts.run(parts.count, threads: threads) { index in
        let (pair, offset, count) = (pairs[parts[index].pair], parts[index].offset, parts[index].count)
        sums[index] = copy(
          UnsafeRawBufferPointer(rebasing: pair.from[offset..<(offset + count)]),
          to: UnsafeMutableRawBufferPointer(rebasing: pair.to[offset..<(offset + count)]))
        return true
      }
    }
    var checksums = [UInt32](repeating: 0, count: pairs.count)
    for (part, sum) in zip(parts, sums) {
      checksums[part.pair] = combine(checksums[part.pair], sum, secondLength: part.count)
    }
    return checksums
  }

  /// How a checksum is computed; every method gives the same value.
  public enum Method: Int, CaseIterable, Sendable {
    /// A table loop, one byte at a time: any CPU, and the tests' reference.
    case portable = 0
    /// The SSE4.2 `crc32` instruction on three interleaved streams.
    case interleaved = 1
    /// Carry-less multiplication (PCLMULQDQ) folding 128-bit lanes; faster where `crc32` has a low
    /// throughput (AMD Zen 1 and 2).
    case folded = 2
    /// The same folding on 512-bit registers, four 128-bit lanes each (AVX-512 VPCLMULQDQ: AMD Zen 4,
    /// Intel Ice Lake and later).
    case wide = 3

    /// Whether this CPU can run it.
    public var isAvailable: Bool { strata_crc32c_available_methods() & (1 << rawValue) != 0 }
  }

  /// The method `checksum` and `copy` use: the fastest this CPU has, measured once at load.
  public static var method: Method { Method(rawValue: Int(strata_crc32c_method())) ?? .portable }

  /// `checksum` by a given method (an unavailable one computes portably), for tests and benchmarks.
  public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0, using method: Method)
    -> UInt32
  {
    strata_crc32c_using(Int32(method.rawValue), crc, bytes.baseAddress, bytes.count)
  }

  /// `copy` by a given method (as `checksum(_:continuing:using:)`).
  public static func copy(
    _ source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawBufferPointer, continuing crc: UInt32 = 0,
    using method: Method
  ) -> UInt32 {
    precondition(destination.count >= source.count, "CRC32C.copy: \(source.count) bytes into \(destination.count)")
    return strata_crc32c_copy_using(
      Int32(method.rawValue), crc, destination.baseAddress, source.baseAddress, source.count)
  }

  /// The same value, one byte at a time: a reference for tests and benchmarks.
  public static func portableChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    checksum(bytes, continuing: crc, using: .portable)
  }
}
