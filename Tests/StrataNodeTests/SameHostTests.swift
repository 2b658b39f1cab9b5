// The same-host path against a real node in process: a client on this machine moves blocks
// through its shared-memory region over the node's Unix socket, byte-exact; it falls back to TCP
// when it declines or the node is not local; and a hostile client cannot make the node touch
// memory outside its own region, fault on a region that shrinks, or reach another connection's.

import CStrataLinux
import Foundation
import StrataClient
import StrataCore
import StrataStorage
import StrataTCP
import StrataWire
import Testing

@testable import StrataNode

#if canImport(Glibc)
  import Glibc
#endif

/// A fresh directory for a node's socket (short: a Unix socket path holds at most 107 bytes).
func socketDirectory() throws -> String {
  let path = "/tmp/strata-shm-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
  try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  return path
}

/// A raw same-host connection: HELLO over the Unix socket, then a region offer with `descriptor`
/// attached (nil: none). Returns the socket and the node's answer (nil when it closed instead).
func rawSameHost(_ path: String, offerBytes: UInt64, descriptor: Int32?) throws -> (TCPSocket, RegionAnswer?) {
  let socket = try TCPSocket.connect(unixPath: path, timeoutMilliseconds: 5000)
  let hello = HelloRequest(capabilities: [.tcp, .sharedMemory], frameBytesMax: 1 << 30, token: [], clientName: "raw")
  try socket.writeAll(hello.frameBytes(requestID: 1, ringEpoch: 0))
  let (_, message, _) = try readFrame(socket)
  guard case .helloResponse(let response) = message, response.capabilities.contains(.sharedMemory) else {
    throw StrataError(.protocolError, "no same-host grant: \(message)")
  }
  try socket.sendMessage(RegionOffer(bytes: offerBytes).encoded, attaching: descriptor)
  var raw = [UInt8](repeating: 0, count: RegionAnswer.byteCount)
  do {
    try raw.withUnsafeMutableBytes { try socket.readExactly($0) }
  } catch {
    return (socket, nil)
  }
  return (socket, try raw.withUnsafeBytes { try RegionAnswer(decoding: $0) })
}

/// A memfd of `bytes`, sealed against shrinking when `sealed`.
func memfd(bytes: Int, sealed: Bool) throws -> Int32 {
  let fd = strata_memfd_create("test")
  guard fd >= 0, ftruncate(fd, off_t(bytes)) == 0 else { throw StrataError(.ioError, "memfd") }
  if sealed { guard strata_add_seals(fd, strata_seal_shrink()) == 0 else { throw StrataError(.ioError, "seal") } }
  return fd
}

/// Reads a response's header and body; on a same-host connection a GET's payload lies in the
/// region, so nothing follows the body in the stream.
func readAnswer(_ socket: TCPSocket) throws -> WireMessage {
  var header = [UInt8](repeating: 0, count: FrameHeader.byteCount)
  try header.withUnsafeMutableBytes { try socket.readExactly($0) }
  let decoded = try header.withUnsafeBytes { try FrameHeader(decoding: $0, limits: .standard) }
  var body = [UInt8](repeating: 0, count: Int(decoded.bodyBytes))
  try body.withUnsafeMutableBytes { try socket.readExactly($0) }
  return try body.withUnsafeBytes { try WireMessage(header: decoded, body: $0, limits: .standard) }
}

func putFrame(_ items: [(BlockKey, [UInt8])], ranges: [RegionRange], id: UInt64) -> [UInt8] {
  PutRequest(
    items: items.map { PutRequest.Item(key: $0.0, length: UInt64($0.1.count), checksum: CRC32C.checksum($0.1)) },
    regionRanges: ranges
  ).frameBytes(requestID: id, ringEpoch: 0)
}

