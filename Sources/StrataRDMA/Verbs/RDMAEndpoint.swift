// One reliable-connected queue pair and what it needs: a completion queue with its channel (so a
// thread sleeps instead of spinning), registered buffers for the posted receives and for sends,
// the credit window, and the posting and polling of one-sided batches. Used from one thread at a
// time (the owning connection's).

import CIBVerbs
import CRDMACM
public import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

/// The queue sizes of an endpoint.
public struct EndpointLimits: Sendable, Hashable {
  /// Receives posted at all times (the peer's credits).
  public var receiveDepth = 8
  /// One-sided requests in flight (max_send_wr, minus the room kept for SENDs).
  public var sendQueueDepth = 128
  public var requestsPerPost = 32
  /// Outstanding RDMA READs the node may issue to the client (initiator depth).
  public var readsInFlight = 16

  public init() {}
}

/// One RDMA connection's queue pair. Not thread-safe: the owning connection's thread drives it.
///
/// `@unchecked Sendable` so that it can be handed from the listener thread to the connection thread
/// once; from then on only that thread touches it.
public final class RDMAEndpoint: @unchecked Sendable {
  public let device: RDMADeviceContext
  public let limits: EndpointLimits
  public private(set) var machine: RDMAConnectionStateMachine
  let id: UnsafeMutablePointer<rdma_cm_id>
  /// Owned only on the client side (the listener's channel serves every server-side id).
  let eventChannel: UnsafeMutablePointer<rdma_event_channel>?
  private let completionChannel: UnsafeMutablePointer<ibv_comp_channel>
  private let completionQueue: UnsafeMutablePointer<ibv_cq>
  private var queuePairCreated = false
  private let receiveBuffers: UnsafeMutableRawPointer
  private let receiveRegistration: MemoryRegistration
  private let sendBuffer: UnsafeMutableRawPointer
  private let sendRegistration: MemoryRegistration
  public private(set) var credits: CreditWindow
  /// Messages received while waiting for something else, oldest first.
  private var arrived: [RDMAMessage] = []
  private var sendOutstanding = false
  /// The largest message the port carries (split point for one-sided transfers).
  public let messageBytesMax: Int

  static let sendWorkRequestID: UInt64 = .max
  static let receiveIDBase: UInt64 = 1 << 62

  init(
    id: UnsafeMutablePointer<rdma_cm_id>, eventChannel: UnsafeMutablePointer<rdma_event_channel>?,
    device: RDMADeviceContext, role: RDMARole, limits: EndpointLimits
  ) throws(StrataError) {
    self.id = id
    self.eventChannel = eventChannel
    self.device = device
    self.limits = limits
    machine = RDMAConnectionStateMachine(role: role)
    credits = CreditWindow(receiveDepth: limits.receiveDepth)
    guard let channel = ibv_create_comp_channel(device.context) else { throw verbsError("ibv_create_comp_channel") }
    let entries = Int32(limits.sendQueueDepth + limits.receiveDepth + 2)
    guard let queue = ibv_create_cq(device.context, entries, nil, channel, 0) else {
      ibv_destroy_comp_channel(channel)
      throw verbsError("ibv_create_cq")
    }
    completionChannel = channel
    completionQueue = queue
    let receiveBytes = limits.receiveDepth * RDMAMessage.bytesMax
    receiveBuffers = UnsafeMutableRawPointer.allocate(byteCount: receiveBytes, alignment: 4096)
    sendBuffer = UnsafeMutableRawPointer.allocate(byteCount: RDMAMessage.bytesMax, alignment: 4096)
    do {
      receiveRegistration = try device.register(receiveBuffers, byteCount: receiveBytes, remote: false)
      sendRegistration = try device.register(sendBuffer, byteCount: RDMAMessage.bytesMax, remote: false)
    } catch {
      receiveBuffers.deallocate()
      sendBuffer.deallocate()
      ibv_destroy_cq(queue)
      ibv_destroy_comp_channel(channel)
      throw error
    }
    var port = ibv_port_attr()
    let portNumber = id.pointee.port_num == 0 ? 1 : id.pointee.port_num
    messageBytesMax =
      strata_ibv_query_port(device.context, portNumber, &port) == 0 && port.max_msg_sz > 0
      ? Int(min(port.max_msg_sz, 1 << 30)) : 1 << 30
  }

