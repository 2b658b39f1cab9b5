// The node's data plane over TCP: accepts connections (bounded), runs each on a thread of its
// own, and serves HELLO, LOOKUP, GET, PUT, DELETE and STAT frames against the tier manager.
// Payloads go from arena memory to the socket and from the socket into arena slots directly.

import Foundation
public import Logging
public import StrataCore
public import StrataStorage
import StrataTCP
public import StrataWire
import Synchronization

/// Counters of the data plane, read at one instant.
public struct ServerStats: Sendable, Hashable {
  public var connectionsOpen = 0
  public var connectionsAccepted = 0
  public var connectionsRefused = 0
  public var malformedFrames = 0
  public var requests = 0
  public var errorResponses = 0
  public var getBlocks = 0
  public var getBytes = 0
  public var putBlocks = 0
  public var putBytes = 0
  public var inflightBytes = 0
  /// HELLOs answered with RDMA granted, and with TCP only (the log line says why).
  public var helloRDMAGranted = 0
  public var helloTCPOnly = 0
  /// RDMA connections established through rdma_cm.
  public var connectionsRDMA = 0
}

/// Settings of the data plane.
public struct ServerConfiguration: Sendable {
  public var listen: HostPort
  public var nodeID: String
  public var connectionsMax: Int
  public var inflightBytesMax: Int
  public var limits: WireLimits
  /// Tokens and what each grants; empty means the embedded default's one open namespace (admin).
  public var tokens: [String: NodeConfiguration.Auth.Token]

  public init(_ node: NodeConfiguration, nodeID: String) {
    listen = node.listen
    self.nodeID = nodeID
    connectionsMax = node.limits.connectionsMax
    inflightBytesMax = Int(node.limits.inflightBytesMax.bytes)
    // A frame carries at most one batch: bounded by the per-connection in-flight limit.
    limits = WireLimits(payloadBytesMax: node.limits.inflightBytesPerConnectionMax.bytes)
    tokens = Dictionary(node.auth.tokens.map { ($0.token, $0) }, uniquingKeysWith: { first, _ in first })
  }
}

public final class NodeServer: Sendable {
  public let configuration: ServerConfiguration
  public let tiers: TierManager
  /// Told about every request answered (metrics); nil for none.
  public let observer: (any NodeObserver)?
  let logger: Logger
  private let listener: TCPListener
  private let state = Mutex(ServerState())
  /// The tokens in force: those of `configuration` until `replaceTokens` (config reload).
  private let tokens: Mutex<[String: NodeConfiguration.Auth.Token]>
  private let stopped = DispatchSemaphore(value: 0)
  private let clusterHooks = Mutex<(any ClusterHooks)?>(nil)
  /// RDMA devices, the arena's registration and the rdma_cm listener (RDMA/NodeRDMA.swift).
  let rdma: NodeRDMA

  struct ServerState {
    var stats = ServerStats()
    var connections: [Int: Connection] = [:]
    var nextConnection = 0
    var draining = false
  }

  /// Binds the listening socket (port 0 picks a free one; see `address`).
  public init(
    configuration: ServerConfiguration, tiers: TierManager, logger: Logger, observer: (any NodeObserver)? = nil
  ) throws(StrataError) {
    self.configuration = configuration
    self.tiers = tiers
    self.observer = observer
    tokens = Mutex(configuration.tokens)
    self.logger = logger
    listener = try TCPListener(binding: configuration.listen)
    rdma = NodeRDMA(arena: tiers.arena, address: listener.address, logger: logger)
  }

  /// Where the node listens.
  public var address: HostPort { listener.address }

  /// The cluster layer, if the node is part of one; attach it before `start`.
  public var cluster: (any ClusterHooks)? {
    get { clusterHooks.withLock { $0 } }
    set { clusterHooks.withLock { $0 = newValue } }
  }

  /// The ring epoch sent in response headers: the cluster's, or 0 on a node of its own.
  var epoch: UInt64 { cluster?.epoch ?? 0 }

  public var stats: ServerStats { state.withLock { $0.stats } }

  /// The tokens new connections are checked against; empty means the open embedded default.
  public var currentTokens: [String: NodeConfiguration.Auth.Token] { tokens.withLock { $0 } }

  /// Puts new tokens in force for connections that say HELLO from now on (config reload);
  /// connections already open keep the namespace they were granted.
  public func replaceTokens(_ new: [NodeConfiguration.Auth.Token]) {
    tokens.withLock { $0 = Dictionary(new.map { ($0.token, $0) }, uniquingKeysWith: { first, _ in first }) }
  }

  /// Starts accepting connections on a thread of its own.
  public func start() {
    let thread = Thread { [self] in acceptLoop() }
    thread.name = "strata-accept"
    thread.start()
    startRDMA()
  }

  /// Stops accepting, lets every request in progress finish, closes idle connections, and
  /// returns once every connection has ended.
  public func stop() {
    let connections = state.withLock { state -> [Connection] in
      state.draining = true
      return Array(state.connections.values)
    }
    listener.shutdown()
    rdma.listener?.stop()
    for connection in connections { connection.closeWhenIdle() }
    stopped.wait()
  }

