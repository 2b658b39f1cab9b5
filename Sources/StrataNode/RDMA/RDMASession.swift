// One RDMA connection of the node: its messages go through the same request pipeline as TCP's
// (HELLO, limits, leases, reservations, accounting, metrics). Only payload movement differs: a
// GET's blocks are RDMA WRITEs from the arena into the client's destinations, a PUT's are RDMA
// READs from the client's sources into reserved arena slots; a failed or late batch stops the
// queue pair and waits for the device to let go of the memory before the pipeline unpins it.

import StrataCore
import StrataRDMA
import StrataStorage
import StrataWire

struct RDMASession {
  let endpoint: RDMAEndpoint
  let server: NodeServer

  init(endpoint: RDMAEndpoint, server: NodeServer) {
    self.endpoint = endpoint
    self.server = server
  }

  var limits: WireLimits { server.configuration.limits }

  mutating func run() {
    let source = endpoint.peerHost
    var transport = RDMAPayloadTransport(endpoint: endpoint, server: server)
    guard var session = handshake(source: source, transport: &transport) else { return }
    defer { session.end() }
    let idle = server.configuration.pipeline.idleTimeoutMilliseconds
    while true {
      do throws(StrataError) {
        let message = try endpoint.receive(timeoutMilliseconds: idle)
        let (header, request) = try message.decodedFrame(limits: limits, receiving: .request)
        try transport.expect(request, descriptors: message.descriptors)
        try session.serve(request, header: header, over: &transport)
      } catch {
        if error.code == .protocolError { server.count { $0.malformedFrames += 1 } }
        server.logger.debug("RDMA connection ended", metadata: ["reason": "\(error)"])
        return
      }
    }
  }

  /// The first message must be a HELLO the pipeline grants, within the handshake deadline.
  private func handshake(source: String, transport: inout RDMAPayloadTransport) -> RequestSession? {
    do throws(StrataError) {
      let message = try endpoint.receive(timeoutMilliseconds: server.configuration.handshakeTimeoutMilliseconds)
      let (header, request) = try message.decodedFrame(limits: HandshakeGate.limits, receiving: .request)
      guard case .helloRequest(let hello) = request else {
        throw StrataError(.protocolError, "the first RDMA message must be HELLO, got \(header.opcode)")
      }
      let deadline = Deadline.after(milliseconds: server.configuration.pipeline.requestTimeoutMilliseconds)
      do throws(StrataError) {
        let (grant, response) = try server.authenticate(hello, source: source, transport: "rdma")
        try transport.respond(
          WireMessage.helloResponse(response).frameBytes(requestID: header.requestID, ringEpoch: server.epoch),
          deadline: deadline)
        // A reload that revokes the token moves the queue pair to the error state: the receive or
        // batch this connection waits on completes with a flush error and the session ends.
        return RequestSession(
          server: server, grant: grant, source: source, close: { [endpoint] in endpoint.interrupt() })
      } catch  where error.code != .unavailable && error.code != .timeout {
        try transport.respond(
          WireMessage.error(.hello, ErrorBody(error)).frameBytes(requestID: header.requestID, ringEpoch: 0),
          deadline: deadline)
        throw error
      }
    } catch {
      server.logger.info("refused an RDMA connection", metadata: ["peer": "\(source)", "reason": "\(error.message)"])
      return nil
    }
  }
}

/// Moves payloads with one-sided RDMA against the client's memory descriptors (one per item of
/// the request being served).
struct RDMAPayloadTransport: PayloadTransport {
  let endpoint: RDMAEndpoint
  let server: NodeServer
  /// The client's memory for the request being served, one descriptor per item.
  private var descriptors: [RemoteDescriptor] = []
  /// How long a stopped queue pair may take to report its last requests.
  static let quiesceMilliseconds: UInt64 = 5_000

  init(endpoint: RDMAEndpoint, server: NodeServer) {
    self.endpoint = endpoint
    self.server = server
  }

  var name: String { "rdma" }