  deinit {
    if queuePairCreated { rdma_destroy_qp(id) }
    ibv_destroy_cq(completionQueue)
    ibv_destroy_comp_channel(completionChannel)
    rdma_destroy_id(id)
    if let eventChannel { rdma_destroy_event_channel(eventChannel) }
    receiveBuffers.deallocate()
    sendBuffer.deallocate()
  }

  /// Creates the queue pair and posts every receive: done before connect or accept, so that the
  /// peer's credits are backed by real receives from the first message.
  func createQueuePair() throws(StrataError) {
    var attributes = ibv_qp_init_attr()
    attributes.send_cq = completionQueue
    attributes.recv_cq = completionQueue
    attributes.qp_type = IBV_QPT_RC
    attributes.sq_sig_all = 0
    attributes.cap.max_send_wr = UInt32(limits.sendQueueDepth + 2)
    attributes.cap.max_recv_wr = UInt32(limits.receiveDepth)
    attributes.cap.max_send_sge = 1
    attributes.cap.max_recv_sge = 1
    guard rdma_create_qp(id, device.protectionDomain, &attributes) == 0 else { throw verbsError("rdma_create_qp") }
    queuePairCreated = true
    for slot in 0..<limits.receiveDepth { try postReceive(slot) }
    guard ibv_req_notify_cq(completionQueue, 0) == 0 else { throw verbsError("ibv_req_notify_cq") }
  }

  func apply(_ event: RDMAConnectionEvent) -> RDMAConnectionDirective { machine.handle(event) }

  private func postReceive(_ slot: Int) throws(StrataError) {
    var entry = ibv_sge(
      addr: receiveRegistration.address + UInt64(slot * RDMAMessage.bytesMax), length: UInt32(RDMAMessage.bytesMax),
      lkey: receiveRegistration.localKey)
    var request = ibv_recv_wr()
    request.wr_id = Self.receiveIDBase + UInt64(slot)
    request.num_sge = 1
    var bad: UnsafeMutablePointer<ibv_recv_wr>?
    let status = withUnsafeMutablePointer(to: &entry) { entry in
      request.sg_list = entry
      return ibv_post_recv(id.pointee.qp, &request, &bad)
    }
    guard status == 0 else { throw verbsError("ibv_post_recv", errno: status) }
  }

  // MARK: Messages

