// A BlockDevice that passes every call to a real one until a fault is armed, then fails writes
// and syncs, fails reads, corrupts the bytes reads return, or holds reads or writes until
// disarmed (a disk that stopped answering), from that moment on. The switch is shared by every
// device of a node, so one call makes the node's whole disk fail. Only a node
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

  public enum Writes: String, Sendable, Hashable, CaseIterable {
    /// Writes and syncs pass through.
    case ok
    /// Writes and syncs fail with EIO (nothing reaches the device).
    case fail
    /// Writes and syncs wait, without failing, until writes are set to something else.
    case stall
  }

  public var writes: Writes = .ok
  public var reads: Reads = .ok

  public init(writes: Writes = .ok, reads: Reads = .ok) {
    self.writes = writes
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
    var stalledWrites = 0
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
  public var counts: DiskFaultCounts {
    state.withLock {
      DiskFaultCounts(
        failedWrites: $0.failedWrites, failedReads: $0.failedReads, corruptedReads: $0.corruptedReads,
        stalledReads: $0.stalledReads, stalledWrites: $0.stalledWrites)
    }
  }

  /// Reads and writes held by a stall now.
  public var operationsHeld: Int { changed.blockedCount }

  /// Whether a write or sync fails now; one armed to stall waits here until it no longer is.
  fileprivate func onWrite() -> Bool {
    let writes = state.withLock { state -> DiskFaults.Writes in
      switch state.faults.writes {
      case .ok: break
      case .fail: state.failedWrites += 1
      case .stall: state.stalledWrites += 1
      }
      return state.faults.writes
    }
    guard writes == .stall else { return writes == .fail }
    _ = changed.wait(until: .never) { state.withLock { $0.faults.writes != .stall } }
    return onWrite()
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
  fileprivate func waitWhileReadsStall() {
    _ = changed.wait(until: .never) { state.withLock { $0.faults.reads != .stall } }
  }
}

/// What a node's disk faults did since start.
public struct DiskFaultCounts: Sendable, Hashable {
  public var failedWrites = 0
  public var failedReads = 0
  public var corruptedReads = 0
  public var stalledReads = 0
  public var stalledWrites = 0
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
      faults.waitWhileReadsStall()
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
    if faults.faults.writes != .ok { return }
    base.discard(at: offset, bytes: bytes)
  }
}
