// The calls to one node: a small pool of connections, each request on the next connection,
// transport failures retried (every call is idempotent), large batches split and sent in parallel.
// A node keeps a lease with the connection that asked for it, so a LOOKUP that takes a lease and
// the GET that names it go over the same connection.
// StrataClient routes to one channel (a single node) or to one channel per ring member.

import StrataCore
import StrataWire
import Synchronization

final class NodeChannel: Sendable {
  let address: HostPort
  private let configuration: StrataClient.Configuration
  private let connections: [ClientConnection]
  private let next = Mutex(0)
  /// The connection (index) each lease was granted on, until a GET names it; the oldest entries go
  /// once `leasesRememberedMax` are kept (their leases expire on the node).
  private let leaseConnections = Mutex(LeaseConnections())
  static let leasesRememberedMax = 4096

  private let transports: ClientTransports
  private let nodeLimits: NodeLimits

  init(
    address: HostPort, configuration: StrataClient.Configuration, epochs: EpochTracker, transports: ClientTransports
  ) {
    self.address = address
    self.configuration = configuration
    self.transports = transports
    let nodeLimits = NodeLimits()
    self.nodeLimits = nodeLimits
    connections = (0..<max(1, configuration.connections)).map {
      ClientConnection(
        address: address, configuration: configuration, index: $0, epochs: epochs, transports: transports,
        nodeLimits: nodeLimits)
    }
  }

  func connect() async throws(StrataError) -> Namespace {
    var namespace = Namespace.embeddedDefault
    for connection in connections {
      namespace = try await connection.perform { connection throws(StrataError) in connection.namespace! }
    }
    return namespace
  }

  func close() {
    for connection in connections { connection.close() }
  }

  /// Closes each connection after the calls already queued on it (none is interrupted).
  func closeWhenIdle() {
    for connection in connections { connection.closeWhenIdle() }
  }

  // MARK: Calls (one node; `ringEpoch` is the caller's ring epoch, 0 outside a cluster)

  func lookup(
    _ keys: [BlockKey], leaseMilliseconds: UInt32, wantsSizes: Bool = false, ringEpoch: UInt64,
    deadline: Deadline = .never
  ) async throws(StrataError) -> (response: LookupResponse, ringEpoch: UInt64) {
    let request = LookupRequest(keys: keys, leaseMilliseconds: leaseMilliseconds, wantsSizes: wantsSizes)
    let pinned = leaseMilliseconds > 0 ? nextIndex() : nil
    let (response, epoch) = try await call(on: pinned, deadline: deadline) { connection throws(StrataError) in
      let (header, message) = try connection.exchange(
        request.wireMessage, payload: [], ringEpoch: ringEpoch, deadline: deadline
      ) {
        _, _ throws(StrataError) in
      }
      guard case .lookupResponse(let response) = message, response.tiers.count == keys.count,
        !wantsSizes || response.sizes != nil
      else {
        throw unexpected(message)
      }
      return (response, header.ringEpoch)
    }
    if let pinned, response.leaseID != 0 {
      leaseConnections.withLock { $0.remember(response.leaseID, on: pinned, limit: Self.leasesRememberedMax) }
    }
    return (response, epoch)
  }

  func get(_ items: [StrataClient.GetItem], leaseID: UInt64, ringEpoch: UInt64, deadline: Deadline = .never)
    async throws(StrataError) -> [StrataClient.GetResult]
  {
    let parts = try await split(items, deadline: deadline, bytes: { $0.length.map(Int.init) ?? $0.capacity })
    let pinned = leaseID == 0 ? nil : leaseConnections.withLock { $0.take(leaseID) }
    if parts.count == 1 {
      return try await getBatch(items, leaseID: leaseID, ringEpoch: ringEpoch, on: pinned, deadline: deadline)
    }
    guard leaseID != 0 else {
      return try await inParallel(parts) { part throws(StrataError) in
        try await self.getBatch(part, leaseID: 0, ringEpoch: ringEpoch, on: nil, deadline: deadline)
      }
    }
    // The GET that names a lease releases it: the other parts go first (in parallel, still
    // pinned), then the last part names it on the connection that holds it.
    let head = try await inParallel(Array(parts.dropLast())) { part throws(StrataError) in
      try await self.getBatch(part, leaseID: 0, ringEpoch: ringEpoch, on: nil, deadline: deadline)
    }
    return head
      + (try await getBatch(
        parts[parts.count - 1], leaseID: leaseID, ringEpoch: ringEpoch, on: pinned, deadline: deadline))
  }

