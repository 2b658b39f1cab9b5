// Reliable-connected queue pairs set up through rdma_cm: the client's connect (resolve address,
// resolve route, connect) and the node's listener (connect request, accept, established,
// disconnected), both driven through RDMAConnectionStateMachine.
//
// The rdma_cm port is the node's TCP port number: rdma_cm's RDMA_PS_TCP port space is separate
// from the kernel's TCP ports, so both bind the same number and HELLO carries no extra endpoint.

import CIBVerbs
import CRDMACM
import CStrataLinux
import Dispatch
import Foundation
public import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

extension RDMAEndpoint {
  /// Connects to a node's rdma_cm listener at `address` (the node's data-plane host and port) on
  /// whichever of `devices` the route goes through. Throws `.unavailable` with the reason when the
  /// connection does not come up; the caller then stays on TCP.
  public static func connect(
    to address: HostPort, devices: [RDMADeviceContext], limits: EndpointLimits, timeoutMilliseconds: UInt64
  ) throws(StrataError) -> RDMAEndpoint {
    guard let channel = rdma_create_event_channel() else { throw verbsError("rdma_create_event_channel") }
    var rawID: UnsafeMutablePointer<rdma_cm_id>?
    guard rdma_create_id(channel, &rawID, nil, RDMA_PS_TCP) == 0, let id = rawID else {
      let error = verbsError("rdma_create_id")
      rdma_destroy_event_channel(channel)
      throw error
    }
    let deadline = Deadline.after(milliseconds: timeoutMilliseconds)
    var machine = RDMAConnectionStateMachine(role: .client)
    var endpoint: RDMAEndpoint?
    do throws(StrataError) {
      precondition(machine.handle(.start) == .resolveAddress)
      try withSocketAddress(address) { (socketAddress) throws(StrataError) in
        guard rdma_resolve_addr(id, nil, socketAddress, Int32(clamping: timeoutMilliseconds)) == 0 else {
          throw verbsError("rdma_resolve_addr \(address)")
        }
      }
      var directive = machine.handle(try expect(RDMA_CM_EVENT_ADDR_RESOLVED, on: channel, deadline: deadline))
      guard directive == .resolveRoute else { throw setupFailure(machine) }
      guard rdma_resolve_route(id, Int32(clamping: timeoutMilliseconds)) == 0 else {
        throw verbsError("rdma_resolve_route \(address)")
      }
      directive = machine.handle(try expect(RDMA_CM_EVENT_ROUTE_RESOLVED, on: channel, deadline: deadline))
      guard directive == .createQueuePairAndConnect else { throw setupFailure(machine) }
      guard let device = devices.first(where: { $0.context == id.pointee.verbs }) else {
        throw StrataError(.unavailable, "the route to \(address) goes through a device this client did not open")
      }
      let made = try RDMAEndpoint(id: id, eventChannel: channel, device: device, role: .client, limits: limits)
      endpoint = made
      for event in [RDMAConnectionEvent.start, .addressResolved, .routeResolved] { _ = made.apply(event) }
      try made.createQueuePair()
      var parameters = rdma_conn_param()
      parameters.responder_resources = UInt8(clamping: limits.readsInFlight)
      parameters.initiator_depth = UInt8(clamping: limits.readsInFlight)
      parameters.retry_count = 7
      parameters.rnr_retry_count = 7
      guard rdma_connect(id, &parameters) == 0 else { throw verbsError("rdma_connect \(address)") }
      directive = made.apply(try expect(RDMA_CM_EVENT_ESTABLISHED, on: channel, deadline: deadline))
      guard directive == .ready else { throw setupFailure(made.machine) }
      return made
    } catch {
      if endpoint == nil {
        rdma_destroy_id(id)
        rdma_destroy_event_channel(channel)
      }
      throw error
    }
  }

  private static func setupFailure(_ machine: RDMAConnectionStateMachine) -> StrataError {
    if case .failed(let failure) = machine.state { return StrataError(.unavailable, failure.reason) }
    return StrataError(.unavailable, "RDMA connection setup stopped in state \(machine.state)")
  }

