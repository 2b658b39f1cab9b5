// Clients, as an inference engine uses the store: a request's token blocks form a chain (a
// sequence of keys), stored as prefixes, found again by prefix lookups (LOOKUP, optionally
// leasing the blocks for a later GET) and loaded (GET). Every answer is checked against the
// bytes the key was written with.

import StrataCore
import StrataNode
import StrataStorage
import StrataTestKit
import StrataWire

extension Simulation {
  func key(_ sequence: Int, _ index: Int) -> BlockKey {
    if let known = keys[sequence] { return known[index] }
    let made = (0..<sequenceLengths[sequence]!).map { SHA256.digest(Array("sim-\(sequence)-\($0)".utf8)) }
    keys[sequence] = made
    for (index, key) in made.enumerated() { contents[key] = (sequence, index) }
    return made[index]
  }

  /// The bytes block `index` of `sequence` holds: its length and content follow from its name.
  func content(_ sequence: Int, _ index: Int) -> [UInt8] {
    var generator = SplitMix64(seed: UInt64(sequence) &* 1_000_003 &+ UInt64(index))
    let length = 256 + Int(generator.next() % UInt64(SimulatedNode.blockBytesMax - 256))
    var bytes = [UInt8](repeating: 0, count: length)
    for start in stride(from: 0, to: length, by: 8) {
      let word = generator.next()
      for offset in 0..<min(8, length - start) {
        bytes[start + offset] = UInt8(truncatingIfNeeded: word >> (8 * offset))
      }
    }
    // One block in eight holds the NVMe record magic where its record's bytes land aligned on
    // the disk (payload byte 3840 of a record whose bytes follow its 256-byte header), so masked
    // records go through every fault too (docs/nvme-format.md, "Masked records").
    if (sequence ^ index) % 8 == 0 && length >= 3844 {
      withUnsafeBytes(of: UInt32(0x5354_5242).bigEndian) { bytes.replaceSubrange(3840..<3844, with: $0) }
    }
    return bytes
  }

  /// The node a client sends a request for `first` to: the first owner that is up in the current
  /// membership's ring, or (one time in ten, a client that is not ring-aware) any node that is up.
  func route(_ first: BlockKey) -> Int? {
    // A paused or stopping node does not answer: a client's timeout sends it to another.
    let up = nodes.filter { $0.answers(at: now) }.map(\.index)
    if random.chance(10) { return random.pick(up) }
    let ring = ring(for: membership.snapshot)
    for owner in ring.owners(of: first) {
      if let node = nodes.first(where: { $0.id == owner.id && $0.answers(at: now) }) { return node.index }
    }
    return random.pick(up)
  }

  func clientConnection(_ index: Int) -> InMemoryConnection? {
    if let open = clientConnections[index], !open.isClosed { return open }
    guard let server = nodes[index].server else { return nil }
    let connection = InMemoryConnection(server: server, source: "10.1.0.1")
    let hello = HelloRequest(
      capabilities: [.tcp, .verify], frameBytesMax: 1 << 30, token: Array(SimulatedNode.tenantToken.utf8),
      clientName: "sim")
    guard
      case .helloResponse? = answeredFrames(connection.receive(hello.frameBytes(requestID: 1, ringEpoch: 0))).first?.1
    else {
      fail("n\(index) refused a tenant's HELLO")
      return nil
    }
    clientConnections[index] = connection
    return connection
  }

  func clientOperation() {
    clientOperations += 1
    let roll = random.int(0...99)
    if roll < 40 || sequences.isEmpty {
      store()
    } else if roll < 70 {
      prefixLookup()
    } else {
      load(sequence: random.chance(8) ? 1_000_000 + random.int(0...999) : random.pick(sequences)!)
    }
    if random.chance(3) {
      // A client hangs up now and then: its leases must go with its connection.
      hangUpClients()
    }
  }

  func hangUpClients() {
    for connection in clientConnections.values { connection.close() }
    clientConnections = [:]
  }

  /// Stores a prefix of a new sequence, or again one of an old (then "already present").
  func store() {
    let sequence: Int
    if sequences.isEmpty || random.chance(70) {
      sequence = sequences.count
      sequences.append(sequence)
      sequenceLengths[sequence] = random.int(1...6)
    } else {
      sequence = random.pick(sequences)!
    }
    let count = random.int(1...sequenceLengths[sequence]!)
    guard let index = route(key(sequence, 0)), let connection = clientConnection(index) else {
      return note("client: store seq \(sequence) found no node up")
    }
    var items: [PutRequest.Item] = []
    var payload: [UInt8] = []
    for block in 0..<count {
      let bytes = content(sequence, block)
      items.append(.init(key: key(sequence, block), length: UInt64(bytes.count), checksum: CRC32C.checksum(bytes)))
      payload += bytes
      written.insert(key(sequence, block))
    }
    let answer = answeredFrames(
      connection.receive(PutRequest(items: items).frameBytes(requestID: nextRequestID(), ringEpoch: 0) + payload)
    ).first?.1
    checkLimits(index)
    guard case .putResponse(let response)? = answer,
      response.outcomes.allSatisfy({ $0 == .stored || $0 == .alreadyPresent })
    else {
      return note("client: store seq \(sequence) [0,\(count)) via n\(index): not acknowledged (\(describe(answer)))")
    }
    note("client: store seq \(sequence) [0,\(count)) via n\(index): acknowledged")
    for block in 0..<count {
      let id = BlockID(namespace: SimulatedNode.namespace, key: key(sequence, block))
      let copies = checkQuorumHeld(id, acknowledgedBy: index)
      if acknowledged[id.key] == nil { acknowledged[id.key] = Acknowledgement(at: now, copies: copies) }
    }
  }

