// Routing in a cluster: the client holds the ring (fetched from any node with a RING request),
// sends each key to its owners — one batch per owner, all owners in parallel — and moves a key to
// its next owner when a node fails, answers "absent" (askReplicasOnMiss), or says the client's
// ring is stale (then the ring is fetched again; bounded).

public import StrataCore
public import StrataPlacement
import StrataWire
import Synchronization

/// What a cluster client knows: its ring, the nodes it found down, its connection pools, and the
/// node leases behind each lease id it handed out.
struct RoutingState {
  var channels: [HostPort: NodeChannel] = [:]
  var ring: Ring?
  /// Data-plane address of each ring member, by member id.
  var addresses: [String: HostPort] = [:]
  /// Data-plane address of each ring member, by position in `ring.members` (nil: unparsable).
  var memberAddresses: [HostPort?] = []
  /// Nodes that failed a call, skipped (tried last) until the instant given.
  var down: [HostPort: ContinuousClock.Instant] = [:]
  /// Calls each node failed in a row (cleared by one it answers): each doubles how long it is skipped.
  var failuresInARow: [HostPort: Int] = [:]
  var leaseGroups: [UInt64: [HostPort: UInt64]] = [:]
  var nextLeaseGroup: UInt64 = 1
  /// Recent per-owner LOOKUP latencies (microseconds), for the hedge delay.
  var lookupLatencies = LatencyWindow(capacity: 256)

  /// The most a node's skip period doubles: `downMilliseconds` × 32 at most.
  static let downDoublingsMax = 5

  /// Marks `address` down after a failed call: skipped for `base`, doubled for each failure in a
  /// row before this one (up to `downDoublingsMax` times). A node that hangs (every call to it runs
  /// into its timeout) then costs a call's timeout ever more rarely, not once a `base`. Failures
  /// while it is marked down already (calls that were in flight together) count as one.
  mutating func noteFailure(of address: HostPort, now: ContinuousClock.Instant, base: Duration) {
    if let until = down[address], until > now { return }
    let inARow = failuresInARow[address, default: 0] + 1
    failuresInARow[address] = inARow
    down[address] = now + base * (1 << min(inARow - 1, Self.downDoublingsMax))
  }

  /// A call `address` answered: it is no longer skipped, and its next failure counts from one.
  mutating func noteAnswer(from address: HostPort) {
    guard failuresInARow[address] != nil || down[address] != nil else { return }
    failuresInARow[address] = nil
    down[address] = nil
  }

  /// Drops the pools and down marks of addresses outside `kept` (the ring's members and the
  /// seeds, a bounded set); the pools dropped.
  mutating func forgetAddresses(keeping kept: Set<HostPort>) -> [NodeChannel] {
    down = down.filter { kept.contains($0.key) }
    failuresInARow = failuresInARow.filter { kept.contains($0.key) }
    let departed = channels.filter { !kept.contains($0.key) }
    for address in departed.keys { channels[address] = nil }
    return departed.keys.sorted { $0.description < $1.description }.map { departed[$0]! }
  }
}

/// The last `capacity` latencies and their 99th percentile.
struct LatencyWindow {
  let capacity: Int
  private var samples: [Double] = []
  private var next = 0

  init(capacity: Int) { self.capacity = capacity }

  var count: Int { samples.count }

  mutating func record(_ microseconds: Double) {
    if samples.count < capacity {
      samples.append(microseconds)
    } else {
      samples[next] = microseconds
      next = (next + 1) % capacity
    }
  }

  var p99: Double {
    guard !samples.isEmpty else { return 0 }
    let sorted = samples.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
  }
}

extension StrataClient {
  /// How often a request is re-routed after a node said the client's ring is stale.
  static let staleRetriesMax = 3
  /// The most cluster lease ids kept for GETs to come.
  static let leaseGroupsMax = 4096

  /// The ring this client routes by (fetched on first use, and again once a node reports a newer epoch).
  public func currentRing() async throws(StrataError) -> Ring {
    let (ring, latest) = routing.withLock { ($0.ring, epochs.latest) }
    if let ring, latest <= ring.epoch { return ring }
    return try await refreshRing()
  }