@Suite(.serialized) struct SameHostTests {
  @Test func roundTripThroughSharedMemoryIsByteExactAndCounted() async throws {
    let directory = try socketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let node = try TestNode(ramBytes: 256 << 20, sameHostSocket: directory + "/node.sock")
    var configuration = StrataClient.Configuration(node: node.server.address)
    configuration.sharedMemoryBytes = 96 << 20
    let client = StrataClient(configuration)
    defer { client.close() }
    let shared = try #require(client.sharedMemory)
    // Single blocks of many sizes, then a batch of 16: sources in the first half, destinations
    // in the second.
    let sizes = [1, 7, 4096, 100_000, 1 << 20, 4 << 20] + Array(repeating: 256 << 10, count: 16)
    let total = sizes.reduce(0, +)
    let half = 48 << 20
    var puts: [StrataClient.PutItem] = []
    var gets: [StrataClient.GetItem] = []
    var offset = 0
    for (n, size) in sizes.enumerated() {
      (shared.base + offset).copyMemory(from: content(n + 100, bytes: size), byteCount: size)
      puts.append(.init(key: key(n, 5), source: try shared.slice(offset: offset, length: size)))
      gets.append(.init(key: key(n, 5), destination: try shared.slice(offset: half + offset, length: size)))
      offset += size
    }
    #expect(try await client.put(Array(puts.prefix(6))) == Array(repeating: .stored, count: 6))
    #expect(try await client.put(Array(puts.dropFirst(6))) == Array(repeating: .stored, count: 16))
    #expect(try await client.get(gets) == sizes.map { .ok(length: $0) })
    #expect(memcmp(shared.base, shared.base + half, total) == 0)
    // A part of a block, into the region too.
    let part = StrataClient.GetItem(
      key: key(4, 5), destination: try shared.slice(offset: half, length: 1000), blockOffset: 5000, length: 1000)
    #expect(try await client.get([part]) == [.ok(length: 1000)])
    #expect(memcmp(shared.base + half, shared.base + offsetOf(4, sizes) + 5000, 1000) == 0)
    let stats = client.transportStats
    #expect(stats.sameHostConnections == configuration.connections)
    #expect(stats.sameHostBatches >= 4)
    let server = node.server.stats
    #expect(server.sameHostConnectionsAccepted == configuration.connections)
    #expect(server.sameHostPutBytes == total && server.tcpPutBytes == 0 && server.rdmaPutBytes == 0)
    // The node counts a GET after sending it: the client may see the answer first.
    #expect(settled({ node.server.stats.sameHostGetBytes }, total + 1000) == total + 1000)
    #expect(settled({ node.server.stats.sameHostRegionRequests }, stats.sameHostBatches) == stats.sameHostBatches)
    // A bit flips in RAM in one block of a batch large enough to be copied by several threads:
    // that block is answered corrupt (never reported as data); the others arrive whole.
    let flipped = BlockID(namespace: .embeddedDefault, key: key(5, 5))
    #expect(node.tiers.flipBitInRAMForTesting(flipped, byte: 3 << 20))
    let batch = Array(gets[4...6])
    #expect(try await client.get(batch) == [.ok(length: 1 << 20), .corrupt, .ok(length: 256 << 10)])
    #expect(memcmp(shared.base + offsetOf(4, sizes), shared.base + half + offsetOf(4, sizes), 1 << 20) == 0)
    // The node removed the bad copy when its copy found it: the block's next PUT stores it again
    // (not "already present"), and it reads back whole.
    #expect(node.tiers.stats.checksumFailures == 1)
    #expect(try await client.put([puts[5]]) == [.stored])
    #expect(try await client.get([gets[5]]) == [.ok(length: 4 << 20)])
    #expect(memcmp(shared.base + offsetOf(5, sizes), shared.base + half + offsetOf(5, sizes), 4 << 20) == 0)
  }

