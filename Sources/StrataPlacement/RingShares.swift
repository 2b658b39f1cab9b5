// Exact shares of the key space per member, and the share of keys a ring change moves, computed
// from the arcs between points rather than from sampled keys.

/// How much of the key space changes hands between two rings.
public struct RingMovement: Sendable, Hashable {
  /// Share of keys whose primary is a different member.
  public var primaryShare: Double
  /// Share of keys whose owner set (as a set of member ids) differs.
  public var ownerSetShare: Double

  public init(primaryShare: Double, ownerSetShare: Double) {
    self.primaryShare = primaryShare
    self.ownerSetShare = ownerSetShare
  }
}

extension Ring {
  /// The ring's circumference in position units: positions are 48-bit.
  private static let circumference = Double(1 << 48)

  /// Length of the arc ending at table slot `slot` (the keys that slot's point receives).
  private func arc(endingAt slot: Int) -> UInt64 {
    if pointCount == 1 { return 1 << 48 }
    let previous = slot == 0 ? pointCount - 1 : slot - 1
    return ((position(atSlot: slot) &- position(atSlot: previous)) >> 16) & ((1 << 48) - 1)
  }

  /// Share of the key space for which each member is primary; every member is listed, draining
  /// ones with 0. Shares sum to 1 (or to 0 when no member is active).
  public func primaryShares() -> [String: Double] {
    var arcs = [UInt64](repeating: 0, count: members.count)
    for slot in 0..<pointCount { arcs[memberIndex(atSlot: slot)] += arc(endingAt: slot) }
    return shares(arcs)
  }

  /// Share of the key space for which each member is any owner; shares sum to the effective R.
  public func ownerShares() -> [String: Double] {
    var arcs = [UInt64](repeating: 0, count: members.count)
    for slot in 0..<pointCount {
      let length = arc(endingAt: slot)
      withOwnerIndices(fromSlot: slot) { owners in
        for owner in owners { arcs[owner] += length }
      }
    }
    return shares(arcs)
  }

  private func shares(_ arcs: [UInt64]) -> [String: Double] {
    var result: [String: Double] = [:]
    for (index, member) in members.enumerated() { result[member.id] = Double(arcs[index]) / Ring.circumference }
    return result
  }

  /// The share of keys whose primary, and whose owner set, differ between this ring and `other`;
  /// members are matched by id. Exact: every arc between the two rings' merged points is compared.
  public func movement(to other: Ring) -> RingMovement {
    if pointCount == 0 || other.pointCount == 0 {
      let moved: Double = pointCount == other.pointCount ? 0 : 1
      return RingMovement(primaryShare: moved, ownerSetShare: moved)
    }
    if pointCount == 1 && other.pointCount == 1 && position(atSlot: 0) == other.position(atSlot: 0) {
      // One point each at the same place: the whole ring is one arc, which the formula below reads as empty.
      let same = members[memberIndex(atSlot: 0)].id == other.members[other.memberIndex(atSlot: 0)].id
      return RingMovement(primaryShare: same ? 0 : 1, ownerSetShare: same ? 0 : 1)
    }
    // Name the other ring's members by this ring's indices; unknown ones get indices past the end.
    var ids: [String: Int] = [:]
    for (index, member) in members.enumerated() { ids[member.id] = index }
    let translated = other.members.enumerated().map { ids[$1.id] ?? members.count + $0 }

    var primaryMoved: UInt64 = 0
    var setChanged: UInt64 = 0
    // Walk both tables' boundaries in position order. A sub-arc (previous boundary, boundary]
    // belongs in each ring to the first point at or after `boundary`.
    var slotA = 0
    var slotB = 0
    var previous = max(position(atSlot: pointCount - 1), other.position(atSlot: other.pointCount - 1))
    while slotA < pointCount || slotB < other.pointCount {
      let positionA = slotA < pointCount ? position(atSlot: slotA) : UInt64.max
      let positionB = slotB < other.pointCount ? other.position(atSlot: slotB) : UInt64.max
      let boundary = min(positionA, positionB)
      let length = ((boundary &- previous) >> 16) & ((1 << 48) - 1)
      previous = boundary
      if length > 0 {
        let ownerSlotA = slotA < pointCount ? slotA : 0
        let ownerSlotB = slotB < other.pointCount ? slotB : 0
        if memberIndex(atSlot: ownerSlotA) != translated[other.memberIndex(atSlot: ownerSlotB)] {
          primaryMoved += length
        }
        let same = withOwnerIndices(fromSlot: ownerSlotA) { ownersA in
          other.withOwnerIndices(fromSlot: ownerSlotB) { ownersB in
            ownersA.count == ownersB.count && ownersB.allSatisfy { ownersA.contains(translated[$0]) }
          }
        }
        if !same { setChanged += length }
      }
      if positionA == boundary { slotA += 1 }
      if positionB == boundary { slotB += 1 }
    }
    return RingMovement(
      primaryShare: Double(primaryMoved) / Ring.circumference, ownerSetShare: Double(setChanged) / Ring.circumference)
  }
}