  /// Fetches the ring from the seeds (then the members it knows), keeping the newest.
  @discardableResult
  public func refreshRing() async throws(StrataError) -> Ring {
    let answer = try await ringCall(RingCall.ring)
    let fetched = try Ring(jsonBytes: answer)
    let (ring, departed) = routing.withLock { state -> (Ring, [NodeChannel]) in
      if let known = state.ring, known.epoch > fetched.epoch { return (known, []) }
      state.ring = fetched
      state.addresses = [:]
      state.memberAddresses = fetched.members.map { try? HostPort(parsing: $0.address) }
      for (member, address) in zip(fetched.members, state.memberAddresses) {
        if let address { state.addresses[member.id] = address }
      }
      return (fetched, state.forgetAddresses(keeping: Set(configuration.seeds + state.addresses.values)))
    }
    // Pools of nodes that left the ring: closed once the calls already queued on them are over
    // (a long-lived client of a cluster whose members come and go at new addresses would otherwise
    // keep a pool, and its sockets, for every address it ever used).
    for channel in departed {
      channel.closeWhenIdle()
      transports.forget(channel.address)
    }
    return ring
  }

  /// Closes every connection once the calls already queued on it are over (none is interrupted,
  /// unlike `close`); a call made afterwards connects again.
  public func closeWhenIdle() {
    let channels = routing.withLock { state -> [NodeChannel] in
      defer { state.channels.removeAll() }
      return Array(state.channels.values)
    }
    for channel in channels { channel.closeWhenIdle() }
  }

  /// The nodes this client holds a connection pool for, in address order.
  public var nodeAddresses: [HostPort] {
    routing.withLock { $0.channels.keys.sorted { $0.description < $1.description } }
  }

  /// Seeds first, then the ring's members, each once; nodes found down go last.
  func seedOrder() -> [HostPort] {
    routing.withLock { state in
      var order: [HostPort] = []
      for address in configuration.seeds + (state.ring?.activeMembers.compactMap { state.addresses[$0.id] } ?? [])
      where !order.contains(address) {
        order.append(address)
      }
      let now = ContinuousClock.now
      return order.filter { (state.down[$0] ?? now) <= now } + order.filter { (state.down[$0] ?? now) > now }
    }
  }

  func markDown(_ address: HostPort) {
    let now = ContinuousClock.now
    let base = Duration.milliseconds(Int64(configuration.downMilliseconds))
    routing.withLock { $0.noteFailure(of: address, now: now, base: base) }
  }

  func markAnswered(_ address: HostPort) {
    routing.withLock { $0.noteAnswer(from: address) }
  }

  /// The first owner of `key` not yet `tried`: healthy nodes in ring order, then those found down.
  private func nextOwner(
    _ key: BlockKey, tried: [HostPort], ring: Ring, state: RoutingState, now: ContinuousClock.Instant
  ) -> HostPort? {
    var downOwner: HostPort?
    for index in ring.ownerIndices(of: key) {
      guard index < state.memberAddresses.count, let address = state.memberAddresses[index],
        !tried.contains(address)
      else { continue }
      if state.down.isEmpty || (state.down[address] ?? now) <= now { return address }
      if downOwner == nil { downOwner = address }
    }
    return downOwner
  }

