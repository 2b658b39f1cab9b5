// Where every TCP connection waits until its HELLO is decided: one thread and one epoll set for
// the listener and all unauthenticated sockets, so a flood of idle or half-sent connections costs
// a few hundred bytes each and no thread. A connection gets a thread of its own only once its
// HELLO is granted (and admitted under the connection limits); refusals are answered inline.
//
// Bounds: at most `handshakesMax` connections wait (a new one closes the oldest waiting, so a
// flood can delay a real client by at most the flood's rate times the table, never lock it out);
// each must finish HELLO by its deadline; before HELLO a frame body may be at most a HELLO's size.
//
// With TLS the handshake runs here too, one non-blocking step per readable event and within the
// same deadline, so a stalled TLS handshake holds a table entry, never a thread. A plaintext
// frame sent to the TLS port is answered, in plaintext, with an error that says so.

import CStrataLinux
import Logging
import StrataCore
import StrataTCP
import StrataWire
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

final class HandshakeGate: @unchecked Sendable {
  // @unchecked: `pending`, `order` and the epoll set are used by the gate's own thread only
  // (`run`); other threads touch only `pendingCounter` (atomic) and the wake pipe's write end.

  private struct Pending {
    let socket: TCPSocket
    /// Reads the HELLO in pieces of at most a header's size, so a waiting connection holds a
    /// few hundred bytes (what it has sent so far, bounded by a HELLO's size).
    let reader: FrameReader
    let deadline: Deadline
    let sequence: UInt64
    /// The TLS context current when the connection was accepted (nil: plaintext port).
    let tls: TLSContext?
    /// Whether its TLS handshake is done (always true on a plaintext port).
    var secured: Bool
  }

  /// What a connection may send before its HELLO is decided: a HELLO frame, nothing else.
  static let limits = WireLimits(bodyBytesMax: HelloRequest.encodedBytesMax, payloadBytesMax: 0, itemsPerBatchMax: 0)
  /// How long accepting pauses when the process is out of descriptors.
  static let descriptorBackoffMilliseconds: UInt64 = 100

  private let listener: TCPListener
  /// "tcp", or "shm" for the same-host path's Unix-domain listener: what HELLO is decided for.
  private let transport: String
  private let handshakesMax: Int
  private let timeoutMilliseconds: UInt64
  private let poller: Int32
  private let wakeRead: Int32
  private let wakeWrite: Int32
  private var pending: [Int32: Pending] = [:]
  /// (sequence, descriptor) in accept order, which is deadline order; entries of connections
  /// already gone are skipped when they surface.
  private var order: [(UInt64, Int32)] = []
  private var orderHead = 0
  private var nextSequence: UInt64 = 0
  private let pendingCounter = Atomic<Int>(0)
  /// Each turn of `run`, for the node's liveness (`NodeServer.livenessProblems`).
  let heartbeat: LoopHeartbeat

  init(listener: TCPListener, transport: String = "tcp", handshakesMax: Int, timeoutMilliseconds: UInt64)
    throws(StrataError)
  {
    precondition(handshakesMax > 0, "HandshakeGate needs room for at least one handshake")
    self.listener = listener
    self.transport = transport
    self.handshakesMax = handshakesMax
    self.timeoutMilliseconds = timeoutMilliseconds
    heartbeat = LoopHeartbeat(name: "the data plane's accept loop (\(transport))")
    poller = strata_poller_create()
    guard poller >= 0 else { throw StrataError(.ioError, "epoll_create1 failed: \(String(cString: strerror(errno)))") }
    var ends: [Int32] = [0, 0]
    guard strata_pipe(&ends) == 0 else {
      close(poller)
      throw StrataError(.ioError, "pipe() failed: \(String(cString: strerror(errno)))")
    }
    wakeRead = ends[0]
    wakeWrite = ends[1]
  }

  deinit {
    close(poller)
    close(wakeRead)
    close(wakeWrite)
  }

