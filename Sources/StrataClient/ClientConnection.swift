// One connection from a client to a node: HELLO on open, then one request at a time, run on a
// worker thread of its own so blocking socket I/O never occupies a Swift concurrency thread.
// GET payloads are received straight into the caller's destination memory; PUT payloads are
// sent straight from the caller's source memory.

import StrataCore
import StrataRDMA
import StrataTCP
import StrataWire
import Synchronization

final class ClientConnection: @unchecked Sendable {
  // @unchecked: every mutable field is touched only by jobs of `worker`, a pool of one thread (its
  // serial queue runs them one at a time, on its thread or on a waiting caller's).
  let worker: WorkerPool
  let address: HostPort
  let configuration: StrataClient.Configuration
  let transports: ClientTransports
  /// The RDMA side of this connection, when negotiated and up (Transport/RDMAClientPath.swift).
  var rdma: RDMAChannel?
  /// On the same-host path: the region the node mapped for this connection (nil: none passed;
  /// payloads then travel in the Unix socket's stream). Transport/SameHostClientPath.swift.
  var sameHostRegion: SharedMemoryRegion?
  var isSameHost = false
  /// A new socket (connected, swapped for the same-host one, dropped) starts a new frame stream.
  var socket: TCPSocket? {
    // Before the old socket is released (which closes it): `close` never shuts down a closed one.
    willSet { liveSocket.withLock { $0 = newValue } }
    didSet { reader = FrameReader(limits: configuration.limits, receiving: .response) }
  }
  /// The socket and whether a call runs on it, for `close` from any thread.
  private let liveSocket = Mutex<TCPSocket?>(nil)
  private let callInFlight = Atomic<Bool>(false)
  /// Receives every response frame: header and body here, payloads straight into the caller's memory.
  private var reader: FrameReader
  private var nextRequestID: UInt64 = 1
  /// The deadline of the exchange in progress, which its payload reads keep to.
  private var exchangeDeadline: Deadline = .never
  /// When the last call on this connection ended (monotonic nanoseconds).
  private var lastUsed: UInt64 = 0
  /// A connection idle this long is checked before it is used again (the shortest idle timeout a
  /// node accepts, `limits.idle_timeout`, is 10 ms): one `poll`, never on back-to-back calls.
  static let idleCheckNanoseconds: UInt64 = 10_000_000
  var namespace: Namespace?
  var nodeID = ""
  /// Whether the node answers VERIFY (granted in HELLO): blocks that arrive damaged are reported to it.
  var nodeVerifies = false
  let epochs: EpochTracker
  /// What the node said in HELLO about the sizes it takes, shared by the node's connections.
  let nodeLimits: NodeLimits

  init(
    address: HostPort, configuration: StrataClient.Configuration, index: Int, epochs: EpochTracker,
    transports: ClientTransports, nodeLimits: NodeLimits
  ) {
    self.address = address
    self.configuration = configuration
    self.epochs = epochs
    self.nodeLimits = nodeLimits
    self.transports = transports
    reader = FrameReader(limits: configuration.limits, receiving: .response)
    worker = WorkerPool(label: "strata.client.\(address).\(index)")
  }

  /// Runs `work` on this connection's thread, connecting first when needed; a transport failure
  /// drops the socket so that the next call reconnects. A call cancelled while it waits for the
  /// connection is not started. From a thread waiting in `waitForTask` (a C caller's), the work
  /// runs on that thread (`WorkerPool.run`): no thread hop there and back.
  func perform<T: Sendable>(
    deadline: Deadline = .never, _ work: @escaping @Sendable (ClientConnection) throws(StrataError) -> T
  )
    async throws(StrataError) -> T
  {
    try await worker.run { () throws(StrataError) in
      // A call whose deadline passed while it waited for this connection is not started (and the
      // connection, which did nothing wrong, is kept).
      guard !deadline.hasPassed() else {
        throw StrataError(.timeout, "the call to \(self.address) passed its deadline before it began")
      }
      self.callInFlight.store(true, ordering: .releasing)
      defer {
        self.callInFlight.store(false, ordering: .releasing)
        self.lastUsed = MonotonicTime.nowNanoseconds
      }
      do throws(StrataError) {
        try self.connectIfNeeded(deadline: deadline)
        return try work(self)
      } catch {
        if error.isTransportFailure || error.code == .protocolError { self.dropSocket() }
        throw error
      }
    }
  }

