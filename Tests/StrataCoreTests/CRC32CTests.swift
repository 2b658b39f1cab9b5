import StrataCore
import StrataTestKit
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

  @Test func hardwarePathMatchesPortableOnEveryShape() {
    var random = SplitMix64(seed: 42)
    let buffer = (0..<(3 * 4096 * 3 + 100)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
    var lengths = Array(0...80)
    lengths += [4095, 4096, 4097, 12287, 12288, 12289, 3 * 4096 * 2 + 17, buffer.count - 7]
    buffer.withUnsafeBytes { raw in
      for length in lengths {
        for offset in [0, 1, 3, 7] where offset + length <= raw.count {
          let slice = UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + length)])
          #expect(
            CRC32C.checksum(slice, continuing: 0x1234) == CRC32C.portableChecksum(slice, continuing: 0x1234),
            "length \(length) offset \(offset)")
        }
      }
    }
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