  /// Connections waiting for their HELLO now.
  var pendingCount: Int { pendingCounter.load(ordering: .relaxed) }

  /// Makes `run` close every waiting connection and return.
  func stop() {
    var byte: UInt8 = 1
    _ = write(wakeWrite, &byte, 1)
    listener.shutdown()
  }

  /// Accepts and authenticates connections until `stop`; granted ones are handed to the server.
  func run(server: NodeServer) {
    listener.setNonBlocking()
    watch(listener.descriptor)
    watch(wakeRead)
    var acceptResumesAt: Deadline?
    var ready = [Int32](repeating: -1, count: 256)
    defer {
      for descriptor in Array(pending.keys) { drop(descriptor) }
      heartbeat.end()
    }
    while true {
      let now = MonotonicTime.nowNanoseconds
      heartbeat.beat(now: now)
      // An idle gate still goes round once a `turnMilliseconds`, so a wedged one can be told apart.
      var wait = oldestDeadline().map { Int32(clamping: $0.remainingMilliseconds(now: now)) } ?? -1
      if let resume = acceptResumesAt {
        let left = Int32(clamping: resume.remainingMilliseconds(now: now))
        wait = wait < 0 ? left : min(wait, left)
      }
      wait = wait < 0 ? LoopHeartbeat.turnMilliseconds : min(wait, LoopHeartbeat.turnMilliseconds)
      let count = ready.withUnsafeMutableBufferPointer {
        strata_poller_wait(poller, $0.baseAddress, Int32($0.count), wait)
      }
      if count < 0 && errno != EINTR { return }
      for descriptor in ready.prefix(Int(max(count, 0))) {
        if descriptor == wakeRead { return }
        if descriptor == listener.descriptor {
          switch acceptAll(server) {
          case .stopped: return
          case .outOfDescriptors:
            unwatch(listener.descriptor)
            acceptResumesAt = Deadline.after(milliseconds: Self.descriptorBackoffMilliseconds)
            server.logger.warning(
              "out of file descriptors: closed the oldest handshake, accepting again in 100ms",
              metadata: ["pending": "\(pending.count)"])
          case .drained: break
          }
        } else {
          advance(descriptor, server)
        }
      }
      expire(server)
      if let resume = acceptResumesAt, resume.hasPassed() {
        acceptResumesAt = nil
        watch(listener.descriptor)
      }
    }
  }

  private enum AcceptOutcome {
    case drained
    case outOfDescriptors
    case stopped
  }

  /// Takes the connections waiting in the listen queue (a bounded number per wake, for fairness).
  private func acceptAll(_ server: NodeServer) -> AcceptOutcome {
    for _ in 0..<256 {
      switch listener.acceptAvailable() {
      case .connection(let socket):
        if pending.count >= handshakesMax {
          evictOldest()
          server.count { $0.handshakesEvicted += 1 }
        }
        let sequence = nextSequence
        nextSequence += 1
        // The same-host path is local (socket mode 0660, node id checked) and stays plaintext.
        let tls = transport == "shm" ? nil : server.tls
        pending[socket.descriptor] = Pending(
          socket: socket,
          reader: FrameReader(limits: Self.limits, receiving: .request, bufferBytes: FrameHeader.byteCount),
          deadline: Deadline.after(milliseconds: timeoutMilliseconds), sequence: sequence, tls: tls,
          secured: tls == nil)
        order.append((sequence, socket.descriptor))
        pendingCounter.store(pending.count, ordering: .relaxed)
        watch(socket.descriptor)
      case .none: return .drained
      case .outOfDescriptors:
        if !pending.isEmpty {
          evictOldest()
          server.count { $0.handshakesEvicted += 1 }
        }
        return .outOfDescriptors
      case .closed: return .stopped
      }
    }
    return .drained
  }