  /// Sends each index's key to its next untried owner, one call per owner, all in parallel, until
  /// every index has a final answer or no owner is left. `call` gets an owner and the indices it
  /// takes; `retry` says which answers should go on to the next owner.
  private func routed<Answer: Sendable>(
    keys: [BlockKey],
    retry: @escaping @Sendable (Answer) -> Bool,
    call: @escaping @Sendable (HostPort, [Int], UInt64) async throws(StrataError) -> [Answer]
  ) async throws(StrataError) -> [Answer?] {
    // Each owner's call runs as a child task that returns a Result (no typed throws across the
    // task boundary).
    let attempt: @Sendable (HostPort, [Int], UInt64) async -> Result<[Answer], StrataError> = { owner, indices, epoch in
      do throws(StrataError) {
        return .success(try await call(owner, indices, epoch))
      } catch {
        return .failure(error)
      }
    }
    var answers = [Answer?](repeating: nil, count: keys.count)
    var tried = [[HostPort]](repeating: [], count: keys.count)
    var pending = Array(keys.indices)
    var staleRetries = 0
    var ring = try await currentRing()
    while !pending.isEmpty {
      let now = ContinuousClock.now
      var groups: [HostPort: [Int]] = [:]
      var order: [HostPort] = []
      routing.withLock { state in
        for index in pending {
          guard let owner = nextOwner(keys[index], tried: tried[index], ring: ring, state: state, now: now) else {
            continue
          }
          if groups[owner] == nil { order.append(owner) }
          groups[owner, default: []].append(index)
        }
      }
      if groups.isEmpty { break }
      let epoch = ring.epoch
      // One child task per owner: a cancelled call cancels them all.
      let outcomes = await withTaskGroup(of: (HostPort, Result<[Answer], StrataError>).self) { group in
        for owner in order {
          let indices = groups[owner]!
          group.addTask { (owner, await attempt(owner, indices, epoch)) }
        }
        var outcomes: [HostPort: Result<[Answer], StrataError>] = [:]
        for await (owner, outcome) in group { outcomes[owner] = outcome }
        return outcomes
      }
      var next: [Int] = []
      var stale = false
      for owner in order {
        let indices = groups[owner]!
        for index in indices { tried[index].append(owner) }
        switch outcomes[owner]! {
        case .success(let results):
          markAnswered(owner)
          for (index, answer) in zip(indices, results) {
            answers[index] = answer
            if retry(answer) { next.append(index) }
          }
        case .failure(let error) where error.isTransportFailure:
          markDown(owner)
          next += indices
        case .failure(let error) where error.code == .ioError:
          // The owner's disk failed or did not answer in time (its connection is sound): these
          // keys go to their next owner; its other keys (RAM-resident ones) are still asked there.
          next += indices
        case .failure(let error) where error.code == .staleEpoch:
          stale = true
          for index in indices { tried[index].removeLast() }
          next += indices
        case .failure(let error):
          throw error
        }
      }
      if stale {
        staleRetries += 1
        guard staleRetries <= Self.staleRetriesMax else {
          throw StrataError(
            .staleEpoch, "the ring kept changing: \(Self.staleRetriesMax) re-routes were not enough; retry later")
        }
        ring = try await refreshRing()
      }
      pending = next.sorted()
    }
    return answers
  }

  func routedLookup(_ keys: [BlockKey], leaseMilliseconds: UInt32, sizes: Bool) async throws(StrataError)
    -> LookupResult
  {
    struct Answer: Sendable {
      var tier: BlockTier
      var size: UInt64
    }
    let leases = Mutex<[HostPort: UInt64]>([:])
    let askAgain = configuration.askReplicasOnMiss
    let retry: @Sendable (Answer) -> Bool = { askAgain && $0.tier == .absent }
    let hedge = configuration.hedgeLookups && leaseMilliseconds == 0 && !sizes
    let answers = try await routed(keys: keys, retry: retry) {
      owner, indices, epoch throws(StrataError) -> [Answer] in
      if hedge {
        return try await self.hedgedLookup(indices.map { keys[$0] }, at: owner, epoch: epoch).map {
          Answer(tier: $0, size: 0)
        }
      }
      let response = try await self.channel(owner).lookup(
        indices.map { keys[$0] }, leaseMilliseconds: leaseMilliseconds, wantsSizes: sizes, ringEpoch: epoch
      ).response
      if response.leaseID != 0 { leases.withLock { $0[owner] = response.leaseID } }
      let lengths = response.sizes ?? Array(repeating: 0, count: response.tiers.count)
      return zip(response.tiers, lengths).map { Answer(tier: $0, size: $1) }
    }
    let tiers = answers.map { $0?.tier ?? .absent }
    let lengths = sizes ? answers.map { $0?.size ?? 0 } : []
    var leaseID: UInt64 = 0
    let nodeLeases = leases.withLock { $0 }
    if !nodeLeases.isEmpty {
      leaseID = routing.withLock { state in
        defer { state.nextLeaseGroup += 1 }
        // Lease ids that no GET ever named are forgotten, oldest first (the nodes' leases expire
        // on their own): the table stays bounded.
        if state.leaseGroups.count >= Self.leaseGroupsMax, let oldest = state.leaseGroups.keys.min() {
          state.leaseGroups[oldest] = nil
        }
        state.leaseGroups[state.nextLeaseGroup] = nodeLeases
        return state.nextLeaseGroup
      }
    }
    return LookupResult(
      tiers: tiers, leadingRun: tiers.firstIndex(of: .absent) ?? tiers.count, leaseID: leaseID, sizes: lengths)
  }

