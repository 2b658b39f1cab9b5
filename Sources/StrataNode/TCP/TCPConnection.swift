// One authenticated TCP connection of the node, on a thread of its own: frames are received by
// StrataWire's FrameAssembler (the code the fuzzer drives) under deadlines — the idle deadline
// between requests, a transfer deadline once a frame has begun — and handed to the request
// pipeline, which moves payloads through `TCPPayloadTransport`. A malformed frame or a missed
// deadline closes this connection only, with the reason logged and counted.

import Dispatch
import Logging
import StrataCore
import StrataStorage
import StrataTCP
import StrataWire
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

final class TCPConnection: Sendable {
  enum Phase {
    case idle
    case busy
    case closing
  }

  let id: Int
  let socket: TCPSocket
  /// Accepted on the same-host path's Unix-domain socket (SameHost/SameHostTransport.swift).
  let isSameHost: Bool
  private let server: NodeServer
  private let phase = Mutex(Phase.idle)
  private let closed = DispatchSemaphore(value: 0)

  init(id: Int, socket: TCPSocket, server: NodeServer, isSameHost: Bool = false) {
    self.id = id
    self.socket = socket
    self.isSameHost = isSameHost
    self.server = server
  }

  /// Closes the connection now if it waits for a request, else after the request in progress.
  func closeWhenIdle() {
    let wasIdle = phase.withLock { phase -> Bool in
      defer { phase = .closing }
      return phase == .idle
    }
    if wasIdle { socket.shutdown() }
  }

  func waitUntilClosed() {
    closed.wait()
    closed.signal()  // let other waiters through too
  }

  private func enter(_ next: Phase) -> Bool {
    phase.withLock { phase in
      guard phase != .closing else { return false }
      phase = next
      return true
    }
  }