  /// A same-host PUT larger than RAM holds at once is taken in rounds, each run of items copied
  /// from its own ranges of the region: 24 blocks of 256 KiB into 4 MiB of RAM are all stored,
  /// and the last eight (still in RAM; the node has no disk) read back as their own bytes.
  @Test func aPutLargerThanRAMCopiesEachRoundFromItsOwnRanges() async throws {
    let directory = try socketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let node = try TestNode(ramBytes: 4 << 20, sameHostSocket: directory + "/node.sock")
    var configuration = StrataClient.Configuration(node: node.server.address)
    configuration.sharedMemoryBytes = 8 << 20
    let client = StrataClient(configuration)
    defer { client.close() }
    let shared = try #require(client.sharedMemory)
    let size = 256 << 10
    let count = 24
    var puts: [StrataClient.PutItem] = []
    for n in 0..<count {
      memset(shared.base + n * size, Int32(n + 1), size)
      puts.append(.init(key: key(n, 9), source: try shared.slice(offset: n * size, length: size)))
    }
    #expect(try await client.put(puts) == Array(repeating: .stored, count: count))
    // The last eight read back over the first eight sources' room, each its own fill.
    memset(shared.base, 0, 8 * size)
    let gets = try (count - 8..<count).map { n in
      StrataClient.GetItem(key: key(n, 9), destination: try shared.slice(offset: (n - count + 8) * size, length: size))
    }
    #expect(try await client.get(gets) == Array(repeating: .ok(length: size), count: 8))
    #expect(memcmp(shared.base, shared.base + (count - 8) * size, 8 * size) == 0)
    #expect(node.server.stats.sameHostPutBytes == count * size && node.server.stats.tcpPutBytes == 0)
  }

