// Balance and movement at moderate sizes: exact shares against sampled keys, spread, weights,
// join/leave movement, and the movement computation against sampled keys.

import StrataCore
import StrataPlacement
import StrataTestKit
import Testing

@Suite struct RingBalanceTests {
  @Test func exactSharesAgreeWithSampledKeys() {
    let ring = Ring(members: makeMembers(7, zones: ["a", "b"]), epoch: 1, replicationFactor: 2, virtualNodes: 256)
    let primary = ring.primaryShares()
    let owner = ring.ownerShares()
    #expect(abs(primary.values.reduce(0, +) - 1) < 1e-9)
    #expect(abs(owner.values.reduce(0, +) - 2) < 1e-9)
    var generator = SplitMix64(seed: 0x5EED_0101)
    let samples = 60_000
    var primaryCounts: [String: Int] = [:]
    var ownerCounts: [String: Int] = [:]
    for _ in 0..<samples {
      let owners = ring.ownerIDs(of: randomKey(&generator))
      primaryCounts[owners[0], default: 0] += 1
      for id in owners { ownerCounts[id, default: 0] += 1 }
    }
    // Sampling error of one share is about sqrt(p / n) ≈ 0.0015; allow five of those.
    for member in ring.members {
      #expect(abs(Double(primaryCounts[member.id] ?? 0) / Double(samples) - (primary[member.id] ?? -1)) < 0.008)
      #expect(abs(Double(ownerCounts[member.id] ?? 0) / Double(samples) - (owner[member.id] ?? -1)) < 0.01)
    }
  }

  @Test func spreadOfEqualMembersStaysWithinTenPercent() {
    for count in [10, 40] {
      let members = makeMembers(count)
      let ring = Ring(members: members, epoch: 1, replicationFactor: 2)
      let ids = members.map(\.id)
      let primarySpread = maxOverMean(ring.primaryShares(), ids: ids)
      let ownerSpread = maxOverMean(ring.ownerShares(), ids: ids)
      #expect(primarySpread <= 1.10, "\(count) members: primary max/mean \(primarySpread)")
      #expect(ownerSpread <= 1.10, "\(count) members: owner max/mean \(ownerSpread)")
      #expect(primarySpread > 1.0)
    }
  }

  @Test func capacityWeightsShares() {
    // Twelve members of 1 TB and four of 2 TB: the large ones should hold twice the share.
    var members = makeMembers(16, capacityBytes: 1_000_000_000_000)
    for index in [1, 5, 9, 13] { members[index].capacityBytes = 2_000_000_000_000 }
    let ring = Ring(members: members, epoch: 1, replicationFactor: 1)
    let shares = ring.primaryShares()
    let large = [1, 5, 9, 13].map { shares[members[$0].id] ?? 0 }
    let small = members.indices.filter { $0 % 4 != 1 }.map { shares[members[$0].id] ?? 0 }
    let ratio = (large.reduce(0, +) / 4) / (small.reduce(0, +) / 12)
    #expect(ratio > 1.9 && ratio < 2.1, "2× capacity gets \(ratio)× the share")
    #expect(abs(large.reduce(0, +) - 0.4) < 0.02)
    // Capacity 0 counts as the mean of the stated capacities.
    members[0].capacityBytes = 0
    let withUnknown = Ring(members: members, epoch: 2, replicationFactor: 1).primaryShares()
    let unknownShare = withUnknown[members[0].id] ?? 0
    #expect(unknownShare > 0.8 / 16 && unknownShare < 1.25 / 16)
  }

  @Test func joinAndLeaveMoveCloseToTheIdealShare() {
    let count = 24
    let members = makeMembers(count + 1, zones: ["a", "b", "c"])
    let before = Ring(members: Array(members.prefix(count)), epoch: 1, replicationFactor: 2)
    let joined = Ring(members: members, epoch: 2, replicationFactor: 2)
    let join = before.movement(to: joined)
    let idealJoin = 1 / Double(count + 1)
    #expect(join.primaryShare <= 1.2 * idealJoin, "join moved \(join.primaryShare) of primaries")
    #expect(join.primaryShare >= 0.8 * idealJoin)
    #expect(join.ownerSetShare <= 1.2 * 2 * idealJoin, "join changed \(join.ownerSetShare) of owner sets")
    // Every moved primary moved to the new member.
    #expect(abs(join.primaryShare - (joined.primaryShares()[members[count].id] ?? 0)) < 1e-9)

    let left = Ring(members: members.filter { $0.id != members[5].id }, epoch: 3, replicationFactor: 2)
    let leave = joined.movement(to: left)
    let idealLeave = 1 / Double(count + 1)
    #expect(leave.primaryShare <= 1.2 * idealLeave, "leave moved \(leave.primaryShare) of primaries")
    #expect(leave.ownerSetShare <= 1.2 * 2 * idealLeave, "leave changed \(leave.ownerSetShare) of owner sets")
    #expect(before.movement(to: before) == RingMovement(primaryShare: 0, ownerSetShare: 0))
  }

  @Test func movementAgreesWithSampledKeys() {
    let members = makeMembers(6, zones: ["a", "b"])
    let before = Ring(members: Array(members.prefix(5)), epoch: 1, replicationFactor: 3, virtualNodes: 64)
    let after = Ring(members: Array(members.suffix(5)), epoch: 2, replicationFactor: 3, virtualNodes: 64)
    let movement = before.movement(to: after)
    var generator = SplitMix64(seed: 0x5EED_0105)
    let samples = 40_000
    var primaryMoved = 0
    var setChanged = 0
    for _ in 0..<samples {
      let key = randomKey(&generator)
      let old = before.ownerIDs(of: key)
      let new = after.ownerIDs(of: key)
      if old.first != new.first { primaryMoved += 1 }
      if Set(old) != Set(new) { setChanged += 1 }
    }
    #expect(abs(Double(primaryMoved) / Double(samples) - movement.primaryShare) < 0.012)
    #expect(abs(Double(setChanged) / Double(samples) - movement.ownerSetShare) < 0.012)
    #expect(movement.ownerSetShare > movement.primaryShare)
  }
}
