// A BlockDevice that passes every call to a real one until a fault is armed, then fails writes
// and syncs, fails reads, corrupts the bytes reads return, or holds reads until disarmed (a disk
// that stopped answering), from that moment on. The switch is
// shared by every device of a node, so one call makes the node's whole disk fail. Only a node
// started with `strata serve --fault-injection` wraps its devices (docs/admin.md); tests arm the
// faults through the admin API (POST /v1/debug/disk-fault) on a running node process.

public import StrataCore
import Synchronization

/// What the disk of a node does now. A pure value; `DiskFaultSwitch` holds the current one.
public struct DiskFaults: Sendable, Hashable {
  public enum Reads: String, Sendable, Hashable, CaseIterable {
    /// Reads pass through.
    case ok
    /// Every read fails with EIO.
    case fail
    /// Every read succeeds but one bit of each 512-byte sector it returns is inverted (media
    /// decay the drive does not report): the NVMe tier's checksums must catch it.
    case corrupt
    /// Every read waits, without failing, until reads are set to something else: a disk that
    /// stopped answering.
    case stall
  }

  /// Writes and syncs fail with EIO (nothing reaches the device).
  public var failWrites = false
  public var reads: Reads = .ok

  public init(failWrites: Bool = false, reads: Reads = .ok) {
    self.failWrites = failWrites
    self.reads = reads
  }
}

/// The faults in force on a node's devices, and how many operations they failed.
public final class DiskFaultSwitch: Sendable {
  private struct State {
    var faults = DiskFaults()
    var failedWrites = 0
    var failedReads = 0
    var corruptedReads = 0
    var stalledReads = 0
  }

  private let state = Mutex(State())
  /// Notified when the faults change: stalled reads look again.
  private let changed = ChangeSignal()

  public init() {}

  public var faults: DiskFaults { state.withLock { $0.faults } }

  /// Arms `faults` from now on (a healthy value disarms them).
  public func set(_ faults: DiskFaults) {
    state.withLock { $0.faults = faults }
    changed.notify()
  }

  /// Operations the faults failed, corrupted or held since start.
  public var counts: (failedWrites: Int, failedReads: Int, corruptedReads: Int, stalledReads: Int) {
    state.withLock { ($0.failedWrites, $0.failedReads, $0.corruptedReads, $0.stalledReads) }
  }

  /// Reads held by a stall now.
  public var readsHeld: Int { changed.blockedCount }

  fileprivate func onWrite() -> Bool {
    state.withLock { state in
      guard state.faults.failWrites else { return false }
      state.failedWrites += 1
      return true
    }
  }

  fileprivate func onRead() -> DiskFaults.Reads {
    state.withLock { state in
      switch state.faults.reads {
      case .ok: break
      case .fail: state.failedReads += 1
      case .corrupt: state.corruptedReads += 1
      case .stall: state.stalledReads += 1
      }
      return state.faults.reads
    }
  }

  /// Blocks the calling thread while reads stall.
  fileprivate func waitWhileStalled() {
    _ = changed.wait(until: .never) { state.withLock { $0.faults.reads != .stall } }
  }
}

/// `base` with the faults of `faults` applied to every call.
public final class FaultInjectingBlockDevice: BlockDevice {
  public let base: any BlockDevice
  public let faults: DiskFaultSwitch

  public init(_ base: any BlockDevice, faults: DiskFaultSwitch) {
    self.base = base
    self.faults = faults
  }

  public var capacityBytes: Int { base.capacityBytes }
  public var alignmentBytes: Int { base.alignmentBytes }

  public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
    var reads = faults.onRead()
    while reads == .stall {
      faults.waitWhileStalled()
      reads = faults.onRead()
    }
    switch reads {
    case .ok, .stall:  // (never .stall after the loop above)
      try base.read(at: offset, into: buffer)
    case .fail:
      throw StrataError(.ioError, "injected disk fault: read of \(buffer.count) bytes at offset \(offset) failed: EIO")
    case .corrupt:
      try base.read(at: offset, into: buffer)
      // One bit of every 512-byte sector read, header and payload alike: a record's checks must
      // catch it wherever the record's bytes lie.
      for sector in stride(from: 0, to: buffer.count, by: 512) {
        buffer[sector + min(100, buffer.count - sector - 1)] ^= 0x10
      }
    }
  }

  public func write(at offset: Int, from buffer: UnsafeRawBufferPointer) throws(StrataError) {
    if faults.onWrite() {
      throw StrataError(.ioError, "injected disk fault: write of \(buffer.count) bytes at offset \(offset) failed: EIO")
    }
    try base.write(at: offset, from: buffer)
  }

  public func write(at offset: Int, gathering segments: [UnsafeRawBufferPointer]) throws(StrataError) {
    if faults.onWrite() {
      let bytes = segments.reduce(0) { $0 + $1.count }
      throw StrataError(.ioError, "injected disk fault: write of \(bytes) bytes at offset \(offset) failed: EIO")
    }
    try base.write(at: offset, gathering: segments)
  }

  public func sync() throws(StrataError) {
    if faults.onWrite() { throw StrataError(.ioError, "injected disk fault: sync failed: EIO") }
    try base.sync()
  }

  public func discard(at offset: Int, bytes: Int) {
    if faults.faults.failWrites { return }
    base.discard(at: offset, bytes: bytes)
  }
}
