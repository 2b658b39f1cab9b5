// LZ4 on KV-cache-like data: does `nvme.compression: lz4` pay for itself on real blocks?
//
// Every dataset is generated from a fixed seed, so each run compresses the same bytes. KV values
// are token-major rows of 1,024 channels (8 heads × 128 dims); each value is a standard normal
// draw times its channel's scale: 0.25–1.5 for most channels, and 10–100× that for one channel in
// 32 (the outlier channels real K/V activations have). They are stored as IEEE half (fp16),
// bfloat16 and fp8 e4m3, each converted here with round-to-nearest-even. Controls: random bytes
// (incompressible) and zeros; partially filled blocks are fp16 KV whose last 25% or 50% is zero.
//
// A block is stored compressed only when LZ4 saves at least 1/16 of it: the benchmark compresses
// into `LZ4Codec.keptBytesMax` bytes exactly as the NVMe tier's write path does, and counts a
// block that does not fit as stored raw. Rates are in bytes of the original block per second.

import StrataStorage

#if canImport(Glibc)
  import Glibc
#endif

/// SplitMix64: small, fast, and deterministic for a given seed.
private struct SeededGenerator {
  var state: UInt64
  private var spareNormal: Double? = nil

  init(seed: UInt64) { state = seed }

  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var mixed = state
    mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
    mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
    return mixed ^ (mixed >> 31)
  }

  /// Uniform in [0, 1).
  mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

  /// Uniform in [low, high).
  mutating func uniform(_ low: Double, _ high: Double) -> Double { low + (high - low) * unit() }

  /// Standard normal (Box–Muller; the second value of each pair is kept for the next call).
  mutating func normal() -> Double {
    if let spare = spareNormal {
      spareNormal = nil
      return spare
    }
    let radius = (-2 * log(1 - unit())).squareRoot()  // 1 - unit() is in (0, 1]: log is finite
    let angle = 2 * Double.pi * unit()
    spareNormal = radius * sin(angle)
    return radius * cos(angle)
  }
}

// MARK: Number formats (round to nearest, ties to even)

/// IEEE 754 binary16 bits of `value`: overflow goes to infinity, tiny values to subnormals or zero.
func halfBits(_ value: Float) -> UInt16 {
  let bits = value.bitPattern
  let sign = UInt16(truncatingIfNeeded: bits >> 16) & 0x8000
  let exponent = Int((bits >> 23) & 0xFF)
  let mantissa = bits & 0x7F_FFFF
  if exponent == 0xFF { return sign | 0x7C00 | (mantissa != 0 ? 0x0200 : 0) }  // infinity, quiet NaN
  let halfExponent = exponent - 127 + 15
  if halfExponent >= 0x1F { return sign | 0x7C00 }
  if halfExponent <= 0 {
    // Subnormal half: the unit is 2^-24. Below 2^-25 everything rounds to zero.
    if halfExponent < -10 { return sign }
    let significand = mantissa | 0x80_0000
    let shift = UInt32(14 - halfExponent)  // 14...24
    var half = significand >> shift
    let remainder = significand & ((1 << shift) - 1)
    let halfway = UInt32(1) << (shift - 1)
    if remainder > halfway || (remainder == halfway && half & 1 == 1) { half += 1 }
    return sign | UInt16(half)  // a carry to 0x400 is the smallest normal, as it should be
  }
  var half = UInt32(halfExponent) << 10 | mantissa >> 13
  let remainder = mantissa & 0x1FFF
  if remainder > 0x1000 || (remainder == 0x1000 && half & 1 == 1) { half += 1 }  // may carry to infinity
  return sign | UInt16(half)
}

