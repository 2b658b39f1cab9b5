// StrataClient: what an inference worker links. Looks up how many leading blocks of a prefix a
// node holds, reads blocks straight into registered memory and writes blocks from it, over a
// small pool of connections, with timeouts and retries of these (idempotent) calls.

public import StrataCore
public import StrataGPU
public import StrataWire
import Synchronization

/// Memory that blocks are read into or written from: host memory, or GPU memory (`kind`).
/// Over RDMA the region is registered with the device on first use; over TCP it names the range
/// and bounds-checks use.
public struct MemoryRegion: Sendable, Hashable {
  public let id: UInt64
  nonisolated(unsafe) public let base: UnsafeMutableRawPointer
  public let count: Int
  public let kind: MemoryKind

  /// `length` bytes at `offset` of this region.
  public func slice(offset: Int = 0, length: Int) throws(StrataError) -> RegionSlice {
    guard offset >= 0, length >= 0, offset <= count, length <= count - offset else {
      throw StrataError(
        .invalidArgument, "range \(offset)..<\(offset + length) lies outside memory region \(id) of \(count) bytes")
    }
    return RegionSlice(region: self, offset: offset, length: length)
  }

  public static func == (lhs: MemoryRegion, rhs: MemoryRegion) -> Bool { lhs.id == rhs.id }
  public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}

/// A byte range of a registered region.
public struct RegionSlice: Sendable {
  public let region: MemoryRegion
  public let offset: Int
  public let length: Int

  public var buffer: UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(start: region.base + offset, count: length)
  }
}

public final class StrataClient: Sendable {
  public struct Configuration: Sendable {
    public var node: HostPort
    /// Credentials; the node maps them to a namespace (the embedded default has one open namespace).
    public var token: String = ""
    public var connections: Int = 2
    /// Bounds a connect and every read and write of a request.
    public var timeoutMilliseconds: UInt64 = 30_000
    /// Further attempts of a call after a transport failure (all calls are idempotent).
    public var retries: Int = 2
    public var clientName: String = "strata-client"
    /// Verify each received block's CRC-32C before reporting it: a mismatch is `.corrupt`, never data.
    public var verifyChecksums: Bool = true
    /// Batches are split so that one frame's payload stays below this; parts go out in parallel.
    public var batchBytesMax: Int = 64 << 20
    public var frameBytesMax: UInt64 = 1 << 30
    public var limits: WireLimits = .standard
    /// Use RDMA where this machine and the node both have it (docs/rdma.md); TCP otherwise.
    public var rdma: Bool = true
    /// The GPU runtime for `.cuda` regions; nil loads the CUDA runtime with dlopen on first use.
    public var gpuRuntime: (any GPURuntime)?

    public init(node: HostPort) { self.node = node }
  }

  /// What a node holds of some keys.
  public struct LookupResult: Sendable, Hashable {
    public var tiers: [BlockTier]
    /// How many leading keys are present: the prefix a worker can load instead of recomputing.
    public var leadingRun: Int
    /// Nonzero when a lease was asked for: pass it to `get` to release it with that read.
    public var leaseID: UInt64
  }

  public struct GetItem: Sendable {
    public var key: BlockKey
    public var destination: RegionSlice
    /// First byte of the block to read (to stream a block layer by layer).
    public var blockOffset: UInt64
    /// Bytes to read; nil reads to the end of the block (the destination must hold them).
    public var length: UInt64?

    public init(key: BlockKey, destination: RegionSlice, blockOffset: UInt64 = 0, length: UInt64? = nil) {
      self.key = key
      self.destination = destination
      self.blockOffset = blockOffset
      self.length = length
    }
  }

  public enum GetResult: Sendable, Hashable {
    /// `length` bytes are in the destination, checksum verified.
    case ok(length: Int)
    case missing
    case outOfRange
    /// The block is larger than the destination; nothing was written to it.
    case destinationTooSmall(length: Int)
    /// The bytes failed their checksum (at the node or on the way): never delivered as data.
    case corrupt
  }

