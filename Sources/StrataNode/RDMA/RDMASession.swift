// One RDMA connection of the node: HELLO, then GET (the node WRITEs each block from its arena
// into the client's destination, then answers) and PUT (the node READs each block from the
// client's source into an arena slot, verifies, commits, then answers). Other requests stay on
// the client's TCP connection.

import StrataCore
import StrataRDMA
import StrataStorage
import StrataWire

struct RDMASession {
  let endpoint: RDMAEndpoint
  let server: NodeServer
  let executor: QueueExecutor
  var namespace: Namespace?
  /// A peer node's connection (HELLO offered `.peer`): no ownership checks, copies or read-through.
  var isPeer = false
  let timeoutMilliseconds: UInt64 = 30_000

  init(endpoint: RDMAEndpoint, server: NodeServer) {
    self.endpoint = endpoint
    self.server = server
    executor = QueueExecutor(label: "strata.rdma.storage")
  }

  var limits: WireLimits { server.configuration.limits }

  mutating func run() {
    while true {
      do {
        let message = try endpoint.receive(timeoutMilliseconds: .max / 2_000_000)
        let (header, request) = try decodeFrame(message.frame, limits: limits)
        guard header.direction == .request else {
          throw StrataError(.protocolError, "a response frame sent to the node")
        }
        try serve(request, header: header, descriptors: message.descriptors)
      } catch {
        server.logger.debug("RDMA connection ended", metadata: ["reason": "\(error)"])
        return
      }
    }
  }

  private mutating func serve(_ request: WireMessage, header: FrameHeader, descriptors: [RemoteDescriptor])
    throws(StrataError)
  {
    guard let namespace else {
      guard case .helloRequest(let hello) = request, let granted = server.grant(token: hello.token) else {
        throw StrataError(.permissionDenied, "the first RDMA message must be HELLO with a known token")
      }
      self.namespace = granted.namespace
      isPeer = hello.capabilities.contains(.peer)
      let response = HelloResponse(
        capabilities: isPeer ? [.tcp, .rdma, .leases, .peer] : [.tcp, .rdma, .leases],
        nodeID: server.configuration.nodeID, namespace: granted.namespace, frameBytesMax: limits.payloadBytesMax,
        inflightBytesMax: UInt64(server.configuration.inflightBytesMax), ringEpoch: server.epoch)
      try send(.helloResponse(response), to: header)
      return
    }
    server.count { $0.requests += 1 }
    do throws(StrataError) {
      switch request {
      case .getRequest(let get): try answerGet(get, namespace: namespace, descriptors: descriptors, header: header)
      case .putRequest(let put): try answerPut(put, namespace: namespace, descriptors: descriptors, header: header)
      case .goodbyeRequest:
        try send(.goodbyeResponse(GoodbyeResponse()), to: header)
        throw StrataError(.unavailable, "the client said goodbye")
      default:
        throw StrataError(.unsupported, "over RDMA a node serves GET and PUT; send \(header.opcode) over TCP")
      }
    } catch  where error.code != .unavailable && error.code != .timeout && error.code != .protocolError {
      server.count { $0.errorResponses += 1 }
      try send(.error(header.opcode, ErrorBody(error)), to: header)
    }
  }

  private func send(_ message: WireMessage, to request: FrameHeader) throws(StrataError) {
    let frame = message.frameBytes(requestID: request.requestID, ringEpoch: server.epoch)
    try endpoint.send(RDMAMessage(frame: frame), timeoutMilliseconds: timeoutMilliseconds)
  }

  private func batcher(_ operation: RDMAOperation) -> WorkRequestBatcher {
    WorkRequestBatcher(
      operation: operation,
      limits: BatchLimits(
        sendQueueDepth: endpoint.limits.sendQueueDepth, requestsPerPost: endpoint.limits.requestsPerPost,
        messageBytesMax: endpoint.messageBytesMax))
  }

  private func arena() throws(StrataError) -> MemoryRegistration {
    guard let registration = server.rdma.arenaRegistration(on: endpoint.device) else {
      throw StrataError(.internalError, "the arena is not registered on \(endpoint.device.name)")
    }
    return registration
  }

