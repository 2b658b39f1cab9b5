// RAMArena: configuration errors, alignment, bytes written through slots reading back, and mlock both
// succeeding (where the process may lock) and failing with an error that names the fixes.

import Foundation
import StrataCore
import Testing

@testable import StrataStorage

#if canImport(Glibc)
  import Glibc
#endif

private let mebibyte = 1 << 20

/// This process's locked memory per the kernel (VmLck in /proc/self/status), or nil off Linux.
private func lockedBytes() -> Int? {
  guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
  guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmLck:") }) else { return nil }
  let kibibytes = line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
  return kibibytes.map { $0 * 1024 }
}

/// How many of the pages of `bytes` at `address` are resident (mincore).
private func residentPages(_ address: UnsafeMutableRawPointer, bytes: Int) -> Int {
  let pageBytes = Int(sysconf(Int32(_SC_PAGESIZE)))
  var resident = [UInt8](repeating: 0, count: (bytes + pageBytes - 1) / pageBytes)
  guard mincore(address, bytes, &resident) == 0 else { return -1 }
  return resident.count(where: { $0 & 1 != 0 })
}

/// Whether mlock of `bytes` can succeed here: CAP_IPC_LOCK (bit 14 of CapEff) or a high enough limit.
private func canLock(_ bytes: Int) -> Bool {
  if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
    let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
    let mask = line.split(separator: "\t").last.flatMap({ UInt64($0.trimmingCharacters(in: .whitespaces), radix: 16) }),
    mask & (1 << 14) != 0
  {
    return true
  }
  return (RAMArena.memlockLimitBytes() ?? 0) >= UInt64(bytes)
}

/// The messages must tell an operator every way out.
private func namesTheFixes(_ error: StrataError) -> Bool {
  ["CAP_IPC_LOCK", "ulimit -l", "LimitMEMLOCK=infinity", "ram.lock: false", "--ram-unlocked"].allSatisfy {
    error.message.contains($0)
  }
}

