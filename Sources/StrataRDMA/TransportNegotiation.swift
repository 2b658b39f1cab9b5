// Which transport a connection uses and why: decided from what each side has and offers in HELLO,
// and from whether the RDMA connection came up. Pure, so every reason is tested.

public import StrataWire

/// The transport a connection moves block payloads over.
public enum DataTransport: String, Sendable, Hashable {
  case tcp
  case rdma
}

/// Whether this machine can use RDMA, and if not, why not (for the log and the fallback reason).
public enum RDMAAvailability: Sendable, Hashable {
  case available(devices: [String])
  case unavailable(reason: String)

  public var isAvailable: Bool {
    if case .available = self { return true }
    return false
  }
}

/// A transport decision with the reason a person reads in the log.
public struct TransportDecision: Sendable, Hashable, CustomStringConvertible {
  public var transport: DataTransport
  public var reason: String

  public init(_ transport: DataTransport, _ reason: String) {
    self.transport = transport
    self.reason = reason
  }

  public var description: String { "\(transport.rawValue) (\(reason))" }
}

public enum TransportNegotiation {
  /// The capabilities a client offers in HELLO.
  public static func offered(local: RDMAAvailability, rdmaEnabled: Bool) -> Capabilities {
    rdmaEnabled && local.isAvailable ? [.tcp, .leases, .rdma] : [.tcp, .leases]
  }

  /// The node's grant for one client: RDMA only when both have it, with the reason either way.
  public static func grant(offered: Capabilities, node: RDMAAvailability) -> (Capabilities, TransportDecision) {
    let base = offered.intersection([.tcp, .leases])
    switch (offered.contains(.rdma), node) {
    case (true, .available):
      return (base.union(.rdma), TransportDecision(.rdma, "both sides have RDMA; the client connects through rdma_cm"))
    case (true, .unavailable(let reason)):
      return (base, TransportDecision(.tcp, "the node has no RDMA: \(reason)"))
    case (false, _):
      return (base, TransportDecision(.tcp, "the client did not offer RDMA"))
    }
  }

  /// The client's decision once HELLO is answered, before trying the RDMA connection.
  public static func clientPlan(local: RDMAAvailability, rdmaEnabled: Bool, granted: Capabilities) -> TransportDecision
  {
    guard rdmaEnabled else { return TransportDecision(.tcp, "RDMA is disabled in the client configuration") }
    if case .unavailable(let reason) = local { return TransportDecision(.tcp, "this client has no RDMA: \(reason)") }
    guard granted.contains(.rdma) else { return TransportDecision(.tcp, "the node did not grant RDMA") }
    return TransportDecision(.rdma, "both sides have RDMA")
  }

  /// The decision after trying to connect: TCP when the RDMA connection failed to come up.
  public static func afterConnect(_ plan: TransportDecision, failure: RDMAFailure?) -> TransportDecision {
    guard plan.transport == .rdma else { return plan }
    if let failure { return TransportDecision(.tcp, "the RDMA connection failed: \(failure.reason)") }
    return plan
  }
}
