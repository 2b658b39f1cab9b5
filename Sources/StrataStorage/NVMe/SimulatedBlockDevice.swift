// An in-memory BlockDevice with injectable faults (failed, torn and bit-flipped I/O) and crash
// snapshots, so the NVMe tier's error and recovery paths run deterministically in tests.

public import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Bytes in memory behind the `BlockDevice` contract, alignment preconditions included, so a tier
/// that passes its tests here also passes O_DIRECT's rules. Every write persists at once (there is
/// no volatile cache to lose): `snapshot()` is what a crash at that instant would leave.
public final class SimulatedBlockDevice: BlockDevice {
  public let capacityBytes: Int
  public let alignmentBytes: Int

  private struct ReadFault {
    var range: Range<Int>
    var errno: Int32
  }

  private struct State {
    var bytes: [UInt8]
    var writeFailuresLeft = 0
    var writeFailureErrno: Int32 = EIO
    var readFaults: [ReadFault] = []
    var tornWriteKeptBytes: Int?
    /// Bits `flipBit` inverted that no write or discard has replaced since, by byte offset.
    var flipped: [Int: UInt8] = [:]

    mutating func forgetFlips(in range: Range<Int>) {
      guard !flipped.isEmpty else { return }
      flipped = flipped.filter { !range.contains($0.key) }
    }
    var writeCount = 0
    var readCount = 0
    var syncCount = 0
  }

  private let state: Mutex<State>

  /// A zero-filled device.
  public init(capacityBytes: Int, alignmentBytes: Int = 4096) {
    precondition(
      alignmentBytes > 0 && capacityBytes % alignmentBytes == 0,
      "SimulatedBlockDevice: capacity \(capacityBytes) must be a multiple of alignment \(alignmentBytes)")
    self.capacityBytes = capacityBytes
    self.alignmentBytes = alignmentBytes
    state = Mutex(State(bytes: [UInt8](repeating: 0, count: capacityBytes)))
  }

  /// A device holding `bytes`, as found after a restart: pass a `snapshot()` of another device.
  public convenience init(restoring bytes: [UInt8], alignmentBytes: Int = 4096) {
    self.init(restoring: bytes, flipped: [:], alignmentBytes: alignmentBytes)
  }

  private init(restoring bytes: [UInt8], flipped: [Int: UInt8], alignmentBytes: Int) {
    precondition(
      alignmentBytes > 0 && bytes.count % alignmentBytes == 0,
      "SimulatedBlockDevice: \(bytes.count) bytes is not a multiple of alignment \(alignmentBytes)")
    capacityBytes = bytes.count
    self.alignmentBytes = alignmentBytes
    state = Mutex(State(bytes: bytes, flipped: flipped))
  }

  // MARK: BlockDevice