  /// Closes the connection (saying goodbye when idle). A call in progress on it ends at once
  /// with a transport error instead of holding the close for up to its timeout: a node that
  /// stopped answering would otherwise hold a stopping node's cluster service, or a client's
  /// close, for the whole peer timeout.
  func close() {
    liveSocket.withLock { socket in
      if callInFlight.load(ordering: .acquiring) { socket?.shutdown() }
    }
    worker.runAndWait { [self] () in
      if let socket { try? sendGoodbye(socket) }
      rdma?.endpoint.disconnect()
      dropSocket()
    }
  }

  /// Tells the node that the blocks of `keys` arrived damaged (their bytes failed the checksum it
  /// sent): it checks its copies and removes those that fail, so the next reader gets the block
  /// from another owner or recomputes it, and the next PUT stores it again. The first
  /// `VerifyRequest.keysMax` are reported (more at once is a fault of its own). A report is a courtesy:
  /// a node that does not answer VERIFY is not asked, and a failed report fails no call.
  func reportDamaged(_ keys: [BlockKey], deadline: Deadline) {
    guard nodeVerifies, !keys.isEmpty else { return }
    do throws(StrataError) {
      let reported = Array(keys.prefix(VerifyRequest.keysMax))
      _ = try exchange(VerifyRequest(keys: reported).wireMessage, payload: [], ringEpoch: 0, deadline: deadline) {
        _, _ throws(StrataError) in
      }
      transports.record { $0.damagedBlocksReported += reported.count }
    } catch {
      if error.isTransportFailure || error.code == .protocolError { dropSocket() }
    }
  }

  /// Closes the connection (saying goodbye) once the calls queued before this one are over; a
  /// call made after it connects again.
  func closeWhenIdle() {
    try? worker.submit { [self] in
      if let socket { try? sendGoodbye(socket) }
      rdma?.endpoint.disconnect()
      dropSocket()
    }
  }

  func dropSocket() {
    if isSameHost { transports.record { $0.sameHostConnections -= 1 } }
    socket = nil
    rdma = nil
    isSameHost = false
    sameHostRegion = nil
  }

  func sendGoodbye(_ socket: TCPSocket) throws(StrataError) {
    try socket.writeAll(GoodbyeRequest().frameBytes(requestID: nextRequestID, ringEpoch: 0))
  }

  private func connectIfNeeded(deadline: Deadline) throws(StrataError) {
    if let socket, MonotonicTime.nowNanoseconds &- lastUsed >= Self.idleCheckNanoseconds,
      socket.isReadableWhileIdle()
    {
      // The node closed it while it was idle (or it broke): connect again instead of failing
      // the call, and every retry after it, on connections of the pool that are all gone.
      dropSocket()
      transports.record { $0.idleConnectionsReplaced += 1 }
    }
    guard socket == nil else { return }
    if let path = transports.sameHostSocket(for: address, configured: configuration.sameHostSocket) {
      do throws(StrataError) {
        return try connectSameHost(path: path, deadline: deadline, expectedNodeID: nil)
      } catch {
        transports.learnSameHostSocket(nil, for: address, reason: error.message)
      }
    }
    let timeout = min(configuration.timeoutMilliseconds, max(1, deadline.remainingMilliseconds()))
    let socket = try TCPSocket.connect(
      to: address, timeoutMilliseconds: timeout, tls: configuration.tls, expecting: configuration.tlsIdentity)
    if timeout != configuration.timeoutMilliseconds {
      socket.setTimeout(milliseconds: configuration.timeoutMilliseconds)
    }
    self.socket = socket
    let hello = HelloRequest(
      capabilities: TransportNegotiation.offered(local: transports.availability, rdmaEnabled: transports.rdmaEnabled)
        .union(configuration.isPeer ? [.peer, .verify] : [.verify])
        .union(transports.offersSameHost(address) ? [.sharedMemory] : []),
      frameBytesMax: configuration.frameBytesMax, token: Array(configuration.token.utf8),
      clientName: configuration.clientName, peerNamespace: configuration.isPeer ? configuration.peerNamespace : "")
    let (_, message) = try exchange(hello.wireMessage, payload: [], ringEpoch: 0, deadline: deadline) {
      _, _ throws(StrataError) in
    }
    guard case .helloResponse(let response) = message else {
      throw StrataError(.protocolError, "\(address) answered HELLO with \(message.opcode)")
    }
    namespace = response.namespace
    nodeID = response.nodeID
    nodeLimits.learn(frameBytesMax: response.frameBytesMax, inflightBytesMax: response.inflightBytesMax)
    nodeVerifies = response.capabilities.contains(.verify)
    if !response.sameHostSocket.isEmpty && transports.offersSameHost(address) {
      // The node is on this machine and says where its Unix socket is: move there, if it is the
      // same node.
      do throws(StrataError) {
        try connectSameHost(path: response.sameHostSocket, deadline: deadline, expectedNodeID: response.nodeID)
        transports.learnSameHostSocket(response.sameHostSocket, for: address, reason: "")
        try? sendGoodbye(socket)
        return
      } catch {
        transports.learnSameHostSocket(nil, for: address, reason: error.message)
      }
    }
    negotiateTransport(
      granted: response.capabilities, token: Array(configuration.token.utf8), clientName: configuration.clientName,
      deadline: deadline)
  }

