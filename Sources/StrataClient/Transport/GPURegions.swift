// GPU memory as client regions: registering CUDA device memory (which loads the CUDA runtime and
// fails clearly without it), PUT from device memory through pinned host memory, and the
// transport counters.

public import StrataCore
import StrataGPU
import StrataWire

extension StrataClient {
  /// Registers `count` bytes of CUDA device memory of GPU `device` at `pointer`, for blocks to be
  /// read into (over RDMA directly where the NIC can reach GPU memory, otherwise through a pinned
  /// host staging ring) or written from.
  /// - Throws: `.unsupported` when the CUDA runtime cannot be loaded (the message says what was
  ///   tried and how to fix it); `.invalidArgument` when the memory is not that GPU's.
  public func registerGPU(device: Int, pointer: UnsafeMutableRawPointer, count: Int) throws(StrataError) -> MemoryRegion
  {
    let buffer = UnsafeMutableRawBufferPointer(start: pointer, count: count)
    try transports.checkGPU(buffer, device: device)
    let id = regions.withLock { next -> UInt64 in
      defer { next += 1 }
      return next
    }
    return MemoryRegion(id: id, base: pointer, count: count, kind: .cuda(device: device))
  }

  /// Which transport the connections use and why, and the staging counters.
  public var transportStats: ClientTransportStats { transports.stats }

  /// The threads device-to-host copies block (all clients of the process share them).
  static let deviceCopies = WorkerPool(label: "strata.client.gpu-copy", threads: 2)

  /// PUT of blocks some of which live in GPU memory: those are copied to pinned host memory first
  /// (on a worker thread: the copy blocks), then the batch goes as usual.
  func putFromDevice(_ items: [PutItem], writeQuorum: UInt8, deadline: Deadline) async throws(StrataError)
    -> [PutOutcome]
  {
    let runtime = try transports.gpuRuntime()
    let total = items.reduce(0) { $0 + ($1.source.region.kind == .host ? 0 : $1.source.length) }
    let staging = try runtime.allocatePinnedHost(byteCount: max(total, 1))
    defer { runtime.freePinnedHost(staging) }
    let hostRegion = register(UnsafeMutableRawBufferPointer(start: staging, count: total))
    defer { transports.forget(hostRegion) }
    nonisolated(unsafe) let base = staging
    let hostItems = try await Self.deviceCopies.run { () throws(StrataError) in
      var offset = 0
      var hostItems: [PutItem] = []
      for item in items {
        guard case .cuda(let device) = item.source.region.kind else {
          hostItems.append(item)
          continue
        }
        let source = item.source.region.address + UInt64(item.source.offset)
        try runtime.copyToHost(base + offset, from: source, byteCount: item.source.length, device: device)
        hostItems.append(
          PutItem(
            key: item.key, source: try hostRegion.slice(offset: offset, length: item.source.length),
            checksum: item.checksum))
        offset += item.source.length
      }
      return hostItems
    }
    return try await put(hostItems, writeQuorum: writeQuorum, deadline: deadline)
  }
}
