// A BlockDevice over a file (or a raw block device node) opened with O_DIRECT, so the page cache
// neither doubles the memory a block costs nor hides the disk's real latency.

import CStrataLinux
public import StrataCore

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// A file of `capacityBytes`, space reserved up front with fallocate so that a full disk is found
/// at startup rather than in the middle of a demotion. Reads and writes are positional (pread and
/// pwrite), so any number of threads may use one descriptor at once.
public final class FileBlockDevice: BlockDevice {
  public let path: String
  public let capacityBytes: Int
  public let alignmentBytes: Int
  /// False when the filesystem refused O_DIRECT (tmpfs on older kernels, some FUSE mounts) and
  /// the file is used through the page cache instead; correct, but memory and latency then lie.
  public let isDirect: Bool
  private let descriptor: Int32

  /// Opens or creates the file at `path` and makes it hold `capacityBytes`. Existing contents are
  /// kept (a warm restart reads them back). `capacityBytes` must be a positive multiple of the
  /// device's direct-I/O alignment (4096 always is).
  public init(path: String, capacityBytes: Int) throws(StrataError) {
    self.path = path
    self.capacityBytes = capacityBytes
    var status = stat()
    let existed = stat(path, &status) == 0
    var direct = true
    var fd = strata_open_direct(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    if fd < 0 && errno == EINVAL {
      direct = false
      fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    }
    guard fd >= 0 else {
      let code = errno
      throw StrataError(.ioError, FileBlockDevice.openFailureMessage(path: path, errno: code))
    }
    isDirect = direct
    descriptor = fd
    alignmentBytes = max(512, Int(strata_direct_io_alignment(fd)))

    // From here on a failure closes the descriptor and removes a file this call created, so a
    // refused start leaves no half-reserved file behind to eat the disk.
    do throws(StrataError) {
      guard capacityBytes > 0, capacityBytes % alignmentBytes == 0 else {
        throw StrataError(
          .invalidArgument,
          "\(path): capacity \(capacityBytes) bytes must be a positive multiple of \(alignmentBytes) bytes")
      }
      try reserveSpace()
    } catch {
      close(fd)
      if !existed { unlink(path) }
      throw error
    }
  }

  deinit { close(descriptor) }

  public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
    checkAligned("FileBlockDevice.read", offset: offset, count: buffer.count, address: buffer.baseAddress)
    guard let base = buffer.baseAddress else { return }
    var done = 0
    while done < buffer.count {
      let result = pread(descriptor, base + done, buffer.count - done, off_t(offset + done))
      if result > 0 {
        done += result
      } else if result == 0 {
        throw StrataError(
          .ioError,
          "\(path): read of \(buffer.count) bytes at offset \(offset) met the end of the file after \(done) bytes")
      } else {
        let code = errno
        if code == EINTR { continue }
        throw StrataError(
          .ioError, "\(path): read of \(buffer.count) bytes at offset \(offset) failed: \(errnoText(code))")
      }
    }
  }

  public func write(at offset: Int, from buffer: UnsafeRawBufferPointer) throws(StrataError) {
    try write(at: offset, gathering: [buffer])
  }