  /// Sends one message (its credit piggybacked) and waits for the send to complete, so that the
  /// one send buffer can be reused and everything posted before it is known to be done.
  public func send(_ message: RDMAMessage, timeoutMilliseconds: UInt64) throws(StrataError) {
    guard machine.canPost else { throw StrataError(.unavailable, "RDMA connection is \(machine.state)") }
    var message = message
    message.credits = try credits.spend()
    let bytes = try message.encoded()
    bytes.withUnsafeBytes { sendBuffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    var entry = ibv_sge(addr: sendRegistration.address, length: UInt32(bytes.count), lkey: sendRegistration.localKey)
    var request = ibv_send_wr()
    request.wr_id = Self.sendWorkRequestID
    request.num_sge = 1
    request.opcode = IBV_WR_SEND
    request.send_flags = IBV_SEND_SIGNALED.rawValue
    var bad: UnsafeMutablePointer<ibv_send_wr>?
    let status = withUnsafeMutablePointer(to: &entry) { entry in
      request.sg_list = entry
      return ibv_post_send(id.pointee.qp, &request, &bad)
    }
    guard status == 0 else { throw fail(verbsError("ibv_post_send (SEND)", errno: status)) }
    sendOutstanding = true
    let deadline = Deadline.after(milliseconds: timeoutMilliseconds)
    while sendOutstanding { try expectNoOneSided(try pollOnce(deadline)) }
  }

  /// The next message from the peer.
  public func receive(timeoutMilliseconds: UInt64) throws(StrataError) -> RDMAMessage {
    let deadline = Deadline.after(milliseconds: timeoutMilliseconds)
    while arrived.isEmpty { try expectNoOneSided(try pollOnce(deadline)) }
    return arrived.removeFirst()
  }

  // MARK: One-sided batches

  /// Posts every transfer of `batcher` in chains the send queue allows and waits for all of them.
  /// Returns the items in the order they completed. A completion error fails the connection
  /// (it is then unusable) and throws; `batcher.abandonAll()` names the items to redo over TCP.
  public func run(_ batcher: inout WorkRequestBatcher, timeoutMilliseconds: UInt64) throws(StrataError) -> [Int] {
    let deadline = Deadline.after(milliseconds: timeoutMilliseconds)
    var done: [Int] = []
    while !batcher.isIdle {
      let chain = batcher.nextPost()
      if !chain.isEmpty { try post(chain) }
      // Post more as soon as a completion frees room in the send queue.
      let before = batcher.outstandingCount
      while batcher.outstandingCount == before && before > 0 {
        for completed in try pollOnce(deadline) { done += try batcher.completed(id: completed) }
      }
    }
    return done
  }

  private func post(_ chain: [PlannedWorkRequest]) throws(StrataError) {
    guard machine.canPost else { throw StrataError(.unavailable, "RDMA connection is \(machine.state)") }
    let entries = UnsafeMutablePointer<ibv_sge>.allocate(capacity: chain.count)
    let requests = UnsafeMutablePointer<ibv_send_wr>.allocate(capacity: chain.count)
    defer {
      entries.deallocate()
      requests.deallocate()
    }
    for (index, planned) in chain.enumerated() {
      entries[index] = ibv_sge(addr: planned.localAddress, length: UInt32(planned.length), lkey: planned.localKey)
      var request = ibv_send_wr()
      request.wr_id = planned.id
      request.sg_list = entries + index
      request.num_sge = 1
      request.opcode = planned.operation == .write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ
      request.send_flags = planned.signaled ? IBV_SEND_SIGNALED.rawValue : 0
      request.wr.rdma.remote_addr = planned.remoteAddress
      request.wr.rdma.rkey = planned.remoteKey
      request.next = index + 1 < chain.count ? requests + index + 1 : nil
      requests[index] = request
    }
    var bad: UnsafeMutablePointer<ibv_send_wr>?
    let status = ibv_post_send(id.pointee.qp, requests, &bad)
    guard status == 0 else { throw fail(verbsError("ibv_post_send of \(chain.count) requests", errno: status)) }
  }

  // MARK: Completions

  /// Waits (asleep on the completion channel) until at least one completion arrives, and handles
  /// every completion then queued. Returns the ids of the one-sided requests that completed.
  private func pollOnce(_ deadline: Deadline) throws(StrataError) -> [UInt64] {
    var completions = [ibv_wc](repeating: ibv_wc(), count: 32)
    var done: [UInt64] = []
    while true {
      let count = completions.withUnsafeMutableBufferPointer { ibv_poll_cq(completionQueue, 32, $0.baseAddress) }
      guard count >= 0 else { throw fail(verbsError("ibv_poll_cq")) }
      if count > 0 {
        for completion in completions[0..<Int(count)] {
          if let oneSided = try handle(completion) { done.append(oneSided) }
        }
        return done
      }
      try sleepUntilCompletion(deadline)
    }
  }

  /// Handles one completion; returns its id when it is a one-sided request's.
  private func handle(_ completion: ibv_wc) throws(StrataError) -> UInt64? {
    guard completion.status == IBV_WC_SUCCESS else {
      let words = String(cString: ibv_wc_status_str(completion.status))
      _ = machine.handle(.completionError(words))
      throw StrataError(.unavailable, "RDMA work request \(completion.wr_id) failed: \(words)")
    }
    if completion.wr_id == Self.sendWorkRequestID {
      sendOutstanding = false
      return nil
    }
    if completion.wr_id >= Self.receiveIDBase {
      let slot = Int(completion.wr_id - Self.receiveIDBase)
      let start = receiveBuffers + slot * RDMAMessage.bytesMax
      let message = try RDMAMessage(decoding: UnsafeRawBufferPointer(start: start, count: Int(completion.byte_len)))
      try postReceive(slot)
      try credits.received(returning: message.credits)
      arrived.append(message)
      return nil
    }
    return completion.wr_id
  }

  private func expectNoOneSided(_ completed: [UInt64]) throws(StrataError) {
    guard completed.isEmpty else {
      throw fail(StrataError(.internalError, "completion for work request \(completed[0]) with no batch running"))
    }
  }

  private func sleepUntilCompletion(_ deadline: Deadline) throws(StrataError) {
    // Re-arm, then poll once more: a completion that landed before the re-arm raises no event.
    guard ibv_req_notify_cq(completionQueue, 0) == 0 else { throw fail(verbsError("ibv_req_notify_cq")) }
    var probe = ibv_wc()
    if ibv_poll_cq(completionQueue, 0, &probe) < 0 { throw fail(verbsError("ibv_poll_cq")) }
    var descriptor = pollfd(fd: completionChannel.pointee.fd, events: Int16(POLLIN), revents: 0)
    let ready = poll(&descriptor, 1, Int32(clamping: deadline.remainingMilliseconds()))
    guard ready > 0 else {
      if ready == 0 { throw StrataError(.timeout, "no RDMA completion within the deadline") }
      if errno == EINTR { return }
      throw fail(verbsError("poll of the completion channel"))
    }
    var queue: UnsafeMutablePointer<ibv_cq>?
    var context: UnsafeMutableRawPointer?
    guard ibv_get_cq_event(completionChannel, &queue, &context) == 0 else { throw fail(verbsError("ibv_get_cq_event")) }
    ibv_ack_cq_events(completionQueue, 1)
  }

  private func fail(_ error: StrataError) -> StrataError {
    _ = machine.handle(.completionError(error.message))
    return error
  }

  /// Stops the queue pair after a failed or timed-out batch and waits until the device reports
  /// every request of `batcher` still outstanding (a stopped queue pair completes them all,
  /// flushed): only then may the memory they name be reused. Returns false when the device did not
  /// report them all within `timeoutMilliseconds`; the caller must then keep that memory pinned.
  /// The connection is unusable afterwards.
  public func quiesce(_ batcher: inout WorkRequestBatcher, timeoutMilliseconds: UInt64) -> Bool {
    var attributes = ibv_qp_attr()
    attributes.qp_state = IBV_QPS_ERR
    _ = ibv_modify_qp(id.pointee.qp, &attributes, Int32(IBV_QP_STATE.rawValue))
    _ = machine.handle(.completionError("stopped after a failed batch"))
    let deadline = Deadline.after(milliseconds: timeoutMilliseconds)
    var completions = [ibv_wc](repeating: ibv_wc(), count: 32)
    while batcher.outstandingCount > 0 {
      let count = completions.withUnsafeMutableBufferPointer { ibv_poll_cq(completionQueue, 32, $0.baseAddress) }
      guard count >= 0 else { return false }
      for completion in completions.prefix(Int(count))
      where completion.wr_id != Self.sendWorkRequestID && completion.wr_id < Self.receiveIDBase {
        batcher.flushed(id: completion.wr_id)
      }
      if count == 0 {
        guard !deadline.hasPassed() else { return false }
        var descriptor = pollfd(fd: completionChannel.pointee.fd, events: Int16(POLLIN), revents: 0)
        _ = ibv_req_notify_cq(completionQueue, 0)
        _ = poll(&descriptor, 1, Int32(clamping: min(deadline.remainingMilliseconds(), 10)))
      }
    }
    return true
  }

  /// Stops the connection from another thread (a configuration reload revoked its token): moves
  /// the queue pair to the error state, so every posted request completes flushed and the thread
  /// waiting in `receive` or `run` sees an error at once. Touches no state of this object but the
  /// queue pair, which libibverbs lets any thread modify; the owning thread still disconnects.
  public func interrupt() {
    var attributes = ibv_qp_attr()
    attributes.qp_state = IBV_QPS_ERR
    _ = ibv_modify_qp(id.pointee.qp, &attributes, Int32(IBV_QP_STATE.rawValue))
  }

  /// The peer's address without its port, for limits per source address.
  public var peerHost: String {
    guard let address = rdma_get_peer_addr(id) else { return "rdma-peer" }
    var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
    let length = socklen_t(
      address.pointee.sa_family == sa_family_t(AF_INET6)
        ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    guard getnameinfo(address, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 else {
      return "rdma-peer"
    }
    return String(nulTerminated: host)
  }

  /// Disconnects (the peer sees DISCONNECTED; posted requests flush).
  public func disconnect() {
    if machine.handle(.close) == .disconnect { rdma_disconnect(id) }
  }

  /// The peer's side of the connection went away (server side, from the listener's events).
  func peerDisconnected() { _ = machine.handle(.disconnected) }
}
