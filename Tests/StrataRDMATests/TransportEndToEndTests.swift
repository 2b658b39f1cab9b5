// The transports with a real node in process on loopback: negotiation falling back to TCP with
// correct data and a logged reason (this machine has no RDMA), GPU regions through the staging
// ring (with a host-memory stand-in for the GPU, and with CUDA where a GPU exists), and an RDMA
// end-to-end test that runs only where a device exists. The staging ring alone and the CUDA loader
// are tested in StrataGPUTests, GPU registration without a node in StrataClientTests.

import Foundation
import Logging
import StrataClient
import StrataConfig
import StrataCore
import StrataGPU
import StrataRDMA
import StrataStorage
import StrataTestKit
import StrataWire
import Synchronization
import Testing

@testable import StrataNode

/// The node these tests drive: 256 MiB of RAM, blocks up to 8 MiB.
func loopbackNode(logLevel: Logger.Level = .info) throws -> InProcessNode {
  try InProcessNode(
    ramBytes: 256 << 20, blockBytesMax: .mebibytes(8), admission: .always, nodeID: "rdma-test", logLevel: logLevel)
}

func blockKey(_ n: Int) -> BlockKey {
  var seed: [UInt8] = Array("rdma-test".utf8)
  withUnsafeBytes(of: UInt64(n)) { seed += $0 }
  return SHA256.digest(seed)
}

/// Writes `count` random blocks of up to `bytesMax` from host memory; returns their contents.
func putBlocks(_ client: StrataClient, count: Int, bytesMax: Int, seed: UInt64) async throws -> [[UInt8]] {
  var random = SplitMix64(seed: seed)
  let blocks = (0..<count).map { _ in
    var block = [UInt8](repeating: 0, count: Int(random.next() % UInt64(bytesMax)) + 1)
    block.withUnsafeMutableBytes { bytes in
      for offset in stride(from: 0, to: bytes.count, by: 8) {
        withUnsafeBytes(of: random.next()) { word in
          UnsafeMutableRawBufferPointer(rebasing: bytes[offset..<min(offset + 8, bytes.count)])
            .copyMemory(from: UnsafeRawBufferPointer(rebasing: word[0..<min(8, bytes.count - offset)]))
        }
      }
    }
    return block
  }
  let total = blocks.reduce(0) { $0 + $1.count }
  let source = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 4096)
  defer { source.deallocate() }
  let region = client.register(source)
  var items: [StrataClient.PutItem] = []
  var offset = 0
  for (index, block) in blocks.enumerated() {
    block.withUnsafeBytes {
      UnsafeMutableRawBufferPointer(rebasing: source[offset..<offset + block.count]).copyMemory(from: $0)
    }
    items.append(
      StrataClient.PutItem(key: blockKey(index), source: try region.slice(offset: offset, length: block.count)))
    offset += block.count
  }
  let outcomes = try await client.put(items)
  #expect(outcomes.allSatisfy { $0 == .stored }, "\(outcomes)")
  return blocks
}

/// Reads the blocks into `region` (slots of `slotBytes`) and byte-compares them through `read`.
func getAndCompare(
  _ client: StrataClient, _ blocks: [[UInt8]], region: MemoryRegion, slotBytes: Int,
  read: (Int, Int) -> [UInt8]
) async throws {
  let items = try blocks.indices.map { index in
    StrataClient.GetItem(
      key: blockKey(index), destination: try region.slice(offset: index * slotBytes, length: slotBytes))
  }
  let results = try await client.get(items)
  for (index, result) in results.enumerated() {
    #expect(result == .ok(length: blocks[index].count), "block \(index)")
    // Compared as a Bool: a failing #expect on two large arrays would diff them for minutes.
    let same = read(index * slotBytes, blocks[index].count) == blocks[index]
    #expect(same, "block \(index) bytes")
  }
}

@Suite(.serialized) struct TransportEndToEndTests {
  static let rdma = RDMADevices.discover()

