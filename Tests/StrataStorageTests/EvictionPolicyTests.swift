// Eviction policies: exact victim orders on scripted traces, pinning, a seeded model check of both
// policies, and S3-FIFO against LRU on a scan-polluted Zipf trace.

import StrataStorage
import StrataTestKit
import Testing

/// A tier of fixed capacity around a policy: a miss inserts, then victims go until the bytes fit.
private struct SimulatedCache<Policy: EvictionPolicy> {
  var policy: Policy
  let capacityBytes: Int
  var hits = 0
  var misses = 0
  var victims: [Policy.Key] = []

  init(_ policy: Policy, capacityBytes: Int) {
    self.policy = policy
    self.capacityBytes = capacityBytes
  }

  /// Returns whether the request hit.
  @discardableResult
  mutating func request(_ key: Policy.Key, bytes: Int = 1, present: inout Set<Policy.Key>) -> Bool {
    if present.contains(key) {
      policy.access(key)
      hits += 1
      return true
    }
    misses += 1
    policy.insert(key, bytes: bytes)
    present.insert(key)
    while policy.bytes > capacityBytes, let victim = policy.evict(where: { _ in true }) {
      present.remove(victim)
      victims.append(victim)
    }
    return false
  }

  var hitRatio: Double { Double(hits) / Double(hits + misses) }
}

/// Filterable as one: `--filter EvictionPolicyTests`.
@Suite struct EvictionPolicyTests {}

extension EvictionPolicyTests {
  @Suite struct LRU {
    @Test func evictsInLeastRecentlyUsedOrder() {
      var lru = LRUPolicy<String>()
      for (key, bytes) in [("a", 10), ("b", 20), ("c", 30), ("d", 40)] { lru.insert(key, bytes: bytes) }
      lru.access("b")
      lru.access("a")
      lru.access("zzz")  // unknown: ignored
      #expect(lru.count == 4)
      #expect(lru.bytes == 100)
      var victims: [String] = []
      while let victim = lru.evict(where: { _ in true }) { victims.append(victim) }
      #expect(victims == ["c", "d", "b", "a"])
      #expect(lru.count == 0)
      #expect(lru.bytes == 0)
    }

    @Test func removeDropsTheEntryAndIgnoresUnknownKeys() {
      var lru = LRUPolicy<Int>()
      for key in 1...4 { lru.insert(key, bytes: key * 100) }
      lru.remove(2)
      lru.remove(99)
      lru.remove(2)
      #expect(lru.count == 3)
      #expect(lru.bytes == 800)
      #expect(lru.evict(where: { _ in true }) == 1)
      #expect(lru.evict(where: { _ in true }) == 3)
      // A removed slot is reused by the next insert without disturbing order.
      lru.insert(5, bytes: 1)
      #expect(lru.evict(where: { _ in true }) == 4)
      #expect(lru.evict(where: { _ in true }) == 5)
      #expect(lru.evict(where: { _ in true }) == nil)
    }

    @Test func pinnedEntriesAreSkippedAndAllPinnedGivesNil() {
      var lru = LRUPolicy<Int>()
      for key in 1...5 { lru.insert(key, bytes: 1) }
      let pinned: Set = [1, 2]
      #expect(lru.evict(where: { !pinned.contains($0) }) == 3)
      #expect(lru.evict(where: { _ in false }) == nil)
      #expect(lru.count == 4)
      // Skipping did not count as use: once unpinned, 1 is still the oldest.
      #expect(lru.evict(where: { _ in true }) == 1)
    }

    @Test func reuseIsAReadAfterInsert() {
      var lru = LRUPolicy<Int>()
      lru.insert(1, bytes: 1)
      lru.insert(2, bytes: 1)
      lru.access(2)
      #expect(!lru.wasReused(1))
      #expect(lru.wasReused(2))
      #expect(!lru.wasReused(3))
    }
  }
}

