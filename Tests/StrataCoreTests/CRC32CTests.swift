import Foundation
import StrataCore
import StrataTestKit
import Synchronization
import Testing

@Suite struct CRC32CTests {
  @Test func knownAnswers() {
    // Check values from RFC 3720 (iSCSI) appendix B.4 and the common "123456789" check.
    #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
    #expect(CRC32C.checksum([UInt8](repeating: 0xff, count: 32)) == 0x62A8_AB43)
    #expect(CRC32C.checksum(Array(0..<32)) == 0x46DD_794E)
    #expect(CRC32C.checksum([]) == 0)
  }

  /// Every method this CPU runs gives the portable loop's value, for lengths on both sides of each
  /// method's steps: the folding's 128-byte minimum and 64-byte rounds, the wide folding's 512-byte
  /// minimum and 256-byte rounds, the interleaved streams' 4 KiB lanes (12 KiB rounds), and the 8-
  /// and 1-byte tails, at unaligned offsets.
  @Test(arguments: CRC32C.Method.allCases.filter { $0 != .portable && $0.isAvailable })
  func eachMethodMatchesPortableOnEveryShape(method: CRC32C.Method) {
    var random = SplitMix64(seed: 42)
    let buffer = (0..<(3 * 4096 * 3 + 100)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
    var lengths = Array(0...300) + Array(496...1_040)
    lengths += [4095, 4096, 4097, 12287, 12288, 12289, 3 * 4096 * 2 + 17, buffer.count - 7]
    buffer.withUnsafeBytes { raw in
      for length in lengths {
        for offset in [0, 1, 3, 7] where offset + length <= raw.count {
          let slice = UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + length)])
          #expect(
            CRC32C.checksum(slice, continuing: 0x1234, using: method)
              == CRC32C.portableChecksum(slice, continuing: 0x1234),
            "\(method), length \(length) offset \(offset)")
        }
      }
    }
  }

  /// Two checksums combine into the checksum of the bytes joined, at every split of lengths around
  /// the folding's steps, empty parts included.
  @Test func combiningEqualsTheChecksumOfTheJoinedBytes() {
    var random = SplitMix64(seed: 11)
    let bytes = (0..<70_000).map { _ in UInt8(truncatingIfNeeded: random.next()) }
    bytes.withUnsafeBytes { raw in
      for length in [0, 1, 63, 64, 129, 4096, 65_537, 70_000] {
        for split in Set([0, 1, length / 3, length / 2, max(0, length - 1), length]) where split <= length {
          let first = UnsafeRawBufferPointer(rebasing: raw[0..<split])
          let second = UnsafeRawBufferPointer(rebasing: raw[split..<length])
          let joined = UnsafeRawBufferPointer(rebasing: raw[0..<length])
          #expect(
            CRC32C.combine(CRC32C.checksum(first), CRC32C.checksum(second), secondLength: second.count)
              == CRC32C.checksum(joined),
            "length \(length) split at \(split)")
        }
      }
    }
  }

  /// A batch copied by several threads is byte-exact with one checksum per pair equal to the
  /// checksum of its source, whatever the thread count, for pairs on both sides of the part size
  /// and batches on both sides of the spreading threshold; bytes past each copy stay untouched.
  @Test func aBatchCopiedByManyThreadsIsTheSameAsByOne() {
    var random = SplitMix64(seed: 23)
    let part = CRC32C.spreadPartBytes
    let batches: [[Int]] = [
      [0, 5], [CRC32C.spreadFromBytes - 1], [part - 1, 1, part, part + 1], [3 * part + 7],
      Array(repeating: 300 << 10, count: 5),
    ]
    let poolBytes = 3 * part + 64
    let pool = UnsafeMutableRawBufferPointer.allocate(byteCount: poolBytes, alignment: 16)
    defer { pool.deallocate() }
    for word in 0..<(poolBytes / 8) { pool.storeBytes(of: random.next(), toByteOffset: word * 8, as: UInt64.self) }
    let landing = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 * part + 1024, alignment: 16)
    defer { landing.deallocate() }
    for lengths in batches {
      // Sources at odd offsets into the pool, destinations one after another with 16 bytes between.
      var pairs: [(from: UnsafeRawBufferPointer, to: UnsafeMutableRawBufferPointer)] = []
      var (sourceAt, destinationAt) = (0, 3)
      for length in lengths {
        sourceAt = (sourceAt + 7) % (poolBytes - length)
        pairs.append(
          (
            UnsafeRawBufferPointer(rebasing: pool[sourceAt..<(sourceAt + length)]),
            UnsafeMutableRawBufferPointer(rebasing: landing[destinationAt..<(destinationAt + length)])
          ))
        destinationAt += length + 16
      }
      for threads in [1, 2, 3, 8] {
        landing.initializeMemory(as: UInt8.self, repeating: 0xEE)
        let checksums = CRC32C.copy(pairs, threads: threads)
        for (index, pair) in pairs.enumerated() {
          let copied =
            pair.from.count == 0 || memcmp(pair.from.baseAddress!, pair.to.baseAddress!, pair.from.count) == 0
          #expect(copied, "\(lengths)[\(index)] by \(threads) threads")
          let after = pair.to.baseAddress! - landing.baseAddress! + pair.to.count
          #expect(landing[after..<(after + 16)].allSatisfy { $0 == 0xEE })
          #expect(checksums[index] == CRC32C.checksum(pair.from), "\(lengths)[\(index)] by \(threads) threads")
        }
      }
    }
  }

  /// The method chosen at load is one this CPU runs, and the fastest of them is never the table.
  @Test func theChosenMethodRunsHere() {
    #expect(CRC32C.method.isAvailable)
    #expect(CRC32C.Method.portable.isAvailable)
    if CRC32C.Method.interleaved.isAvailable { #expect(CRC32C.method != .portable) }
  }

  /// The copy that checksums as it goes (the same-host path): byte-exact and the same checksum, for
  /// lengths on both sides of its streaming threshold (256 KiB), of its three 4 KiB lanes (12 KiB),
  /// of the wide folding's 512-byte minimum and 256-byte rounds and of its 16-byte words, at
  /// destination and source offsets that are not 16- or 64-byte aligned; nothing past the end is
  /// written.
  @Test(arguments: CRC32C.Method.allCases.filter(\.isAvailable))
  func copyingChecksumIsACopyAndAChecksum(method: CRC32C.Method) {
    var random = SplitMix64(seed: 7)
    let source = (0..<((1 << 20) + 70_000)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
    let lengths = [
      0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 191, 192, 200, 511, 512, 513, 575, 767, 768, 769, 1_100, 12_287,
      12_288, 12_289, 16 << 10, (256 << 10) - 1,
      256 << 10, (1 << 20) + 16_411,
    ]
    source.withUnsafeBytes { raw in
      for length in lengths {
        for (sourceOffset, destinationOffset) in [(0, 0), (3, 0), (0, 5), (7, 9), (1, 33), (0, 63)] {
          let input = UnsafeRawBufferPointer(rebasing: raw[sourceOffset..<(sourceOffset + length)])
          var output = [UInt8](repeating: 0xEE, count: length + destinationOffset + 32)
          let crc = output.withUnsafeMutableBytes { out in
            CRC32C.copy(
              input, to: UnsafeMutableRawBufferPointer(rebasing: out[destinationOffset..<(destinationOffset + length)]),
              continuing: 0x1234, using: method)
          }
          #expect(crc == CRC32C.portableChecksum(input, continuing: 0x1234), "\(method), length \(length)")
          let copied = output[destinationOffset..<(destinationOffset + length)].elementsEqual(input)
          #expect(copied, "length \(length), offsets \(sourceOffset) and \(destinationOffset)")
          #expect(output[..<destinationOffset].allSatisfy { $0 == 0xEE } && output.suffix(32).allSatisfy { $0 == 0xEE })
        }
      }
    }
  }

  /// The copy's checksum is of the bytes it wrote, even while another thread rewrites the source
  /// (a same-host client changing its region during a PUT): a checksum of the source and a copy
  /// made from a second read of it would disagree here.
  @Test func aCopysChecksumIsOfTheBytesWrittenWhileTheSourceChanges() {
    let bytes = 4 << 20
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
    let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
    defer {
      source.deallocate()
      destination.deallocate()
    }
    source.initializeMemory(as: UInt8.self, repeating: 0)
    let stop = Atomic<Bool>(false)
    let writerDone = DispatchSemaphore(value: 0)
    let base = UInt(bitPattern: source.baseAddress!)
    Thread.detachNewThread {
      let scribbled = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: base), count: bytes)
      var value: UInt8 = 0
      while !stop.load(ordering: .relaxed) {
        value &+= 1
        for offset in stride(from: 0, to: bytes, by: 4096) { scribbled[offset] = value }
      }
      writerDone.signal()
    }
    for _ in 0..<40 {
      let checksum = CRC32C.copy(UnsafeRawBufferPointer(source), to: destination)
      #expect(checksum == CRC32C.checksum(UnsafeRawBufferPointer(destination)))
    }
    stop.store(true, ordering: .relaxed)
    writerDone.wait()
  }

  @Test func continuationEqualsOneShot() {
    let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    let whole = CRC32C.checksum(data)
    let first = CRC32C.checksum(Array(data[..<40_000]))
    #expect(CRC32C.checksum(Array(data[40_000...]), continuing: first) == whole)
  }

  @Test func detectsEverySingleBitFlip() {
    var data = (0..<512).map { UInt8(truncatingIfNeeded: $0 &* 13) }
    let good = CRC32C.checksum(data)
    for bit in stride(from: 0, to: data.count * 8, by: 37) {
      data[bit / 8] ^= 1 << (bit % 8)
      #expect(CRC32C.checksum(data) != good)
      data[bit / 8] ^= 1 << (bit % 8)
    }
  }
}
