// The same-host path's payload transport: a connection on the node's Unix-domain socket is served
// by the same loop and pipeline as TCP (TCPConnection), and a GET or PUT that names ranges of the
// client's shared-memory region moves its blocks with one copy each — arena to region for a GET
// (checksummed while copying, so a block that no longer matches its checksum is answered
// `corrupt`), region to reserved slot for a PUT (checksummed while copying, from the registers the
// slot is written from: the commit checks the sender's checksum without reading the slot again,
// and a client changing its region meanwhile cannot make the slot differ from that checksum).
// Requests without ranges move their payload in the stream, as on TCP.
//
// Safety: the region is the client's memfd, mapped by this connection only and checked when it
// was adopted (sealed against shrinking, not hugetlbfs: no access inside it can fault); every
// range is checked against the region's size before a byte moves. Nothing of the node's is ever
// mapped into a client.

import StrataCore
import StrataTCP
import StrataWire

struct SameHostPayloadTransport: PayloadTransport {
  var stream: TCPPayloadTransport
  let server: NodeServer
  /// The client's region; nil when it passed none (then every payload travels in the stream).
  let region: SharedMemoryRegion?
  /// The region ranges of the request being served; nil: its payload is in the stream.
  private var ranges: [RegionRange]?

  init(stream: TCPPayloadTransport, server: NodeServer, region: SharedMemoryRegion?) {
    self.stream = stream
    self.server = server
    self.region = region
  }

  var name: String { "shm" }

  /// Takes the region ranges of the next request (GET and PUT name them; others never do).
  mutating func expect(_ request: WireMessage) {
    switch request {
    case .getRequest(let get): ranges = get.regionRanges
    case .putRequest(let put): ranges = put.regionRanges
    default: ranges = nil
    }
  }

  mutating func respond(_ frame: [UInt8], deadline: Deadline) throws(StrataError) {
    try stream.respond(frame, deadline: deadline)
  }

  mutating func deliverGet(
    items: [GetResponse.Item], ranges blocks: [UnsafeRawBufferPointer?], response: ResponseFrame, deadline: Deadline
  ) throws(StrataError) -> [GetResponse.Item] {
    guard let targets = ranges else {
      return try stream.deliverGet(items: items, ranges: blocks, response: response, deadline: deadline)
    }
    let region = try requireRegion("GET")
    server.count { $0.sameHostRegionRequests += 1 }
    var answered = items
    var copies: [(item: Int, from: UnsafeRawBufferPointer, to: UnsafeMutableRawBufferPointer)] = []
    copies.reserveCapacity(blocks.count)
    for (index, block) in blocks.enumerated() {
      guard let block, case .ok = items[index].status else { continue }
      // A range outside the region, or too small for the bytes, gets nothing written.
      guard let destination = region.slice(targets[index]), block.count <= destination.count else {
        answered[index] = GetResponse.Item(status: .rangeOutOfBounds)
        continue
      }
      copies.append((index, block, UnsafeMutableRawBufferPointer(rebasing: destination[0..<block.count])))
    }
    let checksums = CRC32C.copy(copies.map { ($0.from, $0.to) }, threads: server.configuration.sameHostCopyThreads)
    for (copy, checksum) in zip(copies, checksums) where checksum != items[copy.item].checksum {
      answered[copy.item] = GetResponse.Item(status: .corrupt)
    }
    try stream.respond(response.bytes(.getResponse(GetResponse(items: answered))), deadline: deadline)
    return answered
  }

  mutating func receivePut(_ slots: [PayloadSlot], firstItem: Int, deadline: Deadline) throws(StrataError) -> [UInt32?]
  {
    guard let ranges else { return try stream.receivePut(slots, firstItem: firstItem, deadline: deadline) }
    let region = try requireRegion("PUT")
    // Every range of the run is checked before any slot is written: a refused run leaves no slot
    // touched.
    var copies: [(slot: Int, into: UnsafeMutableRawBufferPointer, from: UnsafeRawBufferPointer)] = []
    copies.reserveCapacity(slots.count)
    for (index, (slot, source)) in zip(slots, ranges[firstItem...]).enumerated() {
      let length: Int
      switch slot {
      case .into(let buffer): length = buffer.count
      case .skip(let bytes): length = bytes
      }
      guard source.length == UInt64(length), let bytes = region.slice(source) else {
        throw StrataError(
          .invalidArgument,
          "PUT item \(firstItem + index): region range \(source.offset)+\(source.length) is not a \(length)-byte range of the \(region.count)-byte region"
        )
      }
      if case .into(let buffer) = slot { copies.append((index, buffer, UnsafeRawBufferPointer(bytes))) }
    }
    server.count { $0.sameHostRegionRequests += 1 }
    var landed = [UInt32?](repeating: nil, count: slots.count)
    for (copy, checksum) in zip(
      copies, CRC32C.copy(copies.map { ($0.from, $0.into) }, threads: server.configuration.sameHostCopyThreads))
    {
      landed[copy.slot] = checksum
    }
    return landed
  }

  private func requireRegion(_ op: String) throws(StrataError) -> SharedMemoryRegion {
    guard let region else {
      throw StrataError(.invalidArgument, "\(op) names region ranges, but this connection passed no region")
    }
    return region
  }
}

extension SharedMemoryRegion {
  /// The bytes `range` names, or nil when any of them lies outside the region.
  func slice(_ range: RegionRange) -> UnsafeMutableRawBufferPointer? {
    guard range.offset <= UInt64(count), range.length <= UInt64(count) - range.offset else { return nil }
    return UnsafeMutableRawBufferPointer(start: base + Int(range.offset), count: Int(range.length))
  }
}