  func put(
    _ items: [StrataClient.PutItem], ringEpoch: UInt64, writeQuorum: UInt8 = 0, deadline: Deadline = .never
  ) async throws(StrataError) -> [PutOutcome] {
    let parts = try await split(items, deadline: deadline, bytes: { $0.length })
    if parts.count == 1 {
      return try await putBatch(items, ringEpoch: ringEpoch, writeQuorum: writeQuorum, deadline: deadline)
    }
    return try await inParallel(parts) { part throws(StrataError) in
      try await self.putBatch(part, ringEpoch: ringEpoch, writeQuorum: writeQuorum, deadline: deadline)
    }
  }

  func delete(_ keys: [BlockKey]) async throws(StrataError) -> [Bool] {
    let request = DeleteRequest(keys: keys)
    return try await call { connection throws(StrataError) in
      let (_, message) = try connection.exchange(request.wireMessage, payload: [], ringEpoch: 0) {
        _, _ throws(StrataError) in
      }
      guard case .deleteResponse(let response) = message, response.removed.count == keys.count else {
        throw unexpected(message)
      }
      return response.removed
    }
  }

  func stat(deadline: Deadline = .never) async throws(StrataError) -> String {
    try await call(deadline: deadline) { connection throws(StrataError) in
      let (_, message) = try connection.exchange(
        StatRequest().wireMessage, payload: [], ringEpoch: 0, deadline: deadline
      ) {
        _, _ throws(StrataError) in
      }
      guard case .statResponse(let response) = message else { throw unexpected(message) }
      return response.json
    }
  }

  /// A RING request: the body and the answer belong to the cluster module (JSON).
  func ring(_ body: [UInt8]) async throws(StrataError) -> [UInt8] {
    try await call { connection throws(StrataError) in
      let (_, message) = try connection.exchange(.ringRequest(body: body), payload: [], ringEpoch: 0) {
        _, _ throws(StrataError) in
      }
      guard case .ringResponse(let answer) = message else { throw unexpected(message) }
      return answer
    }
  }

  // MARK: Internals

  private func getBatch(
    _ items: [StrataClient.GetItem], leaseID: UInt64, ringEpoch: UInt64, on pinned: Int?, deadline: Deadline
  ) async throws(StrataError) -> [StrataClient.GetResult] {
    let request = GetRequest(
      items: items.map { GetRequest.Item(key: $0.key, offset: $0.blockOffset, length: $0.length ?? 0) },
      leaseID: leaseID)
    let verify = configuration.verifyChecksums
    let transports = self.transports
    return try await call(on: pinned, deadline: deadline) { connection throws(StrataError) in
      if let results = try connection.getThroughRegion(
        items, request: request, ringEpoch: ringEpoch, deadline: deadline)
      {
        return results
      }
      if items.allSatisfy({ $0.tail.isEmpty }),
        let results = try connection.getOverRDMA(
          items, request: request, verify: verify, ringEpoch: ringEpoch, deadline: deadline)
      {
        return results
      }
      // Each block goes straight into host memory, or through the staging ring into GPU memory.
      var receiver = BlockReceiver(connection: connection, transports: transports, verify: verify)
      var results: [StrataClient.GetResult] = []
      // Blocks sent whole that failed their checksum here (not those the node answered corrupt).
      var damaged: [BlockKey] = []
      _ = try connection.exchange(request.wireMessage, payload: [], ringEpoch: ringEpoch, deadline: deadline) {
        _, message throws(StrataError) in
        guard case .getResponse(let response) = message, response.items.count == items.count else {
          throw unexpected(message)
        }
        results = try receiver.receive(items, answers: response.items)
        damaged = zip(items, zip(response.items, results)).compactMap { item, outcome in
          outcome.0.status == .ok && outcome.1 == .corrupt ? item.key : nil
        }
      }
      try receiver.finish()
      connection.reportDamaged(damaged, deadline: deadline)
      return results
    }
  }

