// The client's side of the RDMA transport: after the TCP HELLO grants RDMA, it connects through
// rdma_cm and says HELLO again on the new connection; GET and PUT batches then go as messages
// that carry descriptors of the client's registered memory, and the node writes or reads the
// payload itself. Any transport failure drops RDMA for the connection and the batch is redone
// over TCP (every call is idempotent).

import StrataCore
import StrataRDMA
import StrataWire

/// A connection's RDMA side: the endpoint and its own request ids.
final class RDMAChannel {
  let endpoint: RDMAEndpoint
  var nextRequestID: UInt64 = 1
  let timeoutMilliseconds: UInt64
  let limits: WireLimits

  init(endpoint: RDMAEndpoint, timeoutMilliseconds: UInt64, limits: WireLimits) {
    self.endpoint = endpoint
    self.timeoutMilliseconds = timeoutMilliseconds
    self.limits = limits
  }

  /// Sends a request with descriptors and returns the node's answer (an `.error` message included)
  /// and the node's ring epoch from its header. The send and the wait for the answer each end at
  /// the configured timeout or at `deadline` (the call's), whichever comes first.
  func exchange(
    _ request: WireMessage, descriptors: [RemoteDescriptor], ringEpoch: UInt64 = 0, deadline: Deadline = .never
  ) throws(StrataError) -> (message: WireMessage, ringEpoch: UInt64) {
    let requestID = nextRequestID
    nextRequestID += 1
    let frame = request.frameBytes(requestID: requestID, ringEpoch: ringEpoch)
    try endpoint.send(
      RDMAMessage(frame: frame, descriptors: descriptors), timeoutMilliseconds: timeout(deadline))
    let answer = try endpoint.receive(timeoutMilliseconds: timeout(deadline))
    let (header, message) = try answer.decodedFrame(limits: limits, receiving: .response)
    guard header.requestID == requestID else {
      throw StrataError(.protocolError, "RDMA answer to request \(requestID) carries frame \(header.requestID)")
    }
    return (message, header.ringEpoch)
  }

  /// The configured timeout, cut to what is left of `deadline`; a deadline already passed throws.
  private func timeout(_ deadline: Deadline) throws(StrataError) -> UInt64 {
    guard !deadline.hasPassed() else {
      throw StrataError(.timeout, "the RDMA exchange passed the call's deadline")
    }
    return min(timeoutMilliseconds, deadline.remainingMilliseconds())
  }
}

extension ClientConnection {
  /// Decides the transport after the TCP HELLO and, where both sides have RDMA, brings the RDMA
  /// connection up, within the configured timeout and `deadline` (the call's that connects).
  /// Never fails the connection: a failure leaves it on TCP with the reason recorded.
  func negotiateTransport(granted: Capabilities, token: [UInt8], clientName: String, deadline: Deadline) {
    let plan = TransportNegotiation.clientPlan(
      local: transports.availability, rdmaEnabled: transports.rdmaEnabled, granted: granted)
    var failure: RDMAFailure?
    if plan.transport == .rdma {
      do throws(StrataError) {
        let endpoint = try RDMAEndpoint.connect(
          to: address, devices: transports.devices, limits: EndpointLimits(),
          timeoutMilliseconds: min(configuration.timeoutMilliseconds, max(1, deadline.remainingMilliseconds())))
        let channel = RDMAChannel(
          endpoint: endpoint, timeoutMilliseconds: configuration.timeoutMilliseconds, limits: configuration.limits)
        let hello = HelloRequest(
          capabilities: configuration.isPeer ? [.tcp, .rdma, .leases, .peer] : [.tcp, .rdma, .leases],
          frameBytesMax: configuration.frameBytesMax, token: token, clientName: clientName,
          peerNamespace: configuration.isPeer ? configuration.peerNamespace : "")
        let (answer, _) = try channel.exchange(hello.wireMessage, descriptors: [], deadline: deadline)
        guard case .helloResponse = answer else { throw unexpected(answer) }
        rdma = channel
      } catch {
        failure = RDMAFailure(error.message)
      }
    }
    let decision = TransportNegotiation.afterConnect(plan, failure: failure)
    transports.record { stats in
      if decision.transport == .rdma { stats.rdmaConnections += 1 } else { stats.tcpConnections += 1 }
      stats.lastDecision = decision.description
    }
  }

  /// Drops RDMA after a failure mid-stream; the caller redoes the batch over TCP.
  private func failOver(_ error: StrataError) {
    rdma?.endpoint.disconnect()
    rdma = nil
    transports.record { stats in
      stats.failedOverBatches += 1
      stats.rdmaConnections -= 1
      stats.tcpConnections += 1
      stats.lastDecision =
        TransportDecision(.tcp, "RDMA failed mid-stream, batch moved to TCP: \(error.message)")
        .description
    }
  }

