// The request pipeline through its in-memory transport: the limits every transport inherits
// (RDMA included, which cannot run here) hold without sockets. Each test speaks raw frames.

import Logging
import StrataConfig
import StrataCore
import StrataStorage
import StrataWire
import Testing

@testable import StrataNode

/// A node that is never started: connections are in-memory only.
struct PipelineNode {
  let tiers: TierManager
  let server: NodeServer

  static let tenantA = "tenant-a-secret-000000001"
  static let tenantB = "tenant-b-secret-000000002"
  static let cluster = "cluster-secret-token-0001"

  /// A node over `ramBytes` of RAM and, when given, an NVMe tier (blocks leaving RAM written to it).
  init(
    nvme: NVMeTier? = nil, ramBytes: Int = 32 << 20, configure: (inout NodeConfiguration) -> Void = { _ in }
  ) throws {
    var node = NodeConfiguration()
    node.listen = HostPort(host: "127.0.0.1", port: 0)
    node.limits.blockBytesMax = .mebibytes(4)
    node.auth.tokens = [
      .init(token: Self.tenantA, namespace: try Namespace("tenant-a"), admin: true),
      .init(token: Self.tenantB, namespace: try Namespace("tenant-b")),
    ]
    node.cluster.token = Self.cluster
    configure(&node)
    tiers = try TierManager(
      configuration: TierConfiguration(
        ramBytes: ramBytes, blockBytesMax: 4 << 20, admission: nvme == nil ? .never : .always,
        leasesMax: node.limits.leasesMax,
        leaseDurationMilliseconds: node.limits.leaseDuration.milliseconds,
        leasesPerNamespaceMax: node.limits.leasesPerNamespaceMax, pinnedBytesPerNamespaceMax: 16 << 20),
      nvme: nvme)
    server = try NodeServer(
      configuration: ServerConfiguration(node, nodeID: "pipeline"), tiers: tiers, logger: .quiet("pipeline-test"))
  }

  /// A connection that said HELLO with `token`, and the node's answer to it.
  func connect(_ token: String, source: String = "10.9.9.9", peerNamespace: String = "") -> (
    InMemoryConnection, WireMessage
  ) {
    let connection = InMemoryConnection(server: server, source: source)
    let hello = HelloRequest(
      capabilities: peerNamespace.isEmpty ? [.tcp] : [.tcp, .peer], frameBytesMax: 1 << 30,
      token: Array(token.utf8), clientName: "test", peerNamespace: peerNamespace)
    let answer = connection.receive(hello.frameBytes(requestID: 1, ringEpoch: 0))
    return (connection, frames(answer).first?.1 ?? .goodbyeRequest(GoodbyeRequest()))
  }
}

/// Splits what a node answered into frames (each GET payload left in the byte array after it).
func frames(_ bytes: [UInt8]) -> [(FrameHeader, WireMessage, [UInt8])] {
  FrameAssembler.frames(in: bytes, receiving: .response)
}

func pipelineKey(_ n: Int) -> BlockKey { SHA256.digest(Array("pipeline-\(n)".utf8)) }

func putFrame(_ n: Int, bytes: [UInt8], requestID: UInt64 = 5) -> [UInt8] {
  PutRequest(items: [.init(key: pipelineKey(n), length: UInt64(bytes.count), checksum: CRC32C.checksum(bytes))])
    .frameBytes(requestID: requestID, ringEpoch: 0) + bytes
}

@Suite struct RequestPipelineTests {
  /// Before a transport whose bytes the client does not read back (RDMA into GPU memory) moves a
  /// GET's ranges, each is checked against the checksum it is answered with: a range damaged since
  /// its commit is answered corrupt (the pipeline then removes its block), the others stand.
  @Test func rangesAreCheckedBeforeADeviceDeliversThem() {
    let good: [UInt8] = Array(0..<200)
    var damaged: [UInt8] = Array(100..<164)
    let items = [
      GetResponse.Item.ok(length: 200, checksum: CRC32C.checksum(good)),
      GetResponse.Item.ok(length: 64, checksum: CRC32C.checksum(damaged)),
      GetResponse.Item(status: .missing),
    ]
    damaged[17] ^= 0x04
    let answered = good.withUnsafeBytes { first in
      damaged.withUnsafeBytes { second in checkedBeforeDelivery(items, [first, second, nil]) }
    }
    #expect(answered == [items[0], GetResponse.Item(status: .corrupt), items[2]])
  }

