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
}
