// When a block that a node gives up counts as placed, and what a drain does after each attempt.
// A drain hands every block to the ring without the draining node, and a repair pass offers the
// blocks its node holds but no longer owns to their owners: neither may leave a block with fewer
// copies than the ring promises. Pure values: holders counted in, time passed in, typed verdicts.

/// Where one block stands after it was offered to its owners in a target ring.
public enum BlockPlacement: Sendable, Hashable {
  /// Its owners hold the copies the ring promises it: the giving node may let its copy go.
  case placed
  /// `holders` of the `required` copies are on its owners: the giving node keeps its copy and
  /// tries again (an owner is down or unreachable, or refused it).
  case short(holders: Int, required: Int)
  /// The target ring gives it fewer owners than the copies it must keep (a drain that would
  /// shrink the cluster below R members): never placed while the ring stays so small.
  case tooFewOwners(owners: Int, required: Int)

  /// `owners`: the block's owners in the target ring, the giving node not among them; `holders`:
  /// how many of them hold it now (they took the copy, or already had it); `required`: the copies
  /// they must hold between them. A drain requires as many as the ring promised before it left,
  /// min(R, active members with it): every owner, and never fewer copies than there were. A repair
  /// pass requires every owner but itself. An owner that is down does not hold the block, so a
  /// block one of whose owners is down is not placed until the owner is back or the ring has
  /// replaced it.
  public init(owners: Int, holders: Int, required: Int) {
    precondition(owners >= 0 && holders >= 0 && required >= 0, "counts are never negative")
    if owners < required {
      self = .tooFewOwners(owners: owners, required: required)
    } else if holders >= required {
      self = .placed
    } else {
      self = .short(holders: holders, required: required)
    }
  }

  public var isPlaced: Bool { self == .placed }
}

/// A drain's course over its attempts. After each attempt: leave (every block placed), try again
/// later (meanwhile a down owner comes back, or the ring replaces it once its lease lapses: each
/// attempt hands off against the ring of its time), or, after `attemptsMax`, stay up and report the
/// blocks not placed (`strata drain` exits 1; sending the drain again starts a new course).
public struct DrainAttempts: Sendable, Hashable {
  public struct Limits: Sendable, Hashable {
    /// Attempts in all, the first included.
    public var attemptsMax: Int
    /// The wait before the second attempt; each later wait doubles, up to `retryDelayMaxMilliseconds`.
    public var retryDelayMilliseconds: UInt64
    public var retryDelayMaxMilliseconds: UInt64

    public init(attemptsMax: Int, retryDelayMilliseconds: UInt64, retryDelayMaxMilliseconds: UInt64) {
      precondition(attemptsMax >= 1, "a drain makes at least one attempt")
      precondition(retryDelayMilliseconds <= retryDelayMaxMilliseconds, "the first wait is within the cap")
      self.attemptsMax = attemptsMax
      self.retryDelayMilliseconds = retryDelayMilliseconds
      self.retryDelayMaxMilliseconds = retryDelayMaxMilliseconds
    }

    /// 6 attempts over 31 s (waits of 1, 2, 4, 8 and 16 s): longer than the default etcd lease
    /// TTL (10 s), so an owner that died before the drain has left the ring by the last attempt.
    public static let standard = Limits(
      attemptsMax: 6, retryDelayMilliseconds: 1_000, retryDelayMaxMilliseconds: 16_000)
  }

  public enum Next: Sendable, Hashable {
    /// Every block is placed: deregister and leave.
    case leave
    /// Some blocks are not placed: attempt again at this time.
    case retry(atMilliseconds: UInt64)
    /// The last attempt left `unplaced` blocks short of their owners: stay up, draining, and report them.
    case stayUp(unplaced: Int)
  }

  public let limits: Limits
  /// Attempts finished so far.
  public private(set) var attempts = 0

  public init(limits: Limits = .standard) { self.limits = limits }

  /// Records an attempt that ended at `nowMilliseconds` with `unplaced` blocks not placed
  /// (`BlockPlacement` other than `.placed`); says what comes next. `ringChanged`: the node adopted
  /// a ring during the attempt, which may give blocks owners the attempt did not hand them to (a
  /// member joined, while the owners it did hand them to had begun their own repair passes, which
  /// do not cover blocks that arrive after they start): a placed attempt is then made again at
  /// once, against the new ring, while attempts remain.
  public mutating func finished(unplaced: Int, nowMilliseconds: UInt64, ringChanged: Bool = false) -> Next {
    precondition(unplaced >= 0, "a count of blocks")
    attempts += 1
    if unplaced == 0 {
      return ringChanged && attempts < limits.attemptsMax ? .retry(atMilliseconds: nowMilliseconds) : .leave
    }
    guard attempts < limits.attemptsMax else { return .stayUp(unplaced: unplaced) }
    var wait = limits.retryDelayMilliseconds
    let cap = limits.retryDelayMaxMilliseconds
    for _ in 1..<attempts where wait < cap { wait = wait > cap / 2 ? cap : wait * 2 }
    return .retry(atMilliseconds: nowMilliseconds + wait)
  }
}

/// How many blocks a repair pass offers that its node holds but does not own (after two quick ring
/// changes only former owners may hold a block), and whether another pass should follow.
public enum NotOwnedOffers {
  /// At most this many per pass, so a pass over a node full of blocks it no longer owns stays short
  /// (a LOOKUP per 32 blocks per owner); a pass that released some and left more queues another.
  public static let perPassMax = 4_096

  /// Whether another pass should follow: the bound cut this pass short and the pass made progress
  /// (released blocks), so the blocks after the bound are reached without a ring change; a pass that
  /// released nothing (owners down) leaves the rest to the next ring change or retry.
  public static func passAgain(held: Int, offered: Int, released: Int) -> Bool {
    held > offered && released > 0
  }
}
