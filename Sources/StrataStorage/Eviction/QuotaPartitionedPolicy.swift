// Eviction that respects namespace quotas: each namespace with a RAM quota has an S3-FIFO of its
// own, every other namespace shares one. A namespace at its quota evicts from its own queue, so
// filling it never evicts another tenant's blocks; under node-wide pressure the victim comes from
// the partition furthest over its share. With no quotas there is one shared queue: exactly S3-FIFO.
// A pure value, like the policies it holds.

public import StrataCore

public struct QuotaPartitionedPolicy: Sendable {
  public let capacityBytes: Int
  public let quotas: NamespaceQuotas
  private var shared: S3FIFOPolicy<BlockID>
  private var own: [Namespace: S3FIFOPolicy<BlockID>] = [:]

  public init(capacityBytes: Int, quotas: NamespaceQuotas = NamespaceQuotas()) {
    self.capacityBytes = capacityBytes
    self.quotas = quotas
    shared = S3FIFOPolicy(capacityBytes: capacityBytes)
  }

  /// The namespace's RAM quota in bytes, or nil when it shares the common queue.
  public func ramQuota(of namespace: Namespace) -> Int? { quotas[namespace].ramBytesMax }

  /// Bytes the policy holds for `namespace` (its own queue) or for the shared queue.
  public func bytes(of namespace: Namespace) -> Int {
    ramQuota(of: namespace) == nil ? shared.bytes : (own[namespace]?.bytes ?? 0)
  }

  public var count: Int { shared.count + own.values.reduce(0) { $0 + $1.count } }
  public var bytes: Int { shared.bytes + own.values.reduce(0) { $0 + $1.bytes } }

  public mutating func insert(_ id: BlockID, bytes: Int) {
    if let quota = ramQuota(of: id.namespace) {
      own[id.namespace, default: S3FIFOPolicy(capacityBytes: max(1, quota))].insert(id, bytes: bytes)
    } else {
      shared.insert(id, bytes: bytes)
    }
  }

  public mutating func access(_ id: BlockID) {
    if ramQuota(of: id.namespace) != nil { own[id.namespace]?.access(id) } else { shared.access(id) }
  }

  public mutating func remove(_ id: BlockID) {
    if ramQuota(of: id.namespace) != nil { own[id.namespace]?.remove(id) } else { shared.remove(id) }
  }

  public func wasReused(_ id: BlockID) -> Bool {
    ramQuota(of: id.namespace) != nil ? own[id.namespace]?.wasReused(id) == true : shared.wasReused(id)
  }

  /// A victim among `namespace`'s own blocks (it is at its quota); nil when it has no quota or
  /// every one of its blocks is pinned.
  public mutating func evict(from namespace: Namespace, where isEvictable: (BlockID) -> Bool) -> BlockID? {
    guard ramQuota(of: namespace) != nil, var policy = own[namespace] else { return nil }
    defer { own[namespace] = policy }
    return policy.evict(where: isEvictable)
  }

  /// A victim under node-wide pressure: from the partition most over its share first (a quota
  /// namespace's share is its quota; the shared queue's is the capacity no quota promises).
  public mutating func evict(where isEvictable: (BlockID) -> Bool) -> BlockID? {
    guard !own.isEmpty else { return shared.evict(where: isEvictable) }
    let promised = own.keys.reduce(0) { $0 + (ramQuota(of: $1) ?? 0) }
    var candidates: [(ratio: Double, namespace: Namespace?)] = []
    if shared.count > 0 {
      candidates.append((Double(shared.bytes) / Double(max(1, capacityBytes - promised)), nil))
    }
    for (namespace, policy) in own where policy.count > 0 {
      candidates.append((Double(policy.bytes) / Double(max(1, ramQuota(of: namespace) ?? 1)), namespace))
    }
    candidates.sort { $0.ratio > $1.ratio }
    for candidate in candidates {
      if let namespace = candidate.namespace {
        if let victim = evict(from: namespace, where: isEvictable) { return victim }
      } else if let victim = shared.evict(where: isEvictable) {
        return victim
      }
    }
    return nil
  }
}