  /// Reads what a waiting connection sent (never more than its HELLO frame) and decides it once
  /// the frame is whole.
  private func advance(_ descriptor: Int32, _ server: NodeServer) {
    guard var entry = pending[descriptor] else { return }
    if !entry.secured {
      guard secure(&entry, server) else { return }
      pending[descriptor] = entry
    }
    var source = AvailableBytes(socket: entry.socket)
    do throws(StrataError) {
      // nil: all that has arrived is taken (the reader keeps it); wait for more.
      guard
        let (header, message) = try entry.reader.nextFrame(
          from: &source, deadline: .never, headerArrived: { _ in .never })
      else { return }
      unwatch(descriptor)
      remove(descriptor)
      decide(header, message, socket: entry.socket, server)
    } catch {
      if error.code != .unavailable {
        server.count { $0.malformedFrames += 1 }
        server.logger.info(
          "closing connection before HELLO: malformed frame",
          metadata: ["peer": "\(entry.socket.peer)", "reason": "\(error.message)"])
      }
      drop(descriptor)
    }
  }

  /// The bytes every Strata frame starts with ("STRW"): a plaintext client on the TLS port.
  private static let magicBytes: [UInt8] = withUnsafeBytes(of: WireProtocol.magic.littleEndian) { Array($0) }

  /// Advances a TLS handshake by what has arrived. Returns true once it is done (the HELLO may
  /// follow at once, decrypted already); false while it waits or after closing the connection.
  private func secure(_ entry: inout Pending, _ server: NodeServer) -> Bool {
    let descriptor = entry.socket.descriptor
    do throws(StrataError) {
      if entry.socket.tls == nil, let context = entry.tls {
        let first = entry.socket.peekAvailable(FrameHeader.byteCount)
        let prefix = min(first.count, Self.magicBytes.count)
        if prefix > 0 && Array(first.prefix(prefix)) == Array(Self.magicBytes.prefix(prefix)) {
          if first.count < FrameHeader.byteCount { return false }  // wait for the whole header
          refusePlaintext(entry.socket, header: first, server)
          unwatch(descriptor)
          remove(descriptor)
          return false
        }
        if first.isEmpty { return false }
        try entry.socket.attachTLS(context)
      }
      guard let session = entry.socket.tls else { return false }
      switch try session.handshake(peer: entry.socket.peer) {
      case .wantRead, .wantWrite:
        // A full socket buffer during a server's first flight (a few KiB) means a peer that does
        // not read: the handshake deadline closes it.
        pending[descriptor] = entry
        return false
      case .done:
        entry.secured = true
        let mode = session.mode
        server.count { stats in
          if mode == .kernel { stats.tlsKernel += 1 } else { stats.tlsUser += 1 }
        }
        server.logger.info(
          "TLS connection",
          metadata: [
            "peer": "\(entry.socket.peer)", "tls_mode": "\(mode.rawValue)", "version": "\(session.version)",
            "certificate": "\(session.peerCommonName ?? "none")",
          ])
        return true
      }
    } catch {
      server.count { $0.tlsHandshakesFailed += 1 }
      server.logger.info(
        "refused a connection: TLS handshake failed",
        metadata: ["peer": "\(entry.socket.peer)", "reason": "\(error.message)"])
      drop(descriptor)
      return false
    }
  }

  /// Answers a plaintext HELLO on the TLS port, in plaintext, with an error that says what to do.
  private func refusePlaintext(_ socket: TCPSocket, header bytes: [UInt8], _ server: NodeServer) {
    let requestID = bytes.withUnsafeBytes { raw in
      (try? FrameHeader(decoding: raw, limits: Self.limits))?.requestID ?? 0
    }
    server.count { $0.tlsPlaintextRefused += 1 }
    server.logger.info("refused a plaintext connection on the TLS port", metadata: ["peer": "\(socket.peer)"])
    let error = StrataError(
      .permissionDenied,
      "this port requires TLS: connect with TLS and the CA that signed the node's certificate (--tls-ca)")
    socket.sendAvailable(WireMessage.error(.hello, ErrorBody(error)).frameBytes(requestID: requestID, ringEpoch: 0))
    socket.shutdown()
  }