  /// The delay after which a LOOKUP also goes to the keys' next owners: twice the p99 of recent
  /// LOOKUP latencies (at least `hedgeDelayMinimumMilliseconds`; 50 ms until 20 are known).
  var hedgeDelay: Duration {
    let (count, p99) = routing.withLock { ($0.lookupLatencies.count, $0.lookupLatencies.p99) }
    let minimum = Double(configuration.hedgeDelayMinimumMilliseconds) * 1000
    let microseconds = count < 20 ? max(minimum, 50_000) : max(minimum, 2 * p99)
    return .microseconds(Int64(microseconds))
  }

  /// A LOOKUP of `keys` at `owner`, hedged: without an answer after `hedgeDelay`, the keys also go
  /// to their next owners, and a key one of them holds is answered from there. An "absent" from a
  /// next owner is not final (it may just lack a copy yet): for those keys, and keys with no other
  /// owner, the owner's own answer is awaited. LOOKUP writes nothing into the caller's memory, so
  /// a losing request already sent may finish in the background (not awaited: that would wait for
  /// the slow node the hedge avoids); the rest are cancelled when the call returns or is
  /// cancelled, and send nothing. GET is never hedged (two transfers into the same destination
  /// could land after `get` returned).
  func hedgedLookup(_ keys: [BlockKey], at owner: HostPort, epoch: UInt64) async throws(StrataError) -> [BlockTier] {
    enum Event: Sendable {
      case owner(Result<[BlockTier], StrataError>)
      case timer
      case alternate([Int], Result<[BlockTier], StrataError>)
    }
    let (events, sink) = AsyncStream.makeStream(of: Event.self)
    let attempt: @Sendable (HostPort, [BlockKey]) async -> Result<[BlockTier], StrataError> = { node, keys in
      do throws(StrataError) {
        return .success(
          try await self.channel(node).lookup(keys, leaseMilliseconds: 0, ringEpoch: epoch).response.tiers)
      } catch {
        return .failure(error)
      }
    }
    let started = ContinuousClock.now
    var tasks: [Task<Void, Never>] = []
    defer {
      sink.finish()
      for task in tasks { task.cancel() }
    }
    tasks.append(
      Task {
        let result = await attempt(owner, keys)
        if case .success = result {
          let elapsed = ContinuousClock.now - started
          routing.withLock { $0.lookupLatencies.record(elapsed.inSeconds * 1e6) }
        }
        sink.yield(.owner(result))
      })
    let delay = hedgeDelay
    tasks.append(
      Task {
        guard (try? await Task.sleep(for: delay)) != nil else { return }
        sink.yield(.timer)
      })
    var answers = [BlockTier?](repeating: nil, count: keys.count)
    var unanswered = keys.count
    var alternatesPending = 0
    var ownerFailure: StrataError?
    for await event in events {
      switch event {
      case .owner(.success(let tiers)):
        return tiers
      case .owner(.failure(let error)):
        guard alternatesPending > 0 else { throw error }
        ownerFailure = error
      case .timer:
        let groups = alternates(keys, besides: owner)
        alternatesPending = groups.count
        for (node, positions) in groups {
          tasks.append(Task { sink.yield(.alternate(positions, await attempt(node, positions.map { keys[$0] }))) })
        }
      case .alternate(let positions, let result):
        alternatesPending -= 1
        if case .success(let tiers) = result {
          for (position, tier) in zip(positions, tiers) where tier != .absent && answers[position] == nil {
            answers[position] = tier
            unanswered -= 1
          }
        }
        if unanswered == 0 { return answers.map { $0! } }
        if alternatesPending == 0 && ownerFailure != nil {
          // The owner failed: what the others found stands, the rest is absent (the routing
          // asks further owners for those).
          return answers.map { $0 ?? .absent }
        }
      }
    }
    // The stream ends early only when this call is cancelled.
    throw StrataError(.cancelled, "hedged LOOKUP of \(keys.count) key(s) at \(owner) was cancelled")
  }