  /// Sends the HELLO answer, then serves requests until the peer leaves, a deadline passes, a
  /// frame is malformed or the node stops.
  func run(session: RequestSession, helloResponse: [UInt8]) {
    var session = session
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: TCPPayloadTransport.scratchBytes, alignment: 64)
    defer {
      session.end()
      scratch.deallocate()
      socket.shutdown()
      server.connectionEnded(id)
      closed.signal()
    }
    do {
      try socket.writeAll(helloResponse, deadline: session.transferDeadline(bytes: helloResponse.count))
    } catch {
      return
    }
    let stream = TCPPayloadTransport(socket: socket, scratch: scratch)
    guard isSameHost else {
      var transport = stream
      serveRequests(&session, over: &transport, scratch: scratch) { _, _ in }
      return
    }
    server.count {
      $0.sameHostConnectionsAccepted += 1
      $0.sameHostConnectionsOpen += 1
    }
    defer { server.count { $0.sameHostConnectionsOpen -= 1 } }
    let region: SharedMemoryRegion?
    if session.grant.capabilities.contains(.sharedMemory) {
      guard let adopted = adoptRegion(session) else { return }
      region = adopted
    } else {
      region = nil
    }
    var transport = SameHostPayloadTransport(stream: stream, server: server, region: region)
    serveRequests(&session, over: &transport, scratch: scratch) { transport, request in transport.expect(request) }
  }

  /// Receives the client's region offer (by the handshake deadline), maps the region, answers.
  /// nil when the connection must end (refused or gone; the refusal is answered and counted).
  private func adoptRegion(_ session: RequestSession) -> SharedMemoryRegion?? {
    let deadline = Deadline.after(milliseconds: server.configuration.handshakeTimeoutMilliseconds)
    let offerBytes = UnsafeMutableRawBufferPointer.allocate(byteCount: RegionOffer.byteCount, alignment: 8)
    defer { offerBytes.deallocate() }
    var descriptor: Int32? = nil
    do throws(StrataError) {
      descriptor = try socket.receiveMessage(offerBytes, deadline: deadline)
      let offer = try RegionOffer(decoding: UnsafeRawBufferPointer(offerBytes))
      var region: SharedMemoryRegion? = nil
      if let fd = descriptor {
        descriptor = nil  // adopt owns it from here, and closes it on a refusal
        region = try SharedMemoryRegion.adopt(
          descriptor: fd, declaredBytes: offer.bytes, bytesMax: server.configuration.sameHostRegionBytesMax)
      } else if offer.bytes != 0 {
        throw StrataError(.invalidArgument, "a region offer of \(offer.bytes) bytes came without its memfd")
      }
      try socket.writeAll(RegionAnswer(code: 0, bytes: offer.bytes).encoded, deadline: deadline)
      socket.setTimeout(milliseconds: 0)
      return .some(region)
    } catch {
      if let descriptor { close(descriptor) }
      server.count { $0.sameHostRegionsRefused += 1 }
      server.logger.info(
        "refused a same-host region", metadata: ["peer": "\(socket.peer)", "reason": "\(error.message)"])
      if error.code != .unavailable && error.code != .timeout {
        socket.sendAvailable(RegionAnswer(code: error.code.number, bytes: 0).encoded)
      }
      return nil
    }
  }

  /// Serves requests until the peer leaves, a deadline passes, a frame is malformed or the node
  /// stops; `prepare` shows the transport each request before the pipeline serves it.
  private func serveRequests<Transport: PayloadTransport>(
    _ session: inout RequestSession, over transport: inout Transport, scratch: UnsafeMutableRawBufferPointer,
    prepare: (inout Transport, WireMessage) -> Void
  ) {
    let limits = server.configuration.pipeline
    var assembler = FrameAssembler(limits: server.configuration.limits, receiving: .request)
    while true {
      let frame: (FrameHeader, WireMessage)
      do throws(StrataError) {
        guard
          let received = try receiveFrame(
            &assembler, scratch: scratch, idle: Deadline.after(milliseconds: limits.idleTimeoutMilliseconds),
            session: session)
        else { return }
        frame = received
      } catch {
        end(error)
        return
      }
      do throws(StrataError) {
        prepare(&transport, frame.1)
        try session.serve(frame.1, header: frame.0, over: &transport)
        if frame.0.payloadBytes > 0 { assembler.consumePayload(frame.0.payloadBytes) }
      } catch {
        end(error)
        return
      }
      guard enter(.idle) else { return }
    }
  }

  /// Receives the next whole frame (header and checked body; the payload stays in the socket for
  /// the transport): the header by `idle`, the body within its transfer deadline. nil when the
  /// connection is closing.
  private func receiveFrame(
    _ assembler: inout FrameAssembler, scratch: UnsafeMutableRawBufferPointer, idle: Deadline, session: RequestSession
  ) throws(StrataError) -> (FrameHeader, WireMessage)? {
    var deadline = idle
    var begun = false
    while true {
      let missing: Int
      switch assembler.phase {
      case .header(let bytes): missing = bytes
      case .body(let bytes): missing = bytes
      case .payload, .failed:
        preconditionFailure("TCPConnection: frame reception in phase \(assembler.phase)")
      }
      let chunk = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<min(missing, scratch.count)])
      do throws(StrataError) {
        try socket.readExactly(chunk, deadline: deadline)
      } catch  where !begun && error.code == .timeout {
        server.count { $0.idleClosed += 1 }
        throw StrataError(.unavailable, "idle past limits.idle_timeout")
      }
      if !begun {
        begun = true
        guard enter(.busy) else { return nil }
      }
      var fed = UnsafeRawBufferPointer(chunk)
      while !fed.isEmpty {
        let step: FrameAssembler.Step
        do throws(StrataError) {
          step = try assembler.feed(fed)
        } catch {
          throw StrataError(.protocolError, error.message)
        }
        fed = UnsafeRawBufferPointer(rebasing: fed[step.consumedBytes...])
        switch step.event {
        case .frame(let header, let message)?:
          precondition(fed.isEmpty, "TCPConnection reads no further than the frame in progress")
          return (header, message)
        case .payloadBytes?:
          preconditionFailure("TCPConnection never feeds payload bytes to the assembler")
        case nil:
          break
        }
      }
      // The header is in: the rest of the frame is due within its transfer deadline.
      if case .body(let bytes) = assembler.phase, deadline == idle {
        deadline = session.transferDeadline(bytes: bytes)
      }
    }
  }

  /// Logs and counts why the connection ends.
  private func end(_ error: StrataError) {
    switch error.code {
    case .protocolError:
      server.count { $0.malformedFrames += 1 }
      server.logger.warning(
        "closing connection: malformed frame", metadata: ["peer": "\(socket.peer)", "reason": "\(error.message)"])
    case .timeout:
      server.count { $0.deadlinesMissed += 1 }
      server.logger.warning(
        "closing connection: deadline passed", metadata: ["peer": "\(socket.peer)", "reason": "\(error.message)"])
    default:
      server.logger.debug("connection ended", metadata: ["peer": "\(socket.peer)", "reason": "\(error.message)"])
    }
  }
}

/// Moves payloads over a blocking TCP socket: GET blocks from pinned arena memory with one
/// gathered `sendmsg`, PUT blocks from the socket straight into their reserved slots.
struct TCPPayloadTransport: PayloadTransport {
  /// Header and body chunks, and PUT payloads nobody keeps, pass through this much memory.
  static let scratchBytes = 256 << 10

  let socket: TCPSocket
  let scratch: UnsafeMutableRawBufferPointer
  var name: String { "tcp" }

  mutating func respond(_ frame: [UInt8], deadline: Deadline) throws(StrataError) {
    try socket.writeAll(frame, deadline: deadline)
  }

  mutating func deliverGet(
    items: [GetResponse.Item], ranges: [UnsafeRawBufferPointer?], response: ResponseFrame, deadline: Deadline
  ) throws(StrataError) -> [GetResponse.Item] {
    // Returns only when the kernel has copied every byte (or the send failed): nothing refers to
    // the ranges afterwards.
    try socket.writeAll(
      response.bytes(.getResponse(GetResponse(items: items))), then: ranges.compactMap { $0 }, deadline: deadline)
    return items
  }

  mutating func receivePut(_ slots: [PayloadSlot], deadline: Deadline) throws(StrataError) {
    for slot in slots {
      switch slot {
      case .into(let buffer): try socket.readExactly(buffer, deadline: deadline)
      case .skip(let bytes): try socket.discard(bytes, scratch: scratch, deadline: deadline)
      }
    }
  }
}
