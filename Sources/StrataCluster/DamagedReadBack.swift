// The blocks a node dropped as damaged and reads back from their other owners
// (`ClusterNode.readBackDamaged`), and what became of them, for the metrics.

import StrataStorage

/// Owned blocks dropped as damaged, each with the attempts made to read it back, whether the one
/// task doing so runs, and the totals since the node started.
public struct DamagedReadBack: Sendable {
  /// What the read-back did since the node started, and what waits now.
  public struct Counts: Sendable, Equatable {
    /// Blocks waiting to be read back now.
    public var waiting = 0
    /// Blocks read back from another owner.
    public var readBack = 0
    /// Blocks no other owner gave back after every attempt (left gone).
    public var notFound = 0
    /// Blocks not recorded because `ClusterNode.damagedPendingMax` already waited.
    public var leftOut = 0
  }

  var attempts: [BlockID: Int] = [:]
  var running = false
  /// Left out since the task last said so in its log line.
  var leftOut = 0
  var totals = Counts()

  var counts: Counts {
    var counts = totals
    counts.waiting = attempts.count
    return counts
  }
}