/// bfloat16 bits of `value`: the top 16 bits of the binary32, rounded.
func bfloat16Bits(_ value: Float) -> UInt16 {
  let bits = value.bitPattern
  if value.isNaN { return UInt16(bits >> 16) | 0x0040 }
  return UInt16((bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
}

/// OCP fp8 E4M3 (bias 7, no infinities, 0x7F is NaN) bits of `value`, saturating at ±448 as KV
/// caches do (with the per-tensor scale left at 1).
func e4m3Bits(_ value: Float) -> UInt8 {
  if value.isNaN { return 0x7F }
  let sign: UInt8 = value.sign == .minus ? 0x80 : 0
  let magnitude = value.magnitude
  if magnitude >= 448 { return sign | 0x7E }
  if magnitude < 0x1p-6 {
    // Subnormal: the unit is 2^-9; rounding up to 8 units gives 0x08, the smallest normal.
    return sign | UInt8((magnitude * 0x1p9).rounded(.toNearestOrEven))
  }
  let exponent = Int(magnitude.exponent)
  // Significand scaled to 8...16: 16 carries into the exponent field, which is the right code.
  let scaled = Int((magnitude * Float(sign: .plus, exponent: 3 - exponent, significand: 1)).rounded(.toNearestOrEven))
  return sign | UInt8(min((exponent + 7) * 8 + scaled - 8, 0x7E))
}

// MARK: Datasets

private enum Encoding { case fp16, bf16, fp8 }

/// KV activations, token-major rows of `channels` values, encoded in `encoding`.
private func kvBlock(bytes: Int, encoding: Encoding, seed: UInt64) -> [UInt8] {
  let channels = 1024
  var generator = SeededGenerator(seed: seed)
  let scales: [Double] = (0..<channels).map { _ in
    let scale = generator.uniform(0.25, 1.5)
    return generator.next() % 32 == 0 ? scale * generator.uniform(10, 100) : scale
  }
  var block = [UInt8](repeating: 0, count: bytes)
  switch encoding {
  case .fp16, .bf16:
    for index in 0..<(bytes / 2) {
      let value = Float(generator.normal() * scales[index % channels])
      let bits = encoding == .fp16 ? halfBits(value) : bfloat16Bits(value)
      block[2 * index] = UInt8(truncatingIfNeeded: bits)  // little-endian, as on the GPU
      block[2 * index + 1] = UInt8(truncatingIfNeeded: bits >> 8)
    }
  case .fp8:
    for index in 0..<bytes { block[index] = e4m3Bits(Float(generator.normal() * scales[index % channels])) }
  }
  return block
}

private struct Dataset {
  let name: String
  let bytes: [UInt8]
}

private func lz4Datasets() -> [Dataset] {
  let block = 2 << 20
  let fp16 = kvBlock(bytes: block, encoding: .fp16, seed: 1)
  func zeroingTail(_ bytes: [UInt8], fraction: Double) -> [UInt8] {
    var padded = bytes
    let start = bytes.count - Int(Double(bytes.count) * fraction)
    for index in start..<bytes.count { padded[index] = 0 }
    return padded
  }
  var random = SeededGenerator(seed: 4)
  var noise = [UInt8](repeating: 0, count: block)
  for index in 0..<block { noise[index] = UInt8(truncatingIfNeeded: random.next() >> 56) }
  return [
    Dataset(name: "fp16 KV", bytes: fp16),
    Dataset(name: "fp16 KV", bytes: kvBlock(bytes: 256 << 10, encoding: .fp16, seed: 5)),
    Dataset(name: "bf16 KV", bytes: kvBlock(bytes: block, encoding: .bf16, seed: 2)),
    Dataset(name: "fp8 e4m3 KV", bytes: kvBlock(bytes: block, encoding: .fp8, seed: 3)),
    Dataset(name: "fp16 KV, 25% zero tail", bytes: zeroingTail(fp16, fraction: 0.25)),
    Dataset(name: "fp16 KV, 50% zero tail", bytes: zeroingTail(fp16, fraction: 0.5)),
    Dataset(name: "random (control)", bytes: noise),
    Dataset(name: "zeros (control)", bytes: [UInt8](repeating: 0, count: block)),
  ]
}

// MARK: Benchmark

private struct LZ4Result {
  let name: String
  let size: Int
  let stored: Int  // what the NVMe tier would store: compressed bytes, or the raw block
  let lz4Bytes: Int  // LZ4's output with unlimited room, for comparison
  let copy: Double
  let compress: Double
  let decompress: Double

  var storedRatio: Double { Double(stored) / Double(size) }
  var keptCompressed: Bool { stored < size }
}

func runLZ4Benchmark(seconds: Double, repetitions: Int) {
  print("")
  print("LZ4 (liblz4 block API, as the NVMe tier calls it) on KV-cache-like blocks, against memcpy")
  let datasets = lz4Datasets()
  var results: [LZ4Result] = []
  var sink = 0
  for dataset in datasets {
    let size = dataset.bytes.count
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
    let target = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
    let keptBytes = LZ4Codec.keptBytesMax(payloadBytes: size)
    let kept = UnsafeMutableRawBufferPointer.allocate(byteCount: keptBytes, alignment: 4096)
    let boundBytes = size + size / 255 + 16  // LZ4_compressBound
    let unlimited = UnsafeMutableRawBufferPointer.allocate(byteCount: boundBytes, alignment: 4096)
    defer {
      source.deallocate()
      target.deallocate()
      kept.deallocate()
      unlimited.deallocate()
    }
    dataset.bytes.withUnsafeBytes { source.copyMemory(from: $0) }
    let input = UnsafeRawBufferPointer(source)

    let stored = LZ4Codec.compress(input, into: kept) ?? size
    guard let lz4Bytes = LZ4Codec.compress(input, into: unlimited) else {
      print("\(dataset.name): LZ4 failed with a compressBound-sized destination")
      continue
    }
    let compressed = UnsafeRawBufferPointer(rebasing: unlimited[0..<lz4Bytes])
    guard LZ4Codec.decompress(compressed, into: target) == size,
      memcmp(source.baseAddress!, target.baseAddress!, size) == 0
    else {
      print("\(dataset.name): LZ4 round trip did not reproduce the block")
      continue
    }

    var copies: [Double] = []
    var compressions: [Double] = []
    var decompressions: [Double] = []
    for _ in 0..<repetitions {
      copies.append(
        throughput(bytes: size, seconds: seconds) { memcpy(target.baseAddress!, source.baseAddress!, size) })
      // The write path: a destination of keptBytesMax, so LZ4 gives up on blocks that save too little.
      compressions.append(
        throughput(bytes: size, seconds: seconds) { sink &+= LZ4Codec.compress(input, into: kept) ?? 0 })
      // Decoding the LZ4 stream back to the full block (the read path does this only for kept blocks).
      decompressions.append(
        throughput(bytes: size, seconds: seconds) { sink &+= LZ4Codec.decompress(compressed, into: target) ?? 0 })
    }
    results.append(
      LZ4Result(
        name: dataset.name, size: size, stored: stored, lz4Bytes: lz4Bytes, copy: median(copies),
        compress: median(compressions), decompress: median(decompressions)))
  }

  print(
    "\(pad("dataset", 24)) \(pad("block", 7)) \(pad("stored", 7)) \(pad("lz4 out", 8)) \(pad("memcpy GB/s", 12)) "
      + "\(pad("compress GB/s", 14)) \(pad("ratio", 7)) \(pad("decompress GB/s", 16)) ratio")
  for result in results {
    let block = result.size >= 1 << 20 ? "\(result.size >> 20)MiB" : "\(result.size >> 10)KiB"
    let stored = result.keptCompressed ? formatted(result.storedRatio, 3) : "raw"
    print(
      "\(pad(result.name, 24)) \(pad(block, 7)) \(pad(stored, 7)) "
        + "\(pad(formatted(Double(result.lz4Bytes) / Double(result.size), 3), 8)) \(pad(gb(result.copy), 12)) "
        + "\(pad(gb(result.compress), 14)) \(pad(formatted(result.compress / result.copy, 2) + "x", 7)) "
        + "\(pad(gb(result.decompress), 16)) \(formatted(result.decompress / result.copy, 2))x"
        + (sink == -1 ? " " : ""))
  }
  print("stored: stored/original under the tier's 1/16 rule (raw: LZ4 saved under 1/16, the block is kept as is);")
  print("lz4 out: LZ4's own output/original; GB/s of original bytes; ratio: against memcpy in the same run")

  // The conclusion the numbers support: does dense KV compress, what does trying cost, and what
  // do padded blocks save?
  let dense = results.filter { $0.name.hasSuffix("KV") }
  let padded = results.filter { $0.name.contains("zero tail") }
  guard !dense.isEmpty, !padded.isEmpty else { return }
  let denseSaving = dense.map { 1 - $0.storedRatio }.max()!
  let denseLZ4 = dense.map { Double($0.lz4Bytes) / Double($0.size) }.min()!
  let denseTry = dense.min { $0.compress < $1.compress }!
  let paddedText = padded.map { "\($0.name.dropFirst(9)) stores \(formatted($0.storedRatio, 3))" }
    .joined(separator: ", ")
  let paddedCompress = padded.map(\.compress).min()!
  let paddedDecompress = padded.map(\.decompress).min()!
  if denseSaving == 0 {
    print(
      "conclusion: dense fp16/bf16/fp8 KV does not compress (LZ4's output is at least "
        + "\(formatted(100 * denseLZ4, 1))% of the block, so the tier stores every such block raw); trying is cheap "
        + "(LZ4 gives up at >= \(gb(denseTry.compress)) GB/s, \(formatted(denseTry.compress / denseTry.copy, 2))x memcpy); "
        + "padded blocks compress by their padding (\(paddedText)) at >= \(gb(paddedCompress)) GB/s compress, "
        + ">= \(gb(paddedDecompress)) GB/s decompress per core. "
        + "Keep nvme.compression: none as the default; enable lz4 where blocks are padded.")
  } else {
    print(
      "conclusion: dense KV saves up to \(formatted(100 * denseSaving, 1))% (compress >= \(gb(denseTry.compress)) GB/s "
        + "per core); padded blocks: \(paddedText). Weigh the saving against the cost per core before changing the default."
    )
  }
}