  private func putBatch(
    _ items: [StrataClient.PutItem], ringEpoch: UInt64, writeQuorum: UInt8, deadline: Deadline
  ) async throws(StrataError) -> [PutOutcome] {
    nonisolated(unsafe) let payload = items.flatMap { item in
      ([item.source] + item.tail).map { UnsafeRawBufferPointer($0.buffer) }
    }
    // Checksummed once, and only when the blocks leave this machine's memory by a link: a batch
    // through the same-host region, none given, leaves them to the node's copy.
    let checksummed = Mutex<PutRequest?>(nil)
    return try await call(deadline: deadline) { connection throws(StrataError) in
      if let outcomes = try connection.putThroughRegion(
        items, writeQuorum: writeQuorum, ringEpoch: ringEpoch, deadline: deadline)
      {
        return outcomes
      }
      let request = checksummed.withLock { saved in
        if let saved { return saved }
        let request = PutRequest(items: items.map(\.checksummedItem), writeQuorum: writeQuorum)
        saved = request
        return request
      }
      if items.allSatisfy({ $0.tail.isEmpty }),
        let outcomes = try connection.putOverRDMA(items, request: request, ringEpoch: ringEpoch, deadline: deadline)
      {
        return outcomes
      }
      let (_, message) = try connection.exchange(
        request.wireMessage, payload: payload, ringEpoch: ringEpoch, deadline: deadline
      ) {
        _, _ throws(StrataError) in
      }
      guard case .putResponse(let response) = message, response.outcomes.count == items.count else {
        throw unexpected(message)
      }
      return response.outcomes
    }
  }

  /// The index of the next connection of the pool (round robin).
  private func nextIndex() -> Int {
    next.withLock { next -> Int in
      defer { next = (next + 1) % connections.count }
      return next
    }
  }

  /// Runs a call on the next connection of the pool (or on connection `pinned`, retries included),
  /// retrying transport failures.
  private func call<T: Sendable>(
    on pinned: Int? = nil, deadline: Deadline = .never,
    _ work: @escaping @Sendable (ClientConnection) throws(StrataError) -> T
  ) async throws(StrataError) -> T {
    var attempt = 0
    while true {
      let connection = connections[(pinned ?? nextIndex()) % connections.count]
      do {
        return try await connection.perform(deadline: deadline, work)
      } catch {
        // In a cluster a node that timed out is not asked again: the key's next owner is.
        let retry = error.isTransportFailure && !(configuration.isCluster && error.code == .timeout)
        guard retry, attempt < configuration.retries, !deadline.hasPassed() else { throw error }
        attempt += 1
      }
    }
  }

  /// Parts of at most `NodeLimits.partBytesMax` bytes and `limits.itemsPerBatchMax` items, in
  /// order; a block larger than a part goes alone.
  /// Before any connection has heard the node's HELLO, the one the call takes next connects (a
  /// batch split without the node's limits could be refused whole).
  private func split<Item>(_ items: [Item], deadline: Deadline, bytes: (Item) -> Int) async throws(StrataError)
    -> [[Item]]
  {
    if !nodeLimits.isKnown {
      // On the connection the call itself takes next: no other connection is opened for it.
      try await call(on: next.withLock { $0 }, deadline: deadline) { _ throws(StrataError) in }
    }
    let partBytesMax = nodeLimits.partBytesMax(
      batchBytesMax: configuration.batchBytesMax, connections: connections.count)
    var parts: [[Item]] = [[]]
    var partBytes = 0
    for item in items {
      let size = bytes(item)
      if !parts[parts.count - 1].isEmpty
        && (partBytes + size > partBytesMax
          || parts[parts.count - 1].count >= configuration.limits.itemsPerBatchMax)
      {
        parts.append([])
        partBytes = 0
      }
      parts[parts.count - 1].append(item)
      partBytes += size
    }
    return parts
  }
}

/// What a node said in HELLO about the sizes it takes: the largest frame payload of a connection
/// (`limits.max_inflight_bytes_per_connection`) and the bytes the client's tenant may have in
/// flight on it (`limits.max_inflight_bytes_per_namespace`, or the tenant's own quota, and the
/// node's whole budget). A batch is split so that each part fits a frame and the parts on all the
/// connections at once fit the tenant's budget: a part over either is refused whole (`no_space`),
/// which a client alone on the node should never see. Zero until a connection has heard.
final class NodeLimits: Sendable {
  private let learned = Mutex<(frameBytesMax: UInt64, inflightBytesMax: UInt64)>((0, 0))