  public func write(at offset: Int, gathering segments: [UnsafeRawBufferPointer]) throws(StrataError) {
    var vectors: [iovec] = []
    vectors.reserveCapacity(segments.count)
    var total = 0
    for segment in segments where segment.count > 0 {
      checkAligned(
        "FileBlockDevice.write(gathering:)", offset: offset + total, count: segment.count,
        address: segment.baseAddress)
      vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: segment.baseAddress), iov_len: segment.count))
      total += segment.count
    }
    var done = 0
    var first = 0
    while first < vectors.count {
      // At most IOV_MAX (1024 on Linux) vectors per call; a short write resumes inside a vector.
      let count = min(vectors.count - first, 1024)
      let result = vectors.withUnsafeBufferPointer { all in
        pwritev(descriptor, all.baseAddress! + first, Int32(count), off_t(offset + done))
      }
      if result > 0 {
        done += result
        var advanced = result
        while first < vectors.count, advanced >= vectors[first].iov_len {
          advanced -= vectors[first].iov_len
          first += 1
        }
        if advanced > 0 {
          vectors[first].iov_base += advanced
          vectors[first].iov_len -= advanced
        }
      } else if result == 0 {
        throw StrataError(
          .ioError, "\(path): write of \(total) bytes at offset \(offset) made no progress after \(done) bytes")
      } else {
        let code = errno
        if code == EINTR { continue }
        let diskFull = code == ENOSPC || code == EDQUOT ? " (disk full)" : ""
        throw StrataError(
          .ioError, "\(path): write of \(total) bytes at offset \(offset) failed: \(errnoText(code))\(diskFull)")
      }
    }
  }

  public func sync() throws(StrataError) {
    while fdatasync(descriptor) != 0 {
      let code = errno
      if code == EINTR { continue }
      throw StrataError(.ioError, "\(path): fdatasync failed: \(errnoText(code))")
    }
  }

  public func discard(at offset: Int, bytes: Int) {
    checkAligned("FileBlockDevice.discard", offset: offset, count: bytes, address: nil)
    let mode = strata_falloc_fl_punch_hole()
    guard mode != 0, bytes > 0 else { return }
    // A hint only: a filesystem without hole punching keeps the bytes, which is still correct.
    _ = strata_fallocate(descriptor, mode, Int64(offset), Int64(bytes))
  }

  /// Reserves `capacityBytes` of disk for the file. Checks free space first so that a size the
  /// disk cannot hold fails at once, without filling the disk for every other process meanwhile.
  private func reserveSpace() throws(StrataError) {
    var status = stat()
    guard fstat(descriptor, &status) == 0 else {
      throw StrataError(.ioError, "\(path): fstat failed: \(errnoText(errno))")
    }
    // S_IFMT and S_IFREG are macro chains Swift does not import; the values are fixed by POSIX.
    let isRegularFile = (status.st_mode & 0o170000) == 0o100000
    guard isRegularFile else {
      // A block device node: its size is the hardware's; nothing to reserve, only to check.
      let deviceBytes = Int(lseek(descriptor, 0, SEEK_END))
      if deviceBytes >= 0 && deviceBytes < capacityBytes {
        throw StrataError(
          .invalidArgument, "\(path): capacity \(capacityBytes) bytes exceeds the device's \(deviceBytes) bytes")
      }
      return
    }
    let allocatedBytes = Int(status.st_blocks) * 512
    var volume = statvfs()
    if fstatvfs(descriptor, &volume) == 0 {
      let availableBytes = Int(volume.f_bavail) &* Int(volume.f_frsize)
      let neededBytes = capacityBytes - allocatedBytes
      if neededBytes > availableBytes {
        throw StrataError(.ioError, diskFullMessage(availableBytes: availableBytes))
      }
    }
    if strata_fallocate(descriptor, 0, 0, Int64(capacityBytes)) == 0 { return }
    let code = errno
    switch code {
    case ENOSPC, EDQUOT:
      throw StrataError(.ioError, diskFullMessage(availableBytes: nil))
    case EOPNOTSUPP, ENOSYS:
      // No fallocate here (some network filesystems): a sparse file of the right size still works.
      if Int(status.st_size) < capacityBytes, ftruncate(descriptor, off_t(capacityBytes)) != 0 {
        throw StrataError(.ioError, "\(path): cannot size the file to \(capacityBytes) bytes: \(errnoText(errno))")
      }
    default:
      throw StrataError(.ioError, "\(path): cannot reserve \(capacityBytes) bytes: \(errnoText(code))")
    }
  }

  private func diskFullMessage(availableBytes: Int?) -> String {
    let available = availableBytes.map { " (\($0) bytes available)" } ?? ""
    return "\(path): cannot reserve \(capacityBytes) bytes\(available): disk full"
  }

  /// Says which part of the path is missing when the directory itself is gone, because "No such
  /// file or directory" for a file we were asked to create points at the wrong thing.
  private static func openFailureMessage(path: String, errno code: Int32) -> String {
    if code == ENOENT {
      let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
      return "\(path): cannot create the device file: directory '\(directory.isEmpty ? "/" : directory)' does not exist"
    }
    return "\(path): cannot open the device file: \(errnoText(code))"
  }
}

/// `strerror` text with the errno name's number, e.g. "Input/output error (errno 5)".
func errnoText(_ code: Int32) -> String {
  "\(String(cString: strerror(code))) (errno \(code))"
}