  @Test func otherMemoryTravelsInTheUnixSocketStream() async throws {
    let directory = try socketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let node = try TestNode(sameHostSocket: directory + "/node.sock")
    let client = node.client()  // no shared memory
    defer { client.close() }
    let size = 1 << 20
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * size, alignment: 4096)
    defer { source.deallocate() }
    let region = client.register(source)
    source.baseAddress!.copyMemory(from: content(1, bytes: size), byteCount: size)
    #expect(try await client.put([.init(key: key(1, 6), source: try region.slice(length: size))]) == [.stored])
    let results = try await client.get([
      .init(key: key(1, 6), destination: try region.slice(offset: size, length: size))
    ])
    #expect(results == [.ok(length: size)])
    #expect(memcmp(source.baseAddress!, source.baseAddress! + size, size) == 0)
    #expect(client.transportStats.sameHostConnections == 2)
    #expect(client.transportStats.sameHostBatches == 0)
    #expect(settled({ node.server.stats.sameHostGetBytes }, size) == size)
    #expect(node.server.stats.sameHostRegionRequests == 0)
  }

  @Test func aClientThatDeclinesStaysOnTCP() async throws {
    let directory = try socketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let node = try TestNode(sameHostSocket: directory + "/node.sock")
    var configuration = StrataClient.Configuration(node: node.server.address)
    configuration.sameHost = false
    configuration.sharedMemoryBytes = 4 << 20
    let client = StrataClient(configuration)
    defer { client.close() }
    let shared = try #require(client.sharedMemory)
    (shared.base).copyMemory(from: content(2, bytes: 4096), byteCount: 4096)
    #expect(try await client.put([.init(key: key(2, 6), source: try shared.slice(length: 4096))]) == [.stored])
    #expect(
      try await client.get([.init(key: key(2, 6), destination: try shared.slice(offset: 8192, length: 4096))])
        == [.ok(length: 4096)])
    #expect(memcmp(shared.base, shared.base + 8192, 4096) == 0)
    #expect(client.transportStats.sameHostConnections == 0)
    #expect(node.server.stats.sameHostConnectionsAccepted == 0)
    #expect(node.server.stats.sameHostGetBytes == 0)
  }

  @Test func aSocketThatFailsLeavesTheClientOnTCP() async throws {
    let node = try TestNode()
    var configuration = StrataClient.Configuration(node: node.server.address)
    configuration.sameHostSocket = "/nonexistent/strata.sock"
    let client = StrataClient(configuration)
    defer { client.close() }
    #expect(try await client.lookup([key(1)]).tiers == [.absent])
    #expect(client.transportStats.sameHostConnections == 0)
    #expect(client.transportStats.sameHostDecision.contains("failed"))
  }

  @Test func onlyAClientOnThisMachineIsToldTheSocket() throws {
    #expect(isLocalHost("127.0.0.1"))
    #expect(isLocalHost("::1"))
    #expect(isLocalHost("localhost"))
    #expect(!isLocalHost("192.0.2.1"))  // TEST-NET-1: never this machine's
    #expect(!isLocalHost("no-such-host.invalid"))
    let directory = try socketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/node.sock"
    let node = try TestNode(sameHostSocket: path)
    for (offered, expected) in [(Capabilities.tcp, ""), (Capabilities([.tcp, .sharedMemory]), path)] {
      let socket = try node.rawSocket()
      try socket.writeAll(
        HelloRequest(capabilities: offered, frameBytesMax: 1 << 30, token: [], clientName: "raw").frameBytes(
          requestID: 1, ringEpoch: 0))
      let (_, message, _) = try readFrame(socket)
      guard case .helloResponse(let response) = message else { throw StrataError(.protocolError, "\(message)") }
      #expect(response.sameHostSocket == expected)
      // Over TCP the shared-memory capability itself is never granted.
      #expect(!response.capabilities.contains(.sharedMemory))
    }
  }

  @Test func regionsThatCouldFaultTheNodeAreRefused() throws {
    let directory = try socketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/node.sock"
    let node = try TestNode(sameHostSocket: path, sameHostRegionBytesMax: .mebibytes(16))
    let invalid = StrataError.Code.invalidArgument.number
    // Not sealed against shrinking: the client could truncate it under the node's copy.
    var (_, answer) = try rawSameHost(path, offerBytes: 1 << 20, descriptor: try memfd(bytes: 1 << 20, sealed: false))
    #expect(answer?.code == invalid)
    // Declares more than the memfd holds.
    (_, answer) = try rawSameHost(path, offerBytes: 2 << 20, descriptor: try memfd(bytes: 1 << 20, sealed: true))
    #expect(answer?.code == invalid)
    // Larger than same_host.max_region_size.
    (_, answer) = try rawSameHost(path, offerBytes: 32 << 20, descriptor: try memfd(bytes: 32 << 20, sealed: true))
    #expect(answer?.code == invalid)
    // Not a memfd at all (a pipe).
    var ends: [Int32] = [0, 0]
    #expect(pipe(&ends) == 0)
    defer { close(ends[1]) }
    (_, answer) = try rawSameHost(path, offerBytes: 4096, descriptor: ends[0])
    #expect(answer?.code == invalid)
    // Bytes without the descriptor.
    (_, answer) = try rawSameHost(path, offerBytes: 4096, descriptor: nil)
    #expect(answer?.code == invalid)
    #expect(node.server.stats.sameHostRegionsRefused == 5)
    // A region the client passed cannot be truncated afterwards: the seal holds.
    let sealed = try memfd(bytes: 1 << 20, sealed: true)
    defer { close(sealed) }
    #expect(ftruncate(sealed, 4096) != 0 && errno == EPERM)
    // The node still serves.
    (_, answer) = try rawSameHost(path, offerBytes: 1 << 20, descriptor: try memfd(bytes: 1 << 20, sealed: true))
    #expect(answer == RegionAnswer(code: 0, bytes: 1 << 20))
  }

  @Test func rangesOutsideTheRegionAreRefusedAndTheConnectionStays() throws {
    let directory = try socketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/node.sock"
    _ = try TestNode(sameHostSocket: path)
    let size = 1 << 20
    let fd = try memfd(bytes: size, sealed: true)
    let mapped = try #require(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
    defer { munmap(mapped, size) }
    let (socket, answer) = try rawSameHost(path, offerBytes: UInt64(size), descriptor: fd)
    #expect(answer?.code == 0)
    let block = content(9, bytes: 4096)
    mapped.copyMemory(from: block, byteCount: block.count)
    var id: UInt64 = 2
    func exchange(_ frame: [UInt8]) throws -> WireMessage {
      try socket.writeAll(frame)
      id += 1
      return try readAnswer(socket)
    }
    // PUT ranges past the end, overlapping the end, or of the wrong length: refused whole.
    for bad in [
      RegionRange(offset: UInt64(size), length: 4096), RegionRange(offset: UInt64(size - 100), length: 4096),
      RegionRange(offset: UInt64.max - 4095, length: 4095), RegionRange(offset: 0, length: 100),
    ] {
      let message = try exchange(putFrame([(key(1, 7), block)], ranges: [bad], id: id))
      guard case .error(_, let error) = message else {
        Issue.record("PUT with range \(bad) answered \(message)")
        continue
      }
      #expect(error.code == StrataError.Code.invalidArgument.number)
    }
    // A good PUT on the same connection.
    guard
      case .putResponse(let stored) = try exchange(
        putFrame([(key(1, 7), block)], ranges: [RegionRange(offset: 0, length: 4096)], id: id))
    else {
      Issue.record("no PUT answer")
      return
    }
    #expect(stored.outcomes == [.stored])
    // GET ranges outside the region, or too small: nothing written, the item says so.
    let get = GetRequest(
      items: [GetRequest.Item(key: key(1, 7)), GetRequest.Item(key: key(1, 7)), GetRequest.Item(key: key(1, 7))],
      regionRanges: [
        RegionRange(offset: UInt64(size - 10), length: 4096), RegionRange(offset: 8192, length: 100),
        RegionRange(offset: 8192, length: 4096),
      ])
    guard case .getResponse(let got) = try exchange(get.frameBytes(requestID: id, ringEpoch: 0)) else {
      Issue.record("no GET answer")
      return
    }
    #expect(got.items.map(\.status) == [.rangeOutOfBounds, .rangeOutOfBounds, .ok])
    #expect(memcmp(mapped + 8192, block, 4096) == 0)
    #expect((mapped + size - 10).load(as: UInt8.self) == 0)
  }

  /// A same-host PUT may leave its checksums to the node, which checksums each block as it copies
  /// it: the block is stored, and served with its true checksum. Over TCP the same request is
  /// refused: there the sender's checksum is the only one that covers the link.
  @Test func checksumsLeftToTheNodeOnlyThroughARegion() throws {
    let directory = try socketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/node.sock"
    let node = try TestNode(sameHostSocket: path)
    let size = 1 << 20
    let fd = try memfd(bytes: size, sealed: true)
    let mapped = try #require(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
    defer { munmap(mapped, size) }
    let (socket, answer) = try rawSameHost(path, offerBytes: UInt64(size), descriptor: fd)
    #expect(answer?.code == 0)
    let blocks = [content(21, bytes: 200_000), content(22, bytes: 4096)]
    mapped.copyMemory(from: blocks[0], byteCount: blocks[0].count)
    (mapped + 262_144).copyMemory(from: blocks[1], byteCount: blocks[1].count)
    let put = PutRequest(
      items: blocks.enumerated().map { PutRequest.Item(key: key(2, $0), length: UInt64($1.count), checksum: 0) },
      regionRanges: [RegionRange(offset: 0, length: 200_000), RegionRange(offset: 262_144, length: 4096)],
      checksumsByNode: true)
    try socket.writeAll(put.frameBytes(requestID: 2, ringEpoch: 0))
    guard case .putResponse(let stored) = try readAnswer(socket) else {
      Issue.record("no PUT answer")
      return
    }
    #expect(stored.outcomes == [.stored, .stored])
    let get = GetRequest(
      items: [GetRequest.Item(key: key(2, 0)), GetRequest.Item(key: key(2, 1))],
      regionRanges: [RegionRange(offset: 524_288, length: 200_000), RegionRange(offset: 786_432, length: 4096)])
    try socket.writeAll(get.frameBytes(requestID: 3, ringEpoch: 0))
    guard case .getResponse(let got) = try readAnswer(socket) else {
      Issue.record("no GET answer")
      return
    }
    #expect(got.items.map(\.status) == [.ok, .ok])
    #expect(got.items.map(\.checksum) == blocks.map { CRC32C.checksum($0) })
    #expect(memcmp(mapped + 524_288, blocks[0], 200_000) == 0 && memcmp(mapped + 786_432, blocks[1], 4096) == 0)

    // Over TCP, with the payload in the stream: refused, nothing stored, the connection serves on.
    let tcp = try node.rawSocket()
    let hello = HelloRequest(capabilities: [.tcp], frameBytesMax: 1 << 30, token: [], clientName: "raw")
    try tcp.writeAll(hello.frameBytes(requestID: 1, ringEpoch: 0))
    _ = try readFrame(tcp)
    let overTCP = PutRequest(
      items: [PutRequest.Item(key: key(2, 5), length: 4096, checksum: 0)],
      regionRanges: [RegionRange(offset: 0, length: 4096)], checksumsByNode: true)
    try tcp.writeAll(overTCP.frameBytes(requestID: 2, ringEpoch: 0) + blocks[1])
    guard case .error(_, let error) = try readAnswer(tcp) else {
      Issue.record("a TCP PUT leaving its checksums to the node was not refused")
      return
    }
    #expect(error.code == StrataError.Code.invalidArgument.number)
    try tcp.writeAll(StatRequest().frameBytes(requestID: 3, ringEpoch: 0))
    guard case .statResponse = try readAnswer(tcp) else {
      Issue.record("the connection did not serve on")
      return
    }
    #expect(node.tiers.lookup([BlockID(namespace: .embeddedDefault, key: key(2, 5))]) == [.absent])
  }

  @Test func aConnectionWithoutARegionCannotNameOne() throws {
    let directory = try socketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/node.sock"
    let node = try TestNode(sameHostSocket: path)
    let (socket, answer) = try rawSameHost(path, offerBytes: 0, descriptor: nil)
    #expect(answer?.code == 0)
    try socket.writeAll(
      GetRequest(items: [GetRequest.Item(key: key(1))], regionRanges: [RegionRange(offset: 0, length: 10)])
        .frameBytes(requestID: 2, ringEpoch: 0))
    guard case .error(_, let error) = try readAnswer(socket) else {
      Issue.record("a GET naming a region on a connection without one was served")
      return
    }
    #expect(error.code == StrataError.Code.invalidArgument.number)
    _ = node
  }

  @Test func aConnectionNeverReachesAnotherConnectionsRegion() throws {
    let directory = try socketDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/node.sock"
    let node = try TestNode(sameHostSocket: path)
    let size = 1 << 20
    var maps: [UnsafeMutableRawPointer] = []
    var sockets: [TCPSocket] = []
    for fill in [UInt8(0xAA), 0x55] {
      let fd = try memfd(bytes: size, sealed: true)
      let mapped = try #require(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
      memset(mapped, Int32(fill), size)
      let (socket, answer) = try rawSameHost(path, offerBytes: UInt64(size), descriptor: fd)
      #expect(answer?.code == 0)
      maps.append(mapped)
      sockets.append(socket)
    }
    defer { for mapped in maps { munmap(mapped, size) } }
    // Connection A stores a block from its region; connection B reads it at the same offsets of
    // its own. A's region is untouched, B's holds the block.
    let block = content(11, bytes: 65536)
    maps[0].copyMemory(from: block, byteCount: block.count)
    try sockets[0].writeAll(putFrame([(key(3, 7), block)], ranges: [RegionRange(offset: 0, length: 65536)], id: 2))
    guard case .putResponse(let stored) = try readAnswer(sockets[0]) else { throw StrataError(.protocolError, "PUT") }
    #expect(stored.outcomes == [.stored])
    let before = Array(UnsafeRawBufferPointer(start: maps[0], count: size))
    try sockets[1].writeAll(
      GetRequest(items: [GetRequest.Item(key: key(3, 7))], regionRanges: [RegionRange(offset: 65536, length: 65536)])
        .frameBytes(requestID: 2, ringEpoch: 0))
    guard case .getResponse(let got) = try readAnswer(sockets[1]) else { throw StrataError(.protocolError, "GET") }
    #expect(got.items.map(\.status) == [.ok])
    #expect(memcmp(maps[1] + 65536, block, 65536) == 0)
    #expect((maps[1]).load(as: UInt8.self) == 0x55)
    #expect(Array(UnsafeRawBufferPointer(start: maps[0], count: size)) == before)
    _ = node
  }
}

private func offsetOf(_ index: Int, _ sizes: [Int]) -> Int { sizes.prefix(index).reduce(0, +) }

/// `read()` once it equals `expected`, or its last value when 30 s pass first (counters the node
/// updates just after answering; generous, as a loaded machine can stall a thread for seconds).
func settled<T: Equatable>(_ read: () -> T, _ expected: T) -> T {
  let deadline = Deadline.after(milliseconds: 30_000)
  var value = read()
  while value != expected && !deadline.hasPassed() {
    usleep(1_000)
    value = read()
  }
  return value
}