  private func answerGet(
    _ request: GetRequest, namespace: Namespace, descriptors: [RemoteDescriptor], header: FrameHeader
  ) throws(StrataError) {
    guard descriptors.count == request.items.count else {
      throw StrataError(.protocolError, "GET of \(request.items.count) items with \(descriptors.count) descriptors")
    }
    let arena = try arena()
    try server.checkOwnership(request.items.map(\.key), ringEpoch: header.ringEpoch, isPeer: isPeer)
    let ids = request.items.map { BlockID(namespace: namespace, key: $0.key) }
    try server.fillMissing(ids, isPeer: isPeer, executor: executor)
    let tiers = server.tiers
    let lease = try blocking(on: executor) { () throws(StrataError) in try await tiers.lease(ids) }
    defer { tiers.release(lease) }
    var items: [GetResponse.Item] = []
    var transfers: [Transfer] = []
    var total = 0
    for (index, (item, block)) in zip(request.items, lease.blocks).enumerated() {
      let (answer, bytes) = resolve(item, in: block)
      items.append(answer)
      guard let range = bytes else { continue }
      // A destination too small gets nothing written; the client sees the length and says so.
      guard range.count <= Int(descriptors[index].length), range.count > 0 else { continue }
      transfers.append(
        Transfer(
          item: index, local: arena.local(at: UInt64(UInt(bitPattern: range.baseAddress))), remote: descriptors[index],
          length: range.count))
      total += range.count
    }
    guard server.reserveInflight(total) else {
      throw StrataError(
        .resourceExhausted, "the node is at its in-flight byte limit (limits.max_inflight_bytes); retry")
    }
    defer { server.releaseInflight(total) }
    var writes = batcher(.write)
    try writes.enqueue(transfers)
    _ = try endpoint.run(&writes, timeoutMilliseconds: timeoutMilliseconds)
    try send(.getResponse(GetResponse(items: items)), to: header)
    server.count {
      $0.getBlocks += transfers.count
      $0.getBytes += total
    }
  }

  private func answerPut(
    _ request: PutRequest, namespace: Namespace, descriptors: [RemoteDescriptor], header: FrameHeader
  ) throws(StrataError) {
    guard descriptors.count == request.items.count else {
      throw StrataError(.protocolError, "PUT of \(request.items.count) items with \(descriptors.count) descriptors")
    }
    let arena = try arena()
    try server.checkOwnership(request.items.map(\.key), ringEpoch: header.ringEpoch, isPeer: isPeer)
    let tiers = server.tiers
    let blockBytesMax = tiers.configuration.blockBytesMax
    var outcomes = [StrataWire.PutOutcome](repeating: .noSpace, count: request.items.count)
    var reservations: [Int: PutReservation] = [:]
    var transfers: [Transfer] = []
    for (index, item) in request.items.enumerated() {
      let length = Int(item.length)
      guard length > 0, length <= blockBytesMax, length <= Int(descriptors[index].length) else {
        outcomes[index] = .tooLarge
        continue
      }
      let id = BlockID(namespace: namespace, key: item.key)
      guard
        let reservation = try? blocking(
          on: executor, { () throws(StrataError) in try await tiers.reserve(id, bytes: length) })
      else {
        // nil (present) or a failure to make room.
        outcomes[index] = tiers.lookup([id])[0] != nil ? .alreadyPresent : .noSpace
        continue
      }
      reservations[index] = reservation
      transfers.append(
        Transfer(
          item: index, local: arena.local(at: UInt64(UInt(bitPattern: reservation.buffer.baseAddress))),
          remote: descriptors[index], length: length))
    }
    var reads = batcher(.read)
    do throws(StrataError) {
      try reads.enqueue(transfers)
      _ = try endpoint.run(&reads, timeoutMilliseconds: timeoutMilliseconds)
    } catch {
      for reservation in reservations.values { tiers.abort(reservation) }
      throw error
    }
    var stored = 0
    for (index, reservation) in reservations.sorted(by: { $0.key < $1.key }) {
      do throws(StrataError) {
        try tiers.commit(reservation, expectedChecksum: request.items[index].checksum)
        outcomes[index] = .stored
        stored += reservation.buffer.count
      } catch {
        outcomes[index] = .checksumMismatch
      }
    }
    try send(.putResponse(PutResponse(outcomes: outcomes)), to: header)
    server.replicate(request.items, outcomes: outcomes, namespace: namespace, isPeer: isPeer)
    server.count {
      $0.putBlocks += outcomes.filter { $0 == .stored }.count
      $0.putBytes += stored
    }
  }
}
