// StrataClient: what an inference worker links. Looks up how many leading blocks of a prefix are
// cached, reads blocks straight into registered memory and writes blocks from it, over a small
// pool of connections per node, with timeouts and retries of these (idempotent) calls. Given seed
// nodes instead of one node, it fetches the cluster's ring and routes every key to its owners
// (ClusterRouting.swift).

public import StrataCore
public import StrataGPU
public import StrataPlacement
public import StrataTCP
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
    /// The node to talk to; with `seeds`, only the first place to ask for the ring.
    public var node: HostPort
    /// Nodes of a cluster: the client fetches the ring from the first that answers and routes each
    /// key to its owners. Empty: every call goes to `node`.
    public var seeds: [HostPort] = []
    /// Credentials; the node maps them to a namespace (the embedded default has one open namespace).
    public var token: String = ""
    /// Connections per node.
    public var connections: Int = 2
    /// Bounds a connect and every read and write of a request.
    public var timeoutMilliseconds: UInt64 = 30_000
    /// Further attempts of a call on the same node after a transport failure (all calls are
    /// idempotent). In a cluster a failed node's keys also go to their next owner.
    public var retries: Int = 2
    public var clientName: String = "strata-client"
    /// Verify each received block's CRC-32C before reporting it: a mismatch is `.corrupt`, never data.
    public var verifyChecksums: Bool = true
    /// Batches are split so that one frame's payload stays below this; parts go out in parallel.
    public var batchBytesMax: Int = 64 << 20
    public var frameBytesMax: UInt64 = 1 << 30
    public var limits: WireLimits = .standard
    /// In a cluster: ask a key's next owner when its owner answers "absent" (a node that was down
    /// when the block was written, or one that joined since). Costs a round trip per true miss.
    public var askReplicasOnMiss: Bool = true
    /// How long a node that failed a call is skipped (tried after the other owners) before it is
    /// tried first again; doubled for each call it failed in a row, up to 32 times this, until it
    /// answers one.
    public var downMilliseconds: UInt64 = 1_000
    /// In a cluster: a LOOKUP (without a lease) whose owner has not answered after twice the
    /// recent p99 LOOKUP latency also goes to the keys' next owners (ClusterRouting.swift).
    public var hedgeLookups: Bool = true
    /// The shortest hedge delay.
    public var hedgeDelayMinimumMilliseconds: UInt64 = 5
    /// Identifies the connections as a peer node's (replication, read-through, handoff).
    public var isPeer: Bool = false
    /// How many owners of each block must hold it before a node acknowledges a PUT (1–255); 0
    /// leaves it to the node (`cluster.write_quorum`). A worker that keeps its blocks anyway may
    /// ask for 1. A PUT that misses its quorum fails with `quorumNotReached`.
    public var writeQuorum: UInt8 = 0
    /// With `isPeer`: the namespace the peer acts in (its token is then the cluster token).
    public var peerNamespace: String = ""
    /// Use RDMA where this machine and the node both have it (docs/rdma.md); TCP otherwise.
    public var rdma: Bool = true
    /// The GPU runtime for `.cuda` regions; nil loads the CUDA runtime with dlopen on first use.
    public var gpuRuntime: (any GPURuntime)?
    /// Use the same-host path when the node runs on this machine (its address is a loopback or
    /// local interface address): connections go over the node's Unix-domain socket, and GETs and
    /// PUTs whose memory lies in `sharedMemory` move with one copy by the node. False: TCP only.
    public var sameHost: Bool = true
    /// The node's same-host socket; empty: learned from the node's HELLO answer.
    public var sameHostSocket: String = ""
    /// Bytes of shared memory (a sealed memfd) to allocate for blocks (`StrataClient.sharedMemory`);
    /// 0 for none (the same-host path then still carries payloads, in the Unix socket's stream).
    public var sharedMemoryBytes: Int = 0
    /// TLS to the nodes (`TLSContext.client`: the CA that signed their certificates, and the
    /// client certificate when one is presented); nil: plaintext.
    public var tls: TLSContext?
    /// What a node's certificate must name: by default the host connected to.
    public var tlsIdentity: TLSServerIdentity = .host

    public init(node: HostPort) { self.node = node }

    /// A cluster client: the ring comes from the first of `seeds` that answers.
    public init(seeds: [HostPort]) {
      precondition(!seeds.isEmpty, "StrataClient.Configuration: a cluster client needs at least one seed")
      node = seeds[0]
      self.seeds = seeds
    }

    public var isCluster: Bool { !seeds.isEmpty }
  }

  /// What the nodes hold of some keys.
  public struct LookupResult: Sendable, Hashable {
    public var tiers: [BlockTier]
    /// How many leading keys are present: the prefix a worker can load instead of recomputing.
    public var leadingRun: Int
    /// Nonzero when a lease was asked for: pass it to `get` to release it with that read.
    public var leaseID: UInt64
    /// Each block's length in bytes (0 where absent) when `lookup` was asked for sizes; else empty.
    public var sizes: [UInt64] = []
    /// The ring epoch the node answered at, read before it looked (0 from a node outside a
    /// cluster, and from a cluster-routed lookup, whose keys span nodes).
    public var ringEpoch: UInt64 = 0
  }

  public struct GetItem: Sendable {
    public var key: BlockKey
    public var destination: RegionSlice
    /// First byte of the block to read (to stream a block layer by layer).
    public var blockOffset: UInt64
    /// Bytes to read; nil reads to the end of the block (the destination must hold them).
    public var length: UInt64?
    /// Further host memory the bytes continue into once `destination` is full (a block scattered
    /// over several buffers, received and checksummed as one; never over RDMA).
    public var tail: [RegionSlice]

    public init(
      key: BlockKey, destination: RegionSlice, blockOffset: UInt64 = 0, length: UInt64? = nil, tail: [RegionSlice] = []
    ) {
      self.key = key
      self.destination = destination
      self.blockOffset = blockOffset
      self.length = length
      self.tail = tail
    }

    /// The bytes `destination` and `tail` hold together.
    public var capacity: Int { tail.reduce(destination.length) { $0 + $1.length } }
    /// The destination and its tail, in order.
    var slices: [RegionSlice] { [destination] + tail }
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
    /// Further host memory the block continues in after `source` (a block gathered from several
    /// buffers, sent and checksummed as one; never over RDMA).
    public var tail: [RegionSlice]
    /// The CRC-32C the bytes must have; nil computes it from the source. A node copying a block
    /// passes the checksum stored with it, so bytes changed in memory since are refused by the
    /// receiver instead of travelling on under a fresh checksum.
    public var checksum: UInt32?

    public init(key: BlockKey, source: RegionSlice, tail: [RegionSlice] = [], checksum: UInt32? = nil) {
      self.key = key
      self.source = source
      self.tail = tail
      self.checksum = checksum
    }

    /// The block's length: `source` and `tail` together.
    public var length: Int { tail.reduce(source.length) { $0 + $1.length } }

    /// The wire item, with the checksum given or computed over `source` and `tail`.
    var checksummedItem: PutRequest.Item {
      PutRequest.Item(
        key: key, length: UInt64(length),
        checksum: checksum
          ?? tail.reduce(CRC32C.checksum(UnsafeRawBufferPointer(source.buffer))) {
            CRC32C.checksum(UnsafeRawBufferPointer($1.buffer), continuing: $0)
          })
    }
  }

  public let configuration: Configuration
  let epochs = EpochTracker()
  let routing: Mutex<RoutingState>
  let regions = Mutex(UInt64(1))
  let transports: ClientTransports

  public init(_ configuration: Configuration) {
    self.configuration = configuration
    routing = Mutex(RoutingState())
    transports = ClientTransports(
      rdmaEnabled: configuration.rdma, gpuRuntime: configuration.gpuRuntime, sameHost: configuration.sameHost,
      sharedMemoryBytes: configuration.sharedMemoryBytes)
  }

  /// The shared memory of `Configuration.sharedMemoryBytes`, as a registered host region: blocks
  /// read into it or written from it by a same-host connection move with one copy, by the node.
  /// nil when none was asked for or it could not be made (`transportStats.sameHostDecision` says why).
  public var sharedMemory: MemoryRegion? {
    guard let region = transports.sharedRegion else { return nil }
    return MemoryRegion(id: 0, base: region.base, count: region.count, kind: .host)
  }

  /// Connects and says HELLO (every connection to the node; in a cluster, fetches the ring and
  /// connects to every active member). Returns the namespace granted. In a cluster a member that
  /// cannot be reached is marked down and skipped, as a call would: the client opens while some
  /// owners are away (what replicas are for), and fails only when no member answers, or one
  /// refuses (credentials, a limit: the same answer would come from the others).
  @discardableResult
  public func connect() async throws(StrataError) -> Namespace {
    guard configuration.isCluster else { return try await channel(configuration.node).connect() }
    let ring = try await refreshRing()
    var namespace: Namespace?
    var unreachable: StrataError?
    for member in ring.activeMembers {
      let address = try HostPort(parsing: member.address)
      do throws(StrataError) {
        namespace = try await channel(address).connect()
      } catch  where error.isTransportFailure {
        markDown(address)
        unreachable = unreachable ?? error
      }
    }
    guard let namespace else {
      throw unreachable ?? StrataError(.unavailable, "the ring has no active member to connect to")
    }
    return namespace
  }

  /// Says GOODBYE and closes every connection; a call in progress on one ends at once with a
  /// transport error.
  public func close() {
    let channels = routing.withLock { Array($0.channels.values) }
    for channel in channels { channel.close() }
  }

  /// Registers host memory for blocks to be read into or written from.
  public func register(_ buffer: UnsafeMutableRawBufferPointer) -> MemoryRegion {
    let id = regions.withLock { next -> UInt64 in
      defer { next += 1 }
      return next
    }
    return MemoryRegion(id: id, base: buffer.baseAddress!, count: buffer.count, kind: .host)
  }

  // MARK: Calls

  /// Which of `keys` are stored, the leading run, optionally a lease on it and (`sizes`) each
  /// block's length, in the same round trip. `deadline` bounds the call (outside a cluster).
  public func lookup(
    _ keys: [BlockKey], leaseMilliseconds: UInt32 = 0, sizes: Bool = false, deadline: Deadline = .never
  )
    async throws(StrataError) -> LookupResult
  {
    guard configuration.isCluster else {
      let (response, epoch) = try await channel(configuration.node).lookup(
        keys, leaseMilliseconds: leaseMilliseconds, wantsSizes: sizes, ringEpoch: 0, deadline: deadline)
      return LookupResult(
        tiers: response.tiers, leadingRun: Int(response.leadingRun), leaseID: response.leaseID,
        sizes: response.sizes ?? [], ringEpoch: epoch)
    }
    return try await routedLookup(keys, leaseMilliseconds: leaseMilliseconds, sizes: sizes)
  }

  /// Reads blocks into their destinations. Batches larger than `batchBytesMax` of destination
  /// space are split and the parts sent in parallel; in a cluster, each owner gets its own part.
  /// `deadline` bounds the whole call (outside a cluster).
  public func get(_ items: [GetItem], leaseID: UInt64 = 0, deadline: Deadline = .never) async throws(StrataError)
    -> [GetResult]
  {
    guard configuration.isCluster else {
      return try await channel(configuration.node).get(items, leaseID: leaseID, ringEpoch: 0, deadline: deadline)
    }
    return try await routedGet(items, leaseID: leaseID)
  }

  /// Writes blocks. `writeQuorum` (default: the configuration's) is how many owners of each block
  /// must hold it before the node answers; a PUT that misses it throws `quorumNotReached`, whose
  /// message says how many copies exist. `deadline` bounds the whole call (outside a cluster).
  public func put(_ items: [PutItem], writeQuorum: UInt8? = nil, deadline: Deadline = .never) async throws(StrataError)
    -> [PutOutcome]
  {
    let quorum = writeQuorum ?? configuration.writeQuorum
    // Blocks in GPU memory go through pinned host memory first (Transport/GPURegions.swift).
    if items.contains(where: { $0.source.region.kind != .host }) {
      guard items.allSatisfy({ $0.tail.isEmpty }) else {
        throw StrataError(.unsupported, "a PUT gathered from several buffers takes host memory only")
      }
      return try await putFromDevice(items, writeQuorum: quorum, deadline: deadline)
    }
    guard configuration.isCluster else {
      return try await channel(configuration.node).put(items, ringEpoch: 0, writeQuorum: quorum, deadline: deadline)
    }
    return try await routedPut(items, writeQuorum: quorum)
  }

  /// Removes blocks (admin-scoped); in a cluster from every owner. True where a node held the block.
  public func delete(_ keys: [BlockKey]) async throws(StrataError) -> [Bool] {
    guard configuration.isCluster else { return try await channel(configuration.node).delete(keys) }
    return try await routedDelete(keys)
  }

  /// A node's counters as a JSON object (`node`, or the first seed).
  public func stat(node: HostPort? = nil, deadline: Deadline = .never) async throws(StrataError) -> String {
    try await channel(node ?? configuration.node).stat(deadline: deadline)
  }

  /// Sends a RING request to `node` (default: the first seed that answers) and returns its answer.
  public func ringCall(_ call: RingCall, node: HostPort? = nil) async throws(StrataError) -> [UInt8] {
    try await ringCall(call.body, node: node)
  }

  /// Sends a RING request body as given (tests send malformed ones).
  public func ringCall(_ body: [UInt8], node: HostPort? = nil) async throws(StrataError) -> [UInt8] {
    if let node { return try await channel(node).ring(body) }
    var failure = StrataError(.unavailable, "no seed node given")
    for seed in seedOrder() {
      do {
        return try await channel(seed).ring(body)
      } catch  where error.isTransportFailure {
        failure = error
      }
    }
    throw failure
  }

  // MARK: Channels

  /// The connection pool of the node at `address`, made on first use.
  func channel(_ address: HostPort) -> NodeChannel {
    routing.withLock { state in
      if let channel = state.channels[address] { return channel }
      let channel = NodeChannel(
        address: address, configuration: configuration, epochs: epochs, transports: transports)
      state.channels[address] = channel
      return channel
    }
  }
}
