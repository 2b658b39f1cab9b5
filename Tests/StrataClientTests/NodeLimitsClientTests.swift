// A client alone on a node stays within the sizes the node announced in HELLO: each part of a
// batch fits a frame (`limits.max_inflight_bytes_per_connection`), and the parts on all its
// connections at once fit its namespace's in-flight budget. A part over either used to be refused
// whole, every block of it answered `no_space`, though nothing else used the node.

import StrataClient
import StrataCore
import StrataTestKit
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite struct NodeLimitsClientTests {
  static let block = 1 << 20

  func keys(_ count: Int, _ tag: UInt8) -> [BlockKey] {
    (0..<count).map { BlockKey(bytes: [tag, UInt8($0)] + [UInt8](repeating: 0x3c, count: 30))! }
  }

  /// `limits`: the node's per-namespace budget (8 MiB) or per-connection frame bound (4 MiB), each
  /// below the client's 64 MiB batches; 24 blocks of 1 MiB go in one call, and all are stored.
  @Test(arguments: ["namespace budget", "frame bound"])
  func aBatchLargerThanTheNodeTakesAtOnceIsStoredWhole(limit: String) async throws {
    let node =
      limit == "namespace budget"
      ? try InProcessNode(ramBytes: 128 << 20, inflightBytesPerNamespaceMax: .mebibytes(8))
      : try InProcessNode(ramBytes: 128 << 20, inflightBytesPerConnectionMax: .mebibytes(4))
    let client = node.client(connections: 2, rdma: false)
    defer { client.close() }
    let count = 24
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: count * Self.block, alignment: 4096)
    defer { source.deallocate() }
    for index in 0..<source.count { source[index] = UInt8(truncatingIfNeeded: index &* 131 &+ index >> 12) }
    let region = client.register(source)
    let keys = keys(count, limit == "namespace budget" ? 1 : 2)
    let items = try keys.indices.map { index in
      StrataClient.PutItem(key: keys[index], source: try region.slice(offset: index * Self.block, length: Self.block))
    }
    #expect(try await client.put(items) == Array(repeating: .stored, count: count))
    // And they read back whole, in one call too.
    let target = UnsafeMutableRawBufferPointer.allocate(byteCount: count * Self.block, alignment: 4096)
    defer { target.deallocate() }
    let into = client.register(target)
    let reads = try keys.indices.map { index in
      StrataClient.GetItem(
        key: keys[index], destination: try into.slice(offset: index * Self.block, length: Self.block))
    }
    #expect(try await client.get(reads) == Array(repeating: .ok(length: Self.block), count: count))
    #expect(memcmp(source.baseAddress!, target.baseAddress!, source.count) == 0)
  }
}