  /// Grants or refuses a whole first frame; a granted connection gets its thread.
  private func decide(_ header: FrameHeader, _ message: WireMessage, socket: TCPSocket, _ server: NodeServer) {
    guard case .helloRequest(let hello) = message else {
      server.count { $0.malformedFrames += 1 }
      refuse(socket, header, StrataError(.protocolError, "the first frame must be HELLO, got \(header.opcode)"), server)
      return
    }
    let grant: SessionGrant
    let response: HelloResponse
    do throws(StrataError) {
      (grant, response) = try server.authenticate(
        hello, source: socket.peerHost, transport: transport, tls: socket.tls)
    } catch {
      refuse(socket, header, error, server)
      return
    }
    socket.setBlocking(true)
    // A reload that revokes the token shuts the socket down: the connection's blocking calls fail
    // at once, idle or mid-transfer, and its thread ends the session.
    let session = RequestSession(
      server: server, grant: grant, source: socket.peerHost, close: { socket.shutdown() })
    server.startConnection(
      socket: socket, session: session,
      hello: WireMessage.helloResponse(response).frameBytes(requestID: header.requestID, ringEpoch: server.epoch),
      sameHost: transport == "shm")
  }

  /// Answers a refused HELLO with its error, without waiting on the peer, and closes.
  private func refuse(_ socket: TCPSocket, _ header: FrameHeader, _ error: StrataError, _ server: NodeServer) {
    server.logger.info(
      "refused a connection", metadata: ["peer": "\(socket.peer)", "reason": "\(error.message)"])
    socket.sendAvailable(
      WireMessage.error(.hello, ErrorBody(error)).frameBytes(requestID: header.requestID, ringEpoch: 0))
    socket.shutdown()
  }

  /// Closes connections whose handshake deadline passed (the oldest come first).
  private func expire(_ server: NodeServer) {
    let now = MonotonicTime.nowNanoseconds
    while orderHead < order.count {
      let (sequence, descriptor) = order[orderHead]
      guard let entry = pending[descriptor], entry.sequence == sequence else {
        orderHead += 1
        continue
      }
      guard entry.deadline.hasPassed(now: now) else { break }
      orderHead += 1
      drop(descriptor)
      server.count { $0.handshakesTimedOut += 1 }
    }
    compactOrder()
  }

  private func oldestDeadline() -> Deadline? {
    while orderHead < order.count {
      let (sequence, descriptor) = order[orderHead]
      if let entry = pending[descriptor], entry.sequence == sequence { return entry.deadline }
      orderHead += 1
    }
    return nil
  }

  private func evictOldest() {
    while orderHead < order.count {
      let (sequence, descriptor) = order[orderHead]
      orderHead += 1
      if let entry = pending[descriptor], entry.sequence == sequence {
        drop(descriptor)
        return
      }
    }
  }

  private func compactOrder() {
    if orderHead > 4096 && orderHead * 2 > order.count {
      order.removeFirst(orderHead)
      orderHead = 0
    }
  }

  private func drop(_ descriptor: Int32) {
    unwatch(descriptor)
    remove(descriptor)?.socket.shutdown()
  }

  @discardableResult
  private func remove(_ descriptor: Int32) -> Pending? {
    let entry = pending.removeValue(forKey: descriptor)
    pendingCounter.store(pending.count, ordering: .relaxed)
    return entry
  }

  private func watch(_ descriptor: Int32) {
    _ = strata_poller_add(poller, descriptor)
  }

  private func unwatch(_ descriptor: Int32) {
    _ = strata_poller_remove(poller, descriptor)
  }
}

/// A socket read without waiting: what has arrived, or 0 when nothing has.
private struct AvailableBytes: ByteSource {
  let socket: TCPSocket

  func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: Deadline) throws(StrataError) -> Int {
    try socket.receiveAvailable(buffer)
  }
}
