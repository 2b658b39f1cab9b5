// Proves each C library links and its shim works on this machine: a real call into each.

import CIBVerbs
import CLZ4
import COpenSSL
import CRDMACM
import CStrataLinux
import Foundation
import Testing

@Suite struct SystemLibraryTests {
  @Test func lz4RoundTripsThroughTheBlockAPI() {
    let input = (0..<65536).map { UInt8(truncatingIfNeeded: ($0 / 7) &* 3) }
    let bound = Int(strata_lz4_compress_bound(Int32(input.count)))
    #expect(bound >= input.count)
    var compressed = [UInt8](repeating: 0, count: bound)
    let compressedCount = input.withUnsafeBytes { source in
      compressed.withUnsafeMutableBytes { target in
        LZ4_compress_default(
          source.baseAddress!.assumingMemoryBound(to: CChar.self),
          target.baseAddress!.assumingMemoryBound(to: CChar.self),
          Int32(source.count), Int32(target.count))
      }
    }
    #expect(compressedCount > 0 && Int(compressedCount) < input.count / 4)
    var output = [UInt8](repeating: 0, count: input.count)
    let decompressed = compressed.withUnsafeBytes { source in
      output.withUnsafeMutableBytes { target in
        LZ4_decompress_safe(
          source.baseAddress!.assumingMemoryBound(to: CChar.self),
          target.baseAddress!.assumingMemoryBound(to: CChar.self),
          compressedCount, Int32(target.count))
      }
    }
    #expect(Int(decompressed) == input.count)
    #expect(output == input)
  }

  @Test func openSSLShimSetsTLSVersionBounds() throws {
    let context = try #require(SSL_CTX_new(TLS_method()))
    defer { SSL_CTX_free(context) }
    #expect(strata_ssl_ctx_set_min_proto_version(context, strata_tls1_3_version()) == 1)
    #expect(strata_ssl_ctx_get_min_proto_version(context) == strata_tls1_3_version())
    #expect(strata_ssl_ctx_set_max_proto_version(context, strata_tls1_2_version()) == 1)
  }

  /// No RDMA hardware here: the device list is empty (NULL with an errno such as ENOSYS) or,
  /// on a machine with devices, every listed device has a name. Either way the call links and runs.
  @Test func verbsDeviceDiscoveryRuns() {
    var count: Int32 = -1
    errno = 0
    let list = ibv_get_device_list(&count)
    if let list {
      defer { ibv_free_device_list(list) }
      #expect(count >= 0)
      for index in 0..<Int(count) {
        let device = list[index]
        #expect(device != nil)
        #expect(!String(cString: ibv_get_device_name(device)).isEmpty)
      }
    } else {
      #expect(errno != 0, "ibv_get_device_list returned NULL without an errno")
    }
  }

  @Test func rdmaConnectionManagerChannelOpensOrExplains() {
    errno = 0
    if let channel = rdma_create_event_channel() {
      #expect(channel.pointee.fd >= 0)
      rdma_destroy_event_channel(channel)
    } else {
      // Without the rdma_cm kernel module the device node is missing: ENODEV/ENOENT/ENOSYS.
      #expect(errno != 0)
    }
  }

  @Test func gnuShimOpensWithODirectAndAllocates() throws {
    #expect(strata_o_direct() != 0)
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-syslib-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("direct").path
    let fd = strata_open_direct(path, O_RDWR | O_CREAT, 0o600)
    try #require(fd >= 0, "open with O_DIRECT failed: \(String(cString: strerror(errno)))")
    defer { close(fd) }
    #expect(strata_fallocate(fd, 0, 0, 1 << 20) == 0)
    var status = stat()
    #expect(fstat(fd, &status) == 0 && status.st_size == 1 << 20)
    let alignment = Int(strata_direct_io_alignment(fd))
    #expect(alignment >= 512 && alignment <= 4096)
    // An aligned write and read through the page-cache bypass.
    let buffer = try #require(aligned(4096, 4096))
    defer { free(buffer) }
    memset(buffer, 0x5a, 4096)
    #expect(pwrite(fd, buffer, 4096, 8192) == 4096)
    memset(buffer, 0, 4096)
    #expect(pread(fd, buffer, 4096, 8192) == 4096)
    #expect(buffer.load(fromByteOffset: 4095, as: UInt8.self) == 0x5a)
    // The descriptor really carries O_DIRECT.
    #expect(fcntl(fd, F_GETFL) & strata_o_direct() != 0)
    // Punching a hole keeps the size.
    #expect(strata_fallocate(fd, strata_falloc_fl_punch_hole(), 0, 4096) == 0)
    #expect(fstat(fd, &status) == 0 && status.st_size == 1 << 20)
  }

  private func aligned(_ alignment: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    var pointer: UnsafeMutableRawPointer?
    return posix_memalign(&pointer, alignment, size) == 0 ? pointer : nil
  }
}
