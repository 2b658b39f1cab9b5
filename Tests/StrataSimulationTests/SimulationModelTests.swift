// The simulator's own pieces: the scheduler's order and the membership model's etcd semantics.

import StrataPlacement
import Testing

@testable import StrataSimulation

@Suite struct SimulationModelTests {
  @Test func eventsRunInTimeOrderAndTiesInSchedulingOrder() {
    var queue = EventQueue<String>()
    queue.schedule("c", at: 5)
    queue.schedule("a", at: 1)
    queue.schedule("d", at: 5)
    queue.schedule("b", at: 3)
    queue.schedule("e", at: 5)
    var order: [String] = []
    while let (_, event) = queue.next() { order.append(event) }
    #expect(order == ["a", "b", "c", "d", "e"])
  }

  @Test func membershipLeasesExpireTheirKeysAndEveryChangeIsARevision() {
    var model = MembershipModel(leaseTTLMilliseconds: 1_000)
    func record(_ id: String, lease: UInt64, instance: Int = 1) -> MembershipModel.Record {
      .init(member: Member(id: id, address: "10.0.0.1:7000"), lease: lease, instance: instance)
    }
    let first = model.grant(now: 0)
    let second = model.grant(now: 0)
    let putA = model.put(record("a", lease: first))
    let putB = model.put(record("b", lease: second))
    #expect(putA && putB && model.revision == 3 && model.snapshot.records.map(\.member.id) == ["a", "b"])
    // The same record again is no change.
    let again = model.put(record("a", lease: first))
    #expect(!again && model.revision == 3)
    // Kept alive, "a" stays; "b" expires and its key goes with its lease.
    let kept = model.keepAlive(first, now: 800)
    let expired = model.expire(now: 1_000)
    let late = model.keepAlive(second, now: 1_001)
    #expect(kept && expired == ["b"] && model.revision == 4 && !late)
    // A restart within the TTL puts the key under a new lease: the old lease's expiry no longer
    // deletes it.
    let restarted = model.grant(now: 1_200)
    let moved = model.put(record("a", lease: restarted, instance: 2))
    let none = model.expire(now: 1_800)
    #expect(moved && none.isEmpty && model.snapshot.records.map(\.instance) == [2])
    // A put under an expired lease is refused, as etcd refuses it.
    let refused = model.put(record("c", lease: second))
    let deleted = model.delete("a")
    #expect(!refused && deleted && model.snapshot.records.isEmpty && !model.isAlive(restarted))
  }

  /// After an outage every live lease runs a full TTL from the service's return (an etcd cluster's
  /// new leader extends the leases it recovers); one already past its TTL still expires then.
  @Test func aServiceThatComesBackExtendsEveryLiveLease() {
    var model = MembershipModel(leaseTTLMilliseconds: 1_000)
    let lease = model.grant(now: 0)
    let longer = model.grant(now: 0)
    _ = model.put(.init(member: Member(id: "a", address: "10.0.0.1:7000"), lease: lease, instance: 1))
    _ = model.keepAlive(longer, now: 900)
    // Down from 500 to 3,000 ms: nothing expires meanwhile (the simulator does not call `expire`).
    model.extendAll(now: 3_000)
    let early = model.expire(now: 3_999)
    #expect(early.isEmpty && model.isAlive(lease) && model.isAlive(longer))
    let due = model.expire(now: 4_000)
    #expect(due == ["a"] && !model.isAlive(lease) && !model.isAlive(longer))
  }
}
