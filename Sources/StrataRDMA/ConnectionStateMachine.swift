// The lifecycle of one RDMA connection as a value: rdma_cm events in, directives out. It does no
// I/O, so every path (including the failures that send a connection back to TCP) is unit-tested.

/// Which end of the connection this machine is.
public enum RDMARole: Sendable, Hashable {
  /// Resolves the node's address and route, then connects.
  case client
  /// Accepts a connect request that arrived on the listener.
  case server
}

/// Why an RDMA connection ended or never came up; the words go to the log and to the TCP fallback.
public struct RDMAFailure: Sendable, Hashable, CustomStringConvertible {
  public var reason: String
  public init(_ reason: String) { self.reason = reason }
  public var description: String { reason }
}

/// The states of an RDMA connection. `established` is the only state in which work requests may be
/// posted; `failed` and `closed` are final.
public enum RDMAConnectionState: Sendable, Hashable {
  case idle
  case resolvingAddress
  case resolvingRoute
  case connecting
  case accepting
  case established
  case disconnecting
  case closed
  case failed(RDMAFailure)

  public var isFinal: Bool {
    switch self {
    case .closed, .failed: true
    default: false
    }
  }
}

/// What happens to a connection: rdma_cm events, completion errors, and the owner's own calls.
public enum RDMAConnectionEvent: Sendable, Hashable {
  /// The client starts connecting.
  case start
  case addressResolved
  case routeResolved
  /// A connect request reached the listener (server side).
  case connectRequest
  case established
  /// The peer refused (RDMA_CM_EVENT_REJECTED) with this status.
  case rejected(status: Int32)
  /// Address, route, connect or unreachable errors, or a timeout: the reason in words.
  case setupError(String)
  /// The peer or the fabric ended the connection.
  case disconnected
  /// A work completion came back with an error status: the queue pair is in the error state.
  case completionError(String)
  /// The owner closes the connection (goodbye, or the node stops).
  case close
}

/// What the owner must do next.
public enum RDMAConnectionDirective: Sendable, Hashable {
  case resolveAddress
  case resolveRoute
  /// Create the queue pair (with its posted receives) and call rdma_connect.
  case createQueuePairAndConnect
  /// Create the queue pair (with its posted receives) and call rdma_accept.
  case createQueuePairAndAccept
  /// The connection is up: start moving data.
  case ready
  /// Call rdma_disconnect; requests in flight complete or flush.
  case disconnect
  /// Release the queue pair and the id. Requests still in flight go back to TCP.
  case tearDown(failOverToTCP: Bool)
  /// Nothing to do (an event that changes nothing, such as a second close).
  case none
}

/// The state machine. Every event that cannot happen in the current state fails the connection with
/// a reason that names both, so a surprise from the fabric ends in TCP fallback, never a crash.
public struct RDMAConnectionStateMachine: Sendable {
  public let role: RDMARole
  public private(set) var state: RDMAConnectionState = .idle

  public init(role: RDMARole) { self.role = role }

  /// Applies `event` and returns what to do.
  public mutating func handle(_ event: RDMAConnectionEvent) -> RDMAConnectionDirective {
    switch (state, event) {
    case (.idle, .start) where role == .client:
      state = .resolvingAddress
      return .resolveAddress
    case (.resolvingAddress, .addressResolved):
      state = .resolvingRoute
      return .resolveRoute
    case (.resolvingRoute, .routeResolved):
      state = .connecting
      return .createQueuePairAndConnect
    case (.idle, .connectRequest) where role == .server:
      state = .accepting
      return .createQueuePairAndAccept
    case (.connecting, .established), (.accepting, .established):
      state = .established
      return .ready
    case (.established, .close):
      state = .disconnecting
      return .disconnect
    case (.disconnecting, .disconnected):
      state = .closed
      return .tearDown(failOverToTCP: false)
    case (.disconnecting, .completionError):
      // Flushed work requests after rdma_disconnect are expected, not a failure.
      return .none
    case (.established, .disconnected):
      return fail("the peer disconnected")
    case (.established, .completionError(let reason)):
      return fail("queue pair error: \(reason)")
    case (_, .rejected(let status)) where state == .connecting:
      return fail("the node rejected the connection (status \(status))")
    case (_, .setupError(let reason)) where !state.isFinal && state != .established:
      return fail(reason)
    case (.idle, .close), (.resolvingAddress, .close), (.resolvingRoute, .close), (.connecting, .close),
      (.accepting, .close):
      state = .closed
      return .tearDown(failOverToTCP: true)
    case (.closed, _), (.failed, _), (.disconnecting, .close):
      return .none
    default:
      return fail("unexpected \(event) while \(state)")
    }
  }

  /// True where work requests may be posted.
  public var canPost: Bool { state == .established }

  private mutating func fail(_ reason: String) -> RDMAConnectionDirective {
    state = .failed(RDMAFailure(reason))
    return .tearDown(failOverToTCP: true)
  }
}
