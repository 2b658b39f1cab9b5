// The block checksum of the data path: CRC-32C, with the CPU instruction where there is one.

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

  /// The same value, one byte at a time: a reference for tests and benchmarks.
  public static func portableChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    strata_crc32c_portable(crc, bytes.baseAddress, bytes.count)
  }

  /// Whether `checksum` runs on the CPU's CRC32 instruction.
  public static var usesHardware: Bool { strata_crc32c_hardware() != 0 }
}
