// The HTTP/1.1 server (the admin API's): one event-loop thread reads and writes every connection
// (non-blocking sockets, poll), and a fixed pool of worker threads runs the handlers. A slow or
// idle client costs a buffer and a poll slot, never a thread; every request must arrive whole
// within a deadline; cheap requests (the admin API's probes) are answered on the loop itself, so
// they never wait behind other calls; at the connection limit the oldest connection that is not
// being answered makes room for the new one. With TLS, each connection's handshake runs on the
// loop too, step by step, within the request deadline.

import Dispatch
import Foundation
public import Logging
public import StrataCore
public import StrataTCP
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Bounds of the HTTP server. Memory held is at most `connectionsMax` × (header limit + body
/// limit) of request bytes plus the responses being written.
public struct HTTPServerLimits: Sendable {
  /// Connections open at once; at the limit the oldest one not being answered is closed.
  public var connectionsMax: Int
  /// A request must arrive whole within this, counted from the connection's start or the end of
  /// the previous response; a response must be written within it too.
  public var requestTimeoutMilliseconds: UInt64
  /// Threads running handlers (inline requests run on the event loop and need none).
  public var workers: Int
  /// Requests waiting for a worker; more (or more than half of `connectionsMax` waiting or
  /// running) are answered 503 at once.
  public var queuedRequestsMax: Int

  public init(
    connectionsMax: Int, requestTimeoutMilliseconds: UInt64, workers: Int = 4, queuedRequestsMax: Int = 64
  ) {
    self.connectionsMax = connectionsMax
    self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
    self.workers = workers
    self.queuedRequestsMax = queuedRequestsMax
  }
}

/// Counters of the HTTP server, read at one instant.
public struct HTTPServerStats: Sendable, Hashable {
  public var connectionsOpen = 0
  public var connectionsAccepted = 0
  /// Requests refused before a handler ran, by reason: malformed (4xx from the parser),
  /// timeout (not whole within the deadline), evicted (closed to make room), busy (worker queue full).
  public var refusedMalformed = 0
  public var refusedTimeout = 0
  public var refusedEvicted = 0
  public var refusedBusy = 0
}

/// Serves HTTP (see the file comment). `inline` says which requests are answered on the event
/// loop (cheap ones only: they hold up every other connection while they run); `refusal` writes
/// the body of the answers the server gives itself (4xx from the parser, 408, 503).
public final class HTTPServer: Sendable {
  public typealias Handler = @Sendable (HTTPRequest) -> HTTPResponse
  /// The response for a request refused before any handler ran: its status, code and reason.
  public typealias Refusal = @Sendable (_ status: Int, _ code: StrataError.Code, _ message: String) -> HTTPResponse

  private let listener: TCPListener
  private let limits: HTTPServerLimits
  private let handler: Handler
  private let inline: @Sendable (HTTPRequest) -> Bool
  private let refusal: Refusal
  /// Names the threads (`strata-NAME-loop`), log lines and the timeout setting (`NAME.request_timeout`).
  private let name: String
  private let tls: (@Sendable () -> TLSContext?)?
  private let logger: Logger
  private let wakePipe: (read: Int32, write: Int32)
  private let shared = Mutex(Shared())
  private let jobsReady = DispatchSemaphore(value: 0)
  private let loopEnded = DispatchSemaphore(value: 0)

  private struct Job {
    var connection: Int
    var request: HTTPRequest
  }

  private struct Completion {
    var connection: Int
    var bytes: [UInt8]
    var closes: Bool
  }

  /// What the event loop and the workers share.
  private struct Shared {
    var jobs: [Job] = []
    var completions: [Completion] = []
    var stopping = false
    var started = false
    var stopped = false
    var stats = HTTPServerStats()
  }

  /// Binds the listening socket now (port 0 picks a free one; see `address`).
  public init(
    name: String, listen: HostPort, limits: HTTPServerLimits, logger: Logger, tls: (@Sendable () -> TLSContext?)? = nil,
    inline: @escaping @Sendable (HTTPRequest) -> Bool, refusal: @escaping Refusal, handler: @escaping Handler
  ) throws(StrataError) {
    precondition(limits.connectionsMax > 0 && limits.workers > 0 && limits.requestTimeoutMilliseconds > 0)
    listener = try TCPListener(binding: listen, setting: "\(name).listen")
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else {
      throw StrataError(.ioError, "HTTP server: pipe failed: \(String(cString: strerror(errno)))")
    }
    wakePipe = (fds[0], fds[1])
    for fd in [fds[0], fds[1], listener.descriptor] { makeNonBlocking(fd) }
    self.limits = limits
    self.handler = handler
    self.inline = inline
    self.refusal = refusal
    self.name = name
    self.tls = tls
    self.logger = logger
  }

  deinit {
    close(wakePipe.read)
    close(wakePipe.write)
  }

  public var address: HostPort { listener.address }

  public var stats: HTTPServerStats { shared.withLock { $0.stats } }

  /// Starts the event loop and the workers (`limits.workers + 1` threads in all, for the server's life).
  public func start() {
    shared.withLock { $0.started = true }
    let loop = Thread { [self] in
      var loop = EventLoop(server: self)
      loop.run()
      loopEnded.signal()
    }
    loop.name = "strata-\(name)-loop"
    loop.start()
    for index in 0..<limits.workers {
      let worker = Thread { [self] in work() }
      worker.name = "strata-\(name)-worker-\(index)"
      worker.start()
    }
  }

  /// Stops accepting and closes every connection; waits for the event loop to end. Workers end
  /// after the handler they run, if any (a stuck handler never holds up a shutdown).
  public func stop() {
    let waits = shared.withLock { shared -> Bool in
      defer { shared.stopped = true }
      shared.stopping = true
      return shared.started && !shared.stopped
    }
    wake()
    guard waits else { return }
    for _ in 0..<limits.workers { jobsReady.signal() }
    loopEnded.wait()
  }

  private func wake() {
    var byte: UInt8 = 1
    _ = write(wakePipe.write, &byte, 1)
  }

  // MARK: Workers

  private func work() {
    while true {
      jobsReady.wait()
      let job = shared.withLock { shared -> Job? in
        guard !shared.stopping, !shared.jobs.isEmpty else { return nil }
        return shared.jobs.removeFirst()
      }
      guard let job else {
        if shared.withLock({ $0.stopping }) { return }
        continue
      }
      let response = handler(job.request)
      shared.withLock {
        $0.completions.append(
          Completion(
            connection: job.connection, bytes: response.bytes(closing: job.request.closes),
            closes: job.request.closes))
      }
      wake()
    }
  }

  // MARK: The event loop

  /// Every connection's state; touched by the event-loop thread only.
  private struct EventLoop {
    enum Phase {
      /// In the TLS handshake (waiting to read, or to write when `wantsWrite`).
      case handshaking
      /// Reading a request (or waiting for one on a kept-alive connection).
      case reading
      /// A worker is answering the request.
      case answering
      case writing
      /// The last response is out and our side shut: what the client still sends is read and
      /// dropped until it closes (closing at once with unread bytes would reset the connection
      /// and could destroy the response before the client read it).
      case lingering
    }

    struct Connection {
      let descriptor: Int32
      var parser = HTTPRequestParser()
      var phase = Phase.reading
      /// When the current phase must be over (ms, monotonic).
      var deadline: UInt64
      /// When the current request's wait began: the oldest reading connection is evicted first.
      var since: UInt64
      var output: [UInt8] = []
      var written = 0
      var closesAfterWrite = false
      /// The TLS session every byte goes through; nil for plaintext HTTP.
      var tls: TLSSession?
      var wantsWrite = false

      /// Receives into `buffer`: a count, 0 when nothing is there now, -1 at the end or on an error.
      func receive(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        if let tls {
          switch tls.read(buffer.baseAddress!, buffer.count) {
          case .moved(let count): return count
          case .wouldBlock: return 0
          case .closed, .failed: return -1
          }
        }
        while true {
          let count = recv(descriptor, buffer.baseAddress, buffer.count, 0)
          if count > 0 { return count }
          if count < 0 && errno == EINTR { continue }
          if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return 0 }
          return -1
        }
      }

      /// Sends from `buffer`: a count, 0 when the socket takes nothing now, -1 on an error.
      func transmit(_ buffer: UnsafeRawBufferPointer) -> Int {
        if let tls {
          switch tls.write(buffer.baseAddress!, buffer.count) {
          case .moved(let count): return count
          case .wouldBlock: return 0
          case .closed, .failed: return -1
          }
        }
        while true {
          let sent = send(descriptor, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL))
          if sent >= 0 { return sent }
          if errno == EINTR { continue }
          return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1
        }
      }
    }

    let server: HTTPServer
    var connections: [Int: Connection] = [:]
    var nextID = 0
    /// Accepting pauses until this time after the process ran out of descriptors.
    var acceptPausedUntil: UInt64 = 0

    init(server: HTTPServer) { self.server = server }

    var timeout: UInt64 { server.limits.requestTimeoutMilliseconds }
    /// How long a connection lingers after its last response at most.
    static let lingerMilliseconds: UInt64 = 2000

    mutating func run() {
      var pollSet: [pollfd] = []
      var ids: [Int] = []
      while !server.shared.withLock({ $0.stopping }) {
        let now = nowMilliseconds()
        pollSet.removeAll(keepingCapacity: true)
        ids.removeAll(keepingCapacity: true)
        pollSet.append(pollfd(fd: server.wakePipe.read, events: Int16(POLLIN), revents: 0))
        let accepting = now >= acceptPausedUntil
        pollSet.append(pollfd(fd: accepting ? server.listener.descriptor : -1, events: Int16(POLLIN), revents: 0))
        var nextDeadline = now + 1000
        // A connection being answered is not polled (nor timed): its worker hands the response back.
        for (id, connection) in connections where connection.phase != .answering {
          nextDeadline = min(nextDeadline, connection.deadline)
          let writes = connection.phase == .writing || (connection.phase == .handshaking && connection.wantsWrite)
          let events = writes ? POLLOUT : POLLIN
          pollSet.append(pollfd(fd: connection.descriptor, events: Int16(events), revents: 0))
          ids.append(id)
        }
        if !accepting { nextDeadline = min(nextDeadline, acceptPausedUntil) }
        let wait = Int32(clamping: nextDeadline > now ? nextDeadline - now : 0)
        let ready = poll(&pollSet, nfds_t(pollSet.count), wait)
        if ready < 0 && errno != EINTR { break }
        if pollSet[0].revents != 0 { drainWakePipe() }
        takeCompletions()
        for (index, id) in ids.enumerated() where pollSet[index + 2].revents != 0 {
          switch connections[id]?.phase {
          case .handshaking: handshake(id)
          case .reading: read(id)
          case .writing: flush(id)
          case .lingering: discard(id)
          default: break
          }
        }
        if pollSet[1].revents != 0 { acceptAll() }
        expire(now: nowMilliseconds())
      }
      for id in Array(connections.keys) { drop(id) }
    }

    private func drainWakePipe() {
      var scratch = [UInt8](repeating: 0, count: 64)
      while scratch.withUnsafeMutableBytes({ Glibc.read(server.wakePipe.read, $0.baseAddress, $0.count) }) > 0 {}
    }

    private mutating func takeCompletions() {
      let completions = server.shared.withLock { shared -> [Completion] in
        defer { shared.completions.removeAll() }
        return shared.completions
      }
      for completion in completions where connections[completion.connection] != nil {
        respond(completion.connection, completion.bytes, closes: completion.closes)
        parse(completion.connection)
      }
    }

    private mutating func acceptAll() {
      while true {
        let fd = accept(server.listener.descriptor, nil, nil)
        if fd >= 0 { makeNonBlocking(fd) }
        if fd < 0 {
          let code = errno
          if code == EINTR || code == ECONNABORTED { continue }
          if code == EMFILE || code == ENFILE {
            // Out of descriptors: pause accepting instead of spinning on the error.
            acceptPausedUntil = nowMilliseconds() + 100
            server.logger.warning("\(server.name) API: out of file descriptors; accepting paused for 100 ms")
          }
          return
        }
        if connections.count >= server.limits.connectionsMax && !evictOldest() {
          // Every connection is being answered: this one is told to retry.
          let refusal = server.refusal(
            503, .resourceExhausted, "\(server.name) connection limit (\(server.limits.connectionsMax)) reached; retry")
          let bytes = refusal.bytes(closing: true)
          _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
          close(fd)
          server.shared.withLock { $0.stats.refusedBusy += 1 }
          continue
        }
        let now = nowMilliseconds()
        var connection = Connection(descriptor: fd, deadline: now + timeout, since: now)
        if let context = server.tls?() {
          guard let session = try? TLSSession(context: context, descriptor: fd) else {
            close(fd)
            continue
          }
          connection.tls = session
          connection.phase = .handshaking
        }
        connections[nextID] = connection
        nextID += 1
        server.shared.withLock {
          $0.stats.connectionsAccepted += 1
          $0.stats.connectionsOpen = connections.count
        }
      }
    }

    /// Closes the connection whose current wait (reading or writing) began longest ago; false
    /// when every connection is being answered by a worker.
    private mutating func evictOldest() -> Bool {
      guard
        let (id, _) = connections.filter({ $0.value.phase != .answering }).min(by: { $0.value.since < $1.value.since })
      else { return false }
      server.shared.withLock { $0.stats.refusedEvicted += 1 }
      drop(id)
      return true
    }

    /// Advances a TLS handshake; once done, the connection reads its request.
    private mutating func handshake(_ id: Int) {
      guard let session = connections[id]?.tls else { return }
      do throws(StrataError) {
        switch try session.handshake(peer: "\(server.name) client") {
        case .wantRead: connections[id]!.wantsWrite = false
        case .wantWrite: connections[id]!.wantsWrite = true
        case .done:
          connections[id]!.phase = .reading
          server.logger.debug("\(server.name) TLS connection", metadata: ["tls_mode": "\(session.mode.rawValue)"])
          read(id)  // the request may have come with the handshake's last flight
        }
      } catch {
        server.shared.withLock { $0.stats.refusedMalformed += 1 }
        server.logger.info(
          "\(server.name) connection refused: TLS handshake failed", metadata: ["reason": "\(error.message)"])
        drop(id)
      }
    }

    /// Reads and drops what a lingering connection sends; closes it at its end.
    private mutating func discard(_ id: Int) {
      var chunk = [UInt8](repeating: 0, count: 16 << 10)
      while true {
        let count = chunk.withUnsafeMutableBytes { connections[id]!.receive($0) }
        if count == 0 { return }
        if count < 0 {
          drop(id)
          return
        }
      }
    }

    /// Reads what arrived (with TLS: every record already decrypted too, which poll cannot see).
    private mutating func read(_ id: Int) {
      var chunk = [UInt8](repeating: 0, count: 16 << 10)
      while connections[id]?.phase == .reading {
        let count = chunk.withUnsafeMutableBytes { connections[id]!.receive($0) }
        if count == 0 { return }
        guard count > 0 else {
          drop(id)
          return
        }
        connections[id]!.parser.append(chunk[0..<count])
        parse(id)
        if connections[id]?.tls == nil { return }
      }
    }

    /// Answers the request the connection's bytes hold, if whole.
    /// Answers the requests the connection's bytes hold, in order, while each response goes out
    /// at once (a loop, not recursion: a client may pipeline hundreds of small requests).
    private mutating func parse(_ id: Int) {
      while connections[id]?.phase == .reading, answerNext(id) {}
    }

    /// Answers the next whole request; false when there is none yet.
    private mutating func answerNext(_ id: Int) -> Bool {
      switch connections[id]!.parser.next() {
      case .needMore: return false
      case .failure(let failure):
        server.shared.withLock { $0.stats.refusedMalformed += 1 }
        server.logger.info(
          "\(server.name) request refused", metadata: ["status": "\(failure.status)", "reason": "\(failure.reason)"])
        respond(
          id, server.refusal(failure.status, .invalidArgument, failure.reason).bytes(closing: true), closes: true)
        return true
      case .request(let request):
        if server.inline(request) {
          respond(id, server.handler(request).bytes(closing: request.closes), closes: request.closes)
          return true
        }
        // At most half the connections wait on workers: the rest can always be evicted, so a
        // new connection (a probe) always finds room.
        let answering = connections.values.reduce(0) { $0 + ($1.phase == .answering ? 1 : 0) }
        let room = answering < max(1, server.limits.connectionsMax / 2)
        let queued = server.shared.withLock { shared -> Bool in
          guard room, shared.jobs.count < server.limits.queuedRequestsMax else {
            shared.stats.refusedBusy += 1
            return false
          }
          shared.jobs.append(Job(connection: id, request: request))
          return true
        }
        if queued {
          connections[id]!.phase = .answering
          server.jobsReady.signal()
        } else {
          let refusal = server.refusal(503, .resourceExhausted, "the \(server.name) API is busy; retry")
          respond(id, refusal.bytes(closing: request.closes), closes: request.closes)
        }
        return true
      }
    }

    private mutating func respond(_ id: Int, _ bytes: [UInt8], closes: Bool) {
      let now = nowMilliseconds()
      connections[id]!.phase = .writing
      connections[id]!.output = bytes
      connections[id]!.written = 0
      connections[id]!.closesAfterWrite = closes
      connections[id]!.deadline = now + timeout
      connections[id]!.since = now
      flush(id, thenParse: false)
    }

    /// Writes what the socket takes; once the response is out, the connection reads again (and,
    /// `thenParse`, answers a request already buffered; `parse` does that itself otherwise).
    private mutating func flush(_ id: Int, thenParse: Bool = true) {
      guard var connection = connections[id] else { return }
      while connection.written < connection.output.count {
        let sent = connection.output.withUnsafeBytes { bytes in
          connection.transmit(UnsafeRawBufferPointer(rebasing: bytes[connection.written...]))
        }
        if sent == 0 {
          connections[id] = connection
          return
        }
        guard sent > 0 else {
          drop(id)
          return
        }
        connection.written += sent
      }
      if connection.closesAfterWrite {
        connection.tls?.sendCloseNotify()
        shutdown(connection.descriptor, Int32(SHUT_WR))
        connection.phase = .lingering
        connection.output = []
        connection.parser = HTTPRequestParser()
        connection.deadline = min(connection.deadline, nowMilliseconds() + Self.lingerMilliseconds)
        connections[id] = connection
        return
      }
      let now = nowMilliseconds()
      connection.output = []
      connection.phase = .reading
      connection.deadline = now + timeout
      connection.since = now
      connections[id] = connection
      // A pipelined request may be buffered already (in the parser, or decrypted in the session).
      if thenParse && connection.parser.bufferedBytes > 0 { parse(id) }
      if thenParse, let session = connection.tls, session.hasBufferedBytes { read(id) }
    }

    /// Closes connections past their deadline; one cut inside a request is told 408 first.
    private mutating func expire(now: UInt64) {
      for (id, connection) in connections where connection.deadline <= now && connection.phase != .answering {
        if connection.phase == .reading && connection.parser.bufferedBytes > 0 {
          let refusal = server.refusal(
            408, .timeout, "the request did not arrive whole within \(timeout) ms (\(server.name).request_timeout)")
          let bytes = refusal.bytes(closing: true)
          _ = bytes.withUnsafeBytes { connection.transmit($0) }
          server.shared.withLock { $0.stats.refusedTimeout += 1 }
        } else if connection.phase == .writing || connection.phase == .handshaking {
          server.shared.withLock { $0.stats.refusedTimeout += 1 }
        }
        drop(id)
      }
    }

    private mutating func drop(_ id: Int) {
      guard let connection = connections.removeValue(forKey: id) else { return }
      close(connection.descriptor)
      server.shared.withLock { $0.stats.connectionsOpen = connections.count }
    }
  }
}

/// Non-blocking and close-on-exec.
private func makeNonBlocking(_ fd: Int32) {
  _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
  _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
}

private func nowMilliseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds / 1_000_000 }
