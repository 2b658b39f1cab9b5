// The RAM tier's memory: one anonymous mapping, made once at start, pre-faulted on several threads,
// optionally locked and on transparent huge pages. SlabAllocator decides which of its bytes belong to
// which block.

import CStrataLinux
public import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// One mapping of `byteCount` bytes (rounded up to whole pages), alive until the arena is released.
///
/// `@unchecked Sendable` is safe because the arena's own state is immutable: every stored property is
/// a `let` set in `init`, and the mapping does not move or change size until `deinit`, which runs only
/// when no thread holds a reference. The arena never reads or writes the bytes it maps. Whoever holds an
/// `ArenaSlot` owns those bytes; slots come from a `SlabAllocator` that the tier uses under its lock,
/// so no two holders are ever given overlapping bytes, and buffers of distinct slots never overlap.
public final class RAMArena: @unchecked Sendable {
  /// The x86-64 (and common arm64) transparent huge page size; the mapping is aligned to it when
  /// huge pages are asked for, so that every huge page the kernel could use lies inside the mapping.
  public static let hugePageBytes = 2 << 20

  public let baseAddress: UnsafeMutableRawPointer
  /// The capacity asked for; `buffer` serves slots inside it.
  public let byteCount: Int
  /// The bytes mapped: `byteCount` rounded up to the OS page (the huge page when asked for).
  public let mappedBytes: Int
  /// Whether `mlock` succeeded: the kernel will not swap the arena out.
  public let isLocked: Bool
  public let hugePagesRequested: Bool
  /// Whether the kernel accepted `madvise(MADV_HUGEPAGE)`. Even then huge pages are used only where
  /// /sys/kernel/mm/transparent_hugepage/enabled says `always` or `madvise`.
  public let hugePagesAdvised: Bool

  /// The most threads that fault the arena in at start. Zeroing fresh pages is the kernel's work
  /// and scales with threads until the memory's bandwidth (4 GiB on this project's 2-core VM: 1.06 s
  /// on one thread, 0.59 s on two); more than this many would hold up the rest of the machine.
  public static let prefaultThreadsMax = 8
  /// The part of the arena a pre-faulting thread takes at a time: each takes the next part not yet
  /// taken, so a thread that starts late takes fewer.
  static let prefaultPartBytes = 64 << 20