extension EvictionPolicyTests {
  @Suite struct S3FIFO {
    /// Two hot keys, then a scan of ten keys read once, through a 4-entry cache (S holds 1).
    /// S3-FIFO promotes the hot keys to M and evicts only scan keys; LRU flushes the hot keys first.
    @Test func oneHitWondersLeaveBeforeReusedKeys() {
      let trace = ["h1", "h2", "h1", "h1", "h2", "h2"] + (1...10).map { "s\($0)" }

      var s3 = SimulatedCache(S3FIFOPolicy<String>(capacityBytes: 4, smallFraction: 0.25), capacityBytes: 4)
      var s3Present = Set<String>()
      for key in trace { s3.request(key, present: &s3Present) }
      #expect(s3.victims == (1...8).map { "s\($0)" })
      #expect(s3.policy.queue(of: "h1") == .main)
      #expect(s3.policy.queue(of: "h2") == .main)
      #expect(s3.policy.queue(of: "s10") == .small)

      var lru = SimulatedCache(LRUPolicy<String>(), capacityBytes: 4)
      var lruPresent = Set<String>()
      for key in trace { lru.request(key, present: &lruPresent) }
      #expect(lru.victims == ["h1", "h2"] + (1...6).map { "s\($0)" })
    }

    @Test func aKeyReadOnceInSmallIsEvictedAndAGhostHitGoesToMain() {
      var s3 = S3FIFOPolicy<String>(capacityBytes: 4, smallFraction: 0.25)
      for key in ["a", "b", "c", "d"] { s3.insert(key, bytes: 1) }
      s3.access("a")
      s3.access("a")
      s3.access("b")
      // a was read twice: promoted; b only once: evicted, as the paper's "freq > 1" rule says.
      #expect(s3.evict(where: { _ in true }) == "b")
      #expect(s3.queue(of: "a") == .main)
      #expect(s3.isGhost("b"))
      #expect(s3.ghostCount == 1)
      #expect(s3.smallBytes == 2)
      #expect(s3.mainBytes == 1)

      s3.insert("b", bytes: 1)
      #expect(s3.queue(of: "b") == .main)
      #expect(!s3.isGhost("b"))
      #expect(s3.ghostCount == 0)
      #expect(s3.mainBytes == 2)
      #expect(!s3.wasReused("b"))  // a fresh insert, even from the ghost
    }

    @Test func countersCapAtThreeAndEachPassOfMainLowersThem() {
      var s3 = S3FIFOPolicy<String>(capacityBytes: 10)
      s3.insert("x", bytes: 1)
      for _ in 0..<5 { s3.access("x") }
      #expect(s3.frequency(of: "x") == 3)
      s3.insert("y", bytes: 1)
      #expect(s3.evict(where: { _ in true }) == "y")
      #expect(s3.queue(of: "x") == .main)
      #expect(s3.frequency(of: "x") == 3)
      // Pinned in M: the bounded scan drains the counter, then gives up instead of spinning.
      #expect(s3.evict(where: { _ in false }) == nil)
      #expect(s3.frequency(of: "x") == 0)
      #expect(s3.count == 1)
      #expect(s3.evict(where: { _ in true }) == "x")
      #expect(s3.count == 0)
      #expect(s3.bytes == 0)
    }

    @Test func pinnedEntriesInSmallAreSkippedAndAllPinnedGivesNil() {
      var s3 = S3FIFOPolicy<Int>(capacityBytes: 100)
      for key in 1...5 { s3.insert(key, bytes: 10) }
      #expect(s3.evict(where: { $0 > 2 }) == 3)
      #expect(s3.evict(where: { _ in false }) == nil)
      #expect(s3.count == 4)
      #expect(s3.bytes == 40)
      // 1 and 2 were moved behind 4 and 5 while pinned.
      #expect(s3.evict(where: { _ in true }) == 4)
    }

    @Test func removeWorksInBothQueues() {
      var s3 = S3FIFOPolicy<Int>(capacityBytes: 10)
      s3.insert(1, bytes: 3)
      s3.access(1)
      s3.access(1)
      s3.insert(2, bytes: 4)
      // Everything pinned: 1 is still promoted (moving is not evicting), 2 stays in S.
      #expect(s3.evict(where: { _ in false }) == nil)
      #expect(s3.queue(of: 1) == .main)
      s3.remove(1)
      s3.remove(2)
      s3.remove(42)
      #expect(s3.count == 0)
      #expect(s3.bytes == 0)
      #expect(s3.smallBytes == 0 && s3.mainBytes == 0)
    }
  }
}

