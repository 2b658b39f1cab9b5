// The cluster layer's pure pieces: the write quorum rule, the bounded set of under-replicated
// blocks behind strata_under_replicated_blocks, and how often demotion failures are logged.

import StrataCore
import StrataStorage
import Testing

@testable import StrataCluster

private func block(_ n: Int) -> BlockID {
  var bytes = [UInt8](repeating: 0, count: BlockKey.byteCount)
  bytes[0] = UInt8(truncatingIfNeeded: n)
  bytes[1] = UInt8(truncatingIfNeeded: n >> 8)
  return BlockID(namespace: .embeddedDefault, key: BlockKey(bytes: bytes)!)
}

private let ownerB = HostPort(host: "10.0.0.2", port: 7400)
private let ownerC = HostPort(host: "10.0.0.3", port: 7400)

@Suite struct WriteQuorumRuleTests {
  @Test func theRequestWinsOverConfigurationAndNeitherExceedsTheReplicas() {
    #expect(WriteQuorumRule.required(requested: 0, configured: nil, replicas: 3) == 2, "auto is min(R, 2)")
    #expect(WriteQuorumRule.required(requested: 0, configured: nil, replicas: 1) == 1)
    #expect(WriteQuorumRule.required(requested: 0, configured: 3, replicas: 3) == 3)
    #expect(WriteQuorumRule.required(requested: 1, configured: 3, replicas: 3) == 1, "the PUT's field wins")
    #expect(WriteQuorumRule.required(requested: 9, configured: nil, replicas: 3) == 3, "never above R")
    #expect(WriteQuorumRule.required(requested: 0, configured: 0, replicas: 3) == 1, "never below 1")
  }
}

@Suite struct UnderReplicatedSetTests {
  @Test func aBlockLeavesTheSetOnceEveryOwnerLackingItHasIt() {
    var set = UnderReplicatedSet(limit: 10)
    set.failed([block(1), block(2)], to: ownerB)
    set.failed([block(1)], to: ownerC)
    #expect(set.count == 2)
    set.copied([block(1)], to: ownerB)
    #expect(set.missing[block(1)] == [ownerC], "still missing on C")
    set.copied([block(1), block(2)], to: ownerC)
    #expect(set.count == 1 && set.missing[block(2)] == [ownerB], "a copy to C does not repair B")
    set.copied([block(9)], to: ownerB)
    #expect(set.count == 1, "copies of untracked blocks change nothing")
  }

  @Test func theSetIsBoundedAndCountsWhatDidNotFit() {
    var set = UnderReplicatedSet(limit: 3)
    set.failed((0..<5).map(block), to: ownerB)
    #expect(set.count == 3 && set.overflowed == 2)
    set.failed([block(0)], to: ownerC)
    #expect(set.count == 3 && set.overflowed == 2, "a tracked block takes another owner without a new entry")
    set.forget([block(0)])
    set.failed([block(7)], to: ownerB)
    #expect(set.count == 3 && set.missing[block(7)] != nil, "forgetting makes room")
    set.retain { $0 == block(7) }
    #expect(set.count == 1 && set.overflowed == 2)
  }

  @Test func theTrackerReportsTheSetsCounts() {
    let tracker = UnderReplicatedTracker(limit: 2)
    tracker.failed((0..<3).map(block), to: ownerB)
    let counts = tracker.counts
    #expect(counts.blocks == 2 && counts.overflowed == 1 && counts.limit == 2)
  }
}

@Suite struct DemotionFailureLoggingTests {
  @Test func theFirstFailureAndEveryThousandthAreLogged() {
    let logged = (1...5000).filter(ClusterNode.logsFailure)
    #expect(logged == [1, 1000, 2000, 3000, 4000, 5000])
  }
}
