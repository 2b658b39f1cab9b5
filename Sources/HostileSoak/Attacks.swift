// Every attack of docs/security.md at once, each on threads of its own with a bounded number of
// sockets, each running until the soak's end. An attack counts what it tried, what the node cut or
// refused, and what must never happen (another block's bytes, a tenant granted the peer capability).

import Foundation
import StrataCore
import StrataTCP
import StrataWire
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// One attack's counters, shared by its threads.
final class AttackStats: Sendable {
  let name: String
  /// Connections opened or frames sent.
  let attempts = Atomic<Int>(0)
  /// Connections the node closed (at a deadline, on a refusal or on a malformed frame).
  let dropped = Atomic<Int>(0)
  /// Error frames the node answered with.
  let refused = Atomic<Int>(0)
  /// Outcomes the node must never produce; any one fails the soak.
  let violations = Atomic<Int>(0)
  /// Outcomes that say the attack did not bite (e.g. a reader that was not stalled); reported only.
  let misses = Atomic<Int>(0)
  /// Distinct remarks and how often each was made.
  let notes = Mutex<[String: Int]>([:])

  init(_ name: String) { self.name = name }

  func note(_ text: String) { notes.withLock { if $0.count < 16 || $0[text] != nil { $0[text, default: 0] += 1 } } }

  func violation(_ text: String) {
    violations.add(1, ordering: .relaxed)
    note("VIOLATION: " + text)
  }

  var json: JSONValue {
    .object([
      "attempts": .int(attempts.load(ordering: .relaxed)), "dropped_by_node": .int(dropped.load(ordering: .relaxed)),
      "refusals": .int(refused.load(ordering: .relaxed)), "violations": .int(violations.load(ordering: .relaxed)),
      "misses": .int(misses.load(ordering: .relaxed)), "notes": .object(notes.withLock { $0 }.mapValues(JSONValue.int)),
    ])
  }
}

struct AttackSettings: Sendable {
  var node: HostPort
  var admin: HostPort
  var attackerToken: String
  var victimNamespace: String
  var idleConnections: Int
  var halfHelloConnections: Int
  /// How long a stalled transfer may live on the node: request_timeout + bytes / min_transfer_rate.
  var requestTimeoutSeconds: Double
  var minTransferBytesPerSecond: Double
  var leaseHoldSeconds: Double
  /// The attacks to run (names of `attackNames`).
  var selected: Set<String>
  var end: Date
}

/// Every attack, by the name `--attacks` takes.
let attackNames = [
  "flood", "claim-before-hello", "claim-after-hello", "stalled-get", "stalled-put", "lease-hog", "malformed",
  "peer-claim", "slow-admin",
]

/// Starts every attack; each thread returns by `settings.end` (plus its last bounded wait).
func startAttacks(_ settings: AttackSettings, threads: inout [Thread]) -> [AttackStats] {
  var all: [AttackStats] = []
  func launch(_ stats: AttackStats, count: Int = 1, _ body: @escaping @Sendable (Int) -> Void) {
    guard settings.selected.contains(stats.name) else { return }
    all.append(stats)
    for index in 0..<count {
      let thread = Thread { body(index) }
      thread.name = "soak-\(stats.name)-\(index)"
      thread.stackSize = 1 << 20
      threads.append(thread)
    }
  }
  let flood = AttackStats("flood")
  launch(flood) { _ in floodConnections(settings, flood) }
  let preHello = AttackStats("claim-before-hello")
  launch(preHello) { _ in bodyClaimsBeforeHello(settings, preHello) }
  let postHello = AttackStats("claim-after-hello")
  launch(postHello) { _ in bodyClaimsAfterHello(settings, postHello) }
  let stalledGet = AttackStats("stalled-get")
  launch(stalledGet, count: 3) { index in stalledGetReader(settings, stalledGet, index: index) }
  let stalledPut = AttackStats("stalled-put")
  launch(stalledPut, count: 3) { _ in stalledPutWriter(settings, stalledPut) }
  let leases = AttackStats("lease-hog")
  launch(leases, count: 3) { _ in leaseHog(settings, leases) }
  let malformed = AttackStats("malformed")
  launch(malformed) { _ in malformedFrames(settings, malformed) }
  let peer = AttackStats("peer-claim")
  launch(peer) { _ in peerClaims(settings, peer) }
  let slowAdmin = AttackStats("slow-admin")
  launch(slowAdmin) { _ in slowAdminConnections(settings, slowAdmin) }
  return all
}