  public struct PutItem: Sendable {
    public var key: BlockKey
    public var source: RegionSlice
    public init(key: BlockKey, source: RegionSlice) {
      self.key = key
      self.source = source
    }
  }

  public let configuration: Configuration
  private let connections: [ClientConnection]
  let state = Mutex((next: 0, nextRegion: UInt64(1)))
  let transports: ClientTransports

  public init(_ configuration: Configuration) {
    self.configuration = configuration
    let transports = ClientTransports(rdmaEnabled: configuration.rdma, gpuRuntime: configuration.gpuRuntime)
    self.transports = transports
    connections = (0..<max(1, configuration.connections)).map {
      ClientConnection(address: configuration.node, configuration: configuration, index: $0, transports: transports)
    }
  }

  /// Connects and says HELLO on every connection now (otherwise each connects on first use).
  /// Returns the namespace the node granted.
  @discardableResult
  public func connect() async throws(StrataError) -> Namespace {
    var namespace = Namespace.embeddedDefault
    for connection in connections {
      namespace = try await connection.perform { connection throws(StrataError) in connection.namespace! }
    }
    return namespace
  }

  /// Says GOODBYE and closes every connection.
  public func close() {
    for connection in connections { connection.close() }
  }

  /// Registers host memory for blocks to be read into or written from.
  public func register(_ buffer: UnsafeMutableRawBufferPointer) -> MemoryRegion {
    let id = state.withLock { state -> UInt64 in
      defer { state.nextRegion += 1 }
      return state.nextRegion
    }
    return MemoryRegion(id: id, base: buffer.baseAddress!, count: buffer.count, kind: .host)
  }

  // MARK: Calls

  public func lookup(_ keys: [BlockKey], leaseMilliseconds: UInt32 = 0) async throws(StrataError) -> LookupResult {
    let request = LookupRequest(keys: keys, leaseMilliseconds: leaseMilliseconds)
    return try await call { connection throws(StrataError) in
      let (_, message) = try connection.exchange(request.wireMessage, payload: []) { _, _ throws(StrataError) in }
      guard case .lookupResponse(let response) = message else { throw unexpected(message) }
      return LookupResult(tiers: response.tiers, leadingRun: Int(response.leadingRun), leaseID: response.leaseID)
    }
  }

  /// Reads blocks into their destinations. Batches larger than `batchBytesMax` of destination
  /// space are split and the parts sent in parallel over the pool.
  public func get(_ items: [GetItem], leaseID: UInt64 = 0) async throws(StrataError) -> [GetResult] {
    let parts = split(items, bytes: { $0.length.map(Int.init) ?? $0.destination.length })
    if parts.count == 1 { return try await getBatch(items, leaseID: leaseID) }
    return try await inParallel(parts) { part throws(StrataError) in try await self.getBatch(part, leaseID: leaseID) }
  }

  public func put(_ items: [PutItem]) async throws(StrataError) -> [StrataWire.PutOutcome] {
    let parts = split(items, bytes: { $0.source.length })
    if parts.count == 1 { return try await putBatch(items) }
    return try await inParallel(parts) { part throws(StrataError) in try await self.putBatch(part) }
  }

  public func delete(_ keys: [BlockKey]) async throws(StrataError) -> [Bool] {
    let request = DeleteRequest(keys: keys)
    return try await call { connection throws(StrataError) in
      let (_, message) = try connection.exchange(request.wireMessage, payload: []) { _, _ throws(StrataError) in }
      guard case .deleteResponse(let response) = message else { throw unexpected(message) }
      return response.removed
    }
  }

  /// The node's counters as a JSON object.
  public func stat() async throws(StrataError) -> String {
    try await call { connection throws(StrataError) in
      let (_, message) = try connection.exchange(StatRequest().wireMessage, payload: []) { _, _ throws(StrataError) in }
      guard case .statResponse(let response) = message else { throw unexpected(message) }
      return response.json
    }
  }

  // MARK: Internals