  /// Waits for the next event on `channel`; the wanted type maps to its state-machine event, any
  /// other type to a setup error naming it.
  private static func expect(
    _ wanted: rdma_cm_event_type, on channel: UnsafeMutablePointer<rdma_event_channel>, deadline: Deadline
  ) throws(StrataError) -> RDMAConnectionEvent {
    var descriptor = pollfd(fd: channel.pointee.fd, events: Int16(POLLIN), revents: 0)
    guard poll(&descriptor, 1, Int32(clamping: deadline.remainingMilliseconds())) > 0 else {
      return .setupError(
        "no rdma_cm event within the deadline (waiting for \(String(cString: rdma_event_str(wanted))))")
    }
    var rawEvent: UnsafeMutablePointer<rdma_cm_event>?
    guard rdma_get_cm_event(channel, &rawEvent) == 0, let event = rawEvent else {
      throw verbsError("rdma_get_cm_event")
    }
    let type = event.pointee.event
    let status = event.pointee.status
    rdma_ack_cm_event(event)
    switch type {
    case wanted where type == RDMA_CM_EVENT_ADDR_RESOLVED: return .addressResolved
    case wanted where type == RDMA_CM_EVENT_ROUTE_RESOLVED: return .routeResolved
    case wanted where type == RDMA_CM_EVENT_ESTABLISHED: return .established
    case RDMA_CM_EVENT_REJECTED: return .rejected(status: status)
    default:
      return .setupError(
        "rdma_cm reported \(String(cString: rdma_event_str(type))) (status \(status)) "
          + "while waiting for \(String(cString: rdma_event_str(wanted)))")
    }
  }
}

/// Calls `body` with `address` as a socket address (the first that getaddrinfo returns).
func withSocketAddress<T>(
  _ address: HostPort, _ body: (UnsafeMutablePointer<sockaddr>) throws(StrataError) -> T
) throws(StrataError) -> T {
  var hints = addrinfo()
  hints.ai_family = AF_UNSPEC
  hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
  hints.ai_flags = AI_PASSIVE
  var result: UnsafeMutablePointer<addrinfo>?
  let status = getaddrinfo(address.host.isEmpty ? nil : address.host, String(address.port), &hints, &result)
  guard status == 0, let first = result, let socketAddress = first.pointee.ai_addr else {
    throw StrataError(.unavailable, "cannot resolve \(address): \(String(cString: gai_strerror(status)))")
  }
  defer { freeaddrinfo(first) }
  return try body(socketAddress)
}

/// The node's rdma_cm listener: accepts connections on its own thread and hands each established
/// endpoint to `serve` on a thread of its own.
///
/// `@unchecked Sendable`: the ids and channel are set in `init`; `endpoints` is under its mutex;
/// the listener thread is the only reader of the event channel.
public final class RDMAListener: @unchecked Sendable {
  private let channel: UnsafeMutablePointer<rdma_event_channel>
  private let id: UnsafeMutablePointer<rdma_cm_id>
  private let devices: [RDMADeviceContext]
  private let limits: EndpointLimits
  private let endpoints = Mutex([UInt: RDMAEndpoint]())
  private let stopping = Atomic<Bool>(false)
  private let wake: (read: Int32, write: Int32)
  private let stopped = DispatchSemaphoreBox()

  /// Binds rdma_cm to `address` (the data plane's TCP address and port) and listens.
  public init(binding address: HostPort, devices: [RDMADeviceContext], limits: EndpointLimits) throws(StrataError) {
    guard let channel = rdma_create_event_channel() else { throw verbsError("rdma_create_event_channel") }
    var rawID: UnsafeMutablePointer<rdma_cm_id>?
    guard rdma_create_id(channel, &rawID, nil, RDMA_PS_TCP) == 0, let id = rawID else {
      let error = verbsError("rdma_create_id")
      rdma_destroy_event_channel(channel)
      throw error
    }
    var pipeEnds: [Int32] = [0, 0]
    do throws(StrataError) {
      try withSocketAddress(address) { (socketAddress) throws(StrataError) in
        guard rdma_bind_addr(id, socketAddress) == 0 else { throw verbsError("rdma_bind_addr \(address)") }
      }
      guard rdma_listen(id, 64) == 0 else { throw verbsError("rdma_listen \(address)") }
      guard strata_pipe(&pipeEnds) == 0 else { throw verbsError("pipe") }
    } catch {
      rdma_destroy_id(id)
      rdma_destroy_event_channel(channel)
      throw error
    }
    self.channel = channel
    self.id = id
    self.devices = devices
    self.limits = limits
    wake = (pipeEnds[0], pipeEnds[1])
  }

  deinit {
    rdma_destroy_id(id)
    rdma_destroy_event_channel(channel)
    close(wake.read)
    close(wake.write)
  }

  /// Accepts connections until `stop()`; each established endpoint runs `serve` on its own thread
  /// and is torn down when `serve` returns. `admit` is asked at each connect request (a refused one
  /// is rejected there, before any queue pair or thread exists); every admitted connection is
  /// handed to `serve` or to `release`, exactly once.
  public func start(
    admit: @escaping @Sendable () -> Bool, release: @escaping @Sendable () -> Void,
    onRefused: @escaping @Sendable (String) -> Void, serve: @escaping @Sendable (RDMAEndpoint) -> Void
  ) {
    let thread = Thread { [self] in
      eventLoop(admit: admit, release: release, onRefused: onRefused, serve: serve)
      stopped.signal()
    }
    thread.name = "strata-rdma-cm"
    thread.start()
  }