/// A connection of the attacking tenant that said HELLO; nil (counted, after a pause) when the node
/// closed it or refused the HELLO.
private func attackerSession(
  _ settings: AttackSettings, _ stats: AttackStats, bufferBytes: Int32 = RawFrames.attackBufferBytes
) -> TCPSocket? {
  guard
    case (let socket, let answer)? = try? RawFrames.session(
      settings.node, token: settings.attackerToken, bufferBytes: bufferBytes)
  else {
    stats.dropped.add(1, ordering: .relaxed)
    Thread.sleep(forTimeInterval: 0.5)  // the attack's pace after a refusal
    return nil
  }
  guard case .helloResponse = answer else {
    stats.refused.add(1, ordering: .relaxed)
    Thread.sleep(forTimeInterval: 0.5)
    return nil
  }
  return socket
}

/// Idle and half-HELLO connections, re-opened as soon as the node drops them (waiting in poll).
private func floodConnections(_ settings: AttackSettings, _ stats: AttackStats) {
  let half = Array(
    HelloRequest(
      capabilities: [.tcp], frameBytesMax: 1 << 30, token: Array(repeating: 0x41, count: 3000), clientName: "half"
    ).frameBytes(requestID: 1, ringEpoch: 0)[0..<(64 + 100)])
  let total = settings.idleConnections + settings.halfHelloConnections
  var sockets = [TCPSocket?](repeating: nil, count: total)
  func open(_ index: Int) {
    stats.attempts.add(1, ordering: .relaxed)
    guard let socket = try? RawFrames.connect(settings.node, bufferBytes: 4096) else {
      stats.refused.add(1, ordering: .relaxed)
      return
    }
    if index >= settings.idleConnections { socket.sendAvailable(half) }
    sockets[index] = socket
  }
  var probe = [UInt8](repeating: 0, count: 256)
  while soakRunning(until: settings.end) {
    for index in 0..<total where sockets[index] == nil { open(index) }
    let live = sockets.indices.filter { sockets[$0] != nil }
    var watched = live.map { pollfd(fd: sockets[$0]!.descriptor, events: Int16(POLLIN) | pollReadHangUp, revents: 0) }
    guard poll(&watched, nfds_t(watched.count), 200) > 0 else { continue }
    for (slot, entry) in zip(live, watched) where entry.revents != 0 {
      let closed = probe.withUnsafeMutableBytes { raw in (try? sockets[slot]!.receiveAvailable(raw)) == nil }
      if closed {
        stats.dropped.add(1, ordering: .relaxed)
        sockets[slot] = nil
      }
    }
  }
}

/// Before HELLO: a header claiming a 16 MiB HELLO body, then 100 bytes; the node must close at once.
private func bodyClaimsBeforeHello(_ settings: AttackSettings, _ stats: AttackStats) {
  let claim =
    RawFrames.claimingBody(RawFrames.hello(token: settings.attackerToken), bodyBytes: 16 << 20)
    + [UInt8](repeating: 7, count: 100)
  while soakRunning(until: settings.end) {
    var batch: [TCPSocket] = []
    for _ in 0..<16 {
      stats.attempts.add(1, ordering: .relaxed)
      guard let socket = try? RawFrames.connect(settings.node) else { continue }
      socket.sendAvailable(claim)
      batch.append(socket)
    }
    for socket in batch {
      if RawFrames.waitClosed(socket, seconds: 5).closed {
        stats.dropped.add(1, ordering: .relaxed)
      } else {
        stats.misses.add(1, ordering: .relaxed)
        stats.note("a 16 MiB HELLO claim was still open after 5 s")
      }
    }
    Thread.sleep(forTimeInterval: 0.2)  // the attack's pace
  }
}