  private func getBatch(_ items: [GetItem], leaseID: UInt64) async throws(StrataError) -> [GetResult] {
    let request = GetRequest(
      items: items.map { GetRequest.Item(key: $0.key, offset: $0.blockOffset, length: $0.length ?? 0) },
      leaseID: leaseID)
    let verify = configuration.verifyChecksums
    let transports = self.transports
    return try await call { connection throws(StrataError) in
      if let results = try connection.getOverRDMA(items, request: request, verify: verify) { return results }
      var receiver = BlockReceiver(connection: connection, transports: transports, verify: verify)
      var results: [GetResult] = []
      _ = try connection.exchange(request.wireMessage, payload: []) { _, message throws(StrataError) in
        guard case .getResponse(let response) = message, response.items.count == items.count else {
          throw unexpected(message)
        }
        results.reserveCapacity(items.count)
        for (item, answer) in zip(items, response.items) {
          switch answer.status {
          case .missing: results.append(.missing)
          case .rangeOutOfBounds: results.append(.outOfRange)
          case .corrupt: results.append(.corrupt)
          case .ok:
            let length = Int(answer.length)
            guard length <= item.destination.length else {
              try connection.discard(length)
              results.append(.destinationTooSmall(length: length))
              continue
            }
            results.append(try receiver.receive(into: item.destination, length: length, checksum: answer.checksum))
          }
        }
      }
      try receiver.finish()
      return results
    }
  }

  private func putBatch(_ items: [PutItem]) async throws(StrataError) -> [StrataWire.PutOutcome] {
    if items.contains(where: { $0.source.region.kind != .host }) { return try await putFromDevice(items) }
    let request = PutRequest(
      items: items.map {
        PutRequest.Item(
          key: $0.key, length: UInt64($0.source.length),
          checksum: CRC32C.checksum(UnsafeRawBufferPointer($0.source.buffer)))
      })
    nonisolated(unsafe) let payload = items.map { UnsafeRawBufferPointer($0.source.buffer) }
    return try await call { connection throws(StrataError) in
      if let outcomes = try connection.putOverRDMA(items, request: request) { return outcomes }
      let (_, message) = try connection.exchange(request.wireMessage, payload: payload) { _, _ throws(StrataError) in }
      guard case .putResponse(let response) = message, response.outcomes.count == items.count else {
        throw unexpected(message)
      }
      return response.outcomes
    }
  }

  /// Runs a call on the next connection of the pool, retrying transport failures.
  func call<T: Sendable>(
    _ work: @escaping @Sendable (ClientConnection) throws(StrataError) -> T
  ) async throws(StrataError) -> T {
    var attempt = 0
    while true {
      let connection = state.withLock { state -> ClientConnection in
        defer { state.next = (state.next + 1) % connections.count }
        return connections[state.next]
      }
      do {
        return try await connection.perform(work)
      } catch {
        let retryable = error.code == .unavailable || error.code == .timeout || error.code == .ioError
        guard retryable, attempt < configuration.retries else { throw error }
        attempt += 1
      }
    }
  }

  private func split<Item>(_ items: [Item], bytes: (Item) -> Int) -> [[Item]] {
    var parts: [[Item]] = [[]]
    var partBytes = 0
    for item in items {
      let size = bytes(item)
      if !parts[parts.count - 1].isEmpty
        && (partBytes + size > configuration.batchBytesMax
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

  private func inParallel<Item: Sendable, Result: Sendable>(
    _ parts: [[Item]], _ body: @escaping @Sendable ([Item]) async throws(StrataError) -> [Result]
  ) async throws(StrataError) -> [Result] {
    let tasks = parts.map { part in
      Task { () async -> Swift.Result<[Result], StrataError> in
        do throws(StrataError) {
          return .success(try await body(part))
        } catch {
          return .failure(error)
        }
      }
    }
    var results: [Result] = []
    var failure: StrataError?
    for task in tasks {
      switch await task.value {
      case .success(let part): results += part
      case .failure(let error): failure = failure ?? error
      }
    }
    if let failure { throw failure }
    return results
  }
}

func unexpected(_ message: WireMessage) -> StrataError {
  StrataError(.protocolError, "unexpected response: \(message.opcode) \(message.direction)")
}
