// Property tests of the ring on seeded random memberships: owner counts and distinctness, zones,
// draining, determinism, an independent brute-force primary, empty rings, member lookup.

import StrataCore
import StrataPlacement
import StrataTestKit
import Testing

@Suite struct RingPropertyTests {
  /// A random membership: 1–12 members, some draining, zones from 0–4 labels, random capacities.
  private func randomRing(_ generator: inout SplitMix64, virtualNodes: Int = 64) -> Ring {
    let count = Int.random(in: 1...12, using: &generator)
    let zoneLabels = ["", "a", "b", "c"].prefix(Int.random(in: 1...4, using: &generator))
    let members = (0..<count).map { index in
      Member(
        id: "m\(index)-\(generator.next() % 1000)", address: "10.0.0.\(index):7400",
        capacityBytes: [0, 1 << 30, 2 << 30, 5 << 30][Int(generator.next() % 4)],
        zone: zoneLabels.randomElement(using: &generator) ?? "",
        state: generator.next() % 4 == 0 ? .draining : .active)
    }
    return Ring(
      members: members, epoch: generator.next() % 100, replicationFactor: Int.random(in: 1...4, using: &generator),
      virtualNodes: virtualNodes)
  }

  @Test func ownersAreDistinctActiveAndAsManyAsAllowed() {
    let seed: UInt64 = 0x5EED_0001
    var generator = SplitMix64(seed: seed)
    for _ in 0..<200 {
      let ring = randomRing(&generator)
      let active = ring.activeMembers.count
      for _ in 0..<50 {
        let key = randomKey(&generator)
        let owners = ring.owners(of: key)
        #expect(owners.count == min(ring.replicationFactor, active), "seed \(seed)")
        #expect(Set(owners.map(\.id)).count == owners.count, "seed \(seed): owners repeat")
        #expect(owners.allSatisfy { $0.state == .active }, "seed \(seed): a draining member owns a key")
        #expect(owners.first == ring.primary(of: key), "seed \(seed)")
        #expect(ring.ownerIDs(of: key) == owners.map(\.id))
      }
    }
  }

  @Test func replicasUseDistinctZonesWhileZonesAllow() {
    let seed: UInt64 = 0x5EED_0002
    var generator = SplitMix64(seed: seed)
    var zonedChecks = 0
    for _ in 0..<200 {
      let ring = randomRing(&generator)
      let activeZones = Set(ring.activeMembers.map(\.zone)).count
      for _ in 0..<50 {
        let owners = ring.owners(of: randomKey(&generator))
        let distinctPrefix = min(owners.count, activeZones)
        let zones = owners.prefix(distinctPrefix).map(\.zone)
        #expect(Set(zones).count == distinctPrefix, "seed \(seed): zones \(zones) repeat among \(activeZones)")
        if activeZones > 1 && owners.count > 1 { zonedChecks += 1 }
      }
    }
    #expect(zonedChecks > 1000, "the random rings must exercise zones")
  }

  @Test func zonesSpreadReplicasEvenWhenOneZoneDominates() {
    // Eight members in zone a, one in zone b: every key's two owners must span both zones.
    var members = makeMembers(8, zones: ["a"])
    members.append(Member(id: "lonely", address: "127.0.0.1:9000", zone: "b"))
    let ring = Ring(members: members, epoch: 1, replicationFactor: 3, virtualNodes: 128)
    var generator = SplitMix64(seed: 3)
    for _ in 0..<2000 {
      let owners = ring.owners(of: randomKey(&generator))
      #expect(owners.count == 3)
      #expect(Set(owners.prefix(2).map(\.zone)) == ["a", "b"])
      #expect(Set(owners.map(\.id)).count == 3)
    }
  }

  @Test func placementDependsOnlyOnMembershipNotOnOrder() {
    var generator = SplitMix64(seed: 0x5EED_0004)
    let members = makeMembers(9, zones: ["a", "b", "c"])
    let ring = Ring(members: members, epoch: 4, replicationFactor: 3, virtualNodes: 256)
    let shuffled = Ring(members: members.shuffled(using: &generator), epoch: 4, replicationFactor: 3, virtualNodes: 256)
    #expect(ring == shuffled)
    #expect(ring.members.map(\.id) == members.map(\.id).sorted())
    for _ in 0..<2000 {
      let key = randomKey(&generator)
      #expect(ring.owners(of: key) == shuffled.owners(of: key))
    }
    // Adding a member changes placement (the test above can fail).
    let grown = Ring(members: members + makeMembers(12).suffix(3), epoch: 5, replicationFactor: 3, virtualNodes: 256)
    var differing = 0
    for _ in 0..<2000 {
      let key = randomKey(&generator)
      if grown.owners(of: key) != ring.owners(of: key) { differing += 1 }
    }
    #expect(differing > 0)
  }

