// A node's membership session in etcd: its key under a lease kept alive, a watch over the
// members' prefix, and the member map rebuilt after every change; rides out etcd outages by
// keeping the last map and re-registering when etcd answers again. See docs/cluster-etcd.md.

import Foundation
public import Logging
public import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Registers `value` under `prefix + memberID` with a lease, keeps the lease alive (every ttl/3),
/// watches the prefix, and reports the full member map, the revision each member's key was last
/// written at (etcd's `mod_revision`) and the map's revision after every change.
/// When etcd is unreachable it keeps the last map, reports `.disconnected(reason)`, retries with
/// capped backoff, and on return re-puts its key and resyncs (full range, then watch): with its
/// old lease when that is still alive, else with a new one. While connected it also reads the
/// whole prefix again every `relistIntervalMilliseconds` (60 s by default) and resyncs when that
/// differs from the map its watch built: a watch stream that stays open but stops delivering (a
/// stuck proxy or gateway) leaves the map stale for at most that long (`watchResyncs` counts them).
///
/// All work runs on one thread of the session's own; callbacks are called on it, one at a time.
public final class EtcdSession: Sendable {
  public enum State: Sendable, Hashable {
    case connecting
    case connected
    case disconnected(reason: String)
    case stopped
  }

  public let prefix: String
  public let memberID: String
  public let ttlSeconds: Int64

  private let client: EtcdClient
  private let logger: Logger
  private let onMembers: @Sendable (_ members: [String: [UInt8]], _ written: [String: Int64], _ revision: Int64) -> Void
  private let onState: @Sendable (State) -> Void
  private let clock: any NodeClock
  private let jitter: @Sendable (_ maximum: UInt64) -> UInt64
  private let relistIntervalMilliseconds: UInt64

  private enum Input {
    case events([WatchEvent], revision: Int64, generation: Int)
    case watchEnded(StrataError?, generation: Int)
    case update
  }

  private struct Shared {
    var state = State.connecting
    var lastRevision: Int64 = 0
    var members: [String: [UInt8]] = [:]
    var value: [UInt8]
    var inbox: [Input] = []
    var started = false
    var stopRequested = false
    var deregister = false
    var worker: pthread_t?
    var watchResyncs = 0
  }

  private let shared: Mutex<Shared>
  private let wake = DispatchSemaphore(value: 0)
  private let finished = DispatchSemaphore(value: 0)

  /// Retries and keep-alives follow `SessionSchedule` on `clock`; `jitter(maximum)` draws a
  /// retry's jitter in 0...maximum (the system's random source unless a test passes its own).
  public init(
    client: EtcdClient, prefix: String, memberID: String, value: [UInt8], ttlSeconds: Int64,
    logger: Logger, clock: any NodeClock = SystemClock(),
    jitter: @escaping @Sendable (_ maximum: UInt64) -> UInt64 = { UInt64.random(in: 0...$0) },
    relistIntervalMilliseconds: UInt64 = 60_000,
    onMembers:
      @escaping @Sendable (_ members: [String: [UInt8]], _ written: [String: Int64], _ revision: Int64) -> Void,
    onState: @escaping @Sendable (State) -> Void
  ) {
    precondition(ttlSeconds > 0, "EtcdSession needs a positive TTL")
    precondition(!memberID.isEmpty, "EtcdSession needs a member ID")
    self.client = client
    self.prefix = prefix
    self.memberID = memberID
    self.ttlSeconds = ttlSeconds
    self.logger = logger
    self.onMembers = onMembers
    self.onState = onState
    self.clock = clock
    self.jitter = jitter
    self.relistIntervalMilliseconds = relistIntervalMilliseconds
    shared = Mutex(Shared(value: value))
  }

  /// This member's key in etcd.
  public var key: String { prefix + memberID }

  /// The session's state now.
  public var state: State { shared.withLock { $0.state } }

  /// The etcd revision of the last member map reported.
  public var lastRevision: Int64 { shared.withLock { $0.lastRevision } }

  /// Relists that found the prefix different from the map the watch had built, and resynced.
  public var watchResyncs: Int { shared.withLock { $0.watchResyncs } }

  /// The last member map reported (kept while etcd is unreachable).
  public var members: [String: [UInt8]] { shared.withLock { $0.members } }

  /// Starts the session's thread; returns at once. A second call does nothing.
  public func start() {
    let first = shared.withLock { shared in
      defer { shared.started = true }
      return !shared.started && !shared.stopRequested
    }
    guard first else { return }
    let thread = Thread { [self] in run() }
    thread.name = "etcd-session-\(memberID)"
    thread.start()
  }