  /// Takes the descriptors of the next request: a GET or PUT needs one per item, each large enough.
  mutating func expect(_ request: WireMessage, descriptors: [RemoteDescriptor]) throws(StrataError) {
    self.descriptors = descriptors
    switch request {
    case .getRequest(let get):
      guard descriptors.count == get.items.count else {
        throw StrataError(.protocolError, "GET of \(get.items.count) items with \(descriptors.count) descriptors")
      }
    case .putRequest(let put):
      guard descriptors.count == put.items.count else {
        throw StrataError(.protocolError, "PUT of \(put.items.count) items with \(descriptors.count) descriptors")
      }
      for (item, descriptor) in zip(put.items, descriptors) where item.length > UInt64(descriptor.length) {
        throw StrataError(
          .protocolError, "PUT item of \(item.length) bytes names a \(descriptor.length)-byte source region")
      }
    default:
      break
    }
  }

  mutating func respond(_ frame: [UInt8], deadline: Deadline) throws(StrataError) {
    try endpoint.send(RDMAMessage(frame: frame), timeoutMilliseconds: max(1, deadline.remainingMilliseconds()))
  }

  mutating func deliverGet(
    items: [GetResponse.Item], ranges: [UnsafeRawBufferPointer?], response: ResponseFrame, deadline: Deadline
  ) throws(StrataError) -> [GetResponse.Item] {
    let arena = try arenaRegistration()
    // The NIC moves the bytes straight into the client's memory, which may be GPU memory the
    // client never reads back: the node checks them first (CPU it spends on RDMA GETs only).
    var answered = checkedBeforeDelivery(items, ranges)
    var transfers: [Transfer] = []
    for (index, range) in ranges.enumerated() {
      guard let range, range.count > 0, answered[index].status == .ok else { continue }
      // A destination too small gets nothing written, and the item says why.
      guard range.count <= Int(descriptors[index].length) else {
        answered[index] = GetResponse.Item(status: .rangeOutOfBounds)
        continue
      }
      transfers.append(
        Transfer(
          item: index, local: arena.local(at: UInt64(UInt(bitPattern: range.baseAddress))), remote: descriptors[index],
          length: range.count))
    }
    try run(.write, transfers, deadline: deadline)
    try respond(response.bytes(.getResponse(GetResponse(items: answered))), deadline: deadline)
    return answered
  }

  /// The NIC writes the slots: nothing is checksummed on the way, so the commit checksums them.
  mutating func receivePut(_ slots: [PayloadSlot], firstItem: Int, deadline: Deadline) throws(StrataError) -> [UInt32?]
  {
    let arena = try arenaRegistration()
    var transfers: [Transfer] = []
    for (index, slot) in slots.enumerated() {
      guard case .into(let buffer) = slot, buffer.count > 0 else { continue }
      transfers.append(
        Transfer(
          item: index, local: arena.local(at: UInt64(UInt(bitPattern: buffer.baseAddress))),
          remote: descriptors[firstItem + index], length: buffer.count))
    }
    try run(.read, transfers, deadline: deadline)
    return Array(repeating: nil, count: slots.count)
  }

  /// Runs one batch by `deadline`; if it fails, stops the queue pair and returns only once the
  /// device has let go of every request (or, if it never says so, never: the memory stays pinned
  /// by a thread that does not return, which is logged — reuse under a live DMA is never allowed).
  private func run(_ operation: RDMAOperation, _ transfers: [Transfer], deadline: Deadline) throws(StrataError) {
    guard !transfers.isEmpty else { return }
    var batcher = WorkRequestBatcher(
      operation: operation,
      limits: BatchLimits(
        sendQueueDepth: endpoint.limits.sendQueueDepth, requestsPerPost: endpoint.limits.requestsPerPost,
        messageBytesMax: endpoint.messageBytesMax))
    do throws(StrataError) {
      try batcher.enqueue(transfers)
      _ = try endpoint.run(&batcher, timeoutMilliseconds: max(1, deadline.remainingMilliseconds()))
    } catch {
      while !endpoint.quiesce(&batcher, timeoutMilliseconds: Self.quiesceMilliseconds) {
        server.logger.error(
          "an RDMA queue pair does not report its stopped requests; their memory stays pinned",
          metadata: ["outstanding": "\(batcher.outstandingCount)"])
      }
      throw StrataError(.unavailable, "RDMA \(operation) batch failed: \(error.message)")
    }
  }

  private func arenaRegistration() throws(StrataError) -> MemoryRegistration {
    guard let registration = server.rdma.arenaRegistration(on: endpoint.device) else {
      throw StrataError(.internalError, "the arena is not registered on \(endpoint.device.name)")
    }
    return registration
  }
}
