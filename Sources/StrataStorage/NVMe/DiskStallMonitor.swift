// Disk operations that do not return. A disk that stops answering (a failing drive, a lost path to
// network storage) fails nothing: its reads and writes just never come back, the threads that made
// them wait in the kernel, and the node's other signals (errors, checksums) stay quiet. Every
// node's devices report each operation's start and end here (ReportingBlockDevice); a check every
// few seconds names each one in flight longer than the stall threshold in a warning line (once),
// and says when it comes back. The metrics show the stalled count and the oldest one's age.

public import Logging
public import StrataCore
import Synchronization

/// One read, write or sync on a device.
public struct DiskOperation: Sendable, Hashable {
  public enum Kind: String, Sendable, Hashable {
    case read, write, sync
  }

  public var kind: Kind
  /// The device's file.
  public var path: String
  public var offset: Int?
  public var bytes: Int?

  public init(_ kind: Kind, path: String, offset: Int? = nil, bytes: Int? = nil) {
    self.kind = kind
    self.path = path
    self.offset = offset
    self.bytes = bytes
  }
}

/// The disk operations in flight and when each began: a pure value, time passed in. An operation
/// counts as stalled once it has been in flight for `stallMilliseconds`; `newlyStalled` names
/// each one once, and `end` says whether the one ending had been named.
public struct DiskOperationWatch: Sendable {
  public struct Stalled: Sendable, Hashable {
    public var operation: DiskOperation
    public var milliseconds: UInt64
  }

  private struct InFlight: Sendable {
    var operation: DiskOperation
    var began: UInt64
    var named = false
  }

  public let stallMilliseconds: UInt64
  private var inFlight: [UInt64: InFlight] = [:]
  private var nextToken: UInt64 = 0

  public init(stallMilliseconds: UInt64) { self.stallMilliseconds = stallMilliseconds }

  /// Operations in flight now (at most one per thread doing disk I/O).
  public var count: Int { inFlight.count }

  /// An operation begins at `now`; pass the token to `end`.
  public mutating func begin(_ operation: DiskOperation, now: UInt64) -> UInt64 {
    defer { nextToken &+= 1 }
    inFlight[nextToken] = InFlight(operation: operation, began: now)
    return nextToken
  }

  /// The operation of `token` ends at `now`: returned, with how long it took, when it had been
  /// named stalled (its return is worth a line too).
  public mutating func end(_ token: UInt64, now: UInt64) -> Stalled? {
    guard let ended = inFlight.removeValue(forKey: token), ended.named else { return nil }
    return Stalled(operation: ended.operation, milliseconds: now.subtractingSaturating(ended.began))
  }

  /// The operations that have been in flight `stallMilliseconds` or longer at `now` and were not
  /// named before, oldest first; each is named once.
  public mutating func newlyStalled(now: UInt64) -> [Stalled] {
    var stalled: [(token: UInt64, began: UInt64)] = []
    for (token, entry) in inFlight where !entry.named && now.subtractingSaturating(entry.began) >= stallMilliseconds {
      inFlight[token]?.named = true
      stalled.append((token, entry.began))
    }
    return stalled.sorted { ($0.began, $0.token) < ($1.began, $1.token) }.map {
      Stalled(operation: inFlight[$0.token]!.operation, milliseconds: now.subtractingSaturating($0.began))
    }
  }

  /// How many operations have been in flight `stallMilliseconds` or longer at `now`.
  public func stalledCount(now: UInt64) -> Int {
    inFlight.values.count { now.subtractingSaturating($0.began) >= stallMilliseconds }
  }

  /// How long the oldest operation in flight has been, 0 when none is.
  public func oldestMilliseconds(now: UInt64) -> UInt64 {
    inFlight.values.map { now.subtractingSaturating($0.began) }.max() ?? 0
  }
}

/// The node's disk operations in flight, shared by all its devices, with a check that logs the
/// stalled ones. After `start()` it checks every `checkIntervalMilliseconds` on the node's clock,
/// until it is released (the checking task does not keep it alive).
public final class DiskStallMonitor: Sendable {
  /// A disk operation takes milliseconds; one that has not returned for 30 seconds is on a disk
  /// that stopped answering.
  public static let stallMilliseconds: UInt64 = 30_000
  public static let checkIntervalMilliseconds: UInt64 = 5_000

  private let watch: Mutex<DiskOperationWatch>
  private let clock: any NodeClock
  private let logger: Logger
  private let checking = Mutex<Task<Void, Never>?>(nil)

  public init(clock: any NodeClock, logger: Logger, stallMilliseconds: UInt64 = DiskStallMonitor.stallMilliseconds) {
    watch = Mutex(DiskOperationWatch(stallMilliseconds: stallMilliseconds))
    self.clock = clock
    self.logger = logger
  }

  deinit { checking.withLock { $0?.cancel() } }

  /// Runs `body` as `operation`, in flight meanwhile (a device wrapper's call).
  public func watching<Result>(
    _ operation: DiskOperation, _ body: () throws(StrataError) -> Result
  ) throws(StrataError) -> Result {
    let token = watch.withLock { $0.begin(operation, now: clock.nowMilliseconds()) }
    defer {
      if let returned = watch.withLock({ $0.end(token, now: clock.nowMilliseconds()) }) {
        logger.warning(
          "storage: a stalled disk \(returned.operation.kind.rawValue) returned after \(Self.seconds(returned.milliseconds)) s",
          metadata: Self.metadata(returned))
      }
    }
    return try body()
  }

  /// Logs each operation newly stalled. Returns how many are stalled now.
  @discardableResult
  public func check() -> Int {
    let now = clock.nowMilliseconds()
    let (stalled, count) = watch.withLock { ($0.newlyStalled(now: now), $0.stalledCount(now: now)) }
    for operation in stalled {
      logger.warning(
        "storage: a disk \(operation.operation.kind.rawValue) has not returned for \(Self.seconds(operation.milliseconds)) s: the disk may have stopped answering; the threads waiting on it serve nothing else",
        metadata: Self.metadata(operation))
    }
    return count
  }

  /// Checks every `checkIntervalMilliseconds` from now on.
  public func start() {
    let clock = self.clock
    let task = Task { [weak self] in
      while !Task.isCancelled {
        await clock.sleep(milliseconds: Self.checkIntervalMilliseconds)
        guard !Task.isCancelled, let self else { return }
        self.check()
      }
    }
    checking.withLock { $0 = task }
  }

  /// Operations in flight for the stall threshold or longer, and the oldest one's age.
  public var stalls: (stalled: Int, oldestMilliseconds: UInt64) {
    let now = clock.nowMilliseconds()
    return watch.withLock { ($0.stalledCount(now: now), $0.oldestMilliseconds(now: now)) }
  }

  private static func seconds(_ milliseconds: UInt64) -> UInt64 { milliseconds / 1000 }

  private static func metadata(_ stalled: DiskOperationWatch.Stalled) -> Logger.Metadata {
    var metadata: Logger.Metadata = [
      "operation": "\(stalled.operation.kind.rawValue)", "path": "\(stalled.operation.path)",
      "milliseconds": "\(stalled.milliseconds)",
    ]
    if let offset = stalled.operation.offset { metadata["offset"] = "\(offset)" }
    if let bytes = stalled.operation.bytes { metadata["bytes"] = "\(bytes)" }
    return metadata
  }
}
