// When a block given up by a drain or a repair counts as placed, and a drain's course over its
// attempts (Placement.swift): the rules behind the simulator's two durability findings.

import StrataCluster
import Testing

@Suite struct BlockPlacementTests {
  @Test func aBlockIsPlacedOnlyOnceEveryOwnerHoldsIt() {
    // R = 2, a drain from three nodes: both owners in the ring without the draining node.
    #expect(BlockPlacement(owners: 2, holders: 2, required: 2) == .placed)
    // One owner down: the drain that counted "any owner" left this block with one copy.
    #expect(BlockPlacement(owners: 2, holders: 1, required: 2) == .short(holders: 1, required: 2))
    #expect(BlockPlacement(owners: 2, holders: 0, required: 2) == .short(holders: 0, required: 2))
    // R = 3 with three owners: two copies are not enough.
    #expect(BlockPlacement(owners: 3, holders: 2, required: 3) == .short(holders: 2, required: 3))
    #expect(BlockPlacement(owners: 3, holders: 3, required: 3).isPlaced)
    // Repair of an owned block (R = 2): the one other owner must hold it.
    #expect(BlockPlacement(owners: 1, holders: 1, required: 1).isPlaced)
    #expect(!BlockPlacement(owners: 1, holders: 0, required: 1).isPlaced)
  }

  @Test func aDrainNeverShrinksABlockBelowTheCopiesItHad() {
    // R = 2 over two active members: draining one leaves a one-member ring, one owner per block.
    // Two copies existed, so one owner cannot take its place however it answers.
    #expect(BlockPlacement(owners: 1, holders: 1, required: 2) == .tooFewOwners(owners: 1, required: 2))
    // No active member but the draining node: nowhere to place it.
    #expect(BlockPlacement(owners: 0, holders: 0, required: 1) == .tooFewOwners(owners: 0, required: 1))
    #expect(!BlockPlacement(owners: 0, holders: 0, required: 1).isPlaced)
  }

  @Test func nothingRequiredIsPlacedAtOnce() {
    // Repair on a one-member ring: an owned block has no other owner to reach.
    #expect(BlockPlacement(owners: 0, holders: 0, required: 0) == .placed)
  }
}

@Suite struct DrainAttemptsTests {
  private let limits = DrainAttempts.Limits(
    attemptsMax: 4, retryDelayMilliseconds: 1_000, retryDelayMaxMilliseconds: 3_000)

  @Test func aDrainWithEveryBlockPlacedLeavesAtOnce() {
    var attempts = DrainAttempts(limits: limits)
    #expect(attempts.finished(unplaced: 0, nowMilliseconds: 500) == .leave)
    #expect(attempts.attempts == 1)
  }

  @Test func unplacedBlocksAreTriedAgainWithGrowingWaitsThenTheNodeStaysUp() {
    var attempts = DrainAttempts(limits: limits)
    #expect(attempts.finished(unplaced: 5, nowMilliseconds: 0) == .retry(atMilliseconds: 1_000))
    #expect(attempts.finished(unplaced: 5, nowMilliseconds: 1_000) == .retry(atMilliseconds: 3_000))
    // The wait doubles up to its cap.
    #expect(attempts.finished(unplaced: 2, nowMilliseconds: 3_000) == .retry(atMilliseconds: 6_000))
    #expect(attempts.finished(unplaced: 2, nowMilliseconds: 6_000) == .stayUp(unplaced: 2))
    #expect(attempts.attempts == 4)
  }

  /// Every block placed, but under a ring the node has since replaced: once more at once, against
  /// the new ring; with no attempt left, or no change, it leaves.
  @Test func aPlacedAttemptUnderAReplacedRingIsMadeAgainAtOnce() {
    var attempts = DrainAttempts(limits: limits)
    #expect(attempts.finished(unplaced: 0, nowMilliseconds: 700, ringChanged: true) == .retry(atMilliseconds: 700))
    #expect(attempts.finished(unplaced: 0, nowMilliseconds: 900, ringChanged: false) == .leave)
    var last = DrainAttempts(limits: limits)
    for _ in 0..<3 { _ = last.finished(unplaced: 1, nowMilliseconds: 0) }
    #expect(last.finished(unplaced: 0, nowMilliseconds: 0, ringChanged: true) == .leave, "the last attempt")
  }

  @Test func aRetryThatPlacesEverythingLeaves() {
    var attempts = DrainAttempts(limits: limits)
    #expect(attempts.finished(unplaced: 3, nowMilliseconds: 0) == .retry(atMilliseconds: 1_000))
    #expect(attempts.finished(unplaced: 0, nowMilliseconds: 1_100) == .leave)
  }

  @Test func theStandardCourseOutlastsTheDefaultEtcdLease() {
    var attempts = DrainAttempts()
    var now: UInt64 = 0
    var waited: [UInt64] = []
    while case .retry(let at) = attempts.finished(unplaced: 1, nowMilliseconds: now) {
      waited.append(at - now)
      now = at
    }
    #expect(waited == [1_000, 2_000, 4_000, 8_000, 16_000])
    #expect(now > 10_000, "an owner dead at the drain's start has left the ring (lease TTL 10 s) by the last attempt")
    #expect(attempts.attempts == DrainAttempts.Limits.standard.attemptsMax)
  }

  @Test func hugeWaitsDoNotOverflow() {
    var attempts = DrainAttempts(
      limits: .init(attemptsMax: 80, retryDelayMilliseconds: 1 << 62, retryDelayMaxMilliseconds: .max - 1))
    var last: UInt64 = 0
    for _ in 0..<3 {
      guard case .retry(let at) = attempts.finished(unplaced: 1, nowMilliseconds: 0) else {
        Issue.record("a retry was expected")
        return
      }
      #expect(at >= last, "waits never shrink")
      last = at
    }
    #expect(last == UInt64.max - 1)
  }
}

@Suite struct NotOwnedOffersTests {
  @Test func anotherPassFollowsOnlyWhenTheBoundLeftBlocksAndThePassMadeProgress() {
    let bound = NotOwnedOffers.perPassMax
    #expect(NotOwnedOffers.passAgain(held: bound + 10, offered: bound, released: 1))
    #expect(!NotOwnedOffers.passAgain(held: bound + 10, offered: bound, released: 0), "owners down: no busy loop")
    #expect(!NotOwnedOffers.passAgain(held: 10, offered: 10, released: 10), "everything was offered")
  }
}