  @Test func putAndGetRoundTripThroughTheInMemoryTransport() throws {
    let node = try PipelineNode()
    let (connection, hello) = node.connect(PipelineNode.tenantA)
    guard case .helloResponse(let response) = hello else { throw StrataError(.protocolError, "\(hello)") }
    #expect(response.namespace.name == "tenant-a" && !response.capabilities.contains(.peer))
    let block = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    // Delivered in pieces: the payload waits until whole.
    let put = putFrame(1, bytes: block)
    var answered: [UInt8] = []
    for start in stride(from: 0, to: put.count, by: 7_777) {
      answered += connection.receive(Array(put[start..<min(start + 7_777, put.count)]))
    }
    guard case .putResponse(let outcome) = frames(answered).first?.1 else { throw StrataError(.protocolError, "PUT") }
    #expect(outcome.outcomes == [.stored])
    let got = frames(
      connection.receive(GetRequest(items: [.init(key: pipelineKey(1))]).frameBytes(requestID: 6, ringEpoch: 0)))
    #expect(got.first?.2 == block)
    // Sizes come with the LOOKUP when asked.
    let sized = frames(
      connection.receive(
        LookupRequest(keys: [pipelineKey(1), pipelineKey(99)], wantsSizes: true).frameBytes(requestID: 7, ringEpoch: 0))
    )
    guard case .lookupResponse(let lookup) = sized.first?.1 else { throw StrataError(.protocolError, "LOOKUP") }
    #expect(lookup.sizes == [UInt64(block.count), 0] && lookup.leadingRun == 1)
    // And with a lease: the leased blocks answer for their tier and size.
    let leased = frames(
      connection.receive(
        LookupRequest(keys: [pipelineKey(1), pipelineKey(99)], leaseMilliseconds: 1_000, wantsSizes: true)
          .frameBytes(requestID: 8, ringEpoch: 0)))
    guard case .lookupResponse(let lease) = leased.first?.1 else { throw StrataError(.protocolError, "LOOKUP") }
    #expect(lease.tiers == [.ram, .absent] && lease.sizes == [UInt64(block.count), 0] && lease.leaseID != 0)
    // Another tenant does not see it.
    let (other, _) = node.connect(PipelineNode.tenantB)
    let missing = frames(
      other.receive(GetRequest(items: [.init(key: pipelineKey(1))]).frameBytes(requestID: 2, ringEpoch: 0)))
    guard case .getResponse(let answer) = missing.first?.1 else { throw StrataError(.protocolError, "GET") }
    #expect(answer.items.map(\.status) == [.missing])
    connection.close()
    other.close()
    #expect(node.server.stats.connectionsOpen == 0 && node.server.stats.inflightBytes == 0)
  }

