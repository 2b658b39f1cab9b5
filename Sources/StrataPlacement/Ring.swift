// Ring: consistent hashing with weighted virtual nodes. Maps a block key to its owners (primary
// first, replicas in distinct zones while zones allow); a pure value, the same in every process
// that holds the same members, epoch and settings. Design and measurements: docs/placement.md.

public import StrataCore

/// The placement of keys on members at one epoch.
///
/// Each active member gets `virtualNodes` points on a 64-bit ring (scaled by its capacity), drawn
/// from a stream seeded by its id. A key's ring position is `BlockKey.prefix64` (the digest's first
/// 8 bytes, big-endian); its owners are the distinct members met walking clockwise from there.
public struct Ring: Sendable, Hashable {
  /// Virtual nodes per member of mean capacity unless told otherwise: enough for the busiest of
  /// 1,000 equal members to hold at most ~1.07× the mean share (docs/placement.md).
  public static let defaultVirtualNodes = 2048
  /// The most points a ring may hold (8 bytes each: 256 MiB), so a ring read from a peer is bounded.
  public static let pointsMax = 1 << 25

  public private(set) var epoch: UInt64
  /// The requested R; the effective number of owners is `min(R, activeMembers.count)`.
  public let replicationFactor: Int
  /// Every member, sorted by id, draining ones included.
  public let members: [Member]
  /// Points per member of mean capacity.
  public let virtualNodes: Int

  private let table: RingTable
  /// Zone number of each member (index into the distinct zones, in member order).
  private let zoneNumbers: [Int]
  /// Distinct zones among active members.
  private let activeZoneCount: Int
  private let activeCount: Int

  /// A ring over `members` (any order; ids must be unique). `replicationFactor` must be at least 1;
  /// at most 65,536 members, and `virtualNodes` × active members at most `pointsMax`.
  public init(members: [Member], epoch: UInt64, replicationFactor: Int, virtualNodes: Int = Ring.defaultVirtualNodes) {
    if let problem = Ring.problem(members: members, replicationFactor: replicationFactor, virtualNodes: virtualNodes) {
      preconditionFailure(problem)
    }
    let sorted = members.sorted { $0.id < $1.id }
    self.epoch = epoch
    self.replicationFactor = replicationFactor
    self.members = sorted
    self.virtualNodes = virtualNodes

    var zoneIndex: [String: Int] = [:]
    var numbers: [Int] = []
    var activeZones = Set<Int>()
    for member in sorted {
      let number = zoneIndex[member.zone] ?? zoneIndex.count
      zoneIndex[member.zone] = number
      numbers.append(number)
      if member.isActive { activeZones.insert(number) }
    }
    zoneNumbers = numbers
    activeZoneCount = activeZones.count
    activeCount = sorted.count { $0.isActive }
    table = RingTable(
      seeds: sorted.map { RingTable.seed(memberID: $0.id) },
      counts: Ring.pointCounts(members: sorted, virtualNodes: virtualNodes))
  }

  /// Why these settings cannot form a ring, or nil when they can.
  static func problem(members: [Member], replicationFactor: Int, virtualNodes: Int) -> String? {
    if replicationFactor < 1 { return "replication factor \(replicationFactor) is below 1" }
    if virtualNodes < 1 || virtualNodes > Ring.pointsMax { return "virtual nodes \(virtualNodes) is out of range" }
    if members.count > RingTable.membersMax { return "\(members.count) members; at most \(RingTable.membersMax)" }
    let active = members.count { $0.isActive }
    if active * virtualNodes > Ring.pointsMax {
      return "\(active) active members × \(virtualNodes) virtual nodes exceeds \(Ring.pointsMax) points"
    }
    var seen = Set<String>()
    for member in members {
      if member.id.isEmpty { return "a member has an empty id" }
      if !seen.insert(member.id).inserted { return "member id '\(member.id)' appears twice" }
    }
    return nil
  }

