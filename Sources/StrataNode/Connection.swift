// One client connection of the node: reads a frame (header, body, payload) at a time and
// answers it. Requests may be pipelined; each is answered, in arrival order, by request id.
// A malformed frame closes this connection only, with the reason logged.

import Dispatch
import Logging
import StrataCore
import StrataStorage
import StrataTCP
import StrataWire
import Synchronization

final class Connection: Sendable {
  enum Phase {
    case idle
    case busy
    case closing
  }

  /// What went wrong with a frame that cannot be answered: the connection closes.
  struct Malformed: Error {
    let reason: String
  }

  let id: Int
  let socket: TCPSocket
  private let server: NodeServer
  private let phase = Mutex(Phase.idle)
  private let closed = DispatchSemaphore(value: 0)

  init(id: Int, socket: TCPSocket, server: NodeServer) {
    self.id = id
    self.socket = socket
    self.server = server
  }

  /// Closes the connection now if it waits for a request, else after the request in progress.
  func closeWhenIdle() {
    let wasIdle = phase.withLock { phase -> Bool in
      defer { phase = .closing }
      return phase == .idle
    }
    if wasIdle { socket.shutdown() }
  }

  func waitUntilClosed() {
    closed.wait()
    closed.signal()  // let other waiters through too
  }

  private func enter(_ next: Phase) -> Bool {
    phase.withLock { phase in
      guard phase != .closing else { return false }
      phase = next
      return true
    }
  }

  func run() {
    var session = Session(connection: self, server: server)
    defer {
      session.end()
      socket.shutdown()
      server.connectionEnded(id)
      closed.signal()
    }
    let header = UnsafeMutableRawBufferPointer.allocate(byteCount: FrameHeader.byteCount, alignment: 8)
    defer { header.deallocate() }
    while true {
      do {
        try socket.readExactly(header)
      } catch {
        return  // the peer closed or the node is stopping
      }
      guard enter(.busy) else { return }
      do {
        try session.serve(header: UnsafeRawBufferPointer(header))
      } catch let malformed as Malformed {
        server.count { $0.malformedFrames += 1 }
        server.logger.warning(
          "closing connection: malformed frame", metadata: ["peer": "\(socket.peer)", "reason": "\(malformed.reason)"])
        return
      } catch {
        server.logger.debug("connection ended", metadata: ["peer": "\(socket.peer)", "reason": "\(error)"])
        return
      }
      guard enter(.idle) else { return }
    }
  }
}