@Suite(.serialized) struct RAMArenaTests {
  @Test(arguments: [0, -4096])
  func rejectsCapacityBelowOneByte(capacityBytes: Int) {
    let error = #expect(throws: StrataError.self) {
      try RAMArena(capacityBytes: capacityBytes, lockMemory: false, hugePages: false)
    }
    #expect(error?.code == .invalidConfiguration)
    #expect(error?.message.contains("ram.capacity") == true)
  }

  @Test func baseIsPageAlignedAndHugePageAlignedWhenAsked() throws {
    let plain = try RAMArena(capacityBytes: 10_000, lockMemory: false, hugePages: false)
    #expect(Int(bitPattern: plain.baseAddress) % 4096 == 0)
    #expect(plain.byteCount == 10_000)
    #expect(plain.mappedBytes == 12_288)
    #expect(!plain.isLocked && !plain.hugePagesRequested && !plain.hugePagesAdvised)

    let huge = try RAMArena(capacityBytes: 3 * mebibyte, lockMemory: false, hugePages: true)
    #expect(Int(bitPattern: huge.baseAddress) % RAMArena.hugePageBytes == 0)
    #expect(huge.mappedBytes == 4 * mebibyte)
    #expect(huge.hugePagesRequested)
    print("MADV_HUGEPAGE accepted: \(huge.hugePagesAdvised)")
  }

  /// Fills a 64 MiB arena with slots of mixed sizes and fills each 4 KiB chunk of every block with a
  /// byte unique to that block and chunk, then reads the first and last byte of every chunk back.
  /// Slots are whole 4 KiB units, so overlapping slots or a wrong buffer would show in those bytes.
  @Test func bytesWrittenThroughSlotsReadBack() throws {
    let capacityBytes = 64 * mebibyte
    let arena = try RAMArena(capacityBytes: capacityBytes, lockMemory: false, hugePages: true)
    var allocator = SlabAllocator(capacityBytes: capacityBytes, blockBytesMax: 4 * mebibyte)
    let sizes = [4096, 10_000, 300_000, 4 * mebibyte, 1, 65_536, 2 * mebibyte + 1]
    var written: [(slot: ArenaSlot, bytes: Int, seed: UInt8)] = []
    func pattern(_ seed: UInt8, chunk: Int) -> UInt8 { seed &+ UInt8(truncatingIfNeeded: chunk) }
    while let slot = allocator.allocate(bytes: sizes[written.count % sizes.count]) {
      let bytes = sizes[written.count % sizes.count]
      let seed = UInt8(truncatingIfNeeded: written.count &* 37)
      let buffer = arena.buffer(slot, bytes: bytes)
      #expect(buffer.count == bytes)
      for chunkStart in stride(from: 0, to: bytes, by: 4096) {
        let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[chunkStart..<min(bytes, chunkStart + 4096)])
        chunk.initializeMemory(as: UInt8.self, repeating: pattern(seed, chunk: chunkStart / 4096))
      }
      written.append((slot, bytes, seed))
    }
    #expect(written.count > 20)
    #expect(allocator.usedBytes > capacityBytes / 2)
    var mismatches: [ArenaSlot] = []
    for (slot, bytes, seed) in written {
      let buffer = UnsafeRawBufferPointer(arena.buffer(slot, bytes: bytes))
      for chunkStart in stride(from: 0, to: bytes, by: 4096) {
        let expected = pattern(seed, chunk: chunkStart / 4096)
        if buffer[chunkStart] != expected || buffer[min(bytes, chunkStart + 4096) - 1] != expected {
          mismatches.append(slot)
          break
        }
      }
    }
    #expect(mismatches.isEmpty)
    // The last byte of the arena is reachable through a slot that ends there.
    let tail = arena.buffer(ArenaSlot(offset: capacityBytes - 4096, capacityBytes: 4096), bytes: 4096)
    #expect(tail.baseAddress! + 4096 == arena.baseAddress + capacityBytes)
  }

  /// Every page is resident once `init` returns, whatever the threads: parts are taken one at a
  /// time, so an arena that is not a whole number of parts, on more threads than parts, is covered.
  @Test(arguments: [1, 3, 8])
  func everyPageIsFaultedInAtStart(threads: Int) throws {
    let capacityBytes = 2 * RAMArena.prefaultPartBytes + 12_288
    let arena = try RAMArena(
      capacityBytes: capacityBytes, lockMemory: false, hugePages: false, prefaultThreads: threads)
    let pages = arena.mappedBytes / Int(sysconf(Int32(_SC_PAGESIZE)))
    #expect(residentPages(arena.baseAddress, bytes: arena.mappedBytes) == pages)
  }

  /// A stop asked for while the arena is faulted in (a signal while the node starts) starts no
  /// further part: on one thread, the parts after the stop stay untouched (the one beside the
  /// faulted part is left out of the count: a transparent huge page may reach into it).
  @Test func aPrefaultAskedToStopFaultsNoFurtherPart() throws {
    let parts = 4
    let bytes = parts * RAMArena.prefaultPartBytes
    let mapped = try #require(mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
    try #require(mapped != UnsafeMutableRawPointer(bitPattern: -1))
    defer { munmap(mapped, bytes) }
    nonisolated(unsafe) let base = mapped
    let pageBytes = Int(sysconf(Int32(_SC_PAGESIZE)))
    // Asked before each part: stop once the first part is resident.
    let error = #expect(throws: StrataError.self) {
      try RAMArena.prefault(mapped, byteCount: bytes, osPageBytes: 4096, threads: 1) {
        residentPages(base, bytes: RAMArena.prefaultPartBytes) == RAMArena.prefaultPartBytes / pageBytes
      }
    }
    #expect(error?.code == .cancelled)
    #expect(error?.message.contains("after 1 of \(parts) part(s)") == true, "\(String(describing: error))")
    let untouched = mapped + 2 * RAMArena.prefaultPartBytes
    #expect(residentPages(untouched, bytes: 2 * RAMArena.prefaultPartBytes) == 0)
  }

  /// Where the kernel has no MADV_POPULATE_WRITE, a store to each page faults it in instead.
  @Test func aKernelWithoutPopulateGetsAStoreToEachPage() throws {
    let bytes = RAMArena.prefaultPartBytes + 8192
    let mapped = try #require(mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
    try #require(mapped != UnsafeMutableRawPointer(bitPattern: -1))
    defer { munmap(mapped, bytes) }
    #expect(residentPages(mapped, bytes: bytes) == 0)
    try RAMArena.prefault(mapped, byteCount: bytes, osPageBytes: 4096, threads: 2, advice: -1)
    #expect(residentPages(mapped, bytes: bytes) == bytes / 4096)
  }

  @Test(.enabled(if: canLock(64 * mebibyte), "needs CAP_IPC_LOCK or RLIMIT_MEMLOCK of at least 64 MiB"))
  func lockingKeepsTheWholeArenaResident() throws {
    let before = lockedBytes()
    let arena = try RAMArena(capacityBytes: 64 * mebibyte, lockMemory: true, hugePages: true)
    #expect(arena.isLocked)
    #expect(residentPages(arena.baseAddress, bytes: arena.mappedBytes) == arena.mappedBytes / 4096)
    if let before, let during = lockedBytes() {
      #expect(during - before >= 64 * mebibyte, "VmLck went from \(before) to \(during)")
    }
    withExtendedLifetime(arena) {}
  }

  /// A real mlock failure: the range is reserved and then unmapped, so the kernel answers ENOMEM.
  @Test func lockingUnmappedMemoryFailsWithTheFixesNamed() throws {
    let reserved = try #require(mmap(nil, mebibyte, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
    try #require(reserved != UnsafeMutableRawPointer(bitPattern: -1))
    munmap(reserved, mebibyte)
    let error = #expect(throws: StrataError.self) { try RAMArena.lockPages(reserved, byteCount: mebibyte) }
    #expect(error?.code == .resourceExhausted)
    #expect(error.map(namesTheFixes) == true, "\(String(describing: error))")
  }

  @Test func lockErrorsMapErrnoToCodes() {
    let denied = RAMArena.lockError(errno: EPERM, byteCount: 64 * mebibyte, memlockLimitBytes: 0)
    #expect(denied.code == .permissionDenied)
    #expect(denied.message.contains("RLIMIT_MEMLOCK) is 0B"))
    #expect(namesTheFixes(denied))
    #expect(RAMArena.lockError(errno: EAGAIN, byteCount: 1, memlockLimitBytes: nil).code == .resourceExhausted)
    #expect(RAMArena.lockError(errno: EINVAL, byteCount: 1, memlockLimitBytes: nil).code == .internalError)
  }

  /// In a child process that drops root (and with it CAP_IPC_LOCK) under a lowered RLIMIT_MEMLOCK,
  /// the arena's own mlock must fail: ENOMEM above a non-zero limit, EPERM under a zero one.
  @Test(.enabled(if: getuid() == 0, "needs root to drop privileges in a child"))
  func lockingOverTheLimitFailsInAnUnprivilegedChild() async {
    await #expect(processExitsWith: .success) {
      exit(RAMArenaTests.lockAsNobody(limitBytes: UInt64(mebibyte), expecting: .resourceExhausted))
    }
    await #expect(processExitsWith: .success) {
      exit(RAMArenaTests.lockAsNobody(limitBytes: 0, expecting: .permissionDenied))
    }
  }

  /// Runs in the child: 0 when the arena fails as expected, a distinct code for each other outcome.
  static func lockAsNobody(limitBytes: UInt64, expecting code: StrataError.Code) -> Int32 {
    var limit = rlimit(rlim_cur: rlim_t(limitBytes), rlim_max: rlim_t(limitBytes))
    guard setrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &limit) == 0 else { return 10 }
    guard setgid(65_534) == 0, setuid(65_534) == 0 else { return 11 }
    do {
      _ = try RAMArena(capacityBytes: 16 * mebibyte, lockMemory: true, hugePages: false)
      return 12
    } catch {
      print(error)
      guard error.code == code else { return 13 }
      return namesTheFixes(error) ? 0 : 14
    }
  }
}