  /// The threads `init` faults the arena in on: the machine's cores, at most `prefaultThreadsMax`.
  public static var prefaultThreads: Int {
    max(1, min(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), prefaultThreadsMax))
  }

  /// Maps, advises, (when `lockMemory`) locks and pre-faults `capacityBytes` of memory on
  /// `prefaultThreads` threads, so that the first write to any block costs no page fault. Takes time
  /// proportional to the capacity divided by the threads.
  public init(
    capacityBytes: Int, lockMemory: Bool, hugePages: Bool, prefaultThreads: Int = RAMArena.prefaultThreads,
    shouldStop: (@Sendable () -> Bool)? = nil
  ) throws(StrataError) {
    guard capacityBytes > 0 else {
      throw StrataError(.invalidConfiguration, "ram.capacity must be greater than zero (got \(capacityBytes) bytes)")
    }
    let osPageBytes = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))
    let alignmentBytes = hugePages ? max(osPageBytes, Self.hugePageBytes) : osPageBytes
    guard capacityBytes <= Int.max / 2 - alignmentBytes else {
      throw StrataError(.invalidConfiguration, "ram.capacity of \(capacityBytes) bytes is beyond any address space")
    }
    let mappedBytes = (capacityBytes + alignmentBytes - 1) / alignmentBytes * alignmentBytes
    let base = try Self.mapAligned(mappedBytes, alignmentBytes: alignmentBytes, osPageBytes: osPageBytes)

    // Advice before the first touch: pages faulted in as 4 KiB stay so until khugepaged merges them.
    var advised = false
    let hugePageAdvice = strata_madv_hugepage()
    if hugePages, hugePageAdvice >= 0 {
      advised = madvise(base, mappedBytes, hugePageAdvice) == 0
    }
    do {
      // Locked before the pre-fault, as each page is faulted in: a limit too low fails at once.
      if lockMemory { try Self.lockPages(base, byteCount: mappedBytes) }
      try Self.prefault(
        base, byteCount: mappedBytes, osPageBytes: osPageBytes, threads: prefaultThreads, shouldStop: shouldStop)
    } catch {
      munmap(base, mappedBytes)
      throw error
    }

    baseAddress = base
    byteCount = capacityBytes
    self.mappedBytes = mappedBytes
    isLocked = lockMemory
    hugePagesRequested = hugePages
    hugePagesAdvised = advised
  }

  deinit {
    // Unmapping also unlocks.
    munmap(baseAddress, mappedBytes)
  }

  /// The first `bytes` of `slot`. The slot must lie inside the arena and hold `bytes`.
  public func buffer(_ slot: ArenaSlot, bytes: Int) -> UnsafeMutableRawBufferPointer {
    precondition(
      bytes >= 0 && bytes <= slot.capacityBytes,
      "RAMArena.buffer: \(bytes) bytes do not fit in \(slot)")
    precondition(
      slot.offset >= 0 && slot.capacityBytes >= 0 && slot.offset <= byteCount - slot.capacityBytes,
      "RAMArena.buffer: \(slot) is outside the arena's \(byteCount) bytes")
    return UnsafeMutableRawBufferPointer(start: baseAddress + slot.offset, count: bytes)
  }

  /// An anonymous private mapping of `byteCount` whose start is a multiple of `alignmentBytes`: maps
  /// that much more and unmaps the unaligned head and the tail.
  private static func mapAligned(
    _ byteCount: Int, alignmentBytes: Int, osPageBytes: Int
  ) throws(StrataError) -> UnsafeMutableRawPointer {
    let slackBytes = alignmentBytes - osPageBytes
    let raw = mmap(nil, byteCount + slackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    guard let raw, raw != UnsafeMutableRawPointer(bitPattern: -1) else {
      let code = errno
      throw StrataError(
        code == ENOMEM || code == EAGAIN ? .resourceExhausted : .internalError,
        "cannot map \(ByteSize(bytes: UInt64(byteCount))) for the RAM arena: \(String(cString: strerror(code))) "
          + "(errno \(code)); lower ram.capacity or free memory on this machine")
    }
    let address = Int(bitPattern: raw)
    let aligned = (address + alignmentBytes - 1) / alignmentBytes * alignmentBytes
    let headBytes = aligned - address
    let tailBytes = slackBytes - headBytes
    if headBytes > 0 { munmap(raw, headBytes) }
    if tailBytes > 0 { munmap(raw + headBytes + byteCount, tailBytes) }
    return raw + headBytes
  }

  /// Locks the range's pages as they are faulted in (`mlock2` with `MLOCK_ONFAULT`; a plain `mlock`,
  /// which faults them all in on this thread, where the kernel has no `mlock2`), with errors a
  /// person can act on.
  static func lockPages(_ address: UnsafeMutableRawPointer, byteCount: Int) throws(StrataError) {
    guard strata_mlock_on_fault(address, byteCount) != 0 else { return }
    if errno == ENOSYS || errno == EINVAL, mlock(address, byteCount) == 0 { return }
    throw lockError(errno: errno, byteCount: byteCount, memlockLimitBytes: memlockLimitBytes())
  }

  /// Faults every page of the range in for writing, on up to `threads` threads, each taking the next
  /// `prefaultPartBytes` not yet taken: `MADV_POPULATE_WRITE`, or a store to each page where the
  /// kernel predates it (5.14), or where `advice` is -1. The kernel's refusal (`ENOMEM`) is an error
  /// that says so. `shouldStop` is asked before each part: once true (a stop signal while the node
  /// starts), no further part is started and the pre-fault fails with `cancelled`.
  static func prefault(
    _ base: UnsafeMutableRawPointer, byteCount: Int, osPageBytes: Int, threads: Int,
    advice: Int32 = strata_madv_populate_write(), shouldStop: (@Sendable () -> Bool)? = nil
  ) throws(StrataError) {
    let parts = (byteCount + prefaultPartBytes - 1) / prefaultPartBytes
    let failure = Atomic<Int32>(0)
    let faulted = Atomic<Int>(0)
    // Each part is faulted by the one thread that took it; the arena's bytes are not read.
    nonisolated(unsafe) let base = base
    let finished = SharedParts.run(parts, threads: threads) { part in
      if let shouldStop, shouldStop() { return false }
      let start = part * prefaultPartBytes
      let code = populate(
        base + start, byteCount: min(prefaultPartBytes, byteCount - start), osPageBytes: osPageBytes, advice: advice)
      if code != 0 { failure.store(code, ordering: .relaxed) }
      faulted.add(1, ordering: .relaxed)
      return code == 0
    }
    let code = failure.load(ordering: .relaxed)
    if !finished && code == 0 {
      throw StrataError(
        .cancelled,
        "faulting in the RAM arena (\(ByteSize(bytes: UInt64(byteCount)))) stopped on request after "
          + "\(faulted.load(ordering: .relaxed)) of \(parts) part(s)")
    }
    guard code != 0 else { return }
    throw StrataError(
      code == ENOMEM || code == EAGAIN ? .resourceExhausted : .internalError,
      "cannot fault the RAM arena (\(ByteSize(bytes: UInt64(byteCount)))) in: madvise(MADV_POPULATE_WRITE): "
        + "\(String(cString: strerror(code))) (errno \(code)); lower ram.capacity or free memory on this machine")
  }

  /// Faults one part in; 0, or the errno of the kernel's refusal.
  private static func populate(
    _ start: UnsafeMutableRawPointer, byteCount: Int, osPageBytes: Int, advice: Int32
  ) -> Int32 {
    if advice >= 0 {
      if madvise(start, byteCount, advice) == 0 { return 0 }
      guard errno == EINVAL else { return errno }
    }
    var offset = 0
    while offset < byteCount {
      start.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
      offset += osPageBytes
    }
    return 0
  }

  /// The error for an `mlock` of `byteCount` that failed with `code`; names every way out.
  static func lockError(errno code: Int32, byteCount: Int, memlockLimitBytes: UInt64?) -> StrataError {
    let kind: StrataError.Code
    switch code {
    case EPERM: kind = .permissionDenied
    case ENOMEM, EAGAIN: kind = .resourceExhausted
    default: kind = .internalError
    }
    let limit = memlockLimitBytes.map { $0 == UInt64(bitPattern: -1) ? "unlimited" : "\(ByteSize(bytes: $0))" }
    return StrataError(
      kind,
      "cannot lock the RAM arena (\(ByteSize(bytes: UInt64(byteCount)))) in memory: mlock: "
        + "\(String(cString: strerror(code))) (errno \(code))"
        + (limit.map { "; the locked-memory limit (RLIMIT_MEMLOCK) is \($0)" } ?? "")
        + ". Fix one of: give the process the CAP_IPC_LOCK capability (systemd AmbientCapabilities=CAP_IPC_LOCK, "
        + "docker --cap-add IPC_LOCK); raise the limit (ulimit -l unlimited, systemd LimitMEMLOCK=infinity); "
        + "or run unlocked, where the kernel may swap blocks out (ram.lock: false in the config, or --ram-unlocked)")
  }

  /// The soft RLIMIT_MEMLOCK, or nil where it cannot be read.
  static func memlockLimitBytes() -> UInt64? {
    var limit = rlimit()
    #if os(Linux)
      let resource = __rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue)
    #else
      let resource = RLIMIT_MEMLOCK
    #endif
    guard getrlimit(resource, &limit) == 0 else { return nil }
    return UInt64(limit.rlim_cur)
  }
}
