// A model of the membership service with etcd's semantics, as EtcdMembership uses it: every
// change bumps one revision; a member's key is attached to a lease that expires unless kept alive,
// and the lease's expiry deletes the key; watchers see the changes in revision order (a watcher
// that was cut off re-lists the current state, as an etcd watch resumed past compaction does).
// Putting a key with a new lease re-attaches it: the old lease's expiry no longer deletes it.

import StrataPlacement

struct MembershipModel {
  struct Record: Equatable {
    var member: Member
    var lease: UInt64
    /// The registering process instance (a restart within the TTL changes it, not the key).
    var instance: Int
    /// The revision it was last written at (etcd's `mod_revision`): set by `put`.
    var written: UInt64 = 0
  }

  /// The state at one revision: what a watcher sees.
  struct Snapshot: Equatable {
    var revision: UInt64
    /// Sorted by member id.
    var records: [Record]
  }

  let leaseTTLMilliseconds: UInt64
  private(set) var revision: UInt64 = 1
  private var leases: [UInt64: UInt64] = [:]
  private var keys: [String: Record] = [:]
  private var nextLease: UInt64 = 1

  init(leaseTTLMilliseconds: UInt64) { self.leaseTTLMilliseconds = leaseTTLMilliseconds }

  var snapshot: Snapshot {
    Snapshot(revision: revision, records: keys.keys.sorted().map { keys[$0]! })
  }

  /// A new lease, alive until `now` + TTL unless kept alive.
  mutating func grant(now: UInt64) -> UInt64 {
    let lease = nextLease
    nextLease += 1
    leases[lease] = now + leaseTTLMilliseconds
    return lease
  }

  /// False when the lease has expired (the holder must register again).
  mutating func keepAlive(_ lease: UInt64, now: UInt64) -> Bool {
    guard leases[lease] != nil else { return false }
    leases[lease] = now + leaseTTLMilliseconds
    return true
  }

  func isAlive(_ lease: UInt64) -> Bool { leases[lease] != nil }

  /// Every live lease runs a full TTL from `now` (or longer, where it already did): what an etcd
  /// cluster's new leader does with the leases it recovers after an outage.
  mutating func extendAll(now: UInt64) {
    for lease in leases.keys { leases[lease] = max(leases[lease]!, now + leaseTTLMilliseconds) }
  }

  /// Puts a member's key under `lease`; true when anything changed (a new revision).
  mutating func put(_ record: Record) -> Bool {
    var record = record
    record.written = keys[record.member.id]?.written ?? 0
    guard leases[record.lease] != nil, keys[record.member.id] != record else { return false }
    revision += 1
    record.written = revision
    keys[record.member.id] = record
    return true
  }

  /// Deletes a key and revokes its lease (a drained member deregistering).
  mutating func delete(_ id: String) -> Bool {
    guard let record = keys.removeValue(forKey: id) else { return false }
    leases[record.lease] = nil
    revision += 1
    return true
  }

  /// Expires leases due at `now`, deleting their keys (one revision per deleted key); returns the
  /// ids deleted, sorted.
  mutating func expire(now: UInt64) -> [String] {
    let due = leases.filter { $0.value <= now }.map(\.key).sorted()
    guard !due.isEmpty else { return [] }
    for lease in due { leases[lease] = nil }
    var deleted: [String] = []
    for id in keys.keys.sorted() where due.contains(keys[id]!.lease) {
      keys[id] = nil
      revision += 1
      deleted.append(id)
    }
    return deleted
  }
}