  public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
    checkAligned("SimulatedBlockDevice.read", offset: offset, count: buffer.count, address: buffer.baseAddress)
    let failure: Int32? = state.withLock { state in
      state.readCount += 1
      let range = offset..<(offset + buffer.count)
      if let fault = state.readFaults.first(where: { $0.range.overlaps(range) }) { return fault.errno }
      state.bytes.withUnsafeBytes { source in
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[range]))
      }
      return nil
    }
    if let failure {
      throw StrataError(
        .ioError, "simulated device: read of \(buffer.count) bytes at offset \(offset) failed: \(errnoText(failure))")
    }
  }

  /// A torn write (see `tearNextWrite`) reports success: the crash it stands for comes before
  /// anyone could see an error, and the test then restarts from `snapshot()`.
  public func write(at offset: Int, from buffer: UnsafeRawBufferPointer) throws(StrataError) {
    checkAligned("SimulatedBlockDevice.write", offset: offset, count: buffer.count, address: buffer.baseAddress)
    let failure: Int32? = state.withLock { state in
      state.writeCount += 1
      if state.writeFailuresLeft > 0 {
        state.writeFailuresLeft -= 1
        return state.writeFailureErrno
      }
      var kept = buffer.count
      if let torn = state.tornWriteKeptBytes {
        kept = min(torn, buffer.count)
        state.tornWriteKeptBytes = nil
      }
      state.bytes.withUnsafeMutableBytes { target in
        UnsafeMutableRawBufferPointer(rebasing: target[offset..<(offset + kept)])
          .copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[0..<kept]))
      }
      state.forgetFlips(in: offset..<(offset + kept))
      return nil
    }
    if let failure {
      throw StrataError(
        .ioError, "simulated device: write of \(buffer.count) bytes at offset \(offset) failed: \(errnoText(failure))")
    }
  }

  public func sync() throws(StrataError) {
    state.withLock { $0.syncCount += 1 }
  }

  /// Zeroes the range, as a punched hole reads back.
  public func discard(at offset: Int, bytes: Int) {
    checkAligned("SimulatedBlockDevice.discard", offset: offset, count: bytes, address: nil)
    state.withLock { state in
      for index in offset..<(offset + bytes) { state.bytes[index] = 0 }
      state.forgetFlips(in: offset..<(offset + bytes))
    }
  }

  // MARK: Faults

  // Defaults are EIO, spelled as its number (5 on Linux and Darwin) because a default argument of a
  // public function cannot name a symbol of an internally imported module.

  /// The next `count` writes fail with `errno` and change nothing.
  public func failNextWrites(_ count: Int, errno: Int32 = 5) {
    state.withLock { state in
      state.writeFailuresLeft = count
      state.writeFailureErrno = errno
    }
  }

  /// Every read that touches `range` fails with `errno` until `clearReadFaults()`.
  public func failReads(in range: Range<Int>, errno: Int32 = 5) {
    state.withLock { $0.readFaults.append(ReadFault(range: range, errno: errno)) }
  }

  public func clearReadFaults() {
    state.withLock { $0.readFaults.removeAll() }
  }

  /// The next write persists only its first `keptBytes` bytes (power lost mid-write); the rest of
  /// its range keeps what it held before.
  public func tearNextWrite(keepingBytes keptBytes: Int) {
    precondition(keptBytes >= 0, "tearNextWrite: negative byte count \(keptBytes)")
    state.withLock { $0.tornWriteKeptBytes = keptBytes }
  }

  /// Inverts one bit of the stored bytes (media decay).
  public func flipBit(atByte offset: Int, bit: Int = 0) {
    precondition(
      (0..<capacityBytes).contains(offset) && (0..<8).contains(bit),
      "flipBit: byte \(offset) bit \(bit) is outside the device")
    state.withLock { state in
      let mask = UInt8(1) << UInt8(bit)
      state.bytes[offset] ^= mask
      let flipped = (state.flipped[offset] ?? 0) ^ mask
      state.flipped[offset] = flipped == 0 ? nil : flipped
    }
  }

  /// Whether a bit `flipBit` inverted in `range` still reads back inverted (no write or discard
  /// replaced it since): what a checksum over those bytes would find, without reading them.
  public func holdsFlippedBits(in range: Range<Int>) -> Bool {
    state.withLock { state in state.flipped.keys.contains { range.contains($0) } }
  }

  // MARK: Crashes and inspection

  /// The bytes a crash at this instant would leave on the medium.
  public func snapshot() -> [UInt8] {
    state.withLock { $0.bytes }
  }

  /// A new device over the persisted bytes with no faults armed: the same disk after a restart.
  public func crashed() -> SimulatedBlockDevice {
    let (bytes, flipped) = state.withLock { ($0.bytes, $0.flipped) }
    return SimulatedBlockDevice(restoring: bytes, flipped: flipped, alignmentBytes: alignmentBytes)
  }

  public var writeCount: Int { state.withLock { $0.writeCount } }
  public var readCount: Int { state.withLock { $0.readCount } }
  public var syncCount: Int { state.withLock { $0.syncCount } }
}