  /// The checksum a stream transport computes as a PUT lands is checked against the sender's:
  /// an item whose bytes do not match is refused and stored nowhere, its neighbours stored.
  @Test func aPutItemWhoseBytesDoNotMatchItsChecksumIsRefusedAlone() throws {
    let node = try PipelineNode()
    let (connection, _) = node.connect(PipelineNode.tenantA)
    let blocks = (1...3).map { n in (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* n &+ n) } }
    var items = blocks.enumerated().map { index, bytes in
      PutRequest.Item(key: pipelineKey(index), length: UInt64(bytes.count), checksum: CRC32C.checksum(bytes))
    }
    items[1].checksum ^= 1
    let answered = frames(
      connection.receive(PutRequest(items: items).frameBytes(requestID: 5, ringEpoch: 0) + blocks.flatMap { $0 }))
    guard case .putResponse(let outcome) = answered.first?.1 else { throw StrataError(.protocolError, "PUT") }
    #expect(outcome.outcomes == [.stored, .checksumMismatch, .stored])
    let got = frames(
      connection.receive(
        GetRequest(items: (0..<3).map { .init(key: pipelineKey($0)) }).frameBytes(requestID: 6, ringEpoch: 0)))
    guard case .getResponse(let answer) = got.first?.1 else { throw StrataError(.protocolError, "GET") }
    #expect(answer.items.map(\.status) == [.ok, .missing, .ok])
    #expect(answer.items.map(\.checksum) == [CRC32C.checksum(blocks[0]), 0, CRC32C.checksum(blocks[2])])
    #expect(node.tiers.stats.checksumFailures == 1)
    connection.close()
  }

  @Test func thePeerCapabilityNeedsTheClusterToken() throws {
    let node = try PipelineNode()
    let (tenant, refused) = node.connect(PipelineNode.tenantA, peerNamespace: "tenant-b")
    guard case .error(_, let body) = refused else { throw StrataError(.protocolError, "granted: \(refused)") }
    #expect(body.code == StrataError.Code.permissionDenied.number && tenant.isClosed)
    let (_, granted) = node.connect(PipelineNode.cluster, peerNamespace: "tenant-b")
    guard case .helloResponse(let response) = granted else { throw StrataError(.protocolError, "\(granted)") }
    #expect(response.capabilities.contains(.peer) && response.namespace.name == "tenant-b")
    // Without a namespace the cluster token is refused too: peers act in one namespace at a time.
    let (_, unnamed) = node.connect(PipelineNode.cluster)
    guard case .error = unnamed else { throw StrataError(.protocolError, "\(unnamed)") }
  }

  @Test func connectionLimitsPerSourceAndNamespace() throws {
    let node = try PipelineNode {
      $0.limits.connectionsPerSourceMax = 2
      $0.limits.connectionsPerNamespaceMax = 3
    }
    var open: [InMemoryConnection] = []
    for _ in 0..<2 { open.append(node.connect(PipelineNode.tenantA, source: "10.0.0.1").0) }
    let (_, third) = node.connect(PipelineNode.tenantA, source: "10.0.0.1")
    guard case .error(_, let perSource) = third else { throw StrataError(.protocolError, "\(third)") }
    #expect(perSource.message.contains("limits.max_connections_per_source"))
    open.append(node.connect(PipelineNode.tenantA, source: "10.0.0.2").0)
    let (_, fourth) = node.connect(PipelineNode.tenantA, source: "10.0.0.3")
    guard case .error(_, let perNamespace) = fourth else { throw StrataError(.protocolError, "\(fourth)") }
    #expect(perNamespace.message.contains("limits.max_connections_per_namespace"))
    // Another namespace, same source as the full one: admitted.
    let (_, otherTenant) = node.connect(PipelineNode.tenantB, source: "10.0.0.3")
    guard case .helloResponse = otherTenant else { throw StrataError(.protocolError, "\(otherTenant)") }
    for connection in open { connection.close() }
  }

  @Test func namespaceInflightBudgetRefusesItsPutsButNotAnotherTenants() throws {
    let node = try PipelineNode { $0.limits.inflightBytesPerNamespaceMax = .mebibytes(1) }
    // A PUT announcing 2 MiB whose payload has not arrived yet still reserves on arrival of the
    // frame; one that exceeds the namespace budget is refused whole (noSpace), payload consumed.
    let (connection, _) = node.connect(PipelineNode.tenantA)
    let large = [UInt8](repeating: 3, count: 2 << 20)
    let answer = frames(connection.receive(putFrame(2, bytes: large)))
    guard case .putResponse(let refused) = answer.first?.1 else { throw StrataError(.protocolError, "PUT") }
    #expect(refused.outcomes == [.noSpace])
    #expect(!connection.isClosed, "a refused PUT keeps its connection")
    let (other, _) = node.connect(PipelineNode.tenantB)
    guard
      case .putResponse(let stored) = frames(other.receive(putFrame(3, bytes: [UInt8](repeating: 4, count: 512 << 10))))
        .first?.1
    else { throw StrataError(.protocolError, "PUT") }
    #expect(stored.outcomes == [.stored])
    #expect(node.server.stats.inflightBytes == 0)
  }

  /// A GET of blocks on NVMe takes its bytes from the namespace's in-flight budget before it reads
  /// them into RAM: over the budget it is refused having read nothing (before, every block was
  /// promoted, pinned, then refused, so a tenant's GETs could stage any amount of RAM); within it,
  /// it is answered and gives the budget back.
  @Test func aGetOverItsNamespacesBudgetReadsNothingFromNVMe() throws {
    let nvme = try NVMeTier(
      devices: [SimulatedBlockDevice(capacityBytes: 64 << 20)], regionBytes: 8 << 20, compression: .none,
      blockBytesMax: 4 << 20)
    let node = try PipelineNode(nvme: nvme) { $0.limits.inflightBytesPerNamespaceMax = .mebibytes(3) }
    let (connection, _) = node.connect(PipelineNode.tenantA)
    let block = [UInt8](repeating: 7, count: 1 << 20)
    for n in 0..<4 {
      guard case .putResponse(let put) = frames(connection.receive(putFrame(n, bytes: block))).first?.1 else {
        throw StrataError(.protocolError, "PUT")
      }
      #expect(put.outcomes == [.stored])
    }
    // Tenant B's blocks push A's out of the 32 MiB of RAM, onto NVMe.
    let (other, _) = node.connect(PipelineNode.tenantB)
    for n in 10..<50 { _ = other.receive(putFrame(n, bytes: block)) }
    let ids = (0..<4).map { BlockID(namespace: try! Namespace("tenant-a"), key: pipelineKey($0)) }
    try #require(node.tiers.lookup(ids) == Array(repeating: .nvme, count: 4))
    let get = { (count: Int) in
      frames(
        connection.receive(
          GetRequest(items: (0..<count).map { .init(key: pipelineKey($0)) }).frameBytes(requestID: 6, ringEpoch: 0)))
    }
    guard case .error(_, let refusal) = get(4).first?.1 else { throw StrataError(.protocolError, "GET of 4 MiB") }
    #expect(refusal.message.contains("max_inflight_bytes_per_namespace"), "\(refusal.message)")
    #expect(node.tiers.stats.promotedBlocks == 0, "a GET over its budget read blocks from NVMe")
    guard case .getResponse(let answered) = get(3).first?.1 else { throw StrataError(.protocolError, "GET of 3 MiB") }
    #expect(answered.items.map(\.status) == Array(repeating: .ok, count: 3))
    #expect(node.tiers.stats.promotedBlocks == 3)
    #expect(node.server.stats.inflightBytes == 0)
  }

  /// A PUT larger than RAM can hold at once (24 blocks of 256 KiB into 4 MiB of RAM) is stored
  /// whole: the node takes it in rounds, committing what it reserved before it reserves the rest
  /// (the blocks of the first rounds then leave RAM for NVMe). Before, its own reservations filled
  /// RAM and its last eight items were answered `noSpace`.
  @Test func aPutLargerThanRAMIsStoredWholeInRounds() throws {
    let nvme = try NVMeTier(
      devices: [SimulatedBlockDevice(capacityBytes: 64 << 20)], regionBytes: 8 << 20, compression: .none,
      blockBytesMax: 4 << 20)
    let node = try PipelineNode(nvme: nvme, ramBytes: 4 << 20)
    let (connection, _) = node.connect(PipelineNode.tenantA)
    let blocks = (0..<24).map { n in [UInt8](repeating: UInt8(n), count: 256 << 10) }
    let request = PutRequest(
      items: blocks.indices.map {
        .init(key: pipelineKey(100 + $0), length: UInt64(blocks[$0].count), checksum: CRC32C.checksum(blocks[$0]))
      })
    let answer = frames(connection.receive(request.frameBytes(requestID: 7, ringEpoch: 0) + blocks.flatMap { $0 }))
    guard case .putResponse(let put) = answer.first?.1 else { throw StrataError(.protocolError, "\(answer)") }
    #expect(put.outcomes == Array(repeating: .stored, count: 24))
    #expect(node.tiers.stats.demotedBlocks >= 8, "the first rounds' blocks made room by leaving for NVMe")
    for n in blocks.indices {
      let got = frames(
        connection.receive(GetRequest(items: [.init(key: pipelineKey(100 + n))]).frameBytes(requestID: 8, ringEpoch: 0))
      )
      guard case .getResponse(let response) = got.first?.1 else { throw StrataError(.protocolError, "GET \(n)") }
      #expect(response.items.map(\.status) == [.ok])
      #expect(got.first?.2 == blocks[n], "block \(n)")
    }
    #expect(node.server.stats.inflightBytes == 0)
  }

  @Test func leaseLimitsPerConnectionAndNamespaceAndTheDurationCap() throws {
    let node = try PipelineNode {
      $0.limits.leasesPerConnectionMax = 3
      $0.limits.leasesPerNamespaceMax = 5
      $0.limits.leaseDuration = DurationSetting(milliseconds: 1500)
    }
    let (first, _) = node.connect(PipelineNode.tenantA)
    var messages: [String] = []
    var granted: [UInt32] = []
    func lease(_ connection: InMemoryConnection) {
      let answer = frames(
        connection.receive(
          LookupRequest(keys: [pipelineKey(9)], leaseMilliseconds: .max).frameBytes(requestID: 3, ringEpoch: 0)))
      switch answer.first?.1 {
      case .lookupResponse(let response)?: granted.append(response.leaseExpiresInMilliseconds)
      case .error(_, let body)?: messages.append(body.message)
      default: messages.append("no answer")
      }
    }
    for _ in 0..<4 { lease(first) }
    #expect(messages.count == 1 && messages[0].contains("limits.max_leases_per_connection"))
    #expect(granted.allSatisfy { $0 == 1500 }, "\(granted)")
    let (second, _) = node.connect(PipelineNode.tenantA, source: "10.1.1.1")
    for _ in 0..<3 { lease(second) }
    #expect(messages.last?.contains("limits.max_leases_per_namespace") == true, "\(messages)")
    // The other tenant: leases and GETs unaffected.
    let (other, _) = node.connect(PipelineNode.tenantB)
    let before = messages.count
    lease(other)
    #expect(messages.count == before, "\(messages)")
    guard
      case .getResponse = frames(
        other.receive(GetRequest(items: [.init(key: pipelineKey(9))]).frameBytes(requestID: 4, ringEpoch: 0))
      ).first?.1
    else { throw StrataError(.protocolError, "GET") }
    // Ending the connections returns every lease.
    for connection in [first, second, other] { connection.close() }
    #expect(node.tiers.stats.leasesActive == 0)
  }

  @Test func malformedInputClosesTheConnectionAndReturnsWhatItHeld() throws {
    let node = try PipelineNode()
    let (connection, _) = node.connect(PipelineNode.tenantA)
    _ = connection.receive(
      LookupRequest(keys: [pipelineKey(1)], leaseMilliseconds: 1000).frameBytes(requestID: 2, ringEpoch: 0))
    #expect(node.tiers.stats.leasesActive == 1)
    _ = connection.receive([UInt8](repeating: 0xFF, count: 64))
    #expect(connection.isClosed && connection.closeReason?.code == .protocolError)
    #expect(node.tiers.stats.leasesActive == 0 && node.server.stats.connectionsOpen == 0)
    // Before HELLO, anything but a HELLO-sized HELLO is refused.
    let early = InMemoryConnection(server: node.server)
    _ = early.receive(LookupRequest(keys: [pipelineKey(1)]).frameBytes(requestID: 1, ringEpoch: 0))
    #expect(early.isClosed)
  }

  @Test func aPartOfACorruptBlockIsNeverServed() throws {
    let node = try PipelineNode()
    let (connection, _) = node.connect(PipelineNode.tenantA)
    let block = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    _ = connection.receive(putFrame(4, bytes: block))
    let range = GetRequest(items: [.init(key: pipelineKey(4), offset: 5000, length: 100)])
    #expect(
      frames(connection.receive(range.frameBytes(requestID: 2, ringEpoch: 0))).first?.2 == Array(block[5000..<5100]))
    // A bit flips in RAM (outside the range asked for): a fresh checksum of the part would vouch
    // for a corrupt block, so the node checks the whole block, refuses it and removes it.
    let id = BlockID(namespace: try Namespace("tenant-a"), key: pipelineKey(4))
    #expect(node.tiers.flipBitInRAMForTesting(id, byte: 10))
    let answer = frames(connection.receive(range.frameBytes(requestID: 3, ringEpoch: 0)))
    guard case .getResponse(let response) = answer.first?.1 else { throw StrataError(.protocolError, "GET") }
    #expect(response.items.map(\.status) == [.missing])
    #expect(node.tiers.lookup([id]) == [.absent] && node.tiers.stats.checksumFailures == 1)
  }
}