  /// The primary recomputed from the documented scheme with no sorting or index: each member's
  /// points are SplitMix64 outputs seeded with SHA-256("strata-ring-v1:" + id)'s first 8 bytes,
  /// truncated to 48 bits; a key's primary owns the first point at or after the key's first 8 bytes.
  @Test func primaryMatchesABruteForceReading() {
    let members = makeMembers(5)
    let virtualNodes = 40
    let ring = Ring(members: members, epoch: 1, replicationFactor: 2, virtualNodes: virtualNodes)
    var points: [(position: UInt64, id: String)] = []
    for member in members {
      var state = SHA256.digest(Array("strata-ring-v1:".utf8) + Array(member.id.utf8)).prefix64
      for _ in 0..<virtualNodes {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        points.append(((z ^ (z >> 31)) >> 16, member.id))
      }
    }
    var generator = SplitMix64(seed: 0x5EED_0005)
    for _ in 0..<3000 {
      let key = randomKey(&generator)
      let position = key.prefix64 >> 16
      let after = points.filter { $0.position >= position }
      let expected = (after.min { $0.position < $1.position } ?? points.min { $0.position < $1.position })?.id
      #expect(ring.primary(of: key)?.id == expected)
    }
  }

  @Test func emptyAndAllDrainingRingsOwnNothing() {
    var generator = SplitMix64(seed: 6)
    let key = randomKey(&generator)
    let empty = Ring(members: [], epoch: 0, replicationFactor: 1)
    #expect(empty.owners(of: key).isEmpty)
    #expect(empty.primary(of: key) == nil)
    #expect(empty.pointCount == 0)
    var members = makeMembers(3)
    for index in members.indices { members[index].state = .draining }
    let drained = Ring(members: members, epoch: 1, replicationFactor: 2)
    #expect(drained.owners(of: key).isEmpty)
    #expect(drained.members.count == 3)
    #expect(drained.primaryShares().values.allSatisfy { $0 == 0 })
  }

  @Test func drainingMembersOwnNothingAndOnlyTheirKeysMove() {
    let members = makeMembers(6)
    let ring = Ring(members: members, epoch: 1, replicationFactor: 2, virtualNodes: 512)
    var draining = members
    draining[2].state = .draining
    let drained = Ring(members: draining, epoch: 2, replicationFactor: 2, virtualNodes: 512)
    #expect(drained.member(id: members[2].id)?.state == .draining)
    #expect(drained.primaryShares()[members[2].id] == 0)
    #expect(drained.ownerShares()[members[2].id] == 0)
    var generator = SplitMix64(seed: 7)
    for _ in 0..<3000 {
      let key = randomKey(&generator)
      #expect(!drained.ownerIDs(of: key).contains(members[2].id))
      // Keys the draining member was not primary for keep their primary.
      if ring.primary(of: key)?.id != members[2].id { #expect(drained.primary(of: key) == ring.primary(of: key)) }
    }
    let movement = ring.movement(to: drained)
    let share = ring.primaryShares()[members[2].id] ?? 0
    #expect(abs(movement.primaryShare - share) < 1e-9)
  }

  @Test func memberLookupAndDefaultReplication() {
    let members = makeMembers(20)
    let ring = Ring(members: members.reversed(), epoch: 1, replicationFactor: 2, virtualNodes: 8)
    for member in members { #expect(ring.member(id: member.id) == member) }
    #expect(ring.member(id: "node-999") == nil)
    #expect(ring.member(id: "") == nil)
    #expect(Ring.defaultReplicationFactor(activeMembers: 0) == 1)
    #expect(Ring.defaultReplicationFactor(activeMembers: 1) == 1)
    #expect(Ring.defaultReplicationFactor(activeMembers: 2) == 2)
    #expect(Ring.defaultReplicationFactor(activeMembers: 7) == 2)
    let single = Ring(members: Array(members.prefix(1)), epoch: 1, replicationFactor: 3, virtualNodes: 1)
    #expect(single.effectiveReplicationFactor == 1)
    var generator = SplitMix64(seed: 8)
    #expect(single.owners(of: randomKey(&generator)) == [members[0]])
    #expect(single.primaryShares() == [members[0].id: 1.0])
  }
}