  private func acceptLoop() {
    while let socket = listener.accept() {
      let connection: Connection? = state.withLock { state in
        guard !state.draining, state.connections.count < configuration.connectionsMax else {
          state.stats.connectionsRefused += 1
          return nil
        }
        state.stats.connectionsAccepted += 1
        state.stats.connectionsOpen += 1
        let id = state.nextConnection
        state.nextConnection += 1
        let connection = Connection(id: id, socket: socket, server: self)
        state.connections[id] = connection
        return connection
      }
      guard let connection else {
        refuse(socket)
        continue
      }
      let thread = Thread { connection.run() }
      thread.name = "strata-conn-\(connection.id)"
      thread.start()
    }
    // The listener is closed: wait for the connections to end, then report stopped.
    Thread {
      [self] in
      while state.withLock({ !$0.connections.isEmpty }) {
        let remaining = state.withLock { Array($0.connections.values) }
        for connection in remaining { connection.waitUntilClosed() }
      }
      stopped.signal()
    }.start()
  }

  /// Tells a connection over the limit why, then closes it: its HELLO is answered with an
  /// error (on a short-lived thread, with a read timeout, so the accept loop never waits on it).
  private func refuse(_ socket: TCPSocket) {
    let draining = state.withLock { $0.draining }
    let error = StrataError(
      draining ? .unavailable : .resourceExhausted,
      draining
        ? "the node is shutting down"
        : "connection limit reached (\(configuration.connectionsMax), limits.max_connections)")
    logger.warning("refused a connection", metadata: ["peer": "\(socket.peer)", "reason": "\(error.message)"])
    let limits = configuration.limits
    let thread = Thread {
      socket.setTimeout(milliseconds: 2000)
      let header = UnsafeMutableRawBufferPointer.allocate(byteCount: FrameHeader.byteCount, alignment: 8)
      defer { header.deallocate() }
      guard (try? socket.readExactly(header)) != nil,
        let hello = try? FrameHeader(decoding: UnsafeRawBufferPointer(header), limits: limits), hello.opcode == .hello
      else { return }
      let frame = WireMessage.error(.hello, ErrorBody(code: error.code.number, message: error.message))
        .frameBytes(requestID: hello.requestID, ringEpoch: 0)
      try? socket.writeAll(frame)
      socket.shutdown()
    }
    thread.start()
  }

  func connectionEnded(_ id: Int) {
    state.withLock { state in
      state.connections[id] = nil
      state.stats.connectionsOpen -= 1
    }
  }

  func count(_ update: (inout ServerStats) -> Void) {
    state.withLock { update(&$0.stats) }
  }

  var isDraining: Bool { state.withLock { $0.draining } }

  /// Takes `bytes` of the node's in-flight budget; false when the node is at its limit.
  func reserveInflight(_ bytes: Int) -> Bool {
    state.withLock { state in
      guard state.stats.inflightBytes + bytes <= configuration.inflightBytesMax else { return false }
      state.stats.inflightBytes += bytes
      return true
    }
  }

  func releaseInflight(_ bytes: Int) {
    state.withLock { $0.stats.inflightBytes -= bytes }
  }

  /// The STAT body: tier and data-plane counters as one JSON object.
  func statJSON() -> String {
    let tier = tiers.stats
    let server = stats
    let fields: [(String, Int)] = [
      ("ram_blocks", tier.ramBlocks), ("ram_used_bytes", tier.ramUsedBytes),
      ("ram_capacity_bytes", tier.ramCapacityBytes), ("nvme_blocks", tier.nvmeBlocks),
      ("nvme_used_bytes", tier.nvmeUsedBytes), ("nvme_capacity_bytes", tier.nvmeCapacityBytes),
      ("puts", tier.puts), ("duplicate_puts", tier.duplicatePuts), ("hits_ram", tier.hitsRAM),
      ("hits_nvme", tier.hitsNVMe), ("misses", tier.misses), ("demoted_blocks", tier.demotedBlocks),
      ("promoted_blocks", tier.promotedBlocks), ("dropped_blocks", tier.droppedBlocks),
      ("checksum_failures", tier.checksumFailures), ("io_errors", tier.ioErrors),
      ("leases_active", tier.leasesActive), ("connections_open", server.connectionsOpen),
      ("connections_accepted", server.connectionsAccepted), ("connections_refused", server.connectionsRefused),
      ("malformed_frames", server.malformedFrames), ("requests", server.requests),
      ("error_responses", server.errorResponses), ("get_blocks", server.getBlocks), ("get_bytes", server.getBytes),
      ("put_blocks", server.putBlocks), ("put_bytes", server.putBytes),
      ("hello_rdma_granted", server.helloRDMAGranted), ("hello_tcp_only", server.helloTCPOnly),
      ("connections_rdma", server.connectionsRDMA),
    ]
    let body = fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",")
    return "{\"node_id\":\"\(configuration.nodeID)\",\(body)}"
  }
}
