// Block lengths for strata_lookup_leased's sizes_out (Mooncake's get_size, buffer sizing). A
// LOOKUP answer carries tiers, not lengths, so the lengths are found with 1-byte range GETs: a read
// of byte p-1 succeeds exactly when the block holds at least p bytes. The first round checks the
// last length found (p = L and p = L + 1: one round trip when blocks share a length, as KV blocks
// do); keys it does not settle are bisected, every key of a round in one batch, at most
// log2(frameBytesMax) rounds. The probes name no lease, so a lease taken by the lookup stays.

import StrataClient
import StrataCore

extension ClientBox {
  /// The length of each key's block (0 where `present` is false, or where the block went away
  /// before it was measured).
  func probeSizes(_ keys: [BlockKey], present: [Bool]) async throws(StrataError) -> [UInt64] {
    // Invariant per unsettled key: low <= length < high.
    var low = [UInt64](repeating: 0, count: keys.count)
    var high = [UInt64](repeating: 0, count: keys.count)
    var settled = [Bool](repeating: true, count: keys.count)
    let ceiling = client.configuration.frameBytesMax + 1
    for index in keys.indices where present[index] {
      settled[index] = false
      high[index] = ceiling
    }
    let guess = sizeGuess.load(ordering: .relaxed)
    var firstRound = guess > 0 && guess < ceiling
    while true {
      var probes: [(index: Int, at: UInt64)] = []
      for index in keys.indices where !settled[index] {
        if firstRound {
          probes += [(index, guess), (index, guess + 1)]
        } else {
          probes.append((index, low[index] + (high[index] - low[index]) / 2))
        }
      }
      firstRound = false
      if probes.isEmpty { break }
      let answers = try await probe(probes.map { (keys[$0.index], $0.at) })
      for (probe, answer) in zip(probes, answers) where !settled[probe.index] {
        switch answer {
        case .some(true): low[probe.index] = max(low[probe.index], probe.at)
        case .some(false): high[probe.index] = min(high[probe.index], probe.at)
        case .none:
          settled[probe.index] = true
          low[probe.index] = 0
        }
      }
      for index in keys.indices where !settled[index] && high[index] - low[index] <= 1 {
        settled[index] = true
        sizeGuess.store(low[index], ordering: .relaxed)
      }
    }
    return low
  }

  /// For each (key, p): whether the block holds at least p bytes (p >= 1), or nil when it is gone.
  private func probe(_ probes: [(BlockKey, UInt64)]) async throws(StrataError) -> [Bool?] {
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: probes.count, alignment: 8)
    defer { scratch.deallocate() }
    let region = client.register(scratch)
    var items: [StrataClient.GetItem] = []
    items.reserveCapacity(probes.count)
    for (index, (key, at)) in probes.enumerated() {
      // p is at least 1: a bisection step lies strictly above its lower bound, a guess above 0.
      items.append(
        StrataClient.GetItem(
          key: key, destination: try region.slice(offset: index, length: 1), blockOffset: at - 1, length: 1))
    }
    let results = try await client.get(items)
    guard results.count == probes.count else { throw mismatch("results", results.count, probes.count) }
    return results.map { result in
      switch result {
      case .missing: return nil
      case .outOfRange: return false
      case .ok, .corrupt, .destinationTooSmall: return true
      }
    }
  }
}
