// The fuzz body: one input as the bytes of one client connection, through the node's request
// pipeline (HELLO decision, limits, leases, reservations, accounting) over the in-memory
// transport. Any answer or refusal is fine; a crash is a bug, and so is a connection that, once
// closed, leaves anything behind (a counted connection, in-flight bytes, a lease, a transfer pin).
//
// Input layout: byte 0 picks who says HELLO first (a tenant, an admin, a peer with the cluster
// token, or nobody: the input's own bytes come first), byte 1 the chunk size the rest is fed in.
// Header checksums of whole frames in the rest are repaired, so mutations reach the field checks.

import Logging
import StrataConfig
import StrataCore
import StrataNode
import StrataStorage
import StrataWire

enum PipelineFuzz {
  static let tenant = "fuzz-tenant-token-0000001"
  static let admin = "fuzz-admin-token-00000001"
  static let cluster = "fuzz-cluster-token-000001"

  /// One node for the whole run, with small limits so inputs reach them.
  static let node: (server: NodeServer, tiers: TierManager) = {
    var configuration = NodeConfiguration()
    configuration.listen = HostPort(host: "127.0.0.1", port: 0)
    configuration.limits.blockBytesMax = .kibibytes(256)
    configuration.limits.inflightBytesPerConnectionMax = .mebibytes(1)
    configuration.limits.inflightBytesPerNamespaceMax = .mebibytes(2)
    configuration.limits.leasesPerConnectionMax = 8
    configuration.limits.leasesPerNamespaceMax = 64
    configuration.limits.connectionsPerSourceMax = 4
    configuration.auth.tokens = [
      .init(token: tenant, namespace: try! Namespace("fuzz-tenant")),
      .init(token: admin, namespace: try! Namespace("fuzz-admin"), admin: true),
    ]
    configuration.cluster.token = cluster
    let tiers = try! TierManager(
      configuration: TierConfiguration(
        ramBytes: 8 << 20, blockBytesMax: 256 << 10, admission: .never, leasesMax: 256,
        leaseDurationMilliseconds: 1000, leasesPerNamespaceMax: 64, pinnedBytesPerNamespaceMax: 4 << 20),
      nvme: nil)
    var logger = Logger(label: "pipeline-fuzz")
    logger.logLevel = .critical
    let server = try! NodeServer(
      configuration: ServerConfiguration(configuration, nodeID: "fuzz"), tiers: tiers, logger: logger)
    return (server, tiers)
  }()

  static func run(_ input: UnsafeRawBufferPointer) {
    let (server, tiers) = node
    let bytes = Array(input)
    let connection = InMemoryConnection(server: server, source: "fuzz")
    var rest = ArraySlice(bytes)
    let prelude = rest.popFirst() ?? 0
    let chunk = 1 + Int(rest.popFirst() ?? 0) % 251 * 64
    let token: String? =
      switch prelude % 4 {
      case 0: tenant
      case 1: admin
      case 2: cluster
      default: nil
      }
    if let token {
      let hello = HelloRequest(
        capabilities: prelude % 4 == 2 ? [.tcp, .peer] : [.tcp], frameBytesMax: 1 << 30, token: Array(token.utf8),
        clientName: "fuzz", peerNamespace: prelude % 4 == 2 ? "fuzz-tenant" : "")
      _ = connection.receive(hello.frameBytes(requestID: 1, ringEpoch: 0))
    }
    let stream = repaired(Array(rest))
    var offset = 0
    while offset < stream.count && !connection.isClosed {
      let end = min(offset + chunk, stream.count)
      _ = connection.receive(Array(stream[offset..<end]))
      offset = end
    }
    connection.close()
    // Nothing may outlive the connection.
    let stats = server.stats
    check(stats.connectionsOpen == 0, "a closed connection is still counted (\(stats.connectionsOpen))")
    check(stats.inflightBytes == 0, "\(stats.inflightBytes) in-flight bytes outlive their connection")
    let tier = tiers.stats
    check(tier.transferPins == 0, "\(tier.transferPins) transfer pins outlive their request")
    check(tier.leasesActive == 0, "\(tier.leasesActive) leases outlive their connection")
  }

