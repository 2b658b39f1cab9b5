// Helpers shared by the placement tests: seeded keys and members.

import StrataCore
import StrataPlacement
import StrataTestKit

/// A uniformly random key from `generator`.
func randomKey(_ generator: inout SplitMix64) -> BlockKey {
  var words = (generator.next(), generator.next(), generator.next(), generator.next())
  return withUnsafeBytes(of: &words) { BlockKey(copying: $0.baseAddress!) }
}

/// `count` members named node-000, node-001, ... on distinct loopback ports.
func makeMembers(_ count: Int, zones: [String] = [""], capacityBytes: UInt64 = 0) -> [Member] {
  (0..<count).map { index in
    let name = "node-" + String(repeating: "0", count: max(0, 3 - String(index).count)) + String(index)
    return Member(
      id: name, address: "127.0.0.1:\(7400 + index)", capacityBytes: capacityBytes, zone: zones[index % zones.count])
  }
}

/// Max over mean of `shares` restricted to `ids`.
func maxOverMean(_ shares: [String: Double], ids: [String]) -> Double {
  let values = ids.map { shares[$0] ?? 0 }
  let mean = values.reduce(0, +) / Double(values.count)
  return (values.max() ?? 0) / mean
}
