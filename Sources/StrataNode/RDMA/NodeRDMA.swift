// The node's RDMA transport: discovers devices at start, registers the RAM arena once on each
// (local access only: the node's keys never leave it), listens through rdma_cm on the data
// plane's port, and decides per HELLO which transport a client gets, with one log line and a
// counter saying which and why.

import Logging
import StrataCore
import StrataRDMA
import StrataStorage
import StrataWire
import Synchronization

/// RDMA on the node: unavailable (with the reason) on a machine without a device.
final class NodeRDMA: Sendable {
  let availability: RDMAAvailability
  /// Per device: its context and the arena's registration on it.
  let devices: [(device: RDMADeviceContext, arena: MemoryRegistration)]
  let listener: RDMAListener?
  let limits = EndpointLimits()
  /// RDMA connections with a thread (admitted at connect request, before HELLO).
  let sessions = SessionCounter()

  init(arena: RAMArena, address: HostPort, logger: Logger) {
    var availability = RDMADevices.discover()
    var devices: [(RDMADeviceContext, MemoryRegistration)] = []
    var listener: RDMAListener?
    if availability.isAvailable {
      do throws(StrataError) {
        for device in try RDMADeviceContext.openAll() {
          devices.append((device, try device.register(arena.baseAddress, byteCount: arena.mappedBytes, remote: false)))
        }
        guard !devices.isEmpty else { throw StrataError(.unavailable, "rdma_cm opened no device") }
        listener = try RDMAListener(binding: address, devices: devices.map(\.0), limits: limits)
      } catch {
        availability = .unavailable(reason: error.message)
        devices = []
      }
    }
    self.availability = availability
    self.devices = devices
    self.listener = listener
    switch availability {
    case .available(let names):
      logger.info("RDMA ready", metadata: ["devices": "\(names.joined(separator: ","))", "port": "\(address.port)"])
    case .unavailable(let reason):
      logger.info("RDMA unavailable, serving TCP only", metadata: ["reason": "\(reason)"])
    }
  }

  /// The arena's registration on `device`.
  func arenaRegistration(on device: RDMADeviceContext) -> MemoryRegistration? {
    devices.first { $0.device === device }?.arena
  }
}

/// Counts live sessions against a bound, from any thread.
final class SessionCounter: Sendable {
  private let count = Mutex(0)

  var current: Int { count.withLock { $0 } }

  func admit(max: Int) -> Bool {
    count.withLock { count in
      guard count < max else { return false }
      count += 1
      return true
    }
  }

  func release() { count.withLock { $0 -= 1 } }
}

extension NodeServer {
  /// Starts the rdma_cm listener, if there is one; each RDMA connection is served on its own thread,
  /// and there are never more of them than `limits.max_connections`.
  func startRDMA() {
    rdma.listener?.start(
      admit: { [self] in rdma.sessions.admit(max: configuration.connectionsMax) },
      release: { [self] in rdma.sessions.release() },
      onRefused: { [self] reason in
        logger.warning("refused an RDMA connection", metadata: ["reason": "\(reason)"])
      },
      serve: { [self] endpoint in
        count { $0.connectionsRDMA += 1 }
        var session = RDMASession(endpoint: endpoint, server: self)
        session.run()
      })
  }

  /// The capabilities granted to a client's HELLO; logs and counts which transport it gets and why.
  /// The line is `info` when the client offered RDMA (whether it got it says something about the
  /// node), `debug` for a client that offered only TCP (every connection of a TCP-only cluster).
  func grantCapabilities(_ hello: HelloRequest, peer: String) -> Capabilities {
    let (granted, decision) = TransportNegotiation.grant(offered: hello.capabilities, node: rdma.availability)
    logger.log(
      level: hello.capabilities.contains(.rdma) ? .info : .debug,
      "transport chosen",
      metadata: [
        "peer": "\(peer)", "client": "\(hello.clientName)", "transport": "\(decision.transport.rawValue)",
        "reason": "\(decision.reason)",
      ])
    count { stats in
      if decision.transport == .rdma { stats.helloRDMAGranted += 1 } else { stats.helloTCPOnly += 1 }
    }
    return granted
  }

  /// The namespace, scopes and credential a token grants, or nil for an unknown token. With no
  /// tokens configured (the open embedded default) every client gets `default` with every scope.
  func grant(token: [UInt8]) -> (namespace: Namespace, scopes: TokenScopes, credential: SessionCredential)? {
    if currentTokens.isEmpty { return (.embeddedDefault, .all, .open) }
    guard let mapped = matchToken(token) else { return nil }
    return (mapped.namespace, mapped.scopes, .token(mapped.digest))
  }
}