  @Test(.enabled(if: !rdma.isAvailable, "this machine has an RDMA device; the fallback test is for machines without"))
  func withoutADeviceBothSidesNegotiateTCPAndMoveDataCorrectly() async throws {
    let node = try loopbackNode(logLevel: .debug)
    defer { node.server.stop() }
    let client = node.client()
    defer { client.close() }
    try await client.connect()
    let blocks = try await putBlocks(client, count: 64, bytesMax: 300_000, seed: 61)
    let slotBytes = 300_000
    let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: slotBytes * blocks.count, alignment: 4096)
    defer { destination.deallocate() }
    destination.initializeMemory(as: UInt8.self, repeating: 0xEE)
    try await getAndCompare(client, blocks, region: client.register(destination), slotBytes: slotBytes) {
      Array(destination[$0..<$0 + $1])
    }
    let stats = client.transportStats
    #expect(stats.rdmaConnections == 0 && stats.tcpConnections == 2)
    #expect(stats.lastDecision.hasPrefix("tcp (this client has no RDMA"), "\(stats.lastDecision)")
    #expect(node.server.stats.helloTCPOnly == 2 && node.server.stats.helloRDMAGranted == 0)
    let moved = blocks.reduce(0) { $0 + $1.count }
    #expect(try await eventually(within: 5) { node.server.stats.tcpGetBytes == moved })
    #expect(node.server.stats.tcpPutBytes == moved && node.server.stats.rdmaGetBytes == 0)
    // The client offered no RDMA (it has none): one debug line per connection says so.
    let lines = node.logs.records.withLock { $0.filter { $0.message == "transport chosen" } }
    #expect(lines.count == 2)
    #expect(
      lines.allSatisfy {
        $0.level == .debug && $0.metadata["transport"] == "tcp"
          && $0.metadata["reason"] == "the client did not offer RDMA"
      })
    #expect(node.server.statJSON().contains("\"hello_tcp_only\":2"))
  }

  @Test func aNodeWithoutRDMASaysWhyWhenAClientOffersIt() throws {
    let node = try loopbackNode()
    defer { node.server.stop() }
    let offered = HelloRequest(
      capabilities: [.tcp, .rdma, .leases], frameBytesMax: 1 << 20, token: [], clientName: "probe")
    let granted = node.server.grantCapabilities(offered, peer: "test")
    let line = node.logs.records.withLock { $0.last { $0.message == "transport chosen" } }
    if Self.rdma.isAvailable {
      #expect(granted.contains(.rdma) && line?.metadata["transport"] == "rdma")
    } else {
      #expect(!granted.contains(.rdma))
      #expect(line?.metadata["transport"] == "tcp")
      #expect(
        line?.metadata["reason"]?.hasPrefix("the node has no RDMA: ibv_get_device_list") == true,
        "\(String(describing: line))")
    }
  }

  @Test func gpuRegionsReceiveThroughTheStagingRing() async throws {
    let node = try loopbackNode()
    defer { node.server.stop() }
    let gpu = HostMemoryGPURuntime()
    let client = node.client(gpu: gpu)
    defer { client.close() }
    // Blocks up to 6 MiB: larger than a 4 MiB staging slot, so some span two slots.
    let blocks = try await putBlocks(client, count: 12, bytesMax: 6 << 20, seed: 62)
    let slotBytes = 6 << 20
    let device = UnsafeMutableRawBufferPointer.allocate(byteCount: slotBytes * blocks.count, alignment: 4096)
    defer { device.deallocate() }
    device.initializeMemory(as: UInt8.self, repeating: 0xEE)
    gpu.addDeviceMemory(device, device: 0)
    let region = try client.registerGPU(device: 0, pointer: device.baseAddress!, count: device.count)
    #expect(region.kind == .cuda(device: 0))
    try await getAndCompare(client, blocks, region: region, slotBytes: slotBytes) { Array(device[$0..<$0 + $1]) }
    #expect(client.transportStats.stagedBytes == blocks.reduce(0) { $0 + $1.count })

    // PUT from GPU memory goes through pinned host memory.
    let fresh = (0..<3000).map { UInt8(truncatingIfNeeded: $0 * 7) }
    fresh.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: device[0..<3000]).copyMemory(from: $0) }
    let outcome = try await client.put([
      StrataClient.PutItem(key: blockKey(999), source: try region.slice(length: 3000))
    ])
    #expect(outcome == [.stored])
    let back = try await node.server.tiers.read(BlockID(namespace: .embeddedDefault, key: blockKey(999)))
    let same = back == fresh
    #expect(same)
  }

  static let cuda: Result<CUDARuntime, StrataError> = {
    do throws(StrataError) { return .success(try CUDARuntime.load()) } catch { return .failure(error) }
  }()
  static var cudaPresent: Bool { (try? cuda.get()).map { (try? $0.deviceCount()) ?? 0 > 0 } ?? false }

  @Test(.enabled(if: cudaPresent, "needs the CUDA runtime and a GPU; none here"))
  func realGPUMemoryReceivesBlocksOverTCP() async throws {
    let runtime = try Self.cuda.get()
    let node = try loopbackNode()
    defer { node.server.stop() }
    let client = node.client(rdma: false)
    defer { client.close() }
    let blocks = try await putBlocks(client, count: 16, bytesMax: 2 << 20, seed: 63)
    let slotBytes = 2 << 20
    let device = try runtime.allocateDeviceMemory(byteCount: slotBytes * blocks.count, device: 0)
    defer { runtime.freeDeviceMemory(device) }
    let region = try client.registerGPU(device: 0, pointer: device, count: slotBytes * blocks.count)
    try await getAndCompare(client, blocks, region: region, slotBytes: slotBytes) { offset, count in
      var bytes = [UInt8](repeating: 0, count: count)
      try? bytes.withUnsafeMutableBytes {
        try runtime.copyToHost(
          $0.baseAddress!, from: UInt64(UInt(bitPattern: device)) + UInt64(offset), byteCount: count, device: 0)
      }
      return bytes
    }
  }

  @Test(.enabled(if: rdma.isAvailable, "needs an RDMA device: ibv_get_device_list finds none on this machine"))
  func blocksMoveEndToEndOverRDMA() async throws {
    let node = try loopbackNode()
    defer { node.server.stop() }
    let client = node.client()
    defer { client.close() }
    try await client.connect()
    #expect(client.transportStats.rdmaConnections == 2, "\(client.transportStats.lastDecision)")
    let blocks = try await putBlocks(client, count: 200, bytesMax: 1 << 20, seed: 64)
    let slotBytes = 1 << 20
    let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: slotBytes * blocks.count, alignment: 4096)
    defer { destination.deallocate() }
    try await getAndCompare(client, blocks, region: client.register(destination), slotBytes: slotBytes) {
      Array(destination[$0..<$0 + $1])
    }
    #expect(client.transportStats.rdmaBatches >= 2 && client.transportStats.failedOverBatches == 0)
    #expect(node.server.stats.connectionsRDMA == 2)
    // The node counts the GET's bytes as RDMA's, none as TCP's (it counts after answering).
    let moved = blocks.reduce(0) { $0 + $1.count }
    #expect(try await eventually(within: 5) { node.server.stats.rdmaGetBytes == moved })
    #expect(node.server.stats.tcpGetBytes == 0)
  }
}
