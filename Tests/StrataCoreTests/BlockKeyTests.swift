import StrataCore
import Testing

@Suite struct BlockKeyTests {
  @Test func hexRoundTripAndByteOrder() throws {
    let bytes = (0..<32).map { UInt8($0 * 7 + 1) }
    let key = try #require(BlockKey(bytes: bytes))
    #expect(key.bytes == bytes)
    #expect(key.hex == Hex.encode(bytes))
    #expect(BlockKey(hex: key.hex) == key)
    #expect(BlockKey(hex: key.hex.uppercased()) == key)
    #expect(key.prefix64 == 0x0108_0f16_1d24_2b32)
  }

  @Test func rejectsWrongLengthsAndNonHex() {
    #expect(BlockKey(bytes: [UInt8](repeating: 1, count: 31)) == nil)
    #expect(BlockKey(bytes: [UInt8](repeating: 1, count: 33)) == nil)
    #expect(BlockKey(hex: String(repeating: "a", count: 63)) == nil)
    #expect(BlockKey(hex: String(repeating: "g", count: 64)) == nil)
    #expect(Hex.decode("abc") == nil)
    #expect(Hex.decode("") == [])
  }

  @Test func orderingFollowsBytes() throws {
    var low = [UInt8](repeating: 0, count: 32)
    var high = low
    low[31] = 0xff
    high[0] = 1
    let a = try #require(BlockKey(bytes: low))
    let b = try #require(BlockKey(bytes: high))
    #expect(a < b)
    #expect(!(b < a))
  }

  @Test func storeAndLoadThroughRawMemory() throws {
    let key = try #require(BlockKey(hex: String(repeating: "5a", count: 16) + String(repeating: "c3", count: 16)))
    var buffer = [UInt8](repeating: 0, count: 40)
    buffer.withUnsafeMutableBytes { key.store(to: $0.baseAddress! + 3) }
    let loaded = buffer.withUnsafeBytes { BlockKey(copying: $0.baseAddress! + 3) }
    #expect(loaded == key)
    #expect(Array(buffer[3..<35]) == key.bytes)
  }

  @Test func sha256MatchesKnownDigests() {
    #expect(SHA256.digest([]).hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(SHA256.digest(Array("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    let hasher = SHA256()
    hasher.update(Array("a".utf8))
    hasher.update(Array("bc".utf8))
    #expect(hasher.finalize() == SHA256.digest(Array("abc".utf8)))
    // The hasher is reusable after finalize.
    hasher.update(Array("abc".utf8))
    #expect(hasher.finalize() == SHA256.digest(Array("abc".utf8)))
  }
}