  /// Fixes the header checksum (and the body checksum, where the body is whole) of each frame in
  /// turn, so mutated fields get past the checksums to the pipeline.
  static func repaired(_ input: [UInt8]) -> [UInt8] {
    var bytes = input
    var offset = 0
    while offset + FrameHeader.byteCount <= bytes.count {
      let bodyBytes = Int(readU32(bytes, offset + 24))
      let payloadBytes = Int(clamping: readU64(bytes, offset + 32))
      let bodyEnd = offset + FrameHeader.byteCount + bodyBytes
      if bodyBytes <= HelloRequest.encodedBytesMax * 64, bodyEnd <= bytes.count {
        let checksum = bytes.withUnsafeBytes {
          CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(offset + FrameHeader.byteCount)..<bodyEnd]))
        }
        write(&bytes, offset + 28, checksum)
      }
      let header = bytes.withUnsafeBytes {
        CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + 60)]))
      }
      write(&bytes, offset + 60, header)
      guard bodyEnd <= bytes.count, payloadBytes <= bytes.count - bodyEnd else { break }
      offset = bodyEnd + payloadBytes
    }
    return bytes
  }

  /// Seed inputs: the prelude byte, a chunk byte, then well-formed request sequences.
  static func seeds() -> [(String, [UInt8])] {
    func key(_ n: UInt8) -> BlockKey { SHA256.digest([n]) }
    func put(_ n: UInt8, _ length: Int, id: UInt64) -> [UInt8] {
      let payload = [UInt8](repeating: n, count: length)
      return PutRequest(items: [.init(key: key(n), length: UInt64(length), checksum: CRC32C.checksum(payload))])
        .frameBytes(requestID: id, ringEpoch: 0) + payload
    }
    let get = GetRequest(items: [.init(key: key(1)), .init(key: key(2), offset: 10, length: 100)])
      .frameBytes(requestID: 3, ringEpoch: 0)
    let leased = LookupRequest(keys: [key(1), key(2), key(3)], leaseMilliseconds: 500).frameBytes(
      requestID: 4, ringEpoch: 0)
    let getLeased = GetRequest(items: [.init(key: key(1))], leaseID: 1).frameBytes(requestID: 5, ringEpoch: 0)
    let delete = DeleteRequest(keys: [key(1)]).frameBytes(requestID: 6, ringEpoch: 0)
    let stat = StatRequest().frameBytes(requestID: 7, ringEpoch: 0)
    let verify = VerifyRequest(keys: [key(1), key(9)]).frameBytes(requestID: 10, ringEpoch: 0)
    let goodbye = GoodbyeRequest().frameBytes(requestID: 8, ringEpoch: 0)
    let hello = HelloRequest(
      capabilities: [.tcp], frameBytesMax: 1 << 20, token: Array(tenant.utf8), clientName: "seed"
    )
    .frameBytes(requestID: 1, ringEpoch: 0)
    return [
      ("tenant-put-get", [0, 0] + put(1, 1000, id: 2) + put(2, 5000, id: 9) + get),
      ("tenant-put-verify", [0, 0] + put(1, 1000, id: 2) + verify + get),
      ("admin-lease-get-delete", [1, 3] + put(1, 300, id: 2) + leased + getLeased + delete + stat),
      ("peer-put-lookup", [2, 1] + put(3, 20_000, id: 2) + leased + goodbye),
      ("raw-hello-then-requests", [3, 0] + hello + put(4, 64, id: 2) + get + stat),
      ("tenant-large-put", [0, 200] + put(5, 60_000, id: 2) + get),
      ("tenant-many-leases", [0, 2] + (0..<12).flatMap { _ in leased } + getLeased),
    ]
  }

  static func readU32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
    (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * $1) }
  }

  static func readU64(_ bytes: [UInt8], _ at: Int) -> UInt64 {
    (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * $1) }
  }

  static func write(_ bytes: inout [UInt8], _ at: Int, _ value: UInt32) {
    for index in 0..<4 { bytes[at + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
  }

  static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("pipeline fuzz: \(message())") }
  }
}