  /// Sends one request (header, body, then `payload` straight from its buffers) and reads the
  /// response header and body; `receivePayload` then reads the response's payload, if any (what it
  /// does not read travelled through the same-host region).
  func exchange(
    _ request: WireMessage, payload: [UnsafeRawBufferPointer], ringEpoch: UInt64, deadline: Deadline = .never,
    receivePayload: (FrameHeader, WireMessage) throws(StrataError) -> Void
  ) throws(StrataError) -> (FrameHeader, WireMessage) {
    guard var socket else { throw StrataError(.unavailable, "not connected to \(address)") }
    let requestID = nextRequestID
    nextRequestID += 1
    // The payload's reads (receive, discard) are bounded by the same deadline as the frame's.
    exchangeDeadline = deadline
    defer { exchangeDeadline = .never }
    // A deadline sets the socket's timeouts to what is left of it; the next call gets the configured ones back.
    defer { if deadline != .never { socket.setTimeout(milliseconds: configuration.timeoutMilliseconds) } }
    try socket.writeAll(
      request.frameBytes(requestID: requestID, ringEpoch: ringEpoch), then: payload, deadline: deadline)
    guard
      let (header, message) = try reader.nextFrame(from: &socket, deadline: deadline, headerArrived: { _ in deadline })
    else { throw StrataError(.unavailable, "\(address) sent no response") }
    guard header.requestID == requestID else {
      throw StrataError(.protocolError, "\(address) answered request \(requestID) with frame \(header.requestID)")
    }
    epochs.observe(header.ringEpoch)
    if case .error(_, let error) = message {
      try reader.discardPayload(Int(reader.payloadRemainingBytes), from: &socket, deadline: .never)
      let code = StrataError.Code(number: error.code) ?? .internalError
      throw StrataError(code, "\(address): \(error.message)", cause: AnsweredByNode())
    }
    do throws(StrataError) {
      try receivePayload(header, message)
    } catch {
      // What the payload left unread would be taken for the next response: whatever the failure
      // (a transport's or the caller's, such as a destination refused once its bytes arrive), this
      // connection is done, and the next call connects again.
      dropSocket()
      throw error
    }
    reader.endFrame()
    return (header, message)
  }

  /// Reads `destination.count` payload bytes of the response being received into `destination`,
  /// by the deadline of the call that sent the request.
  func receive(into destination: UnsafeMutableRawBufferPointer) throws(StrataError) {
    guard var socket else { throw StrataError(.unavailable, "not connected to \(address)") }
    try reader.receivePayload(into: destination, from: &socket, deadline: exchangeDeadline)
  }

  /// Reads the next payload bytes of the response being received into `segments`, each filled
  /// before the next, telling `landed` of every piece as it lands (see `FrameReader`).
  func receive(
    into segments: [UnsafeMutableRawBufferPointer],
    landed: (_ segment: Int, _ bytes: UnsafeRawBufferPointer) -> Void
  ) throws(StrataError) {
    guard var socket else { throw StrataError(.unavailable, "not connected to \(address)") }
    try reader.receivePayload(into: segments, from: &socket, deadline: exchangeDeadline, landed: landed)
  }

  /// Reads and drops `count` payload bytes of the response being received.
  func discard(_ count: Int) throws(StrataError) {
    guard var socket else { throw StrataError(.unavailable, "not connected to \(address)") }
    try reader.discardPayload(count, from: &socket, deadline: exchangeDeadline)
  }
}