/// After HELLO: LOOKUP headers claiming 16 MiB bodies, 100 bytes sent; cut at the transfer deadline.
private func bodyClaimsAfterHello(_ settings: AttackSettings, _ stats: AttackStats) {
  let lookup = LookupRequest(keys: [blockKey(1, 1)]).frameBytes(requestID: 2, ringEpoch: 0)
  let claim = RawFrames.claimingBody(lookup, bodyBytes: 16 << 20) + [UInt8](repeating: 1, count: 100)
  let deadline = settings.requestTimeoutSeconds + Double(16 << 20) / settings.minTransferBytesPerSecond
  while soakRunning(until: settings.end) {
    var batch: [TCPSocket] = []
    for _ in 0..<4 {
      stats.attempts.add(1, ordering: .relaxed)
      guard case (let socket, let answer)? = try? RawFrames.session(settings.node, token: settings.attackerToken) else {
        stats.dropped.add(1, ordering: .relaxed)
        continue
      }
      guard case .helloResponse = answer else {
        stats.refused.add(1, ordering: .relaxed)
        continue
      }
      socket.sendAvailable(claim)
      batch.append(socket)
    }
    for socket in batch {
      if RawFrames.waitClosed(socket, seconds: deadline + 10).closed {
        stats.dropped.add(1, ordering: .relaxed)
      } else {
        stats.misses.add(1, ordering: .relaxed)
        stats.note("a 16 MiB body claim after HELLO outlived its deadline by 10 s")
      }
    }
    Thread.sleep(forTimeInterval: 0.2)  // the attack's pace
  }
}