  /// Re-puts this member's key with `value` (now, or when etcd answers again).
  public func update(value: [UInt8]) {
    shared.withLock {
      $0.value = value
      $0.inbox.append(.update)
    }
    wake.signal()
  }

  /// Stops the session and waits for its thread (unless called from a callback on it).
  /// `deregister`: delete the key and revoke the lease; false: just stop, the lease lapses
  /// after its TTL and the key goes with it.
  public func stop(deregister: Bool) {
    let (started, onWorker, alreadyStopping) = shared.withLock { shared in
      let stopping = shared.stopRequested
      shared.stopRequested = true
      shared.deregister = shared.deregister || deregister
      let onWorker = shared.worker.map { pthread_equal($0, pthread_self()) != 0 } ?? false
      return (shared.started, onWorker, stopping)
    }
    guard started else {
      if !alreadyStopping { publish(.stopped) }
      return
    }
    wake.signal()
    if !onWorker {
      finished.wait()
      finished.signal()  // passed on: every stop() returns once the thread has finished
    }
  }

  // MARK: The session's thread

  /// What the thread holds between steps; touched by the session's thread only.
  private struct Connection {
    var lease: Int64 = 0
    var leaseTTLSeconds: Int64 = 0
    var members: [String: [UInt8]] = [:]
    /// The revision each member's key was last written at (etcd's mod_revision).
    var written: [String: Int64] = [:]
    var watch: EtcdWatch?
    var generation = 0
    var connected = false
    var schedule: SessionSchedule
  }

  private func run() {
    shared.withLock { $0.worker = pthread_self() }
    var connection = Connection(
      schedule: SessionSchedule(
        ttlSeconds: ttlSeconds, relistIntervalMilliseconds: relistIntervalMilliseconds,
        nowMilliseconds: clock.nowMilliseconds()))
    publish(.connecting)
    while true {
      let (inputs, stopping) = shared.withLock { shared in
        defer { shared.inbox.removeAll() }
        return (shared.inbox, shared.stopRequested)
      }
      if stopping { break }
      for input in inputs { handle(input, &connection) }
      if connection.schedule.isDue(nowMilliseconds: clock.nowMilliseconds()) {
        if connection.connected {
          refreshLease(&connection)
        } else {
          register(&connection)
        }
      }
      if connection.connected, connection.schedule.isRelistDue(nowMilliseconds: clock.nowMilliseconds()) {
        relist(&connection)
      }
      let pending = shared.withLock { !$0.inbox.isEmpty || $0.stopRequested }
      if !pending {
        let wait = connection.schedule.waitMilliseconds(
          nowMilliseconds: clock.nowMilliseconds(), connected: connection.connected)
        _ = wake.wait(timeout: .now() + .milliseconds(Int(clamping: wait)))
      }
    }
    finish(&connection)
  }

  private func handle(_ input: Input, _ connection: inout Connection) {
    switch input {
    case .events(let events, let revision, let generation):
      guard generation == connection.generation, connection.connected else { return }
      var ownKeyDeleted = false
      for event in events where event.key.hasPrefix(prefix) {
        let member = String(event.key.dropFirst(prefix.count))
        switch event.kind {
        case .put:
          connection.members[member] = event.value
          connection.written[member] = event.modRevision
        case .delete:
          connection.members[member] = nil
          connection.written[member] = nil
          if member == memberID { ownKeyDeleted = true }
        }
      }
      report(connection.members, connection.written, revision)
      if ownKeyDeleted {
        // Our lease lapsed (or someone deleted the key): check the lease now and re-register.
        logger.warning("etcd session: own key \(key) was deleted; checking the lease")
        connection.schedule.actNow(nowMilliseconds: clock.nowMilliseconds())
      }
    case .watchEnded(let error, let generation):
      guard generation == connection.generation, connection.connected else { return }
      logger.info("etcd session: watch on \(prefix) ended (\(error?.description ?? "no error")); resyncing")
      do throws(StrataError) {
        try resync(&connection)
      } catch {
        disconnect(&connection, error)
      }
    case .update:
      guard connection.connected else { return }  // register() puts the latest value
      let value = shared.withLock { $0.value }
      do throws(StrataError) {
        try client.put(key, value: value, lease: connection.lease)
      } catch {
        disconnect(&connection, error)
      }
    }
  }