  /// Each member's capacity relative to the mean of the active members that state one (capacity 0
  /// counts as the mean); 0 for draining members. Computed in IEEE doubles in the given order, so
  /// every platform gets the same values.
  static func relativeCapacities(of members: [Member]) -> [Double] {
    var sum = 0.0
    var stated = 0
    for member in members where member.isActive && member.capacityBytes > 0 {
      sum += Double(member.capacityBytes)
      stated += 1
    }
    let mean = stated > 0 ? sum / Double(stated) : 0
    return members.map { member in
      guard member.isActive else { return 0 }
      guard member.capacityBytes > 0, mean > 0 else { return 1 }
      return Double(member.capacityBytes) / mean
    }
  }

  /// Points for each member: `virtualNodes` × its relative capacity, rounded, at least 1 for an
  /// active member.
  static func pointCounts(members: [Member], virtualNodes: Int) -> [Int] {
    zip(members, relativeCapacities(of: members)).map { member, relative in
      member.isActive ? max(1, Int((Double(virtualNodes) * relative).rounded())) : 0
    }
  }

  /// The share of keys each of `members` should own as primary, in the given order: capacity over
  /// the active members' total (capacity 0 counts as the mean), 0 for draining members. The ring
  /// approximates these; `primaryShares()` says how closely.
  public static func fairShares(of members: [Member]) -> [Double] {
    let relative = relativeCapacities(of: members)
    let total = relative.reduce(0, +)
    return relative.map { total > 0 ? $0 / total : 0 }
  }

  /// Default R: 2 when at least 2 active members, else 1.
  public static func defaultReplicationFactor(activeMembers: Int) -> Int { activeMembers >= 2 ? 2 : 1 }

  /// The members that own keys, sorted by id.
  public var activeMembers: [Member] { members.filter(\.isActive) }

  /// The number of owners each key gets: `min(replicationFactor, active members)`.
  public var effectiveReplicationFactor: Int { min(replicationFactor, activeCount) }

  /// Virtual-node points in the ring.
  public var pointCount: Int { table.count }

  /// Bytes the ring's point table and its index hold.
  public var tableBytes: Int { table.memoryBytes }

  /// A key's position on the ring: the first 8 bytes of its digest, big-endian.
  @inlinable public static func point(of key: BlockKey) -> UInt64 { key.prefix64 }

  /// The owners of `key`: primary first, then up to the effective R distinct members clockwise,
  /// in distinct zones while zones allow. Empty when no member is active.
  public func owners(of key: BlockKey) -> [Member] {
    guard pointCount > 0 else { return [] }
    return withOwnerIndices(fromSlot: table.successor(of: Ring.point(of: key))) { $0.map { members[$0] } }
  }

  /// The ids of `owners(of:)`, in the same order.
  public func ownerIDs(of key: BlockKey) -> [String] {
    guard pointCount > 0 else { return [] }
    return withOwnerIndices(fromSlot: table.successor(of: Ring.point(of: key))) { $0.map { members[$0].id } }
  }

  /// The positions in `members` of `owners(of:)`, in the same order: the allocation-light form
  /// for routing many keys.
  public func ownerIndices(of key: BlockKey) -> [Int] {
    guard pointCount > 0 else { return [] }
    return withOwnerIndices(fromSlot: table.successor(of: Ring.point(of: key))) { Array($0) }
  }

  /// Whether the member at position `memberIndex` of `members` owns `key`.
  public func isOwner(memberIndex: Int, of key: BlockKey) -> Bool {
    guard pointCount > 0 else { return false }
    return withOwnerIndices(fromSlot: table.successor(of: Ring.point(of: key))) { $0.contains(memberIndex) }
  }

  /// The first owner of `key`, or nil when no member is active.
  public func primary(of key: BlockKey) -> Member? {
    guard table.count > 0 else { return nil }
    return members[table.memberIndex(at: table.successor(of: Ring.point(of: key)))]
  }

