// LZ4 block compression for NVMe records, straight between caller buffers (liblz4's block API):
// no framing, because the record header already carries both lengths and both checksums.

import CLZ4

public enum LZ4Codec {
  /// The largest input liblz4's block API accepts.
  public static let inputBytesMax = Int(LZ4_MAX_INPUT_SIZE)

  /// Compressed output must be at most this long to be kept: a saving under 1/16 (6.25%) is not
  /// worth a decompression on every read, so such blocks are stored raw. At least one byte must be
  /// saved, so a compressed record is always shorter than its payload (the header decoder relies on it).
  public static func keptBytesMax(payloadBytes: Int) -> Int {
    payloadBytes - max(1, payloadBytes / 16)
  }

  /// Compresses `source` into `destination`, or returns nil when the result would not fit in
  /// `destination`. Passing a destination of `keptBytesMax` bytes makes liblz4 give up as soon as
  /// the saving is too small, instead of compressing the whole block to throw it away.
  public static func compress(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) -> Int?
  {
    guard source.count > 0, source.count <= inputBytesMax, destination.count > 0,
      let input = source.baseAddress, let output = destination.baseAddress
    else { return nil }
    let written = LZ4_compress_default(
      input.assumingMemoryBound(to: CChar.self), output.assumingMemoryBound(to: CChar.self),
      Int32(source.count), Int32(min(destination.count, Int(Int32.max))))
    return written > 0 ? Int(written) : nil
  }

  /// Decompresses `source` into `destination`; nil when `source` is malformed or its output does
  /// not fit. liblz4's safe decoder never reads or writes outside the two buffers, even for hostile input.
  public static func decompress(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer)
    -> Int?
  {
    guard source.count > 0, source.count <= Int(Int32.max), let input = source.baseAddress,
      let output = destination.baseAddress
    else { return nil }
    let produced = LZ4_decompress_safe(
      input.assumingMemoryBound(to: CChar.self), output.assumingMemoryBound(to: CChar.self),
      Int32(source.count), Int32(min(destination.count, Int(Int32.max))))
    return produced >= 0 ? Int(produced) : nil
  }
}