  private func register(_ connection: inout Connection) {
    do throws(StrataError) {
      if connection.lease != 0, try client.keepAlive(lease: connection.lease) == 0 {
        logger.info("etcd session: lease \(connection.lease) expired while away; taking a new one")
        connection.lease = 0
      }
      if connection.lease == 0 {
        let grant = try client.grantLease(ttlSeconds: ttlSeconds)
        connection.lease = grant.id
        connection.leaseTTLSeconds = grant.ttlSeconds
      }
      let value = shared.withLock { $0.value }
      try client.put(key, value: value, lease: connection.lease)
      try resync(&connection)
      connection.connected = true
      connection.schedule.succeeded(
        leaseTTLSeconds: connection.leaseTTLSeconds, nowMilliseconds: clock.nowMilliseconds())
      logger.info("etcd session: \(key) registered with lease \(connection.lease)")
      publish(.connected)
    } catch {
      disconnect(&connection, error)
    }
  }

  private func refreshLease(_ connection: inout Connection) {
    do throws(StrataError) {
      let remaining = try client.keepAlive(lease: connection.lease)
      if remaining == 0 {
        logger.warning("etcd session: lease \(connection.lease) is gone; registering again")
        connection.lease = 0
        connection.connected = false
        register(&connection)
        return
      }
      connection.schedule.succeeded(
        leaseTTLSeconds: connection.leaseTTLSeconds, nowMilliseconds: clock.nowMilliseconds())
    } catch {
      disconnect(&connection, error)
    }
  }

  /// Reads the whole prefix again and compares it with the map the watch built; a difference
  /// resyncs. Events the watch has delivered but this thread not yet applied make the comparison
  /// wait for the next relist; a change the watch is about to deliver resyncs needlessly, which
  /// costs one range and one new watch.
  private func relist(_ connection: inout Connection) {
    connection.schedule.listed(nowMilliseconds: clock.nowMilliseconds())
    do throws(StrataError) {
      let (kvs, _) = try client.range(prefix: prefix)
      guard shared.withLock({ $0.inbox.isEmpty }) else { return }
      let listed = Dictionary(kvs.map { (String($0.key.dropFirst(prefix.count)), $0.value) }) { $1 }
      guard listed != connection.members else { return }
      logger.warning(
        "etcd session: the watch on \(prefix) fell behind (\(listed.count) members listed, \(connection.members.count) seen by the watch); resyncing"
      )
      shared.withLock { $0.watchResyncs += 1 }
      try resync(&connection)
    } catch {
      disconnect(&connection, error)
    }
  }

  /// Reads every member, reports the map, and watches for changes after that read.
  private func resync(_ connection: inout Connection) throws(StrataError) {
    connection.watch?.cancel()
    connection.watch = nil
    connection.generation += 1
    connection.schedule.listed(nowMilliseconds: clock.nowMilliseconds())
    let (kvs, revision) = try client.range(prefix: prefix)
    var members: [String: [UInt8]] = [:]
    var written: [String: Int64] = [:]
    for kv in kvs {
      members[String(kv.key.dropFirst(prefix.count))] = kv.value
      written[String(kv.key.dropFirst(prefix.count))] = kv.modRevision
    }
    connection.members = members
    connection.written = written
    report(members, written, revision)
    let generation = connection.generation
    connection.watch = try client.watch(
      prefix: prefix, startRevision: revision + 1,
      onEvents: { [weak self] events, revision in
        self?.enqueue(.events(events, revision: revision, generation: generation))
      },
      onEnd: { [weak self] error in self?.enqueue(.watchEnded(error, generation: generation)) })
  }

  private func disconnect(_ connection: inout Connection, _ error: StrataError) {
    connection.watch?.cancel()
    connection.watch = nil
    connection.generation += 1
    connection.connected = false
    connection.schedule.failed(nowMilliseconds: clock.nowMilliseconds(), jitter: jitter)
    logger.warning("etcd session: \(key): \(error.description); retrying")
    if case .disconnected = state { return }
    publish(.disconnected(reason: error.description))
  }

  private func finish(_ connection: inout Connection) {
    connection.watch?.cancel()
    connection.watch = nil
    if shared.withLock({ $0.deregister }) && connection.lease != 0 {
      do throws(StrataError) {
        try client.delete(key)
        try client.revoke(lease: connection.lease)
        logger.info("etcd session: \(key) deregistered")
      } catch {
        logger.warning("etcd session: could not deregister \(key): \(error.description)")
      }
    }
    publish(.stopped)
    finished.signal()
  }

  private func enqueue(_ input: Input) {
    shared.withLock { $0.inbox.append(input) }
    wake.signal()
  }

  private func report(_ members: [String: [UInt8]], _ written: [String: Int64], _ revision: Int64) {
    shared.withLock {
      $0.members = members
      $0.lastRevision = revision
    }
    onMembers(members, written, revision)
  }

  private func publish(_ state: State) {
    shared.withLock { $0.state = state }
    onState(state)
  }
}
