// What a client shares across its connections for moving payloads other than through plain TCP
// into host memory: the RDMA devices and the registrations of its regions on them, and the GPU
// runtime with pinned staging rings for device memory reached over TCP.

import StrataCore
import StrataGPU
import StrataRDMA
import StrataTCP
import Synchronization

/// Where a registered region's memory lives.
public enum MemoryKind: Sendable, Hashable {
  /// Host memory (pageable or pinned).
  case host
  /// CUDA device memory of GPU `device`; `base` is a device pointer, never read on the host.
  case cuda(device: Int)
}

/// Which transport each of the client's connections uses and why, as a snapshot.
public struct ClientTransportStats: Sendable, Hashable {
  public var rdmaConnections = 0
  public var tcpConnections = 0
  /// The last decision's reason, as logged ("tcp (the node has no RDMA: ...)").
  public var lastDecision = ""
  /// Batches that ran over RDMA, and batches moved to TCP after an RDMA failure mid-stream.
  public var rdmaBatches = 0
  public var failedOverBatches = 0
  /// Bytes received through the pinned staging ring into GPU memory.
  public var stagedBytes = 0
  /// Connections on the same-host path (the node's Unix-domain socket), and GET and PUT batches
  /// whose blocks moved through the shared-memory region.
  public var sameHostConnections = 0
  public var sameHostBatches = 0
  /// Why the last connection is or is not on the same-host path.
  public var sameHostDecision = ""
  /// Pooled connections found closed by the node (its `limits.idle_timeout`) or broken while
  /// idle, and replaced before a call used them.
  public var idleConnectionsReplaced = 0
  /// Blocks whose bytes failed their checksum on arrival, reported to their node (VERIFY).
  public var damagedBlocksReported = 0
}

final class ClientTransports: Sendable {
  let rdmaEnabled: Bool
  let availability: RDMAAvailability
  let devices: [RDMADeviceContext]
  private let gpuLoader: @Sendable () throws(StrataError) -> any GPURuntime
  private let state = Mutex(State())
  /// Whether the same-host path may be used at all (`Configuration.sameHost`).
  let sameHostEnabled: Bool
  /// The client's shared memory (`Configuration.sharedMemoryBytes`), passed to every same-host
  /// connection.
  let sharedRegion: SharedMemoryRegion?
  static let registrationsMax = 1024

  struct State {
    var stats = ClientTransportStats()
    /// Registrations of regions on each device, keyed by region id then device name.
    var registrations: [UInt64: [String: MemoryRegistration]] = [:]
    var registrationOrder: [UInt64] = []
    var gpu: (any GPURuntime)?
    var rings: [Int: [StagingRing]] = [:]
    /// Per node address: whether it is on this machine, and its same-host socket once learned
    /// (nil after that socket failed: the node is then reached over TCP).
    var local: [HostPort: Bool] = [:]
    var sameHostSockets: [HostPort: String?] = [:]
  }

  init(rdmaEnabled: Bool, gpuRuntime: (any GPURuntime)?, sameHost: Bool = false, sharedMemoryBytes: Int = 0) {
    sameHostEnabled = sameHost
    var sharedRegion: SharedMemoryRegion?
    var sharedFailure: String?
    if sharedMemoryBytes > 0 {
      do {
        sharedRegion = try SharedMemoryRegion.create(bytes: sharedMemoryBytes, name: "strata-client")
      } catch {
        sharedFailure = "no shared memory: \(error.message)"
      }
    }
    self.sharedRegion = sharedRegion
    if let sharedFailure { state.withLock { $0.stats.sameHostDecision = sharedFailure } }
    self.rdmaEnabled = rdmaEnabled
    var availability = rdmaEnabled ? RDMADevices.discover() : .unavailable(reason: "disabled in the configuration")
    var devices: [RDMADeviceContext] = []
    if availability.isAvailable {
      do {
        devices = try RDMADeviceContext.openAll()
        if devices.isEmpty { availability = .unavailable(reason: "rdma_cm opened no device") }
      } catch {
        availability = .unavailable(reason: error.message)
      }
    }
    self.availability = availability
    self.devices = devices
    if let gpuRuntime {
      gpuLoader = { () throws(StrataError) in gpuRuntime }
    } else {
      gpuLoader = { () throws(StrataError) in try CUDARuntime.load() }
    }
  }

  var stats: ClientTransportStats { state.withLock { $0.stats } }