/// A GET whose reader stalls (receive buffer shrunk to 4 KiB after HELLO, never read) of a block the
/// attacker just stored and deletes once the send has begun; after the deadline the reader drains
/// what it was sent: only its own block's bytes may be there, though its slot was freed meanwhile.
private func stalledGetReader(_ settings: AttackSettings, _ stats: AttackStats, index: Int) {
  let blockBytes = 12 << 20
  let pattern = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 4096)
  defer { pattern.deallocate() }
  let deadline = settings.requestTimeoutSeconds + Double(blockBytes) / settings.minTransferBytesPerSecond
  var round: UInt64 = 0
  while soakRunning(until: settings.end) {
    round += 1
    let seed = UInt64(index) << 32 | round
    fill(pattern, seed: seed)
    let key = blockKey(77, seed)
    stats.attempts.add(1, ordering: .relaxed)
    // Default (large) buffers: the window offered before the shrink is what makes the kernel drop.
    guard let socket = attackerSession(settings, stats, bufferBytes: TCPSocket.defaultBufferBytes) else { continue }
    let checksum = CRC32C.checksum(UnsafeRawBufferPointer(pattern))
    let put = PutRequest(items: [.init(key: key, length: UInt64(blockBytes), checksum: checksum)])
    do {
      try socket.writeAll(put.frameBytes(requestID: 2, ringEpoch: 0), then: [UnsafeRawBufferPointer(pattern)])
      let reply = try RawFrames.readFrame(socket)
      guard case .putResponse(let outcome) = reply, outcome.outcomes == [.stored] else {
        stats.refused.add(1, ordering: .relaxed)
        stats.note("the block to stall on was not stored: \(reply)".prefix(200).description)
        Thread.sleep(forTimeInterval: 0.5)  // refused (e.g. the namespace's in-flight budget): the attack's pace
        continue
      }
      RawFrames.setReceiveBuffer(socket, bytes: 4096)
      try socket.writeAll(GetRequest(items: [.init(key: key)]).frameBytes(requestID: 3, ringEpoch: 0))
    } catch {
      stats.dropped.add(1, ordering: .relaxed)
      continue
    }
    // Once the send has begun, the block is deleted under it (from another connection), so its
    // slot is free for the next PUT of any tenant: the transfer pin must keep it until the send ends.
    var begun = pollfd(fd: socket.descriptor, events: Int16(POLLIN), revents: 0)
    if poll(&begun, 1, 2_000) > 0 { deleteUnderTheSend(settings, key, stats) }
    Thread.sleep(forTimeInterval: deadline + 1)  // the stall itself: never reading
    // The node has cut the send by now. Its FIN waits behind bytes the reader's kernel dropped, so
    // the reader takes what flows for a while (for the byte check), then writes a frame: a socket
    // the node has closed answers it with a reset, one it still serves does not.
    RawFrames.setReceiveBuffer(socket, bytes: 16 << 20)
    var (bytes, closed) = RawFrames.waitClosed(socket, seconds: 3, keep: blockBytes + 4096)
    if !closed {
      socket.sendAvailable(LookupRequest(keys: [key]).frameBytes(requestID: 4, ringEpoch: 0))
      let rest = RawFrames.waitClosed(socket, seconds: 10, keep: blockBytes + 4096 - bytes.count)
      bytes += rest.bytes
      closed = rest.closed
    }
    if closed {
      stats.dropped.add(1, ordering: .relaxed)
    } else {
      stats.note("a stalled GET's connection was still served 13 s after its deadline")
    }
    stats.note(
      bytes.count <= FrameHeader.byteCount
        ? "the stalled reader received no payload" : "the stalled reader received part of its block")
    checkStalledBytes(bytes, pattern: UnsafeRawBufferPointer(pattern), stats: stats)
  }
}

private func deleteUnderTheSend(_ settings: AttackSettings, _ key: BlockKey, _ stats: AttackStats) {
  guard case (let socket, let answer)? = try? RawFrames.session(settings.node, token: settings.attackerToken),
    case .helloResponse = answer,
    (try? socket.writeAll(DeleteRequest(keys: [key]).frameBytes(requestID: 2, ringEpoch: 0))) != nil,
    let reply = try? RawFrames.readFrame(socket)
  else {
    stats.note("the DELETE under a stalled send got no answer")
    return
  }
  if case .deleteResponse(let response) = reply, response.removed == [true] {
    stats.note("deleted under the stalled send")
  } else {
    stats.note("the DELETE under a stalled send answered \(reply)".prefix(200).description)
  }
}

/// What a stalled reader received must be a GET answer followed by a prefix of its own block.
private func checkStalledBytes(_ bytes: [UInt8], pattern: UnsafeRawBufferPointer, stats: AttackStats) {
  guard bytes.count >= FrameHeader.byteCount else { return }
  bytes.withUnsafeBytes { raw in
    guard
      let header = try? FrameHeader(
        decoding: UnsafeRawBufferPointer(rebasing: raw[0..<FrameHeader.byteCount]), limits: .standard),
      raw.count >= FrameHeader.byteCount + Int(header.bodyBytes),
      let message = try? WireMessage(
        header: header,
        body: UnsafeRawBufferPointer(
          rebasing: raw[FrameHeader.byteCount..<FrameHeader.byteCount + Int(header.bodyBytes)]),
        limits: .standard)
    else {
      stats.note("a stalled reader's first frame did not decode")
      return
    }
    guard case .getResponse = message else {
      if case .error = message { stats.refused.add(1, ordering: .relaxed) }
      return
    }
    let payload = UnsafeRawBufferPointer(rebasing: raw[(FrameHeader.byteCount + Int(header.bodyBytes))...])
    if payload.count >= pattern.count { stats.misses.add(1, ordering: .relaxed) }  // not stalled after all
    let count = min(payload.count, pattern.count)
    if count > 0, memcmp(payload.baseAddress!, pattern.baseAddress!, count) != 0 {
      stats.violation("a stalled reader received bytes that are not its block's (\(count) bytes compared)")
    }
  }
}

