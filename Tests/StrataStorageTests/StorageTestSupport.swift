// Helpers shared by the storage tests: a seeded generator, deterministic payloads, block ids.

import StrataCore
import StrataStorage
import StrataTestKit

/// A deterministic payload for block `seed`, `bytes` long (xorshift: incompressible).
func testPayload(_ seed: Int, bytes: Int) -> [UInt8] {
  var state = UInt64(truncatingIfNeeded: seed) &* 0x9E37_79B9_7F4A_7C15 | 1
  return (0..<bytes).map { _ in
    state ^= state << 13
    state ^= state >> 7
    state ^= state << 17
    return UInt8(truncatingIfNeeded: state)
  }
}

/// The id of test block `n` in `namespace`.
func testBlockID(_ n: Int, namespace: String = "test") -> BlockID {
  var bytes = [UInt8](repeating: 0, count: 32)
  bytes[0] = 0x5a
  withUnsafeBytes(of: UInt64(n).bigEndian) { for (index, byte) in $0.enumerated() { bytes[24 + index] = byte } }
  return BlockID(namespace: try! Namespace(namespace), key: BlockKey(bytes: bytes)!)
}
