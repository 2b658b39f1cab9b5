// A response whose payload the client stops reading (an error thrown while receiving it, not by
// the network) must not leave its unread bytes on the connection for the next call to take as a
// response.

import StrataClient
import StrataCore
import StrataGPU
import StrataTestKit
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite struct ConnectionReuseTests {
  @Test func aCallFailingWhileItsPayloadArrivesLeavesTheConnectionUsable() async throws {
    let node = try InProcessNode()
    let gpu = HostMemoryGPURuntime()
    let client = node.client(connections: 1, rdma: false, gpu: gpu)
    defer { client.close() }
    let size = 64 << 10
    let host = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * size, alignment: 4096)
    defer { host.deallocate() }
    for index in 0..<size { host[index] = UInt8(truncatingIfNeeded: index &* 31 &+ 7) }
    let region = client.register(host)
    let key = BlockKey(hex: String(repeating: "5c", count: 32))!
    #expect(try await client.put([.init(key: key, source: try region.slice(length: size))]) == [.stored])

    // A GPU destination continued into host memory: the client refuses it once the block's bytes
    // are arriving (the scattered receive takes host memory only).
    let device = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
    defer { device.deallocate() }
    gpu.addDeviceMemory(device, device: 0)
    let gpuRegion = try client.registerGPU(device: 0, pointer: device.baseAddress!, count: size)
    let scattered = StrataClient.GetItem(
      key: key, destination: try gpuRegion.slice(length: size / 2),
      tail: [try region.slice(offset: size, length: size / 2)])
    await #expect(throws: StrataError.self) { try await client.get([scattered]) }

    // The pool's one connection serves the next call whole: a fresh connection, not the rest of
    // the last response read as this one's.
    let plain = StrataClient.GetItem(key: key, destination: try region.slice(offset: size, length: size))
    #expect(try await client.get([plain]) == [.ok(length: size)])
    #expect(memcmp(host.baseAddress!, host.baseAddress! + size, size) == 0)
  }
}