/// PUTs announcing 30 MiB that send 12 KiB and stall; the node must cut them at the deadline.
private func stalledPutWriter(_ settings: AttackSettings, _ stats: AttackStats) {
  let announced = 30 << 20
  let deadline = settings.requestTimeoutSeconds + Double(announced) / settings.minTransferBytesPerSecond
  var round: UInt64 = 0
  while soakRunning(until: settings.end) {
    round += 1
    stats.attempts.add(1, ordering: .relaxed)
    guard let socket = attackerSession(settings, stats) else { continue }
    let put = PutRequest(items: [.init(key: blockKey(5, round), length: UInt64(announced), checksum: 0)])
    socket.sendAvailable(put.frameBytes(requestID: 2, ringEpoch: 0) + [UInt8](repeating: 1, count: 12 << 10))
    let (bytes, closed) = RawFrames.waitClosed(socket, seconds: deadline + 10, keep: 64)
    if closed { stats.dropped.add(1, ordering: .relaxed) } else { stats.note("a stalled PUT outlived its deadline") }
    if !bytes.isEmpty { stats.refused.add(1, ordering: .relaxed) }
  }
}

/// Takes leases (maximal durations) until the node refuses, holds them, and starts again.
private func leaseHog(_ settings: AttackSettings, _ stats: AttackStats) {
  while soakRunning(until: settings.end) {
    stats.attempts.add(1, ordering: .relaxed)
    guard let socket = attackerSession(settings, stats) else { continue }
    var refusedHere = false
    for n in 0..<2000 where !refusedHere {
      let lookup = LookupRequest(keys: n % 2 == 0 ? [] : [blockKey(77, UInt64(n))], leaseMilliseconds: .max)
      guard (try? socket.writeAll(lookup.frameBytes(requestID: UInt64(n + 2), ringEpoch: 0))) != nil,
        let reply = try? RawFrames.readFrame(socket)
      else {
        stats.dropped.add(1, ordering: .relaxed)
        break
      }
      if case .error = reply {
        stats.refused.add(1, ordering: .relaxed)
        refusedHere = true
      }
    }
    if !refusedHere { stats.misses.add(1, ordering: .relaxed) }
    if RawFrames.waitClosed(socket, seconds: settings.leaseHoldSeconds).closed {
      stats.dropped.add(1, ordering: .relaxed)
    }
  }
}

/// After HELLO, frames broken in several ways; the node must answer with an error or close.
private func malformedFrames(_ settings: AttackSettings, _ stats: AttackStats) {
  let lookup = LookupRequest(keys: [blockKey(2, 2), blockKey(3, 3)]).frameBytes(requestID: 7, ringEpoch: 0)
  var flippedHeader = lookup
  flippedHeader[9] ^= 0x40
  var flippedBody = lookup
  flippedBody[70] ^= 0x01
  var generator = SystemRandomNumberGenerator()
  var round = 0
  while soakRunning(until: settings.end) {
    round += 1
    let frame: [UInt8]
    switch round % 4 {
    case 0: frame = flippedHeader
    case 1: frame = flippedBody
    case 2: frame = (0..<200).map { _ in UInt8.random(in: 0...255, using: &generator) }
    default: frame = Array(lookup[0..<(lookup.count - 10)])  // truncated, then the write side closed
    }
    stats.attempts.add(1, ordering: .relaxed)
    guard case (let socket, let answer)? = try? RawFrames.session(settings.node, token: settings.attackerToken),
      case .helloResponse = answer
    else {
      stats.refused.add(1, ordering: .relaxed)
      Thread.sleep(forTimeInterval: 0.5)
      continue
    }
    socket.sendAvailable(frame)
    if round % 4 == 3 { _ = Glibc.shutdown(socket.descriptor, Int32(SHUT_WR)) }
    let (bytes, closed) = RawFrames.waitClosed(socket, seconds: settings.requestTimeoutSeconds + 10, keep: 64)
    if !bytes.isEmpty { stats.refused.add(1, ordering: .relaxed) }
    if closed {
      stats.dropped.add(1, ordering: .relaxed)
    } else {
      stats.note("a malformed frame left the connection open")
    }
    Thread.sleep(forTimeInterval: 0.05)  // the attack's pace
  }
}