extension RequestPipelineTests {
  /// VERIFY: the node checks its own copy of each reported block and removes only one that fails
  /// its stored checksum; an intact block stays whoever reports it, an absent one is said absent.
  @Test func aReportedBlockIsRemovedOnlyIfItsCopyHereIsDamaged() throws {
    let node = try PipelineNode()
    let (connection, _) = node.connect(PipelineNode.tenantA)
    let block = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 11) }
    _ = connection.receive(putFrame(5, bytes: block))
    _ = connection.receive(putFrame(6, bytes: block))
    let namespace = try Namespace("tenant-a")
    #expect(node.tiers.flipBitInRAMForTesting(BlockID(namespace: namespace, key: pipelineKey(5)), byte: 9_999))
    let report = VerifyRequest(keys: [pipelineKey(5), pipelineKey(6), pipelineKey(7)])
    let answer = frames(connection.receive(report.frameBytes(requestID: 3, ringEpoch: 0)))
    guard case .verifyResponse(let response) = answer.first?.1 else {
      throw StrataError(.protocolError, "VERIFY: \(answer)")
    }
    #expect(response.outcomes == [.corrupt, .intact, .absent])
    let ids = [5, 6].map { BlockID(namespace: namespace, key: pipelineKey($0)) }
    #expect(node.tiers.lookup(ids) == [.absent, .ram] && node.tiers.stats.checksumFailures == 1)
    let stats = node.server.stats
    #expect(stats.verifyConfirmed == 1 && stats.verifyIntact == 1 && stats.verifyAbsent == 1)
    #expect(node.tiers.stats.leasesActive == 0)
  }
}