extension EvictionPolicyTests {
  @Suite struct Model {
    /// Random inserts, reads, removes and evictions (with random pins) on 24 keys, checked step by
    /// step against a set and a dictionary of sizes.
    private func checkAgainstModel<Policy: EvictionPolicy>(_ policy: inout Policy, seed: UInt64) throws
    where Policy.Key == Int {
      var random = SplitMix64(seed: seed)
      var sizes: [Int: Int] = [:]
      var reused = Set<Int>()
      var evictions = 0
      var nilEvictions = 0
      for step in 0..<2_000 {
        let key = Int.random(in: 0..<24, using: &random)
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<35:
          if sizes[key] == nil {
            let bytes = Int.random(in: 1...100, using: &random)
            policy.insert(key, bytes: bytes)
            sizes[key] = bytes
            reused.remove(key)
          } else {
            policy.access(key)
            reused.insert(key)
          }
        case 35..<55:
          policy.access(key)
          if sizes[key] != nil { reused.insert(key) }
        case 55..<65:
          policy.remove(key)
          sizes[key] = nil
        default:
          let pinChance = [0, 50, 90, 100][Int.random(in: 0..<4, using: &random)]
          let pinned = Set(sizes.keys.filter { _ in Int.random(in: 0..<100, using: &random) < pinChance })
          let victim = policy.evict(where: { !pinned.contains($0) })
          if let victim {
            try #require(sizes[victim] != nil, "step \(step): evicted \(victim), which is not present")
            try #require(!pinned.contains(victim), "step \(step): evicted pinned \(victim)")
            sizes[victim] = nil
            evictions += 1
          } else {
            try #require(sizes.keys.allSatisfy(pinned.contains), "step \(step): nil with an evictable entry")
            nilEvictions += 1
          }
        }
        try #require(policy.count == sizes.count, "step \(step): count")
        try #require(policy.bytes == sizes.values.reduce(0, +), "step \(step): bytes")
        for probe in 0..<24 {
          try #require(
            policy.wasReused(probe) == (sizes[probe] != nil && reused.contains(probe)),
            "step \(step): reuse of \(probe)")
        }
      }
      // The trace must have exercised both outcomes, or the checks above proved little.
      #expect(evictions > 100)
      #expect(nilEvictions > 10)
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func lruMatchesTheModel(seed: UInt64) throws {
      var lru = LRUPolicy<Int>()
      try checkAgainstModel(&lru, seed: seed)
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func s3fifoMatchesTheModel(seed: UInt64) throws {
      var s3 = S3FIFOPolicy<Int>(capacityBytes: 600)
      try checkAgainstModel(&s3, seed: seed)
    }

    /// 100k requests: Zipf(1.0) over 10,000 keys, with five scans of 5,000 never-seen keys mixed in;
    /// the cache holds 1,000 entries (10% of the Zipf keys).
    @Test func s3fifoBeatsLRUOnAScanPollutedZipfTrace() {
      let keyCount = 10_000
      var cumulativeWeights: [Double] = []
      cumulativeWeights.reserveCapacity(keyCount)
      var total = 0.0
      for rank in 1...keyCount {
        total += 1.0 / Double(rank)
        cumulativeWeights.append(total)
      }
      var random = SplitMix64(seed: 42)
      var trace: [Int] = []
      var nextScanKey = 1_000_000
      while trace.count < 100_000 {
        if trace.count % 20_000 == 10_000 {
          trace += nextScanKey..<nextScanKey + 5_000
          nextScanKey += 5_000
        } else {
          let target = Double.random(in: 0..<total, using: &random)
          var low = 0
          var high = keyCount - 1
          while low < high {
            let middle = (low + high) / 2
            if cumulativeWeights[middle] <= target { low = middle + 1 } else { high = middle }
          }
          trace.append(low)
        }
      }

      let capacity = 1_000
      var lru = SimulatedCache(LRUPolicy<Int>(), capacityBytes: capacity)
      var lruPresent = Set<Int>()
      var s3 = SimulatedCache(S3FIFOPolicy<Int>(capacityBytes: capacity), capacityBytes: capacity)
      var s3Present = Set<Int>()
      for key in trace {
        lru.request(key, present: &lruPresent)
        s3.request(key, present: &s3Present)
      }
      print(
        "hit ratio on \(trace.count) requests, cache of \(capacity) entries: S3-FIFO \(s3.hitRatio), LRU \(lru.hitRatio)"
      )
      #expect(lru.policy.count == capacity)
      #expect(s3.policy.count == capacity)
      #expect(s3.hitRatio > lru.hitRatio + 0.02)
    }
  }
}
