// The blocks a node dropped as damaged and reads back from their other owners
// (`ClusterNode.readBackDamaged`): which are due for an attempt, when each is tried again, and
// what became of them. A pure value: time is passed in.

public import StrataCore
public import StrataStorage

/// When a block that was not read back is tried again: after `firstMilliseconds`, doubling up to
/// `maxMilliseconds`, `attemptsMax` attempts in all.
public struct ReadBackSchedule: Sendable, Hashable {
  public var firstMilliseconds: UInt64
  public var maxMilliseconds: UInt64
  public var attemptsMax: Int

  /// 1 s, 2 s, 4 s … up to 5 minutes apart, 12 attempts: about 18 minutes, long enough for a
  /// partition or a restart of the other owners to heal, short enough that a block no other
  /// owner holds does not wait for ever.
  public static let standard = ReadBackSchedule(firstMilliseconds: 1_000, maxMilliseconds: 300_000, attemptsMax: 12)

  public init(firstMilliseconds: UInt64, maxMilliseconds: UInt64, attemptsMax: Int) {
    self.firstMilliseconds = firstMilliseconds
    self.maxMilliseconds = maxMilliseconds
    self.attemptsMax = attemptsMax
  }

  /// The wait after the `attempts`-th attempt failed (attempts ≥ 1).
  func delay(after attempts: Int) -> UInt64 {
    let doubled = firstMilliseconds << UInt64(min(max(attempts - 1, 0), 32))
    return min(doubled, max(firstMilliseconds, maxMilliseconds))
  }
}

/// Owned blocks dropped as damaged, each with the attempts made and when it is due again, whether
/// the one task reading them back runs, and the totals since the node started.
public struct DamagedReadBack: Sendable {
  /// What the read-back did since the node started, and what waits now.
  public struct Counts: Sendable, Equatable {
    /// Blocks waiting to be read back now.
    public var waiting = 0
    /// Blocks read back from another owner.
    public var readBack = 0
    /// Blocks no other owner gave back after every attempt (left gone).
    public var notFound = 0
    /// Blocks not recorded because `limit` already waited.
    public var leftOut = 0
  }

  private struct Pending {
    var attempts: Int
    var dueAt: UInt64
    /// Owners this node was to copy the block to (its under-replicated record when the block
    /// was dropped): the duty comes back with the block.
    var lacking: Set<HostPort>
    /// Dropped because the disk failed its write, not as damaged: read back only while the disk
    /// takes writes (an attempt while it fails counts as one that found nothing).
    var needsWorkingDisk: Bool
  }

  /// At most this many blocks wait at once.
  public let limit: Int
  public let schedule: ReadBackSchedule
  private var pending: [BlockID: Pending] = [:]
  /// The task reading them back runs.
  var running = false
  /// Left out since the task last said so in its log line.
  private(set) var leftOutSinceLog = 0
  private(set) var totals = Counts()

  public init(limit: Int, schedule: ReadBackSchedule) {
    self.limit = limit
    self.schedule = schedule
  }

  public var counts: Counts {
    var counts = totals
    counts.waiting = pending.count
    return counts
  }

  public var isEmpty: Bool { pending.isEmpty }

  /// Records `blocks` (each with the owners this node was to copy it to), due at once (damaged),
  /// or after the schedule's first wait when `needsWorkingDisk` (dropped because the disk failed
  /// its write); one waiting already gains those owners. Beyond `limit` they are left out and
  /// counted. Returns how many were recorded.
  @discardableResult
  public mutating func record(
    _ blocks: [(id: BlockID, lacking: Set<HostPort>)], now: UInt64, needsWorkingDisk: Bool = false
  ) -> Int {
    var recorded = 0
    for (id, lacking) in blocks {
      if pending[id] != nil {
        pending[id]!.lacking.formUnion(lacking)
        continue
      }
      guard pending.count < limit else {
        leftOutSinceLog += 1
        totals.leftOut += 1
        continue
      }
      pending[id] = Pending(
        attempts: 0, dueAt: needsWorkingDisk ? now + schedule.firstMilliseconds : now, lacking: lacking,
        needsWorkingDisk: needsWorkingDisk)
      recorded += 1
    }
    return recorded
  }

  /// Whether this node was to copy `id` to other owners when it was dropped (then it is read
  /// back even where this node does not own it).
  public func hasDuty(_ id: BlockID) -> Bool { pending[id]?.lacking.isEmpty == false }

  /// Whether `id` waits to be read back.
  public func contains(_ id: BlockID) -> Bool { pending[id] != nil }

  /// Whether `id` waits to be read back only once the disk takes writes.
  public func needsWorkingDisk(_ id: BlockID) -> Bool { pending[id]?.needsWorkingDisk == true }

  /// The blocks due for an attempt at `now`, by key.
  public func due(now: UInt64) -> [BlockID] {
    pending.filter { $0.value.dueAt <= now }.keys.sorted {
      ($0.namespace.name, $0.key.hex) < ($1.namespace.name, $1.key.hex)
    }
  }

  /// When the next block is due; nil when none waits.
  public var nextDue: UInt64? { pending.values.map(\.dueAt).min() }

  /// The outcome of an attempt at `batch` made at `now`: `present` were read back, `disowned`
  /// are no longer this node's to hold (forgotten); the rest are due again on the schedule, or
  /// given up after its last attempt. Returns the blocks read back (each with the owners it
  /// is to be copied to) and how many were given up.
  public mutating func attempted(
    _ batch: [BlockID], present: Set<BlockID>, disowned: Set<BlockID>, now: UInt64
  ) -> (readBack: [(id: BlockID, lacking: Set<HostPort>)], givenUp: Int) {
    var readBack: [(id: BlockID, lacking: Set<HostPort>)] = []
    var givenUp = 0
    for id in batch {
      guard var entry = pending[id] else { continue }
      if present.contains(id) {
        pending[id] = nil
        readBack.append((id, entry.lacking))
        continue
      }
      if disowned.contains(id) {
        pending[id] = nil
        continue
      }
      entry.attempts += 1
      if entry.attempts >= schedule.attemptsMax {
        pending[id] = nil
        givenUp += 1
      } else {
        entry.dueAt = now + schedule.delay(after: entry.attempts)
        pending[id] = entry
      }
    }
    totals.readBack += readBack.count
    totals.notFound += givenUp
    return (readBack, givenUp)
  }

  /// The blocks left out since the last call (for the task's closing log line).
  public mutating func takeLeftOut() -> Int {
    defer { leftOutSinceLog = 0 }
    return leftOutSinceLog
  }
}
