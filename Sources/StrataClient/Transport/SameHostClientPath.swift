// The client's side of the same-host path: when the node runs on this machine, a connection goes
// over the node's Unix-domain socket (HELLO as on TCP, then the client's shared memory passed as a
// sealed memfd with SCM_RIGHTS). GETs into and PUTs from that shared memory then name region
// ranges instead of carrying payload, and the node copies each block once; other memory still
// moves in the socket's stream. A socket that fails leaves the node on TCP.

import StrataCore
import StrataTCP
import StrataWire

extension ClientConnection {
  /// Connects over the node's Unix socket at `path`, says HELLO, passes the shared memory and
  /// waits for the node to accept it. With `expectedNodeID`, the node there must be that one.
  /// On a throw the connection is as before (its TCP socket, if any, kept).
  func connectSameHost(path: String, deadline: Deadline, expectedNodeID: String?) throws(StrataError) {
    // Errors name the node as the caller knows it, and the socket.
    let unix = try TCPSocket.connect(
      unixPath: path, name: "\(address) (unix:\(path))", timeoutMilliseconds: configuration.timeoutMilliseconds)
    let previous = (socket, namespace, nodeID)
    socket = unix
    do throws(StrataError) {
      let hello = HelloRequest(
        capabilities: Capabilities([.tcp, .leases, .sharedMemory, .verify]).union(configuration.isPeer ? [.peer] : []),
        frameBytesMax: configuration.frameBytesMax, token: Array(configuration.token.utf8),
        clientName: configuration.clientName, peerNamespace: configuration.isPeer ? configuration.peerNamespace : "")
      let (_, message) = try exchange(hello.wireMessage, payload: [], ringEpoch: 0, deadline: deadline) {
        _, _ throws(StrataError) in
      }
      guard case .helloResponse(let response) = message, response.capabilities.contains(.sharedMemory) else {
        throw StrataError(.protocolError, "unix:\(path) did not grant the same-host path")
      }
      if let expectedNodeID, response.nodeID != expectedNodeID {
        throw StrataError(
          .unavailable, "unix:\(path) is node \(response.nodeID), not \(expectedNodeID) that named it")
      }
      let region = transports.sharedRegion
      try unix.sendMessage(
        RegionOffer(bytes: UInt64(region?.count ?? 0)).encoded, attaching: region?.descriptor, deadline: deadline)
      let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: RegionAnswer.byteCount, alignment: 8)
      defer { raw.deallocate() }
      try unix.readExactly(raw, deadline: deadline)
      let answer = try RegionAnswer(decoding: UnsafeRawBufferPointer(raw))
      guard answer.code == 0 else {
        let code = StrataError.Code(number: answer.code) ?? .internalError
        throw StrataError(code, "unix:\(path) refused the shared-memory region")
      }
      if deadline != .never { unix.setTimeout(milliseconds: configuration.timeoutMilliseconds) }
      namespace = response.namespace
      nodeID = response.nodeID
      nodeVerifies = response.capabilities.contains(.verify)
      sameHostRegion = region
      isSameHost = true
      transports.record { stats in
        stats.sameHostConnections += 1
        stats.sameHostDecision = "shm (the node runs on this machine: unix:\(path))"
      }
    } catch {
      (socket, namespace, nodeID) = previous
      throw error
    }
  }

  /// Where each slice lies in the shared region this connection passed; nil unless every slice
  /// lies wholly inside it (the batch then moves in the stream).
  func regionRanges(_ slices: [RegionSlice]) -> [RegionRange]? {
    guard isSameHost, let region = sameHostRegion else { return nil }
    let base = UInt(bitPattern: region.base)
    var ranges: [RegionRange] = []
    ranges.reserveCapacity(slices.count)
    for slice in slices {
      guard slice.region.kind == .host else { return nil }
      let start = UInt(bitPattern: slice.region.base) + UInt(slice.offset)
      guard start >= base, start - base <= UInt(region.count), UInt(slice.length) <= UInt(region.count) - (start - base)
      else { return nil }
      ranges.append(RegionRange(offset: UInt64(start - base), length: UInt64(slice.length)))
    }
    return ranges
  }

  /// A GET whose destinations all lie in the shared region: the node copies each block there
  /// (checksummed while copying: a mismatch comes back `corrupt`), and no payload crosses the
  /// socket. nil when the batch does not qualify.
  func getThroughRegion(
    _ items: [StrataClient.GetItem], request: GetRequest, ringEpoch: UInt64, deadline: Deadline
  ) throws(StrataError) -> [StrataClient.GetResult]? {
    guard items.allSatisfy({ $0.tail.isEmpty }), let targets = regionRanges(items.map(\.destination)) else {
      return nil
    }
    var request = request
    request.regionRanges = targets
    let (_, message) = try exchange(request.wireMessage, payload: [], ringEpoch: ringEpoch, deadline: deadline) {
      _, _ throws(StrataError) in
    }
    guard case .getResponse(let response) = message, response.items.count == items.count else {
      throw unexpected(message)
    }
    transports.record { $0.sameHostBatches += 1 }
    return response.items.map { answer in
      switch answer.status {
      case .ok: .ok(length: Int(answer.length))
      case .missing: .missing
      // Also a destination too small for the block: the node wrote nothing into it.
      case .rangeOutOfBounds: .outOfRange
      case .corrupt: .corrupt
      }
    }
  }

  /// A PUT whose sources all lie in the shared region: the node copies each block from there into
  /// its arena. Checksums given with the items are checked against the copies; when none is given
  /// the node checksums each block as it copies it, and the client does not read the blocks at all.
  /// nil when the batch does not qualify.
  func putThroughRegion(_ items: [StrataClient.PutItem], writeQuorum: UInt8, ringEpoch: UInt64, deadline: Deadline)
    throws(StrataError) -> [PutOutcome]?
  {
    guard items.allSatisfy({ $0.tail.isEmpty }), let sources = regionRanges(items.map(\.source)) else { return nil }
    let byNode = items.allSatisfy { $0.checksum == nil }
    let request = PutRequest(
      items: byNode
        ? items.map { PutRequest.Item(key: $0.key, length: UInt64($0.length), checksum: 0) }
        : items.map(\.checksummedItem),
      writeQuorum: writeQuorum, regionRanges: sources, checksumsByNode: byNode)
    let (_, message) = try exchange(request.wireMessage, payload: [], ringEpoch: ringEpoch, deadline: deadline) {
      _, _ throws(StrataError) in
    }
    guard case .putResponse(let response) = message, response.outcomes.count == items.count else {
      throw unexpected(message)
    }
    transports.record { $0.sameHostBatches += 1 }
    return response.outcomes
  }
}
