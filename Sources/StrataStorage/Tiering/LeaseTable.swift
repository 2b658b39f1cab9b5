// Leases: read pins that keep blocks resident until the transfer that needs them completes or
// the lease expires. A pure value: time is passed in, so tests drive expiry exactly.

import StrataCore

/// A grant of pins on some blocks, named by a number unique within one tier manager.
public struct LeaseID: Hashable, Sendable, CustomStringConvertible {
  public let rawValue: UInt64
  public init(rawValue: UInt64) { self.rawValue = rawValue }
  public var description: String { "lease-\(rawValue)" }
}

/// What leases may hold: node-wide and per namespace, so one tenant's leases never take what
/// another needs. Transfer pins are outside these limits (each is bounded by its transfer).
struct LeaseLimits: Hashable, Sendable {
  /// Client leases (LOOKUP pins) on the node.
  var leasesMax: Int
  /// Client leases of one namespace.
  var leasesPerNamespaceMax: Int
  /// Bytes one namespace's client leases pin, counted per lease (a block in two leases counts
  /// twice, so the bound holds however leases overlap).
  var pinnedBytesPerNamespaceMax: Int
  /// Namespaces whose pinned-bytes limit differs from `pinnedBytesPerNamespaceMax` (`namespaces:`).
  var pinnedBytesByNamespace: [Namespace: Int]

  init(
    leasesMax: Int, leasesPerNamespaceMax: Int? = nil, pinnedBytesPerNamespaceMax: Int = .max,
    pinnedBytesByNamespace: [Namespace: Int] = [:]
  ) {
    self.pinnedBytesByNamespace = pinnedBytesByNamespace
    precondition(leasesMax > 0, "leasesMax must be positive")
    self.leasesMax = leasesMax
    self.leasesPerNamespaceMax = leasesPerNamespaceMax ?? leasesMax
    self.pinnedBytesPerNamespaceMax = pinnedBytesPerNamespaceMax
    precondition(self.leasesPerNamespaceMax > 0, "leasesPerNamespaceMax must be positive")
  }
}

/// Which leases exist, what they pin and when they expire. Two kinds share the pins:
/// - client leases (`grant`): counted against `LeaseLimits`, expiring at a set time;
/// - transfer pins (`pinForTransfer`): held while bytes are moved out of the pinned slots, with no
///   expiry, so a slot is never reused while a send from it is in progress (the transfer has its
///   own deadline and releases its pins when it ends, however it ends).
struct LeaseTable {
  private struct Lease {
    var blocks: [BlockID]
    /// nil for a transfer pin.
    var namespace: Namespace?
    var bytes: Int
    var expiresAtMilliseconds: UInt64
  }

  private struct Usage {
    var leases = 0
    var pinnedBytes = 0
  }

  let limits: LeaseLimits
  private var leases: [LeaseID: Lease] = [:]
  private var pins: [BlockID: Int] = [:]
  private var usage: [Namespace: Usage] = [:]
  private var transferCount = 0
  /// Min-heap of (expiry, lease), so expiry costs O(log n) per lease whatever the durations.
  private var expiries: [(UInt64, LeaseID)] = []
  private var nextID: UInt64 = 1

  init(limits: LeaseLimits) { self.limits = limits }

  init(leasesMax: Int) { self.init(limits: LeaseLimits(leasesMax: leasesMax)) }

  var leasesMax: Int { limits.leasesMax }
  /// Client leases held (transfer pins are not leases a client holds).
  var count: Int { leases.count - transferCount }
  var transferPinCount: Int { transferCount }
  var pinnedBlockCount: Int { pins.count }

  func isPinned(_ id: BlockID) -> Bool { pins[id] != nil }

  /// Client leases and leased bytes of `namespace`.
  func usage(of namespace: Namespace) -> (leases: Int, pinnedBytes: Int) {
    let entry = usage[namespace] ?? Usage()
    return (entry.leases, entry.pinnedBytes)
  }