/// The per-connection protocol state: the namespace HELLO granted, leases taken by LOOKUP,
/// reusable buffers.
struct Session {
  let connection: Connection
  let server: NodeServer
  var namespace: Namespace?
  /// May delete and drain (admin-scoped).
  var isAdmin = false
  /// A peer node's connection (HELLO offered `.peer`): no ownership checks, copies or read-through.
  var isPeer = false
  var leases: [UInt64: BlockLease] = [:]
  var body: [UInt8] = []
  /// Sizes of the blocks the request being answered moved, for the observer (metrics).
  var movedBlockBytes: [Int] = []
  /// Where this connection's storage calls run (see `blocking`).
  let executor: QueueExecutor
  let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)

  init(connection: Connection, server: NodeServer) {
    self.connection = connection
    self.server = server
    executor = QueueExecutor(label: "strata.conn.\(connection.id).storage")
  }

  mutating func end() {
    for lease in leases.values { server.tiers.release(lease) }
    leases.removeAll()
    scratch.deallocate()
  }

  var limits: WireLimits { server.configuration.limits }

  mutating func serve(header raw: UnsafeRawBufferPointer) throws {
    let header: FrameHeader
    do {
      header = try FrameHeader(decoding: raw, limits: limits)
    } catch {
      throw Connection.Malformed(reason: error.message)
    }
    guard header.direction == .request else { throw Connection.Malformed(reason: "a response frame sent to the node") }
    if body.count < Int(header.bodyBytes) { body = [UInt8](repeating: 0, count: Int(header.bodyBytes)) }
    // The buffer is taken out of self for the read (no copy), so the closure may not touch self.
    var buffer: [UInt8] = []
    swap(&buffer, &body)
    defer { swap(&buffer, &body) }
    let socket = connection.socket
    let limits = self.limits
    let message: WireMessage = try buffer.withUnsafeMutableBytes { buffer in
      let bodyBuffer = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(header.bodyBytes)])
      try socket.readExactly(bodyBuffer)
      do {
        try header.verifyBody(UnsafeRawBufferPointer(bodyBuffer))
        return try WireMessage(header: header, body: UnsafeRawBufferPointer(bodyBuffer), limits: limits)
      } catch let error as StrataError {
        throw Connection.Malformed(reason: error.message)
      }
    }
    let started = DispatchTime.now().uptimeNanoseconds
    if namespace == nil {
      guard case .helloRequest(let hello) = message else {
        throw Connection.Malformed(reason: "the first frame must be HELLO, got \(header.opcode)")
      }
      try answerHello(hello, header: header)
      observe(header, startedAt: started, error: nil)
      return
    }
    server.count { $0.requests += 1 }
    var failure: StrataError.Code?
    do {
      try dispatch(message, header: header)
    } catch let error as StrataError where error.code != .unavailable && error.code != .timeout {
      // A well-formed request that failed: answered with its error; the connection stays.
      server.count { $0.errorResponses += 1 }
      failure = error.code
      server.logger.debug(
        "request failed",
        metadata: [
          "request_id": "\(header.requestID)", "op": "\(header.opcode)", "code": "\(error.code)",
          "reason": "\(error.message)",
        ])
      try send(.error(header.opcode, ErrorBody(code: error.code.number, message: error.message)), to: header)
    }
    observe(header, startedAt: started, error: failure)
  }

  /// Tells the server's observer (metrics) about the request just answered.
  private mutating func observe(_ header: FrameHeader, startedAt: UInt64, error: StrataError.Code?) {
    defer { movedBlockBytes.removeAll(keepingCapacity: true) }
    guard let observer = server.observer else { return }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - startedAt) / 1e9
    observer.requestFinished(
      RequestEvent(
        op: "\(header.opcode)", transport: "tcp", seconds: seconds, error: error, blockBytes: movedBlockBytes,
        requestID: header.requestID))
  }

  private mutating func dispatch(_ message: WireMessage, header: FrameHeader) throws {
    switch message {
    case .lookupRequest(let request): try answerLookup(request, header: header)
    case .getRequest(let request): try answerGet(request, header: header)
    case .putRequest(let request): try answerPut(request, header: header)
    case .deleteRequest(let request):
      guard isAdmin else {
        throw StrataError(.permissionDenied, "DELETE is admin-scoped: this connection's token is not an admin token")
      }
      let removed = request.keys.map { key in
        let id = BlockID(namespace: namespace!, key: key)
        let present = server.tiers.lookup([id])[0] != nil
        server.tiers.remove(id)
        return present
      }
      try send(.deleteResponse(DeleteResponse(removed: removed)), to: header)
    case .statRequest:
      try send(.statResponse(StatResponse(json: server.statJSON())), to: header)
    case .goodbyeRequest:
      try send(.goodbyeResponse(GoodbyeResponse()), to: header)
      throw StrataError(.unavailable, "the client said goodbye")
    case .helloRequest:
      throw StrataError(.invalidArgument, "HELLO was already received on this connection")
    case .ringRequest(let body):
      guard let cluster = server.cluster else {
        throw StrataError(.unsupported, "RING needs cluster mode; this node runs alone")
      }
      let admin = isAdmin
      let answer = try blocking(on: executor) { () throws(StrataError) in
        try await cluster.answerRing(body, isAdmin: admin)
      }
      try send(.ringResponse(body: answer), to: header)
    default:
      throw Connection.Malformed(reason: "unexpected \(header.opcode) frame")
    }
  }

  private func send(_ message: WireMessage, to request: FrameHeader, payload: [UnsafeRawBufferPointer] = []) throws {
    try connection.socket.writeAll(
      message.frameBytes(requestID: request.requestID, ringEpoch: server.epoch), then: payload)
  }

  private mutating func answerHello(_ hello: HelloRequest, header: FrameHeader) throws {
    guard hello.versionMin <= WireProtocol.version && WireProtocol.version <= hello.versionMax else {
      try send(
        .error(
          .hello,
          ErrorBody(
            code: StrataError.Code.unsupported.number,
            message:
              "protocol versions \(hello.versionMin)-\(hello.versionMax) not spoken; this node speaks \(WireProtocol.version)"
          )),
        to: header)
      throw StrataError(.unavailable, "no common protocol version")
    }
    let granted: Namespace
    if let mapped = server.grant(token: hello.token) {
      granted = mapped.namespace
      isAdmin = mapped.admin
    } else {
      try send(
        .error(.hello, ErrorBody(code: StrataError.Code.permissionDenied.number, message: "unknown token")), to: header)
      throw StrataError(.unavailable, "unknown token")
    }
    namespace = granted
    isPeer = hello.capabilities.contains(.peer)
    let response = HelloResponse(
      capabilities: server.grantCapabilities(hello, peer: "\(connection.socket.peer)").union(isPeer ? [.peer] : []),
      nodeID: server.configuration.nodeID, namespace: granted,
      frameBytesMax: limits.payloadBytesMax, inflightBytesMax: UInt64(server.configuration.inflightBytesMax),
      ringEpoch: server.epoch)
    try send(.helloResponse(response), to: header)
  }

  private mutating func answerLookup(_ request: LookupRequest, header: FrameHeader) throws {
    try server.checkOwnership(request.keys, ringEpoch: header.ringEpoch, isPeer: isPeer)
    let ids = request.keys.map { BlockID(namespace: namespace!, key: $0) }
    try server.fillMissing(ids, isPeer: isPeer, executor: executor)
    var response: LookupResponse
    if request.leaseMilliseconds > 0 {
      let tiers = server.tiers
      let found = tiers.lookup(ids)
      let lease = try blocking(on: executor) { () throws(StrataError) in
        try await tiers.lease(ids, durationMilliseconds: UInt64(request.leaseMilliseconds))
      }
      leases[lease.id.rawValue] = lease
      response = LookupResponse(
        tiers: zip(found, lease.blocks).map { tier, block in block == nil ? .absent : (tier == .nvme ? .nvme : .ram) },
        leadingRun: UInt32(lease.leadingRunCount), leaseID: lease.id.rawValue,
        leaseExpiresInMilliseconds: request.leaseMilliseconds)
    } else {
      let tiers = server.tiers.lookup(ids).map { tier -> BlockTier in
        switch tier {
        case .ram: .ram
        case .nvme: .nvme
        case nil: .absent
        }
      }
      response = LookupResponse(tiers: tiers, leadingRun: UInt32(tiers.firstIndex(of: .absent) ?? tiers.count))
    }
    try send(.lookupResponse(response), to: header)
  }

  private mutating func answerGet(_ request: GetRequest, header: FrameHeader) throws {
    try server.checkOwnership(request.items.map(\.key), ringEpoch: header.ringEpoch, isPeer: isPeer)
    let ids = request.items.map { BlockID(namespace: namespace!, key: $0.key) }
    try server.fillMissing(ids, isPeer: isPeer, executor: executor)
    let tiers = server.tiers
    let lease = try blocking(on: executor) { () throws(StrataError) in try await tiers.lease(ids) }
    defer {
      tiers.release(lease)
      if request.leaseID != 0, let held = leases.removeValue(forKey: request.leaseID) { tiers.release(held) }
    }
    var items: [GetResponse.Item] = []
    var payload: [UnsafeRawBufferPointer] = []
    items.reserveCapacity(ids.count)
    payload.reserveCapacity(ids.count)
    var total = 0
    for (item, block) in zip(request.items, lease.blocks) {
      let (answer, bytes) = resolve(item, in: block)
      items.append(answer)
      guard let range = bytes else { continue }
      payload.append(range)
      total += range.count
      if server.observer != nil { movedBlockBytes.append(range.count) }
    }
    guard UInt64(total) <= limits.payloadBytesMax else {
      throw StrataError(
        .resourceExhausted,
        "GET of \(total) bytes exceeds the \(limits.payloadBytesMax)-byte frame limit; split the batch")
    }
    guard server.reserveInflight(total) else {
      throw StrataError(
        .resourceExhausted, "the node is at its in-flight byte limit (limits.max_inflight_bytes); retry")
    }
    defer { server.releaseInflight(total) }
    try send(.getResponse(GetResponse(items: items)), to: header, payload: payload)
    server.count {
      $0.getBlocks += payload.count
      $0.getBytes += total
    }
  }

  private mutating func answerPut(_ request: PutRequest, header: FrameHeader) throws {
    let total = Int(header.payloadBytes)
    do {
      try server.checkOwnership(request.items.map(\.key), ringEpoch: header.ringEpoch, isPeer: isPeer)
    } catch {
      try connection.socket.discard(total, scratch: scratch)
      throw error
    }
    let admitted = server.reserveInflight(total)
    defer { if admitted { server.releaseInflight(total) } }
    var outcomes: [StrataWire.PutOutcome] = []
    outcomes.reserveCapacity(request.items.count)
    let tiers = server.tiers
    let blockBytesMax = tiers.configuration.blockBytesMax
    var stored = 0
    for item in request.items {
      let length = Int(item.length)
      guard admitted else {
        try connection.socket.discard(length, scratch: scratch)
        outcomes.append(.noSpace)
        continue
      }
      guard length > 0, length <= blockBytesMax else {
        try connection.socket.discard(length, scratch: scratch)
        outcomes.append(.tooLarge)
        continue
      }
      let id = BlockID(namespace: namespace!, key: item.key)
      let reservation: PutReservation?
      do {
        reservation = try blocking(on: executor) { () throws(StrataError) in try await tiers.reserve(id, bytes: length)
        }
      } catch {
        try connection.socket.discard(length, scratch: scratch)
        outcomes.append(.noSpace)
        continue
      }
      guard let reservation else {
        try connection.socket.discard(length, scratch: scratch)
        outcomes.append(.alreadyPresent)
        continue
      }
      do {
        try connection.socket.readExactly(reservation.buffer)
      } catch {
        tiers.abort(reservation)
        throw error
      }
      do {
        try tiers.commit(reservation, expectedChecksum: item.checksum)
        outcomes.append(.stored)
        stored += length
        if server.observer != nil { movedBlockBytes.append(length) }
      } catch {
        outcomes.append(.checksumMismatch)
      }
    }
    try send(.putResponse(PutResponse(outcomes: outcomes)), to: header)
    server.replicate(request.items, outcomes: outcomes, namespace: namespace!, isPeer: isPeer)
    server.count {
      $0.putBlocks += outcomes.filter { $0 == .stored }.count
      $0.putBytes += stored
    }
  }
}
