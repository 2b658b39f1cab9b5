// Device discovery and the per-device resources shared by every connection on it: the verbs
// context that rdma_cm opened, one protection domain, and the memory registered in it.

import CIBVerbs
import CRDMACM
public import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

public enum RDMADevices {
  /// Whether this machine has an RDMA device. `ibv_get_device_list` returns NULL with ENOSYS where
  /// the kernel has no InfiniBand support, and an empty list where it has no device: both mean TCP.
  public static func discover() -> RDMAAvailability {
    var count: Int32 = 0
    errno = 0
    guard let list = ibv_get_device_list(&count) else {
      let code = errno
      let words = code == ENOSYS ? "the kernel has no RDMA support" : String(cString: strerror(code))
      return .unavailable(reason: "ibv_get_device_list: \(words) (errno \(code))")
    }
    defer { ibv_free_device_list(list) }
    let names = (0..<Int(max(count, 0))).compactMap { index in
      list[index].map { String(cString: ibv_get_device_name($0)) }
    }
    guard !names.isEmpty else { return .unavailable(reason: "ibv_get_device_list found no RDMA device") }
    return .available(devices: names)
  }
}

/// The error for a verbs or rdma_cm call that failed with `errno`.
func verbsError(_ call: String, code: StrataError.Code = .unavailable, errno number: Int32 = errno) -> StrataError {
  StrataError(code, "\(call) failed: \(String(cString: strerror(number))) (errno \(number))")
}

/// One RDMA device as rdma_cm opened it, with this process's protection domain on it.
///
/// `@unchecked Sendable`: both pointers are set once in `init` and freed in `deinit`; verbs calls on
/// a context and a protection domain are thread-safe (libibverbs documents them so).
public final class RDMADeviceContext: @unchecked Sendable {
  let context: UnsafeMutablePointer<ibv_context>
  let protectionDomain: UnsafeMutablePointer<ibv_pd>
  public let name: String

  init(context: UnsafeMutablePointer<ibv_context>) throws(StrataError) {
    guard let domain = ibv_alloc_pd(context) else { throw verbsError("ibv_alloc_pd") }
    self.context = context
    protectionDomain = domain
    name = String(cString: ibv_get_device_name(context.pointee.device))
  }

  deinit { ibv_dealloc_pd(protectionDomain) }

  /// Every device rdma_cm can route through, each with a protection domain. Empty (not an error)
  /// on a machine without RDMA.
  public static func openAll() throws(StrataError) -> [RDMADeviceContext] {
    var count: Int32 = 0
    guard let list = rdma_get_devices(&count) else { return [] }
    defer { rdma_free_devices(list) }
    var contexts: [RDMADeviceContext] = []
    for index in 0..<Int(count) {
      guard let context = list[index] else { continue }
      contexts.append(try RDMADeviceContext(context: context))
    }
    return contexts
  }

  /// Registers host memory. `remote` adds remote read and write access (a client's regions, which
  /// the node targets); the node registers its arena for local access only, so its keys are
  /// worthless to anyone else even if they leaked.
  public func register(_ base: UnsafeMutableRawPointer, byteCount: Int, remote: Bool) throws(StrataError)
    -> MemoryRegistration
  {
    var access = IBV_ACCESS_LOCAL_WRITE.rawValue
    if remote { access |= IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue }
    guard let region = strata_ibv_reg_mr(protectionDomain, base, byteCount, Int32(bitPattern: access)) else {
      throw verbsError("ibv_reg_mr of \(byteCount) bytes on \(name)", code: .resourceExhausted)
    }
    return MemoryRegistration(region)
  }

  /// Registers GPU memory exported as a dma-buf (`fd`, `offset` into it) at the device address
  /// `address`, with remote access for the node's WRITE and READ.
  public func registerDMABuf(fd: Int32, offset: UInt64, byteCount: Int, address: UInt64) throws(StrataError)
    -> MemoryRegistration
  {
    let access =
      IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue
    guard
      let region = ibv_reg_dmabuf_mr(protectionDomain, offset, byteCount, address, fd, Int32(bitPattern: access))
    else {
      throw verbsError("ibv_reg_dmabuf_mr of \(byteCount) bytes on \(name)", code: .unsupported)
    }
    return MemoryRegistration(region)
  }
}

/// Registered memory; deregistered when the last reference goes.
///
/// `@unchecked Sendable`: the region pointer is immutable and only read (its keys) until `deinit`.
public final class MemoryRegistration: @unchecked Sendable {
  let region: UnsafeMutablePointer<ibv_mr>
  public let address: UInt64
  public let byteCount: Int
  public let localKey: UInt32
  /// Handed to the peer only by a client, for its own regions.
  public let remoteKey: UInt32

  init(_ region: UnsafeMutablePointer<ibv_mr>) {
    self.region = region
    address = UInt64(UInt(bitPattern: region.pointee.addr))
    byteCount = region.pointee.length
    localKey = region.pointee.lkey
    remoteKey = region.pointee.rkey
  }

  deinit { ibv_dereg_mr(region) }

  /// Whether `count` bytes at `address` lie inside this registration.
  public func contains(address other: UInt64, count: Int) -> Bool {
    other >= address && count >= 0 && other - address <= UInt64(byteCount)
      && UInt64(count) <= UInt64(byteCount) - (other - address)
  }

  /// The segment for posting local work requests at `address`.
  public func local(at other: UInt64) -> LocalSegment { LocalSegment(address: other, localKey: localKey) }

  /// The descriptor a client hands the node for `count` bytes at `address`.
  public func descriptor(at other: UInt64, count: Int) -> RemoteDescriptor {
    RemoteDescriptor(address: other, key: remoteKey, length: UInt32(clamping: count))
  }
}