/// A cluster layer that is draining: it owns nothing and takes no copies.
private final class DrainingCluster: ClusterHooks {
  var epoch: UInt64 { 3 }
  func answerRing(_ body: [UInt8], isAdmin: Bool) async throws(StrataError) -> [UInt8] { [] }
  func firstUnowned(_ keys: [BlockKey]) -> BlockKey? { keys.first }
  func replicate(stored: [BlockID], present: [BlockID], writeQuorum: UInt8, deadline: Deadline) async -> StrataError? {
    nil
  }
  var readsThrough: Bool { false }
  func fill(_ ids: [BlockID], deadline: Deadline) async -> Int { 0 }
  var takesCopies: Bool { false }
  func member(named names: (String) -> Bool) -> String? { nil }
}

@Suite struct DrainingPipelineTests {
  /// A draining node refuses every PUT (`staleEpoch`), naming why, and stores none of it: a peer's
  /// copy (the sender must not count it: the node leaves with what it holds) and a client's (the
  /// node owns no key, and cannot stand behind a write once it is leaving); the connections stay,
  /// and the node still serves reads (a peer's read-through from a former owner, a client's).
  @Test func aDrainingNodeTakesNoWritesButServesReads() throws {
    let node = try PipelineNode()
    let bytes = [UInt8](repeating: 7, count: 4096)
    let (client, _) = node.connect(PipelineNode.tenantA)
    guard case .putResponse(let stored)? = frames(client.receive(putFrame(1, bytes: bytes))).first?.1 else {
      Issue.record("a PUT before the drain failed")
      return
    }
    #expect(stored.outcomes == [.stored])
    node.server.cluster = DrainingCluster()
    let (peer, _) = node.connect(PipelineNode.cluster, peerNamespace: "tenant-a")
    for (connection, says) in [(peer, "takes no copies"), (client, "takes no writes")] {
      let refused = frames(connection.receive(putFrame(2, bytes: bytes))).first?.1
      guard case .error(_, let error)? = refused else {
        Issue.record("a PUT to a draining node was answered \(String(describing: refused))")
        return
      }
      #expect(error.code == StrataError.Code.staleEpoch.number && error.message.contains(says), "\(error.message)")
      #expect(!connection.isClosed)
    }
    let id = BlockID(namespace: try Namespace("tenant-a"), key: pipelineKey(2))
    #expect(node.tiers.lookup([id]) == [.absent])
    let lookup = LookupRequest(keys: [pipelineKey(1)]).frameBytes(requestID: 6, ringEpoch: 0)
    guard let (header, message, _) = frames(peer.receive(lookup)).first, case .lookupResponse(let found) = message
    else {
      Issue.record("a peer's LOOKUP on a draining node failed")
      return
    }
    #expect(found.tiers == [.ram])
    // Answered at epoch 0 to a peer (a repair pass does not count a copy that is leaving), at the
    // node's epoch to a client.
    #expect(header.ringEpoch == 0)
    #expect(frames(client.receive(lookup)).first?.0.ringEpoch == 3)
  }
}
