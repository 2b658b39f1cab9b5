// A real node server in the test process on a loopback port of its own (RAM tier only), with a
// client factory and raw sockets: what the node, transport and client tests drive.

import Foundation
public import Logging
public import StrataClient
public import StrataConfig
public import StrataCore
public import StrataGPU
public import StrataNode
public import StrataStorage
public import StrataTCP
public import Synchronization

public struct InProcessNode {
  public let tiers: TierManager
  public let server: NodeServer
  /// What the node logged at `logLevel` and above.
  public let logs = LogCapture()

  /// `sameHostSocket`: the same-host path's Unix socket; nil leaves it off. `logLevel`: what
  /// `logs` keeps. With `STRATA_TEST_LOG` set, the node also logs everything to standard error.
  public init(
    ramBytes: Int = 64 << 20, blockBytesMax: ByteSize = .mebibytes(4), admission: AdmissionPolicy = .never,
    connectionsMax: Int = 64, tokens: [NodeConfiguration.Auth.Token] = [], sameHostSocket: String? = nil,
    sameHostRegionBytesMax: ByteSize = .gibibytes(1), nodeID: String = "test", logLevel: Logger.Level = .error,
    inflightBytesPerNamespaceMax: ByteSize? = nil, inflightBytesPerConnectionMax: ByteSize? = nil
  ) throws {
    tiers = try TierManager(
      configuration: TierConfiguration(
        ramBytes: ramBytes, blockBytesMax: Int(blockBytesMax.bytes), lockMemory: false, hugePages: false,
        admission: admission),
      nvme: nil)
    var node = NodeConfiguration()
    node.listen = HostPort(host: "127.0.0.1", port: 0)
    node.limits.connectionsMax = connectionsMax
    // Longer than any test: on a loaded 2-core machine the full suite can keep a test's task from
    // running for minutes, and an idle close in between would change the connection counts tests
    // check. Idle deadlines have their own tests, on nodes configured for them.
    node.limits.idleTimeout = DurationSetting(milliseconds: 900_000)
    node.limits.blockBytesMax = blockBytesMax
    if let inflightBytesPerNamespaceMax { node.limits.inflightBytesPerNamespaceMax = inflightBytesPerNamespaceMax }
    if let inflightBytesPerConnectionMax { node.limits.inflightBytesPerConnectionMax = inflightBytesPerConnectionMax }
    node.auth.tokens = tokens
    node.sameHost.enabled = sameHostSocket != nil
    node.sameHost.socket = sameHostSocket ?? ""
    node.sameHost.maxRegionSize = sameHostRegionBytesMax
    let capture = logs
    let verbose = ProcessInfo.processInfo.environment["STRATA_TEST_LOG"] != nil
    var logger = Logger(label: "test-node") { label in
      verbose
        ? MultiplexLogHandler([capture.handler(), StreamLogHandler.standardError(label: label)]) : capture.handler()
    }
    logger.logLevel = verbose ? .debug : logLevel
    server = try NodeServer(configuration: ServerConfiguration(node, nodeID: nodeID), tiers: tiers, logger: logger)
    server.start()
  }

  public func client(
    connections: Int = 2, token: String = "", rdma: Bool = true, gpu: (any GPURuntime)? = nil
  ) -> StrataClient {
    var configuration = StrataClient.Configuration(node: server.address)
    configuration.connections = connections
    configuration.timeoutMilliseconds = 10_000
    configuration.token = token
    configuration.rdma = rdma
    configuration.gpuRuntime = gpu
    return StrataClient(configuration)
  }

  public func rawSocket() throws -> TCPSocket {
    try TCPSocket.connect(to: server.address, timeoutMilliseconds: 5000)
  }
}

/// Log records, kept in memory.
public final class LogCapture: Sendable {
  public let records = Mutex<[(message: String, metadata: [String: String], level: Logger.Level)]>([])

  public init() {}

  public func handler() -> any LogHandler { CaptureHandler(capture: self) }

  struct CaptureHandler: LogHandler {
    let capture: LogCapture
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
      get { metadata[key] }
      set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
      let fields = (event.metadata ?? [:]).mapValues { "\($0)" }
      capture.records.withLock { $0.append(("\(event.message)", fields, event.level)) }
    }
  }
}