  /// The member with `id`, active or draining.
  public func member(id: String) -> Member? {
    var low = 0
    var high = members.count
    while low < high {
      let middle = (low + high) / 2
      if members[middle].id < id { low = middle + 1 } else { high = middle }
    }
    return low < members.count && members[low].id == id ? members[low] : nil
  }

  /// Calls `body` with the member indices of the owners of the keys that table slot `start`
  /// receives, in stack memory; the table must not be empty.
  func withOwnerIndices<Result>(fromSlot start: Int, _ body: (UnsafeBufferPointer<Int>) -> Result) -> Result {
    let wanted = effectiveReplicationFactor
    return withUnsafeTemporaryAllocation(of: Int.self, capacity: 2 * wanted) { buffer in
      let owners = UnsafeMutableBufferPointer(rebasing: buffer[0..<wanted])
      let deferred = UnsafeMutableBufferPointer(rebasing: buffer[wanted...])
      let count = walk(from: start, owners: owners, deferred: deferred)
      return body(UnsafeBufferPointer(rebasing: owners[0..<count]))
    }
  }

  /// Writes into `owners` the owners met walking clockwise from table slot `start` and returns
  /// their number; `owners` and `deferred` (scratch) hold at least the effective R each. The
  /// first `min(R, zones)` owners are in distinct zones; the rest are the next distinct members
  /// in walk order, including ones skipped earlier for their zone.
  func walk(from start: Int, owners: UnsafeMutableBufferPointer<Int>, deferred: UnsafeMutableBufferPointer<Int>)
    -> Int
  {
    let wanted = effectiveReplicationFactor
    let zoneTarget = min(wanted, activeZoneCount)
    let spare = wanted - zoneTarget
    let entries = table.entries
    return entries.withUnsafeBufferPointer { entries in
      zoneNumbers.withUnsafeBufferPointer { zoneNumbers in
        var found = 0
        var skipped = 0
        func known(_ candidate: Int) -> Bool {
          for index in 0..<found where owners[index] == candidate { return true }
          for index in 0..<skipped where deferred[index] == candidate { return true }
          return false
        }
        var slot = start
        var steps = 0
        while found < wanted && steps < entries.count {
          let candidate = Int(truncatingIfNeeded: entries[slot] & RingTable.indexMask)
          slot = slot + 1 == entries.count ? 0 : slot + 1
          steps += 1
          if known(candidate) { continue }
          if found >= zoneTarget {
            owners[found] = candidate
            found += 1
            continue
          }
          let zone = zoneNumbers[candidate]
          var zoneTaken = false
          for index in 0..<found where zoneNumbers[owners[index]] == zone { zoneTaken = true }
          if zoneTaken {
            if skipped < spare {
              deferred[skipped] = candidate
              skipped += 1
            }
            continue
          }
          owners[found] = candidate
          found += 1
          if found == zoneTarget {
            // Zones are satisfied: members skipped for their zone come next, in the order met.
            for index in 0..<skipped where found < wanted {
              owners[found] = deferred[index]
              found += 1
            }
            skipped = 0
          }
        }
        return found
      }
    }
  }

  /// The same placement at `epoch`: a membership revision that left members and settings as they were.
  public func renumbered(_ epoch: UInt64) -> Ring {
    var ring = self
    ring.epoch = epoch
    return ring
  }

  /// Member index owning table slot `slot`'s point (internal: shares and movement).
  func memberIndex(atSlot slot: Int) -> Int { table.memberIndex(at: slot) }

  /// 48-bit position of table slot `slot`, in the top bits (internal: shares and movement).
  func position(atSlot slot: Int) -> UInt64 { table.position(at: slot) }

  public static func == (lhs: Ring, rhs: Ring) -> Bool {
    lhs.epoch == rhs.epoch && lhs.replicationFactor == rhs.replicationFactor
      && lhs.virtualNodes == rhs.virtualNodes && lhs.members == rhs.members
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(epoch)
    hasher.combine(replicationFactor)
    hasher.combine(virtualNodes)
    hasher.combine(members)
  }
}
