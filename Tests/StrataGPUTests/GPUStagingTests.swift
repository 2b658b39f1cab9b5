// The GPU memory module without a GPU: the staging ring on the host-memory stand-in, the stand-in's
// own checks, and the CUDA loader on a machine without CUDA. Real CUDA runs in
// StrataRDMATests.realGPUMemoryReceivesBlocksOverTCP where a GPU is present.

import StrataCore
import StrataGPU
import StrataTestKit
import Testing

@Suite struct StagingRingTests {
  /// Small slots and many chunks: every byte lands, slots are reused only after their copy ran
  /// (the stand-in runs a copy no earlier than its event is waited for, so early reuse would
  /// copy overwritten bytes), and the checksum covers all chunks.
  @Test func chunksLandInOrderAndSlotsWaitForTheirCopy() throws {
    let gpu = HostMemoryGPURuntime()
    let device = UnsafeMutableRawBufferPointer.allocate(byteCount: 10_000, alignment: 64)
    defer { device.deallocate() }
    gpu.addDeviceMemory(device, device: 0)
    let ring = try StagingRing(runtime: gpu, device: 0, slotBytes: 256, slotCount: 3)
    var random = SplitMix64(seed: 65)
    let source = (0..<10_000).map { _ in UInt8(truncatingIfNeeded: random.next()) }
    var offset = 0
    let crc = try ring.stage(length: source.count, to: UInt64(UInt(bitPattern: device.baseAddress))) { chunk in
      source.withUnsafeBytes {
        chunk.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + chunk.count]))
      }
      offset += chunk.count
    }
    try ring.finish()
    let same = Array(device) == source
    #expect(same)
    #expect(crc == CRC32C.checksum(source))
    #expect(ring.slotWaits == 10_000 / 256 + 1 - 3)
    #expect(ring.stagedBytes == 10_000)
  }

  @Test func zeroOverwritesOnlyTheNamedDeviceBytes() throws {
    let gpu = HostMemoryGPURuntime()
    let device = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 64)
    defer { device.deallocate() }
    device.initializeMemory(as: UInt8.self, repeating: 0xAB)
    gpu.addDeviceMemory(device, device: 0)
    let ring = try StagingRing(runtime: gpu, device: 0, slotBytes: 256, slotCount: 2)
    try ring.zero(UInt64(UInt(bitPattern: device.baseAddress)) + 100, length: 200)
    try ring.finish()
    #expect(device[0..<100].allSatisfy { $0 == 0xAB })
    #expect(device[100..<300].allSatisfy { $0 == 0 })
    #expect(device[300...].allSatisfy { $0 == 0xAB })
  }

  @Test func theRingPinsItsSlotsOnceAndAFillErrorStopsTheTransfer() throws {
    let gpu = HostMemoryGPURuntime()
    let device = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 64)
    defer { device.deallocate() }
    gpu.addDeviceMemory(device, device: 0)
    let ring = try StagingRing(runtime: gpu, device: 0, slotBytes: 512, slotCount: 4)
    #expect(gpu.pinnedBytesAllocated == 512 * 4)
    var chunks = 0
    #expect(throws: StrataError.self) {
      _ = try ring.stage(length: 4096, to: UInt64(UInt(bitPattern: device.baseAddress))) { chunk throws(StrataError) in
        chunks += 1
        if chunks == 3 { throw StrataError(.ioError, "the socket failed mid-block") }
        chunk.initializeMemory(as: UInt8.self, repeating: 1)
      }
    }
    try ring.finish()
    #expect(chunks == 3 && ring.stagedBytes == 2 * 512, "nothing is staged after the failing chunk")
    #expect(gpu.pinnedBytesAllocated == 512 * 4, "no further pinned memory per transfer")
  }
}

@Suite struct HostMemoryGPURuntimeTests {
  @Test func deviceMemoryIsCheckedByRangeAndDevice() throws {
    let gpu = HostMemoryGPURuntime(devices: 2)
    let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { memory.deallocate() }
    let base = UInt64(UInt(bitPattern: memory.baseAddress))
    #expect(throws: StrataError.self) { try gpu.checkDeviceMemory(address: base, byteCount: 16, device: 0) }
    gpu.addDeviceMemory(memory, device: 1)
    try gpu.checkDeviceMemory(address: base, byteCount: 4096, device: 1)
    try gpu.checkDeviceMemory(address: base + 4000, byteCount: 96, device: 1)
    #expect(throws: StrataError.self) { try gpu.checkDeviceMemory(address: base + 4000, byteCount: 97, device: 1) }
    do {
      try gpu.checkDeviceMemory(address: base, byteCount: 16, device: 0)
      Issue.record("memory of GPU 1 was accepted as GPU 0's")
    } catch {
      #expect(error.code == .invalidArgument && error.message.contains("memory of GPU 1, not GPU 0"))
    }
    #expect(try gpu.deviceCount() == 2)
  }

  @Test func copiesRunInStreamOrderWhenTheirEventIsWaitedFor() throws {
    let gpu = HostMemoryGPURuntime()
    let device = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 64)
    defer { device.deallocate() }
    device.initializeMemory(as: UInt8.self, repeating: 0)
    gpu.addDeviceMemory(device, device: 0)
    let stream = try gpu.makeStream(device: 0)
    defer { gpu.destroyStream(stream) }
    let source: [UInt8] = Array(1...64)
    let address = UInt64(UInt(bitPattern: device.baseAddress))
    try source.withUnsafeBytes { bytes in
      try gpu.copyToDeviceAsync(address, from: bytes.baseAddress!, byteCount: 64, stream: stream)
    }
    try gpu.fillDeviceAsync(address, byte: 9, byteCount: 8, stream: stream)
    let event = try gpu.recordEvent(stream)
    #expect(try !gpu.isComplete(event) && device.allSatisfy { $0 == 0 }, "nothing runs before its event is waited for")
    try gpu.wait(event)
    #expect(try gpu.isComplete(event))
    gpu.destroyEvent(event)
    var back = [UInt8](repeating: 0, count: 64)
    try back.withUnsafeMutableBytes { out in
      try gpu.copyToHost(out.baseAddress!, from: address, byteCount: 64, device: 0)
    }
    #expect(back == [UInt8](repeating: 9, count: 8) + source[8...])
  }
}

@Suite struct CUDALoaderTests {
  @Test func withoutCUDARegisteringGPUMemoryFailsClearly() throws {
    // A loader pointed at a library that does not exist behaves as a machine without CUDA.
    #expect { try CUDARuntime.load(libraries: ["/nonexistent/libcudart.so"]) } throws: { error in
      guard let error = error as? StrataError else { return false }
      return error.code == .unsupported && error.message.contains("GPU memory needs the CUDA runtime")
        && error.message.contains("/nonexistent/libcudart.so") && error.message.contains("STRATA_CUDA_RUNTIME")
    }
  }
}