  /// A prefix lookup: which leading blocks of a sequence the cluster holds; sometimes leased and
  /// loaded later under the lease.
  func prefixLookup() {
    let sequence = random.pick(sequences)!
    let count = sequenceLengths[sequence]!
    let keys = (0..<count).map { key(sequence, $0) }
    guard let index = route(keys[0]), let connection = clientConnection(index) else { return }
    let leased = random.chance(40)
    let answer = answeredFrames(
      connection.receive(
        LookupRequest(keys: keys, leaseMilliseconds: leased ? 1_500 : 0).frameBytes(
          requestID: nextRequestID(), ringEpoch: 0))
    ).first?.1
    checkLimits(index)
    guard case .lookupResponse(let response)? = answer else {
      return note("client: lookup seq \(sequence) via n\(index): \(describe(answer))")
    }
    for (key, tier) in zip(keys, response.tiers) where tier != .absent && !written.contains(key) {
      fail("n\(index) reports block \(key.hex.prefix(12)) present, which no client ever wrote")
    }
    note("client: lookup seq \(sequence) via n\(index): leading run \(response.leadingRun) of \(count)")
    if response.leaseID != 0 && response.leadingRun > 0 {
      events.schedule(
        .leasedGet(node: index, sequence: sequence, count: Int(response.leadingRun), lease: response.leaseID),
        at: now + random.milliseconds(0...2_500))
    }
  }

  /// A GET under a lease granted earlier: the bytes, or a typed refusal once the lease expired
  /// (a clock jump, or a client that waited too long); never other bytes.
  func leasedGet(_ index: Int, _ sequence: Int, _ count: Int, _ lease: UInt64) {
    guard let connection = clientConnections[index], !connection.isClosed else { return }
    guard !nodes[index].isPaused(at: now) else { return note("client: leased load via n\(index): no answer (paused)") }
    load(sequence: sequence, count: count, on: (index, connection), lease: lease)
  }

  /// Loads a prefix of a sequence (or of one never written: every block must then be missing).
  func load(sequence: Int, count: Int? = nil, on target: (Int, InMemoryConnection)? = nil, lease: UInt64 = 0) {
    if sequenceLengths[sequence] == nil { sequenceLengths[sequence] = random.int(1...6) }
    let count = count ?? random.int(1...sequenceLengths[sequence]!)
    let keys = (0..<count).map { key(sequence, $0) }
    guard let (index, connection) = target ?? route(keys[0]).flatMap({ i in clientConnection(i).map { (i, $0) } })
    else { return }
    let answer = answeredFrames(
      connection.receive(
        GetRequest(items: keys.map { .init(key: $0) }, leaseID: lease).frameBytes(
          requestID: nextRequestID(), ringEpoch: 0)))
    checkLimits(index)
    guard case .getResponse(let response)? = answer.first?.1 else {
      return note(
        "client: load seq \(sequence) via n\(index)\(lease == 0 ? "" : " lease \(lease)"): \(describe(answer.first?.1))"
      )
    }
    let payload = answer.first!.2
    var offset = 0
    var loaded = 0
    var damaged: [BlockKey] = []
    for (block, item) in response.items.enumerated() {
      let length = Int(item.length)
      defer { offset += length }
      guard item.status == .ok else { continue }
      let got = Array(payload[offset..<offset + length])
      guard written.contains(keys[block]) else {
        fail("n\(index) returned \(length) bytes for block \(keys[block].hex.prefix(12)), which no client ever wrote")
        return
      }
      // The client checks each block against the checksum the node sent: one damaged in the
      // node's RAM is found here, never taken as data, and reported (VERIFY).
      guard CRC32C.checksum(got) == item.checksum else {
        damaged.append(keys[block])
        continue
      }
      guard got == content(sequence, block) else {
        fail("n\(index) returned wrong bytes for block \(keys[block].hex.prefix(12)) (seq \(sequence) block \(block))")
        return
      }
      loaded += 1
    }
    note(
      "client: load seq \(sequence) [0,\(count)) via n\(index)\(lease == 0 ? "" : " lease \(lease)"): \(loaded) loaded\(damaged.isEmpty ? "" : ", \(damaged.count) damaged")"
    )
    guard !damaged.isEmpty else { return }
    let report = answeredFrames(
      connection.receive(VerifyRequest(keys: damaged).frameBytes(requestID: nextRequestID(), ringEpoch: 0))
    ).first?.1
    note("client: reported \(damaged.count) damaged to n\(index): \(describe(report))")
  }
}
