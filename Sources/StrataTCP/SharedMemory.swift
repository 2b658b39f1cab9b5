// A memfd region mapped into this process: the same-host path's shared memory. A client creates
// one (sealed against shrinking) and passes its descriptor to the node, which maps it after
// checking that it can never fault under the node: a memfd (sealable), sealed with F_SEAL_SHRINK,
// at least as large as declared, not on hugetlbfs. The node maps only what clients pass it, and
// never passes anything of its own.

import CStrataLinux
public import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

public final class SharedMemoryRegion: @unchecked Sendable {
  // @unchecked: every stored property is immutable; the bytes behind `base` are shared memory
  // whose users (one connection's thread at a time, or the client's caller) order their own access.
  public let descriptor: Int32
  public let base: UnsafeMutableRawPointer
  public let count: Int

  private init(descriptor: Int32, base: UnsafeMutableRawPointer, count: Int) {
    self.descriptor = descriptor
    self.base = base
    self.count = count
  }

  deinit {
    munmap(base, count)
    close(descriptor)
  }

  public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: count) }

  /// A new region of `bytes` (rounded up to whole pages), zero-filled, sealed so that nobody can
  /// shrink or grow it.
  public static func create(bytes: Int, name: String = "strata-region") throws(StrataError) -> SharedMemoryRegion {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    guard bytes > 0, bytes <= Int.max - page else {
      throw StrataError(.invalidArgument, "a shared-memory region of \(bytes) bytes")
    }
    let size = (bytes + page - 1) / page * page
    let fd = strata_memfd_create(name)
    guard fd >= 0 else { throw StrataError(.ioError, "memfd_create failed: \(String(cString: strerror(errno)))") }
    guard ftruncate(fd, off_t(size)) == 0,
      strata_add_seals(fd, strata_seal_shrink() | strata_seal_grow() | strata_seal_seal()) == 0
    else {
      let code = errno
      close(fd)
      throw StrataError(.ioError, "sizing and sealing a memfd failed: \(String(cString: strerror(code)))")
    }
    return try map(fd, size)
  }

  /// Maps a region a peer passed: `declaredBytes` of it, which must be at most `bytesMax`. Takes
  /// ownership of `descriptor` (closed on a refusal too). Every refusal is `invalidArgument`.
  public static func adopt(descriptor fd: Int32, declaredBytes: UInt64, bytesMax: UInt64) throws(StrataError)
    -> SharedMemoryRegion
  {
    func refuse(_ reason: String) -> StrataError {
      close(fd)
      return StrataError(.invalidArgument, "shared-memory region refused: \(reason)")
    }
    guard declaredBytes > 0, declaredBytes <= bytesMax else {
      throw refuse("\(declaredBytes) bytes; this node maps 1 to \(bytesMax) (same_host.max_region_size)")
    }
    // Seals first, size second: once shrinking is sealed, the size checked below can only grow.
    let seals = strata_get_seals(fd)
    guard seals >= 0 else { throw refuse("not a sealable memfd (\(String(cString: strerror(errno))))") }
    guard seals & strata_seal_shrink() != 0 else {
      throw refuse("not sealed with F_SEAL_SHRINK (a region that can shrink could fault the node)")
    }
    guard strata_is_hugetlb(fd) == 0 else {
      throw refuse("on hugetlbfs (its pages can run out under a mapping)")
    }
    var info = stat()
    guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { throw refuse("not a regular memfd") }
    guard UInt64(info.st_size) >= declaredBytes else {
      throw refuse("declared \(declaredBytes) bytes, but the memfd holds \(info.st_size)")
    }
    do {
      return try map(fd, Int(declaredBytes))
    } catch {
      throw StrataError(.invalidArgument, "shared-memory region refused: \(error.message)")
    }
  }

  private static func map(_ fd: Int32, _ size: Int) throws(StrataError) -> SharedMemoryRegion {
    guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), base != MAP_FAILED else {
      let code = errno
      close(fd)
      throw StrataError(.ioError, "mapping a \(size)-byte memfd failed: \(String(cString: strerror(code)))")
    }
    return SharedMemoryRegion(descriptor: fd, base: base, count: size)
  }
}