  /// Stops accepting and disconnects every endpoint (their `serve` loops then end).
  public func stop() {
    guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
    var byte: UInt8 = 1
    _ = write(wake.write, &byte, 1)
    stopped.wait()
    for endpoint in endpoints.withLock({ Array($0.values) }) { endpoint.disconnect() }
  }

  private func eventLoop(
    admit: @escaping @Sendable () -> Bool, release: @escaping @Sendable () -> Void,
    onRefused: @escaping @Sendable (String) -> Void, serve: @escaping @Sendable (RDMAEndpoint) -> Void
  ) {
    var descriptors = [
      pollfd(fd: channel.pointee.fd, events: Int16(POLLIN), revents: 0),
      pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0),
    ]
    while !stopping.load(ordering: .acquiring) {
      guard poll(&descriptors, 2, -1) > 0 else { continue }
      if descriptors[1].revents != 0 { return }
      var rawEvent: UnsafeMutablePointer<rdma_cm_event>?
      guard rdma_get_cm_event(channel, &rawEvent) == 0, let event = rawEvent else { continue }
      let type = event.pointee.event
      let connectionID = event.pointee.id!
      let key = UInt(bitPattern: connectionID)
      switch type {
      case RDMA_CM_EVENT_CONNECT_REQUEST:
        rdma_ack_cm_event(event)
        guard admit() else {
          rdma_reject(connectionID, nil, 0)
          rdma_destroy_id(connectionID)
          onRefused("the node is at its connection limit (limits.max_connections)")
          continue
        }
        do throws(StrataError) {
          let endpoint = try accept(connectionID)
          endpoints.withLock { $0[key] = endpoint }
        } catch {
          release()
          onRefused(error.message)
        }
      case RDMA_CM_EVENT_ESTABLISHED:
        rdma_ack_cm_event(event)
        guard let endpoint = endpoints.withLock({ $0[key] }), endpoint.apply(.established) == .ready else { continue }
        let thread = Thread { [self] in
          defer { release() }
          serve(endpoint)
          endpoint.disconnect()
          _ = endpoints.withLock { $0.removeValue(forKey: key) }
        }
        thread.name = "strata-rdma-conn"
        thread.start()
      case RDMA_CM_EVENT_DISCONNECTED, RDMA_CM_EVENT_TIMEWAIT_EXIT:
        rdma_ack_cm_event(event)
        endpoints.withLock { $0[key] }?.peerDisconnected()
      default:
        let words = String(cString: rdma_event_str(type))
        rdma_ack_cm_event(event)
        if let endpoint = endpoints.withLock({ $0[key] }) {
          // An endpoint still accepting never reached `serve`, which releases the others.
          let neverServed = endpoint.machine.state == .accepting
          _ = endpoint.apply(.setupError(words))
          _ = endpoints.withLock { $0.removeValue(forKey: key) }
          if neverServed { release() }
        }
      }
    }
  }

  /// Accepts a connect request, or rejects it (and frees its id) with the reason thrown.
  private func accept(_ connectionID: UnsafeMutablePointer<rdma_cm_id>) throws(StrataError) -> RDMAEndpoint {
    let endpoint: RDMAEndpoint
    do throws(StrataError) {
      guard let device = devices.first(where: { $0.context == connectionID.pointee.verbs }) else {
        throw StrataError(.unavailable, "a connect request arrived on a device the node did not open")
      }
      endpoint = try RDMAEndpoint(id: connectionID, eventChannel: nil, device: device, role: .server, limits: limits)
    } catch {
      rdma_reject(connectionID, nil, 0)
      rdma_destroy_id(connectionID)
      throw error
    }
    // From here the endpoint owns the id: a failure rejects and lets the endpoint free it.
    defer { if endpoint.machine.state != .accepting { rdma_reject(connectionID, nil, 0) } }
    precondition(endpoint.apply(.connectRequest) == .createQueuePairAndAccept)
    try endpoint.createQueuePair()
    var parameters = rdma_conn_param()
    parameters.responder_resources = UInt8(clamping: limits.readsInFlight)
    parameters.initiator_depth = UInt8(clamping: limits.readsInFlight)
    parameters.rnr_retry_count = 7
    guard rdma_accept(connectionID, &parameters) == 0 else { throw verbsError("rdma_accept") }
    return endpoint
  }
}

/// A semaphore usable from a Sendable class without importing Dispatch publicly.
final class DispatchSemaphoreBox: Sendable {
  private let semaphore = DispatchSemaphore(value: 0)
  func signal() { semaphore.signal() }
  func wait() { semaphore.wait() }
}
