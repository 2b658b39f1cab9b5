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

  /// How a checksum is computed; every method gives the same value.
  public enum Method: Int, CaseIterable, Sendable {
    /// A table loop, one byte at a time: any CPU, and the tests' reference.
    case portable = 0
    /// The SSE4.2 `crc32` instruction on three interleaved streams.
    case interleaved = 1
    /// Carry-less multiplication (PCLMULQDQ) folding 128-bit lanes; faster where `crc32` has a low
    /// throughput (AMD Zen 1 and 2).
    case folded = 2

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
