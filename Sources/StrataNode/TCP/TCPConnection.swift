// One authenticated TCP connection of the node, on a thread of its own: frames are received by
// StrataWire's FrameReader (the code the fuzzers drive) under deadlines — the idle deadline
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
    defer {
      session.end()
      socket.shutdown()
      server.connectionEnded(id)
      closed.signal()
    }
    do {
      try socket.writeAll(helloResponse, deadline: session.transferDeadline(bytes: helloResponse.count))
    } catch {
      return
    }
    let stream = TCPPayloadTransport(
      socket: socket,
      reader: FrameReader(
        limits: server.configuration.limits, receiving: .request, bufferBytes: TCPPayloadTransport.bufferBytes))
    guard isSameHost else {
      var transport = stream
      serveRequests(&session, over: &transport, reader: stream.reader) { _, _ in }
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
    serveRequests(&session, over: &transport, reader: stream.reader) { transport, request in
      transport.expect(request)
    }
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
  /// stops; `prepare` shows the transport each request before the pipeline serves it. Frames come
  /// from `reader`, which the transport receives payloads through: the header by the idle deadline,
  /// the body within its transfer deadline.
  private func serveRequests<Transport: PayloadTransport>(
    _ session: inout RequestSession, over transport: inout Transport, reader: FrameReader,
    prepare: (inout Transport, WireMessage) -> Void
  ) {
    let limits = server.configuration.pipeline
    var source = socket
    while true {
      do throws(StrataError) {
        var begun = false
        let received: (FrameHeader, WireMessage)?
        do throws(StrataError) {
          received = try reader.nextFrame(
            from: &source, deadline: Deadline.after(milliseconds: limits.idleTimeoutMilliseconds)
          ) { bodyBytes throws(StrataError) in
            begun = true
            guard enter(.busy) else { throw StrataError(.unavailable, "the node is stopping") }
            return session.transferDeadline(bytes: bodyBytes)
          }
        } catch  where !begun && error.code == .timeout {
          server.count { $0.idleClosed += 1 }
          throw StrataError(.unavailable, "idle past limits.idle_timeout")
        } catch  where error.wireViolation != nil {
          throw StrataError(.protocolError, error.message, cause: error.cause)
        }
        guard let (header, message) = received else { return }
        prepare(&transport, message)
        try session.serve(message, header: header, over: &transport)
        // What the transport did not receive from the stream moved through a same-host region.
        reader.endFrame()
      } catch {
        end(error)
        return
      }
      guard enter(.idle) else { return }
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
/// gathered `sendmsg`, PUT blocks through the connection's frame reader straight from the socket
/// into their reserved slots.
struct TCPPayloadTransport: PayloadTransport {
  /// Header and body chunks, and PUT payloads nobody keeps, pass through this much memory.
  static let bufferBytes = 256 << 10

  let socket: TCPSocket
  let reader: FrameReader
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

  mutating func receivePut(_ slots: [PayloadSlot], firstItem: Int, deadline: Deadline) throws(StrataError) -> [UInt32?]
  {
    var source = socket
    return try reader.receive(slots, from: &source, deadline: deadline)
  }
}