  var isKnown: Bool { learned.withLock { $0.frameBytesMax > 0 } }

  func learn(frameBytesMax: UInt64, inflightBytesMax: UInt64) {
    learned.withLock { $0 = (frameBytesMax, inflightBytesMax) }
  }

  /// `batchBytesMax`, within one frame and within a `connections`-th of the in-flight budget.
  func partBytesMax(batchBytesMax: Int, connections: Int) -> Int {
    let (frame, inflight) = learned.withLock { $0 }
    var bytes = UInt64(max(1, batchBytesMax))
    if frame > 0 { bytes = min(bytes, frame) }
    if inflight > 0 { bytes = min(bytes, max(1, inflight / UInt64(max(1, connections)))) }
    return Int(clamping: bytes)
  }
}

/// Which connection of a pool holds each lease, bounded.
struct LeaseConnections {
  private var byLease: [UInt64: Int] = [:]
  private var order: [UInt64] = []

  mutating func remember(_ lease: UInt64, on connection: Int, limit: Int) {
    if byLease.count >= limit {
      // Forget the oldest leases still remembered (long since named or expired).
      order.removeAll { byLease[$0] == nil }
      while byLease.count >= limit, !order.isEmpty { byLease[order.removeFirst()] = nil }
    }
    byLease[lease] = connection
    order.append(lease)
    if order.count > 2 * limit { order.removeAll { byLease[$0] == nil } }
  }

  mutating func take(_ lease: UInt64) -> Int? { byLease.removeValue(forKey: lease) }
}

/// Runs `body` on every part concurrently, as child tasks, and concatenates the results in part
/// order; the first failure (in part order) is thrown after every part has finished. A cancelled
/// call cancels its parts: those still waiting for a connection send no request.
func inParallel<Item: Sendable, Result: Sendable>(
  _ parts: [Item], _ body: @escaping @Sendable (Item) async throws(StrataError) -> [Result]
) async throws(StrataError) -> [Result] {
  typealias Outcome = Swift.Result<[Result], StrataError>
  // Each child stores its own part's outcome by position.
  let outcomes = PartOutcomes<Result>(count: parts.count)
  await withTaskGroup(of: Void.self) { group in
    for index in parts.indices {
      let part = parts[index]
      group.addTask {
        let outcome: Outcome
        do throws(StrataError) {
          outcome = .success(try await body(part))
        } catch {
          outcome = .failure(error)
        }
        outcomes.slots.withLock { $0[index] = outcome }
      }
    }
    await group.waitForAll()
  }
  let collected = outcomes.slots.withLock { $0 }
  var results: [Result] = []
  for index in parts.indices {
    // Every child task returns its part's outcome; a missing one is a bug, reported, never a crash.
    guard let outcome = collected[index] else {
      throw StrataError(.internalError, "part \(index) of \(parts.count) ended without an outcome")
    }
    results += try outcome.get()
  }
  return results
}

/// The outcome of each part of an `inParallel` call, by position.
private final class PartOutcomes<Result: Sendable>: Sendable {
  let slots: Mutex<[Swift.Result<[Result], StrataError>?]>
  init(count: Int) { slots = Mutex(Array(repeating: nil, count: count)) }
}

/// The most recent ring epoch any node reported in a response header.
final class EpochTracker: Sendable {
  private let seen = Atomic<UInt64>(0)
  func observe(_ epoch: UInt64) { _ = seen.max(epoch, ordering: .relaxed) }
  var latest: UInt64 { seen.load(ordering: .relaxed) }
}

/// The cause of an error a node answered with (an error frame): the node took the request and
/// the connection is in step, so it is no transport failure, whatever its code.
struct AnsweredByNode: Error, Sendable, CustomStringConvertible {
  var description: String { "the node's answer" }
}

extension StrataError {
  /// The peer could not be reached or stopped answering: the same call may work elsewhere or later.
  var isTransportFailure: Bool {
    (code == .unavailable || code == .timeout || code == .ioError) && !wasAnswered
  }

  /// A node answered the request with this error (its connection goes on).
  var wasAnswered: Bool { cause is AnsweredByNode }
}

func unexpected(_ message: WireMessage) -> StrataError {
  StrataError(.protocolError, "unexpected response: \(message.opcode) \(message.direction)")
}