  /// For each position of `keys`, the first other owner of its key (healthy first), grouped.
  private func alternates(_ keys: [BlockKey], besides owner: HostPort) -> [HostPort: [Int]] {
    routing.withLock { state in
      guard let ring = state.ring else { return [:] }
      let now = ContinuousClock.now
      var groups: [HostPort: [Int]] = [:]
      for (position, key) in keys.enumerated() {
        guard let next = nextOwner(key, tried: [owner], ring: ring, state: state, now: now) else { continue }
        groups[next, default: []].append(position)
      }
      return groups
    }
  }

  func routedGet(_ items: [GetItem], leaseID: UInt64) async throws(StrataError) -> [GetResult] {
    let nodeLeases = Mutex(routing.withLock { $0.leaseGroups.removeValue(forKey: leaseID) } ?? [:])
    let askAgain = configuration.askReplicasOnMiss
    let retry: @Sendable (GetResult) -> Bool = { result in
      switch result {
      case .missing: askAgain
      case .corrupt: true
      default: false
      }
    }
    let answers = try await routed(keys: items.map(\.key), retry: retry) { owner, indices, epoch throws(StrataError) in
      let lease = nodeLeases.withLock { $0.removeValue(forKey: owner) } ?? 0
      return try await self.channel(owner).get(indices.map { items[$0] }, leaseID: lease, ringEpoch: epoch)
    }
    return answers.map { $0 ?? .missing }
  }

  func routedPut(_ items: [PutItem], writeQuorum: UInt8) async throws(StrataError) -> [PutOutcome] {
    let never: @Sendable (PutOutcome) -> Bool = { _ in false }
    // A missed quorum is final (not retried at the next owner, which would miss it the same way).
    let answers = try await routed(keys: items.map(\.key), retry: never) {
      owner, indices, epoch throws(StrataError) in
      try await self.channel(owner).put(indices.map { items[$0] }, ringEpoch: epoch, writeQuorum: writeQuorum)
    }
    if let unplaced = answers.firstIndex(where: { $0 == nil }) {
      throw StrataError(
        .unavailable, "no owner of key \(items[unplaced].key.hex.prefix(16))… could be reached; nothing was lost")
    }
    return answers.map { $0! }
  }

  /// Deletes from every owner of each key; true where any owner held the block.
  func routedDelete(_ keys: [BlockKey]) async throws(StrataError) -> [Bool] {
    let ring = try await currentRing()
    var removed = [Bool](repeating: false, count: keys.count)
    var reached = [Bool](repeating: false, count: keys.count)
    var byOwner: [HostPort: [Int]] = [:]
    routing.withLock { state in
      for (index, key) in keys.enumerated() {
        for member in ring.owners(of: key) {
          if let address = state.addresses[member.id] { byOwner[address, default: []].append(index) }
        }
      }
    }
    for (owner, indices) in byOwner {
      do {
        let answers = try await channel(owner).delete(indices.map { keys[$0] })
        for (index, answer) in zip(indices, answers) {
          removed[index] = removed[index] || answer
          reached[index] = true
        }
      } catch  where error.isTransportFailure {
        markDown(owner)
      }
    }
    if let unreached = reached.firstIndex(of: false) {
      throw StrataError(.unavailable, "no owner of key \(keys[unreached].hex.prefix(16))… could be reached")
    }
    return removed
  }
}
