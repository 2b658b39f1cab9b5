// The cluster's view inside one node: the ring it routes by, the ring before the last change
// (for read-through), the health of peers, and the membership service's condition.

public import Foundation
import StrataCore
import StrataPlacement

extension NodeClock {
  /// The wall clock as a `Date` (reports' `started_at`, `finished_at`, `since`).
  var date: Date { Date(timeIntervalSince1970: Double(wallMilliseconds()) / 1000) }
}

/// How a peer answered its last probe (static membership); in etcd mode, `up` while its record
/// (held by its process's lease) is registered.
public enum PeerHealth: String, Sendable, Hashable, Codable {
  case unknown
  case up
  case down
}

/// The condition of the membership service (etcd); `.notUsed` outside etcd mode.
public enum MembershipServiceState: Sendable, Hashable {
  case notUsed
  case connecting
  case connected
  case disconnected(reason: String, since: Date)
}

/// A ring change: what the node routed by before, and when it changed.
struct RingHistory: Sendable {
  var current: Ring
  var previous: Ring?
  /// On the node's monotonic clock (`NodeClock.nowMilliseconds`).
  var changedAtMilliseconds: UInt64

  /// Takes `next` if its members differ (state included) or no ring was adopted yet (epoch 0);
  /// true when the ring changed. The same members at a later epoch only renumber the ring, so that
  /// nodes which heard the same revision answer at the same epoch (Handoff's `holdersFrom`).
  mutating func adopt(_ next: Ring, atMilliseconds now: UInt64) -> Bool {
    guard
      current.epoch == 0 || next.members != current.members || next.replicationFactor != current.replicationFactor
    else {
      if next.epoch > current.epoch { current = current.renumbered(next.epoch) }
      return false
    }
    previous = current
    current = next
    changedAtMilliseconds = now
    return true
  }
}