  /// Descriptors of `slices` on the RDMA device, or nil when one cannot be registered there.
  private func descriptors(_ slices: [RegionSlice], on channel: RDMAChannel) -> [RemoteDescriptor]? {
    var descriptors: [RemoteDescriptor] = []
    descriptors.reserveCapacity(slices.count)
    for slice in slices {
      guard let registration = transports.registration(slice.region, on: channel.endpoint.device) else { return nil }
      descriptors.append(registration.descriptor(at: slice.region.address + UInt64(slice.offset), count: slice.length))
    }
    return descriptors
  }

  /// A GET over RDMA: the node writes each block into its destination. Nil when this connection
  /// has no RDMA, a destination is not registered on its device, or RDMA failed (then it is dropped).
  func getOverRDMA(
    _ items: [StrataClient.GetItem], request: GetRequest, verify: Bool, ringEpoch: UInt64, deadline: Deadline
  ) throws(StrataError) -> [StrataClient.GetResult]? {
    guard
      let answer = try exchangeOverRDMA(
        request.wireMessage, slices: items.map(\.destination), ringEpoch: ringEpoch, deadline: deadline)
    else { return nil }
    guard case .getResponse(let response) = answer, response.items.count == items.count else {
      throw unexpected(answer)
    }
    // The node never reads what the fabric reads from its memory: a block that fails here is
    // reported to it, as over TCP (not run on hardware).
    var damaged: [BlockKey] = []
    defer { reportDamaged(damaged, deadline: deadline) }
    return zip(items, response.items).map { item, answer in
      switch answer.status {
      case .missing: return .missing
      case .rangeOutOfBounds: return .outOfRange
      case .corrupt: return .corrupt
      case .ok:
        let length = Int(answer.length)
        guard length <= item.destination.length else { return .destinationTooSmall(length: length) }
        // Host memory is checked here; GPU memory relies on the node's check of each range before
        // its NIC writes it (`checkedBeforeDelivery`) and on RDMA's CRC for the wire.
        guard verify, case .host = item.destination.region.kind else { return .ok(length: length) }
        let bytes = UnsafeRawBufferPointer(rebasing: item.destination.buffer[0..<length])
        guard CRC32C.checksum(bytes) == answer.checksum else {
          UnsafeMutableRawBufferPointer(mutating: bytes).initializeMemory(as: UInt8.self, repeating: 0)
          damaged.append(item.key)
          return .corrupt
        }
        return .ok(length: length)
      }
    }
  }

  /// A PUT over RDMA: the node reads each block from its source. Nil as for `getOverRDMA`.
  func putOverRDMA(_ items: [StrataClient.PutItem], request: PutRequest, ringEpoch: UInt64, deadline: Deadline)
    throws(StrataError) -> [PutOutcome]?
  {
    guard
      let answer = try exchangeOverRDMA(
        request.wireMessage, slices: items.map(\.source), ringEpoch: ringEpoch, deadline: deadline)
    else { return nil }
    guard case .putResponse(let response) = answer, response.outcomes.count == items.count else {
      throw unexpected(answer)
    }
    return response.outcomes
  }

  /// Sends `message` with descriptors of `slices` over this connection's RDMA channel and returns
  /// the answer; nil when there is no channel, a slice is not registered on its device, or RDMA
  /// failed (then the channel is dropped and the caller goes over TCP). An error answer throws.
  /// A call whose deadline passes on the way throws `timeout` instead of going over TCP (the
  /// channel is dropped all the same: its answer may still come).
  private func exchangeOverRDMA(
    _ message: WireMessage, slices: [RegionSlice], ringEpoch: UInt64, deadline: Deadline
  ) throws(StrataError) -> WireMessage? {
    guard let channel = rdma, let descriptors = descriptors(slices, on: channel) else { return nil }
    let answer: WireMessage
    do {
      let reply = try channel.exchange(message, descriptors: descriptors, ringEpoch: ringEpoch, deadline: deadline)
      answer = reply.message
      epochs.observe(reply.ringEpoch)
    } catch {
      failOver(error)
      if deadline.hasPassed() {
        throw StrataError(.timeout, "the call to \(address) passed its deadline over RDMA: \(error.message)")
      }
      return nil
    }
    if case .error(_, let body) = answer {
      var error = body.strataError
      error.cause = AnsweredByNode()
      throw error
    }
    transports.record { $0.rdmaBatches += 1 }
    return answer
  }
}