  /// Whether a HELLO to `address` offers the same-host path: enabled and the node is on this
  /// machine (decided once per address).
  func offersSameHost(_ address: HostPort) -> Bool {
    guard sameHostEnabled else { return false }
    if let known = state.withLock({ $0.local[address] }) { return known }
    let local = isLocalHost(address.host)
    state.withLock { $0.local[address] = local }
    return local
  }

  /// The same-host socket to try first for `address`: the configured one, or the one its node
  /// named; nil when there is none or it failed before.
  func sameHostSocket(for address: HostPort, configured: String) -> String? {
    guard offersSameHost(address) else { return nil }
    return state.withLock { state -> String? in
      if let known = state.sameHostSockets[address] { return known }
      return configured.isEmpty ? nil : configured
    }
  }

  /// Forgets what was learned about `address` (a node that left the ring).
  func forget(_ address: HostPort) {
    state.withLock { state in
      state.local[address] = nil
      state.sameHostSockets[address] = nil
    }
  }

  /// Records the socket a node named (nil: it failed; the address stays on TCP).
  func learnSameHostSocket(_ path: String?, for address: HostPort, reason: String) {
    state.withLock { state in
      state.sameHostSockets[address] = .some(path)
      if path == nil { state.stats.sameHostDecision = "tcp (the same-host path to \(address) failed: \(reason))" }
    }
  }

  func record(_ update: (inout ClientTransportStats) -> Void) { state.withLock { update(&$0.stats) } }

  /// The GPU runtime, loaded on first use.
  func gpuRuntime() throws(StrataError) -> any GPURuntime {
    if let loaded = state.withLock({ $0.gpu }) { return loaded }
    let loaded = try gpuLoader()
    state.withLock { $0.gpu = $0.gpu ?? loaded }
    return loaded
  }

  /// Checks GPU memory before it becomes a region: the runtime loads, the device exists, and the
  /// range is that device's memory.
  func checkGPU(_ buffer: UnsafeMutableRawBufferPointer, device: Int) throws(StrataError) {
    let runtime = try gpuRuntime()
    let count = try runtime.deviceCount()
    guard device >= 0 && device < count else {
      throw StrataError(.invalidArgument, "GPU \(device) does not exist (\(runtime.name) sees \(count))")
    }
    try runtime.checkDeviceMemory(
      address: UInt64(UInt(bitPattern: buffer.baseAddress)), byteCount: buffer.count, device: device)
  }

  /// The region's registration on `device`, registering it on first use (host memory with
  /// ibv_reg_mr; GPU memory with ibv_reg_mr through peer memory, else as a dma-buf). Nil when the
  /// memory cannot be registered: the caller then uses TCP for it.
  func registration(_ region: MemoryRegion, on device: RDMADeviceContext) -> MemoryRegistration? {
    if let known = state.withLock({ $0.registrations[region.id]?[device.name] }) { return known }
    var made: MemoryRegistration? = try? device.register(region.base, byteCount: region.count, remote: true)
    if made == nil, case .cuda = region.kind, let runtime = try? gpuRuntime(),
      let exported = runtime.dmaBuf(address: region.address, byteCount: region.count)
    {
      made = try? device.registerDMABuf(
        fd: exported.fd, offset: exported.offset, byteCount: region.count, address: region.address)
    }
    guard let made else { return nil }
    state.withLock { state in
      if state.registrations[region.id] == nil { state.registrationOrder.append(region.id) }
      state.registrations[region.id, default: [:]][device.name] = made
      // Regions made per call (the C ABI) would otherwise pin memory forever: drop the oldest.
      while state.registrationOrder.count > Self.registrationsMax {
        state.registrations[state.registrationOrder.removeFirst()] = nil
      }
    }
    return made
  }

  func forget(_ region: MemoryRegion) {
    state.withLock { state in
      state.registrations[region.id] = nil
      state.registrationOrder.removeAll { $0 == region.id }
    }
  }

  /// A staging ring for GPU `device`, taken for one batch and given back with `returnRing`.
  func takeRing(device: Int) throws(StrataError) -> StagingRing {
    if let ring = state.withLock({ $0.rings[device]?.popLast() }) { return ring }
    return try StagingRing(runtime: try gpuRuntime(), device: device)
  }

  func returnRing(_ ring: StagingRing, staged: Int) {
    state.withLock { state in
      state.rings[ring.device, default: []].append(ring)
      state.stats.stagedBytes += staged
    }
  }
}

extension MemoryRegion {
  var address: UInt64 { UInt64(UInt(bitPattern: base)) }
}