/// A tenant token asking for the peer capability (in the victim's namespace), and a wrong token.
private func peerClaims(_ settings: AttackSettings, _ stats: AttackStats) {
  var round = 0
  while soakRunning(until: settings.end) {
    round += 1
    stats.attempts.add(1, ordering: .relaxed)
    let wrongToken = round % 2 == 0
    let token = wrongToken ? "not-a-token-of-this-node-\(round)" : settings.attackerToken
    guard
      case (_, let answer)? = try? RawFrames.session(
        settings.node, token: token, peer: !wrongToken, peerNamespace: settings.victimNamespace)
    else {
      stats.dropped.add(1, ordering: .relaxed)
      continue
    }
    switch answer {
    case .error: stats.refused.add(1, ordering: .relaxed)
    case .helloResponse(let response):
      if wrongToken {
        stats.violation("a wrong token was accepted (namespace \(response.namespace.name))")
      } else if response.capabilities.contains(.peer) {
        stats.violation("a tenant token was granted the peer capability in \(response.namespace.name)")
      } else {
        stats.note("a peer claim was answered without the capability (not refused)")
      }
    default: stats.note("a HELLO was answered with \(answer)")
    }
    Thread.sleep(forTimeInterval: 0.05)  // the attack's pace
  }
}

/// 32 admin connections that send a request one byte per second, re-opened when closed.
private func slowAdminConnections(_ settings: AttackSettings, _ stats: AttackStats) {
  let request = Array("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".utf8)
  var sockets = [(TCPSocket, Int)?](repeating: nil, count: 32)
  var probe = [UInt8](repeating: 0, count: 4096)
  var tick = Date()
  while soakRunning(until: settings.end) {
    // Once a second: a byte on every open connection, and closed ones opened again.
    let ticking = Date() >= tick
    if ticking { tick = Date().addingTimeInterval(1) }
    for index in sockets.indices where ticking && sockets[index] == nil {
      stats.attempts.add(1, ordering: .relaxed)
      if let socket = try? RawFrames.connect(settings.admin, bufferBytes: 4096) {
        socket.sendAvailable(Array(request[0..<4]))
        sockets[index] = (socket, 4)
      }
    }
    let live = sockets.indices.filter { sockets[$0] != nil }
    var watched = live.map { pollfd(fd: sockets[$0]!.0.descriptor, events: Int16(POLLIN) | pollReadHangUp, revents: 0) }
    _ = poll(&watched, nfds_t(watched.count), Int32(max(1, tick.timeIntervalSinceNow * 1000)))
    for (slot, entry) in zip(live, watched) {
      let (socket, sent) = sockets[slot]!
      if entry.revents != 0 {
        let answered = probe.withUnsafeMutableBytes { raw in (try? socket.receiveAvailable(raw)) ?? -1 }
        if answered != 0 {
          stats.dropped.add(1, ordering: .relaxed)
          sockets[slot] = nil
          continue
        }
      }
      guard ticking else { continue }
      let next = sent < request.count ? [request[sent]] : [0x61]
      _ = socket.sendAvailable(next)
      sockets[slot] = (socket, sent + 1)
    }
  }
}
