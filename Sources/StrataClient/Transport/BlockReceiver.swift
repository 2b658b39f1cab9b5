// The one place a GET block's payload is received over TCP: straight into host memory, or through
// the pinned staging ring into GPU memory. Either way the bytes are checksummed on the host as
// they arrive, before the block is reported as data.

import StrataCore
import StrataGPU
import StrataWire

/// Receives the blocks of one GET response; `finish()` before reporting the batch's results.
struct BlockReceiver {
  let connection: ClientConnection
  let transports: ClientTransports
  let verify: Bool
  private var rings: [Int: StagingRing] = [:]
  private var staged: [Int: Int] = [:]

  init(connection: ClientConnection, transports: ClientTransports, verify: Bool) {
    self.connection = connection
    self.transports = transports
    self.verify = verify
  }

  /// Receives the payload of a GET response whose `answers` answer `items` (in order), and returns
  /// each item's result. When every block sent lands in host memory, the whole payload is read
  /// as one stream into all the destinations at once (`receiveIntoHost`); otherwise block by
  /// block (GPU memory through the staging ring, a block too large for its destination read and
  /// dropped).
  mutating func receive(_ items: [StrataClient.GetItem], answers: [GetResponse.Item]) throws(StrataError)
    -> [StrataClient.GetResult]
  {
    let sent = zip(items, answers).filter { $0.1.status == .ok }
    let intoHost = sent.allSatisfy { item, answer in
      Int(answer.length) <= item.capacity && item.slices.allSatisfy { $0.region.kind == .host }
    }
    var landed = intoHost ? try receiveIntoHost(sent.map { ($0.slices, Int($1.length), $1.checksum) })[...] : []
    var results: [StrataClient.GetResult] = []
    results.reserveCapacity(items.count)
    for (item, answer) in zip(items, answers) {
      switch answer.status {
      case .missing: results.append(.missing)
      case .rangeOutOfBounds: results.append(.outOfRange)
      case .corrupt: results.append(.corrupt)
      case .ok where intoHost: results.append(landed.removeFirst())
      case .ok:
        let length = Int(answer.length)
        if length > item.capacity {
          try connection.discard(length)
          results.append(.destinationTooSmall(length: length))
        } else if case .cuda(let device) = item.destination.region.kind {
          guard item.tail.isEmpty else {
            throw StrataError(.unsupported, "a GET scattered over several buffers takes host memory only")
          }
          results.append(
            try receive(into: item.destination, onDevice: device, length: length, checksum: answer.checksum))
        } else {
          results.append(try receiveIntoHost([(item.slices, length, answer.checksum)])[0])
        }
      }
    }
    return results
  }

  /// Receives blocks that all go to host memory (each `length` bytes, which fit in its slices,
  /// filling each before the next) with reads that take whatever has arrived, across as many
  /// destinations as it covers; each piece is checksummed as it lands, continuing its block's
  /// CRC-32C (from the cache: the kernel has just written it). A block that fails its checksum is
  /// zeroed and answered `corrupt`.
  private func receiveIntoHost(_ blocks: [(slices: [RegionSlice], length: Int, checksum: UInt32)])
    throws(StrataError) -> [StrataClient.GetResult]
  {
    var segments: [UnsafeMutableRawBufferPointer] = []
    var owners: [Int] = []
    for (index, block) in blocks.enumerated() {
      var left = block.length
      for slice in block.slices where left > 0 {
        segments.append(UnsafeMutableRawBufferPointer(rebasing: slice.buffer[0..<min(left, slice.length)]))
        owners.append(index)
        left -= segments[segments.count - 1].count
      }
    }
    var checksums = [UInt32](repeating: 0, count: blocks.count)
    let verify = self.verify
    try connection.receive(into: segments) { segment, bytes in
      if verify { checksums[owners[segment]] = CRC32C.checksum(bytes, continuing: checksums[owners[segment]]) }
    }
    return blocks.indices.map { index in
      guard !verify || checksums[index] == blocks[index].checksum else {
        for (segment, owner) in zip(segments, owners) where owner == index {
          segment.initializeMemory(as: UInt8.self, repeating: 0)
        }
        return .corrupt
      }
      return .ok(length: blocks[index].length)
    }
  }

  /// Receives `length` payload bytes (which fit) into GPU memory at `destination`, through the
  /// device's staging ring.
  private mutating func receive(
    into destination: RegionSlice, onDevice device: Int, length: Int, checksum: UInt32
  ) throws(StrataError) -> StrataClient.GetResult {
    let ring: StagingRing
    if let taken = rings[device] {
      ring = taken
    } else {
      ring = try transports.takeRing(device: device)
      rings[device] = ring
    }
    let address = destination.region.address + UInt64(destination.offset)
    let before = ring.stagedBytes
    let received = try ring.stage(length: length, to: address) { (chunk) throws(StrataError) in
      try connection.receive(into: chunk)
    }
    staged[device, default: 0] += ring.stagedBytes - before
    // The ring always computes the checksum (it has the bytes in host memory anyway).
    guard !verify || received == checksum else {
      try ring.zero(address, length: length)
      return .corrupt
    }
    return .ok(length: length)
  }

  /// Waits until every staged copy has landed in GPU memory and gives the rings back.
  mutating func finish() throws(StrataError) {
    defer {
      for (device, ring) in rings { transports.returnRing(ring, staged: staged[device] ?? 0) }
      rings.removeAll()
    }
    for ring in rings.values { try ring.finish() }
  }
}
