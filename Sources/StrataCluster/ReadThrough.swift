// Lazy fill after a ring change: when a client asks a new owner for blocks it lacks, the owner
// asks the keys' owners under the previous ring (LOOKUP, then GET of those present), keeps what it
// gets, and answers. Only within cluster.fill_window of the change, and only for keys whose
// owners changed; at most a few fills run at once so a burst of misses cannot pile up; each ends
// by its request's deadline (every peer call keeps to it, and no source is tried after it).

import StrataCore
import StrataPlacement
import StrataStorage
import Synchronization

/// Counters of read-through, read at one instant.
public struct FillStats: Sendable, Hashable {
  public var attempts = 0
  public var filledBlocks = 0
  public var filledBytes = 0
  /// Fills skipped because the concurrent-fill limit was reached.
  public var skippedBusy = 0
  public var failures = 0
}

final class ReadThrough: Sendable {
  static let concurrentFillsMax = 4
  private let tiers: TierManager
  private let peers: PeerClients
  private let blockBytesMax: Int
  private let state = Mutex((running: 0, stats: FillStats()))

  init(tiers: TierManager, peers: PeerClients, blockBytesMax: Int) {
    self.tiers = tiers
    self.peers = peers
    self.blockBytesMax = blockBytesMax
  }

  var stats: FillStats { state.withLock { $0.stats } }

  /// Fills `ids` from `previous`'s owners other than `me` (and other than the current owners'
  /// copies, which are asked too: a restarted node's replica partner has the block), by `deadline`.
  func fill(
    _ ids: [BlockID], previous: Ring, current: Ring, me: String, addresses: [String: HostPort], deadline: Deadline
  ) async -> Int {
    let admitted = state.withLock { state -> Bool in
      guard state.running < Self.concurrentFillsMax else {
        state.stats.skippedBusy += 1
        return false
      }
      state.running += 1
      state.stats.attempts += 1
      return true
    }
    guard admitted else { return 0 }
    defer { state.withLock { $0.running -= 1 } }
    // Source candidates per id: previous owners, then current co-owners, never this node.
    var bySource: [HostPort: [BlockID]] = [:]
    var sources: [BlockID: [HostPort]] = [:]
    for id in ids {
      var candidates: [HostPort] = []
      for member in previous.owners(of: id.key) + current.owners(of: id.key) where member.id != me {
        if let address = addresses[member.id], !candidates.contains(address) { candidates.append(address) }
      }
      guard let first = candidates.first else { continue }
      sources[id] = candidates
      bySource[first, default: []].append(id)
    }
    var filled = 0
    var round = 0
    while !bySource.isEmpty && round < 3 && !deadline.hasPassed() {
      var next: [HostPort: [BlockID]] = [:]
      for (source, wanted) in bySource.sorted(by: { $0.key.description < $1.key.description }) {
        guard !deadline.hasPassed() else { break }
        let missed = await fetch(wanted, from: source, deadline: deadline, filled: &filled)
        for id in missed {
          guard let candidates = sources[id], let position = candidates.firstIndex(of: source),
            position + 1 < candidates.count
          else { continue }
          next[candidates[position + 1], default: []].append(id)
        }
      }
      bySource = next
      round += 1
    }
    return filled
  }

  /// Copies what `source` has of `ids` into the tiers; returns the ids it did not have.
  private func fetch(_ ids: [BlockID], from source: HostPort, deadline: Deadline, filled: inout Int) async
    -> [BlockID]
  {
    var missed: [BlockID] = []
    var byNamespace: [Namespace: [BlockID]] = [:]
    for id in ids { byNamespace[id.namespace, default: []].append(id) }
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytesMax, alignment: 4096)
    defer { scratch.deallocate() }
    for (namespace, wanted) in byNamespace.sorted(by: { $0.key.name < $1.key.name }) {
      guard let client = peers.client(source, namespace) else {
        missed += wanted
        continue
      }
      do {
        let found = try await client.lookup(wanted.map(\.key), deadline: deadline).tiers
        for (id, tier) in zip(wanted, found) {
          guard tier != .absent else {
            missed.append(id)
            continue
          }
          guard let length = try await client.get(id.key, into: scratch, deadline: deadline) else {
            missed.append(id)
            continue
          }
          let payload = UnsafeRawBufferPointer(rebasing: scratch[0..<length])
          if (try? await tiers.put(id, payload: payload)) != nil {
            filled += 1
            state.withLock {
              $0.stats.filledBlocks += 1
              $0.stats.filledBytes += length
            }
          }
        }
      } catch {
        state.withLock { $0.stats.failures += 1 }
        missed += wanted
      }
    }
    return missed
  }
}