  /// Pins `blocks` (id and size) for `namespace` until `release` or `expiresAt`. Throws
  /// `resourceExhausted` naming the limit reached: the node's, or the namespace's.
  mutating func grant(_ blocks: [(BlockID, Int)], namespace: Namespace, expiresAt: UInt64) throws(StrataError)
    -> LeaseID
  {
    guard count < limits.leasesMax else {
      throw StrataError(
        .resourceExhausted, "lease limit reached: \(limits.leasesMax) leases are held (limits.max_leases)")
    }
    let current = usage[namespace] ?? Usage()
    guard current.leases < limits.leasesPerNamespaceMax else {
      throw StrataError(
        .resourceExhausted,
        "namespace '\(namespace.name)' holds \(current.leases) leases, its limit (limits.max_leases_per_namespace)")
    }
    let bytes = blocks.reduce(0) { $0 + $1.1 }
    let pinnedMax = limits.pinnedBytesByNamespace[namespace] ?? limits.pinnedBytesPerNamespaceMax
    guard current.pinnedBytes + bytes <= pinnedMax else {
      throw StrataError(
        .resourceExhausted,
        "namespace '\(namespace.name)' would pin \(current.pinnedBytes + bytes) bytes through leases, over its "
          + "\(pinnedMax) (limits.max_pinned_bytes_per_namespace or namespaces[].pinned); release leases or lease fewer blocks"
      )
    }
    usage[namespace, default: Usage()].leases += 1
    usage[namespace, default: Usage()].pinnedBytes += bytes
    return insert(Lease(blocks: blocks.map(\.0), namespace: namespace, bytes: bytes, expiresAtMilliseconds: expiresAt))
  }

  /// Pins `blocks` for a transfer in progress: never refused, never expires; `release` ends it.
  mutating func pinForTransfer(_ blocks: [BlockID]) -> LeaseID {
    transferCount += 1
    return insert(Lease(blocks: blocks, namespace: nil, bytes: 0, expiresAtMilliseconds: .max))
  }

  private mutating func insert(_ lease: Lease) -> LeaseID {
    let id = LeaseID(rawValue: nextID)
    nextID += 1
    leases[id] = lease
    for block in lease.blocks { pins[block, default: 0] += 1 }
    if lease.expiresAtMilliseconds != .max { push((lease.expiresAtMilliseconds, id)) }
    return id
  }

  /// Ends a lease or transfer pin; returns the blocks that are no longer pinned by any. Unknown or
  /// already expired leases are ignored (a release racing an expiry is normal).
  mutating func release(_ id: LeaseID) -> [BlockID] {
    guard let lease = leases.removeValue(forKey: id) else { return [] }
    return forget(lease)
  }

  /// Ends every client lease that expired at or before `now`; returns the blocks no longer pinned.
  mutating func expire(now: UInt64) -> [BlockID] {
    var unpinned: [BlockID] = []
    while let (expiry, id) = expiries.first, expiry <= now {
      pop()
      // Entries of released leases stay in the heap until they surface; skip them.
      if let lease = leases[id], lease.expiresAtMilliseconds == expiry {
        leases[id] = nil
        unpinned += forget(lease)
      }
    }
    if expiries.count > 4 * max(count, 64) { compactHeap() }
    return unpinned
  }

  private mutating func forget(_ lease: Lease) -> [BlockID] {
    if let namespace = lease.namespace {
      var entry = usage[namespace] ?? Usage()
      entry.leases -= 1
      entry.pinnedBytes -= lease.bytes
      usage[namespace] = entry.leases == 0 ? nil : entry
    } else {
      transferCount -= 1
    }
    return unpin(lease.blocks)
  }

  private mutating func unpin(_ blocks: [BlockID]) -> [BlockID] {
    var unpinned: [BlockID] = []
    for block in blocks {
      guard let count = pins[block] else { continue }
      if count <= 1 {
        pins[block] = nil
        unpinned.append(block)
      } else {
        pins[block] = count - 1
      }
    }
    return unpinned
  }

  private mutating func compactHeap() {
    expiries = leases.compactMap {
      $0.value.expiresAtMilliseconds == .max ? nil : ($0.value.expiresAtMilliseconds, $0.key)
    }
    expiries.sort { $0.0 < $1.0 }  // a sorted array is a valid min-heap
  }

  private mutating func push(_ item: (UInt64, LeaseID)) {
    expiries.append(item)
    var child = expiries.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      guard expiries[child].0 < expiries[parent].0 else { break }
      expiries.swapAt(child, parent)
      child = parent
    }
  }

  private mutating func pop() {
    let last = expiries.removeLast()
    guard !expiries.isEmpty else { return }
    expiries[0] = last
    var parent = 0
    while true {
      let left = 2 * parent + 1
      let right = left + 1
      var smallest = parent
      if left < expiries.count, expiries[left].0 < expiries[smallest].0 { smallest = left }
      if right < expiries.count, expiries[right].0 < expiries[smallest].0 { smallest = right }
      guard smallest != parent else { return }
      expiries.swapAt(parent, smallest)
      parent = smallest
    }
  }
}
