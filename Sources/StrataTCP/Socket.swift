// Blocking TCP sockets over POSIX: exact reads straight into caller memory and gathered writes
// straight from it, so a block crosses each side with the kernel's copy and no other. With a TLS
// session attached (TLS.swift) the same calls go through OpenSSL, under the same deadlines.

import COpenSSL
import CStrataLinux
public import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// One connected TCP socket. Reads and writes block the calling thread (never a Swift
/// concurrency thread: transports run sockets on threads of their own).
public final class TCPSocket: @unchecked Sendable {
  // @unchecked: the descriptor is immutable; the kernel serialises concurrent calls, and each
  // owner uses a socket from one reading thread and one (locked) writing path at a time. `tls`
  // is set once, by the thread that accepted or connected the socket, before the socket is handed
  // on (a thread start or a queue hop orders that write before every later read).
  public let descriptor: Int32
  /// The TLS session reads and writes go through; nil on a plaintext connection.
  public private(set) var tls: TLSSession?
  public let peer: String
  /// The peer's address without its port (limits per source address count by it).
  public let peerHost: String
  /// The receive and send timeouts set on the socket now, in milliseconds (0: none), so that a
  /// deadline already bounded by them costs no system call (`bound`).
  private let armedReceive = Atomic<UInt64>(0)
  private let armedSend = Atomic<UInt64>(0)
  /// What `armedReceive`/`armedSend` hold when the next bound must set its timeout whatever it is.
  private static let unknownTimeout = UInt64.max
  /// The socket's low-water mark now (SO_RCVLOWAT; the kernel's 1 unless a payload read raised it).
  private let lowWater = Atomic<Int32>(1)

  init(descriptor: Int32, peer: String, peerHost: String? = nil) {
    self.descriptor = descriptor
    self.peer = peer
    self.peerHost = peerHost ?? peer
  }

  deinit { Glibc.close(descriptor) }

  /// Connects to `address`, with TCP_NODELAY and `bufferBytes` socket buffers (large by default);
  /// `timeoutMilliseconds` bounds the connect and every later read and write (0: no limit).
  ///
  /// With `tls`, the TLS handshake follows within the same timeout: the server's certificate
  /// must chain to `tls`'s CAs and name what `expecting` says.
  public static func connect(
    to address: HostPort, timeoutMilliseconds: UInt64 = 0, bufferBytes: Int32 = defaultBufferBytes,
    tls: TLSContext? = nil, expecting identity: TLSServerIdentity = .host
  ) throws(StrataError) -> TCPSocket {
    let socket = try connectPlain(to: address, timeoutMilliseconds: timeoutMilliseconds, bufferBytes: bufferBytes)
    guard let tls else { return socket }
    let session = try socket.attachTLS(tls)
    if identity == .host {
      let host = address.host.hasPrefix("[") ? String(address.host.dropFirst().dropLast()) : address.host
      guard strata_ssl_expect_host(session.ssl, host) == 1 else {
        throw StrataError(.invalidArgument, "TLS: cannot check a certificate for the host '\(host)'")
      }
    }
    switch try session.handshake(peer: address.description) {
    case .done: break
    case .wantRead, .wantWrite:
      throw StrataError(.timeout, "TLS handshake with \(address) timed out")
    }
    if case .anyOf(let names) = identity, !names.contains(where: { session.peerNames($0) }) {
      throw StrataError(
        .permissionDenied,
        "TLS: \(address) presented a certificate for '\(session.peerCommonName ?? "?")', which names none of "
          + names.joined(separator: ", "))
    }
    return socket
  }

  /// Starts a TLS session on this socket (as server or client after `context`); every later read
  /// and write goes through it. Call before the socket is shared.
  @discardableResult
  public func attachTLS(_ context: TLSContext) throws(StrataError) -> TLSSession {
    precondition(tls == nil, "TCPSocket: a TLS session is attached already")
    let session = try TLSSession(context: context, descriptor: descriptor)
    tls = session
    return session
  }

  private static func connectPlain(
    to address: HostPort, timeoutMilliseconds: UInt64, bufferBytes: Int32
  ) throws(StrataError) -> TCPSocket {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var results: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(address.host, String(address.port), &hints, &results)
    guard status == 0, let first = results else {
      throw StrataError(.unavailable, "cannot resolve \(address): \(String(cString: gai_strerror(status)))")
    }
    defer { freeaddrinfo(results) }
    var lastError: Int32 = 0
    var candidate: UnsafeMutablePointer<addrinfo>? = first
    while let info = candidate {
      candidate = info.pointee.ai_next
      let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      guard fd >= 0 else {
        lastError = errno
        continue
      }
      let socket = TCPSocket(descriptor: fd, peer: address.description)
      socket.configure(timeoutMilliseconds: timeoutMilliseconds, bufferBytes: bufferBytes)
      if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
        // Nothing listened and the kernel chose the destination port as the source port: a
        // TCP simultaneous open with itself. Refused, as it would have been a moment later; and
        // the port is freed for the process that is about to listen on it.
        if socket.isConnectedToItself {
          lastError = ECONNREFUSED
          continue
        }
        return socket
      }
      lastError = errno
    }
    throw StrataError(.unavailable, "cannot connect to \(address): \(String(cString: strerror(lastError)))")
  }

  /// Whether the local and the peer address are the same (a self-connected socket).
  var isConnectedToItself: Bool {
    var local = sockaddr_storage()
    var remote = sockaddr_storage()
    var localLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
    var remoteLength = localLength
    let named = withUnsafeMutablePointer(to: &local) { localPointer in
      withUnsafeMutablePointer(to: &remote) { remotePointer in
        localPointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { localAddress in
          remotePointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { remoteAddress in
            getsockname(descriptor, localAddress, &localLength) == 0
              && getpeername(descriptor, remoteAddress, &remoteLength) == 0
          }
        }
      }
    }
    guard named, localLength == remoteLength else { return false }
    return memcmp(&local, &remote, Int(localLength)) == 0
  }

  /// Bounds every later read and write (0: no limit).
  public func setTimeout(milliseconds: UInt64) {
    arm(SO_RCVTIMEO, milliseconds)
    arm(SO_SNDTIMEO, milliseconds)
  }

  /// Sets the socket's timeout `option` (SO_RCVTIMEO or SO_SNDTIMEO), unless it is set to that already.
  private func arm(_ option: Int32, _ milliseconds: UInt64) {
    guard armed(option) != milliseconds else { return }
    var limit = timeval(tv_sec: Int(milliseconds / 1000), tv_usec: Int((milliseconds % 1000) * 1000))
    setsockopt(descriptor, SOL_SOCKET, option, &limit, socklen_t(MemoryLayout<timeval>.size))
    setArmed(option, milliseconds)
  }

  private func armed(_ option: Int32) -> UInt64 {
    option == SO_RCVTIMEO ? armedReceive.load(ordering: .relaxed) : armedSend.load(ordering: .relaxed)
  }

  private func setArmed(_ option: Int32, _ milliseconds: UInt64) {
    if option == SO_RCVTIMEO {
      armedReceive.store(milliseconds, ordering: .relaxed)
    } else {
      armedSend.store(milliseconds, ordering: .relaxed)
    }
  }

  /// Makes the kernel probe this connection while it is quiet: after `idleSeconds` without
  /// traffic, a probe every `intervalSeconds`; after `probes` unanswered ones the connection fails
  /// and a blocked read returns an error. For a connection that may rightly be silent for minutes
  /// (an etcd watch, with no read timeout): a peer that vanished, or a middlebox that dropped the
  /// flow without a reset, is found out instead of waited on forever; and the probes keep such a
  /// middlebox's idle timer from expiring in the first place.
  public func probeWhileIdle(idleSeconds: Int32, intervalSeconds: Int32, probes: Int32) {
    let size = socklen_t(MemoryLayout<Int32>.size)
    var on: Int32 = 1
    var idle = idleSeconds
    var interval = intervalSeconds
    var count = probes
    setsockopt(descriptor, SOL_SOCKET, SO_KEEPALIVE, &on, size)
    setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, size)
    setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, size)
    setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, size)
  }

  /// Socket buffers (the kernel doubles the figure, so 2 MiB each way): small enough that what a
  /// streamed batch has in flight is still in the CPU's caches when the reader copies it out,
  /// large enough for the reader's low-water mark (`lowWaterBytes`, at most half the receive
  /// buffer). With payload reads woken by the mark, 1 MiB measured up to 1.2x 2 MiB on batches
  /// of 2 MiB GETs and 256 KiB PUTs and lost on no row (docs/performance.md, "Socket buffers").
  public static let defaultBufferBytes: Int32 = 1 << 20

  func configure(timeoutMilliseconds: UInt64, bufferBytes: Int32 = defaultBufferBytes) {
    var one: Int32 = 1
    setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    var bufferBytes = bufferBytes
    setsockopt(descriptor, SOL_SOCKET, SO_SNDBUF, &bufferBytes, socklen_t(MemoryLayout<Int32>.size))
    setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &bufferBytes, socklen_t(MemoryLayout<Int32>.size))
    if timeoutMilliseconds > 0 { setTimeout(milliseconds: timeoutMilliseconds) }
  }

  /// Fills `buffer` completely, by `deadline` when one is given (else within the socket's timeout).
  /// Throws `unavailable` when the peer closed, `timeout` when the time is up.
  public func readExactly(_ buffer: UnsafeMutableRawBufferPointer, deadline: Deadline = .never) throws(StrataError) {
    guard var cursor = buffer.baseAddress else { return }
    // A read that must fill its buffer may be owed nothing more: it wakes for every byte.
    setLowWater(1)
    var remaining = buffer.count
    var bounded = false
    while remaining > 0 {
      // A TLS read served from the session's read-ahead buffer does not wait on the socket: after
      // the first, the socket's timeout is set again only when that buffer is empty (about one
      // record in 16), saving a system call per record. A read that finds part of a record
      // buffered may wait under the timeout set earlier in this call, which ends no later than
      // the deadline plus the time this call has taken.
      if deadline != .never && (!bounded || tls?.hasBufferedBytes != true) {
        // Bytes that have arrived already (a frame's body behind its header) need no timeout:
        // they are taken first, and the timeout is set only if the read must wait.
        if tls == nil && !bounded && !keeps(SO_RCVTIMEO, left: deadline.remainingMilliseconds()) {
          let count = recv(descriptor, cursor, remaining, Int32(MSG_DONTWAIT))
          if count > 0 {
            cursor += count
            remaining -= count
            continue
          }
          let code = errno
          if count < 0 && code != EAGAIN && code != EWOULDBLOCK && code != EINTR { throw failure("read", code) }
        }
        try bound(SO_RCVTIMEO, by: deadline, "read")
        bounded = true
      }
      if let tls {
        switch tls.read(cursor, remaining) {
        case .moved(let count):
          cursor += count
          remaining -= count
          continue
        case .closed:
          throw StrataError(
            .unavailable, "\(peer) closed the connection (\(buffer.count - remaining) of \(buffer.count) bytes read)")
        case .wouldBlock: throw failure("read", EAGAIN)
        case .failed(let code, let reason): throw tlsFailure("read", code, reason)
        }
      }
      let count = recv(descriptor, cursor, remaining, Int32(MSG_WAITALL))
      if count > 0 {
        cursor += count
        remaining -= count
        continue
      }
      if count == 0 {
        throw StrataError(
          .unavailable, "\(peer) closed the connection (\(buffer.count - remaining) of \(buffer.count) bytes read)")
      }
      let code = errno
      if code == EINTR || timedOutEarly(code, deadline, SO_RCVTIMEO) { continue }
      throw failure("read", code)
    }
  }

  /// Reads what has arrived into `segments`, filling each before the next, at least one byte (by
  /// `deadline` when one is given, else within the socket's timeout), and returns how many. The
  /// peer owes `followedBy` bytes after the segments: on a plaintext socket owed much, the read
  /// sleeps until a large piece has arrived instead of waking for each packet (`lowWater(owed:)`).
  /// With TLS it fills the first segment.
  public func readSome(
    into segments: [UnsafeMutableRawBufferPointer], deadline: Deadline = .never, followedBy: Int = 0
  ) throws(StrataError) -> Int {
    guard tls == nil else {
      try readExactly(segments[0], deadline: deadline)
      return segments[0].count
    }
    var requested = 0
    for segment in segments { requested += segment.count }
    // Waiting for the mark never outlasts the stream: a read that sleeps has copied less than
    // the mark, and the peer owes the rest of `requested + followedBy`, at least the mark again.
    setLowWater(Self.lowWater(owed: requested + followedBy))
    return try withUnsafeTemporaryAllocation(of: iovec.self, capacity: segments.count) {
      (vectors) throws(StrataError) -> Int in
      for (index, segment) in segments.enumerated() {
        vectors[index] = iovec(iov_base: segment.baseAddress, iov_len: segment.count)
      }
      var message = msghdr()
      message.msg_iov = vectors.baseAddress
      message.msg_iovlen = segments.count
      var bounded = false
      while true {
        if deadline != .never && !bounded {
          // As in `readExactly`: what has arrived needs no timeout.
          if !keeps(SO_RCVTIMEO, left: deadline.remainingMilliseconds()) {
            let count = recvmsg(descriptor, &message, Int32(MSG_DONTWAIT))
            if count > 0 { return count }
            let code = errno
            if count < 0 && code != EAGAIN && code != EWOULDBLOCK && code != EINTR { throw failure("read", code) }
          }
          try bound(SO_RCVTIMEO, by: deadline, "read")
          bounded = true
        }
        let count = recvmsg(descriptor, &message, 0)
        if count > 0 { return count }
        if count == 0 { throw StrataError(.unavailable, "\(peer) closed the connection (\(requested) bytes due)") }
        let code = errno
        if code == EINTR || timedOutEarly(code, deadline, SO_RCVTIMEO) { continue }
        throw failure("read", code)
      }
    }
  }

  /// The low-water mark of a read owed much (SO_RCVLOWAT): a streamed payload is then copied out a
  /// megabyte at a time, while the sender keeps filling the socket, instead of reader and sender
  /// trading a wake-up and the socket lock for every 64 KiB packet. Over loopback a 32 MiB stream
  /// read this way (with a pass over the bytes after each read, as the client's checksum) ran
  /// ~1.3x faster at ~0.6x the reader's CPU per byte (docs/performance.md, "Payload reads").
  public static let lowWaterBytes: Int32 = 1 << 20
  /// The smallest mark set: below it (reads owed under twice as much) a read wakes for every
  /// packet, mark 1, and small frames cost no system call.
  public static let lowWaterMin: Int32 = 64 << 10

  /// The mark for a read owed `owed` bytes: the largest power of two at most half of them, at most
  /// `lowWaterBytes`, or 1 below `lowWaterMin` (powers of two: few changes, so few system calls).
  static func lowWater(owed: Int) -> Int32 {
    let half = owed / 2
    guard half >= Int(lowWaterMin) else { return 1 }
    return Int32(min(Int(lowWaterBytes), 1 << (Int.bitWidth - 1 - half.leadingZeroBitCount)))
  }

  private func setLowWater(_ mark: Int32) {
    guard lowWater.load(ordering: .relaxed) != mark else { return }
    var value = mark
    setsockopt(descriptor, SOL_SOCKET, SO_RCVLOWAT, &value, socklen_t(MemoryLayout<Int32>.size))
    lowWater.store(mark, ordering: .relaxed)
  }

  /// Reads what has arrived, at least one byte, at most `buffer.count`: for streams whose framing
  /// is found by parsing (HTTP). Throws `unavailable` when the peer closed, `timeout` on a timeout.
  public func readSome(_ buffer: UnsafeMutableRawBufferPointer) throws(StrataError) -> Int {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
    if let tls {
      switch tls.read(base, buffer.count) {
      case .moved(let count): return count
      case .closed: throw StrataError(.unavailable, "\(peer) closed the connection")
      case .wouldBlock: throw failure("read", EAGAIN)
      case .failed(let code, let reason): throw tlsFailure("read", code, reason)
      }
    }
    while true {
      let count = recv(descriptor, base, buffer.count, 0)
      if count > 0 { return count }
      if count == 0 { throw StrataError(.unavailable, "\(peer) closed the connection") }
      let code = errno
      if code == EINTR { continue }
      throw failure("read", code)
    }
  }

  /// Sets the socket's timeout `option` (SO_RCVTIMEO or SO_SNDTIMEO) to what is left of
  /// `deadline`; throws `timeout` when nothing is left. Without TLS, a timeout already set to at
  /// most what is left and at least half of it is kept (no system call: a connection's deadlines
  /// are alike from request to request); a call that times out before the deadline is retried
  /// with the exact rest (`timedOutEarly`), so the deadline holds either way.
  private func bound(_ option: Int32, by deadline: Deadline, _ operation: String) throws(StrataError) {
    let left = deadline.remainingMilliseconds()
    guard left > 0 else { throw StrataError(.timeout, "\(operation) on the connection to \(peer) passed its deadline") }
    if !keeps(option, left: left) { arm(option, left) }
  }

  /// Whether the timeout set now bounds a call with `left` milliseconds to go (see `bound`).
  private func keeps(_ option: Int32, left: UInt64) -> Bool {
    let armed = armed(option)
    return tls == nil && left > 0 && armed > 0 && armed <= left && armed * 2 >= left
  }

  /// True when a plaintext read or write timed out (`code`) before `deadline`, under a timeout
  /// kept by `bound`: the timeout is then cleared, so that `bound` sets the exact rest, and the
  /// call is retried.
  private func timedOutEarly(_ code: Int32, _ deadline: Deadline, _ option: Int32) -> Bool {
    guard tls == nil, code == EAGAIN || code == EWOULDBLOCK, deadline != .never, !deadline.hasPassed() else {
      return false
    }
    setArmed(option, Self.unknownTimeout)
    return true
  }

  /// Writes every byte of every buffer, in order, with as few system calls as the kernel allows,
  /// by `deadline` when one is given (else within the socket's timeout).
  public func writeAll(_ buffers: [UnsafeRawBufferPointer], deadline: Deadline = .never) throws(StrataError) {
    if let tls { return try writeAllTLS(tls, buffers, deadline: deadline) }
    var vectors = buffers.filter { $0.count > 0 }.map {
      iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count)
    }
    var first = 0
    while first < vectors.count {
      if deadline != .never { try bound(SO_SNDTIMEO, by: deadline, "write") }
      let batch = min(vectors.count - first, 1024)  // IOV_MAX
      let written = vectors.withUnsafeMutableBufferPointer { all in
        sendmsgAll(all.baseAddress! + first, count: batch)
      }
      if written < 0 {
        let code = errno
        if code == EINTR || timedOutEarly(code, deadline, SO_SNDTIMEO) { continue }
        throw failure("write", code)
      }
      // Skip what was written; a partial vector is trimmed in place.
      var left = written
      while left > 0 && first < vectors.count {
        if left >= vectors[first].iov_len {
          left -= vectors[first].iov_len
          first += 1
        } else {
          vectors[first].iov_base = vectors[first].iov_base! + left
          vectors[first].iov_len -= left
          left = 0
        }
      }
    }
  }

  /// Small buffers (a frame's header and body) are gathered into one record with what follows;
  /// large ones are written straight from their memory, in chunks that each get the deadline's rest.
  private func writeAllTLS(_ tls: TLSSession, _ buffers: [UnsafeRawBufferPointer], deadline: Deadline)
    throws(StrataError)
  {
    let gatherBytes = 16 << 10
    let chunkBytes = 1 << 20
    var gathered: [UInt8] = []
    // Records wait in the session's write buffer until the last chunk of the last buffer.
    let lastIndex = buffers.lastIndex { $0.count > 0 }
    var index = 0
    func send(_ buffer: UnsafeRawBufferPointer, last: Bool) throws(StrataError) {
      var offset = 0
      while offset < buffer.count {
        if deadline != .never { try bound(SO_SNDTIMEO, by: deadline, "write") }
        let count = min(chunkBytes, buffer.count - offset)
        switch tls.write(buffer.baseAddress! + offset, count, flush: last && offset + count == buffer.count) {
        case .moved(let written): offset += written
        case .closed: throw StrataError(.unavailable, "\(peer) reset the connection during a write")
        case .wouldBlock: throw failure("write", EAGAIN)
        case .failed(let code, let reason): throw tlsFailure("write", code, reason)
        }
      }
    }
    func flush(last: Bool) throws(StrataError) {
      guard !gathered.isEmpty else { return }
      var failure: StrataError?
      gathered.withUnsafeBytes { raw in
        do throws(StrataError) { try send(raw, last: last) } catch { failure = error }
      }
      gathered.removeAll(keepingCapacity: true)
      if let failure { throw failure }
    }
    for buffer in buffers {
      defer { index += 1 }
      guard buffer.count > 0 else { continue }
      if gathered.count + buffer.count <= gatherBytes {
        gathered.append(contentsOf: buffer)
        continue
      }
      if buffer.count < gatherBytes {
        try flush(last: false)
        gathered.append(contentsOf: buffer)
        continue
      }
      // Top the gathered bytes up to one full record from the large buffer, then send the rest.
      let head = min(buffer.count, gatherBytes - gathered.count)
      gathered.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<head]))
      try flush(last: index == lastIndex && head == buffer.count)
      if head < buffer.count {
        try send(UnsafeRawBufferPointer(rebasing: buffer[head...]), last: index == lastIndex)
      }
    }
    try flush(last: true)
  }

  public func writeAll(_ buffer: UnsafeRawBufferPointer, deadline: Deadline = .never) throws(StrataError) {
    try writeAll([buffer], deadline: deadline)
  }

  /// Writes `bytes` (a frame's header and body) and then every payload buffer.
  public func writeAll(_ bytes: [UInt8], then payload: [UnsafeRawBufferPointer] = [], deadline: Deadline = .never)
    throws(StrataError)
  {
    var failure: StrataError?
    bytes.withUnsafeBytes { raw in
      do throws(StrataError) {
        try writeAll([raw] + payload, deadline: deadline)
      } catch {
        failure = error
      }
    }
    if let failure { throw failure }
  }

  private func sendmsgAll(_ vectors: UnsafeMutablePointer<iovec>, count: Int) -> Int {
    var message = msghdr()
    message.msg_iov = vectors
    message.msg_iovlen = count
    return sendmsg(descriptor, &message, Int32(MSG_NOSIGNAL))
  }

  /// Stops both directions now: a thread blocked reading this socket returns.
  public func shutdown() { _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR)) }

  /// Switches between blocking calls (a connection's own thread) and non-blocking ones (a socket
  /// watched by a poller, as a connection is before its HELLO).
  public func setBlocking(_ blocking: Bool) {
    let flags = fcntl(descriptor, F_GETFL)
    _ = fcntl(descriptor, F_SETFL, blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK)
  }

  /// On a non-blocking socket: reads what has arrived into `buffer`; 0 when nothing has.
  /// Throws `unavailable` when the peer closed.
  public func receiveAvailable(_ buffer: UnsafeMutableRawBufferPointer) throws(StrataError) -> Int {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
    if let tls {
      switch tls.read(base, buffer.count) {
      case .moved(let count): return count
      case .wouldBlock: return 0
      case .closed: throw StrataError(.unavailable, "\(peer) closed the connection")
      case .failed(let code, let reason): throw tlsFailure("read", code, reason)
      }
    }
    while true {
      let count = recv(descriptor, base, buffer.count, Int32(MSG_DONTWAIT))
      if count > 0 { return count }
      if count == 0 { throw StrataError(.unavailable, "\(peer) closed the connection") }
      let code = errno
      if code == EINTR { continue }
      if code == EAGAIN || code == EWOULDBLOCK { return 0 }
      throw failure("read", code)
    }
  }

  /// Whether the peer closed this connection, reset it, or sent something unasked, seen without
  /// waiting. For a connection with no request outstanding (a node never speaks first), any of
  /// these means the next request on it would fail: a node closes connections idle past
  /// `limits.idle_timeout`, and a client's pooled connection must not find that out by losing a call.
  public func isReadableWhileIdle() -> Bool {
    if tls?.hasBufferedBytes == true { return true }
    // 0x2000: POLLRDHUP (the peer shut down its side), which Glibc exports only to _GNU_SOURCE C.
    var watched = pollfd(fd: descriptor, events: Int16(POLLIN) | 0x2000, revents: 0)
    return poll(&watched, 1, 0) > 0 && watched.revents != 0
  }

  /// On any socket: writes what the socket buffer takes now, without waiting; returns how many
  /// bytes went (a short answer to a peer that does not read is simply cut).
  @discardableResult
  public func sendAvailable(_ bytes: [UInt8]) -> Int {
    if let tls {
      // One small record: it fits the socket buffer of a peer that reads at all.
      return bytes.withUnsafeBytes { raw in
        guard case .moved(let count) = tls.write(raw.baseAddress!, raw.count) else { return 0 }
        return count
      }
    }
    return bytes.withUnsafeBytes { raw in
      max(0, send(descriptor, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)))
    }
  }

  /// Peeks at the first bytes the peer sent, without taking them (non-blocking); fewer when fewer
  /// have arrived.
  public func peekAvailable(_ count: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    let got = bytes.withUnsafeMutableBytes { raw in
      recv(descriptor, raw.baseAddress, count, Int32(MSG_PEEK | MSG_DONTWAIT))
    }
    return Array(bytes.prefix(max(0, got)))
  }

  private func tlsFailure(_ operation: String, _ code: Int32, _ reason: String) -> StrataError {
    if code != 0 { return failure(operation, code) }
    return StrataError(.protocolError, "TLS \(operation) on the connection to \(peer) failed: \(reason)")
  }

  private func failure(_ operation: String, _ code: Int32) -> StrataError {
    if code == EAGAIN || code == EWOULDBLOCK {
      return StrataError(.timeout, "\(operation) on the connection to \(peer) timed out")
    }
    if code == ECONNRESET || code == EPIPE {
      return StrataError(.unavailable, "\(peer) reset the connection during a \(operation)")
    }
    return StrataError(.ioError, "\(operation) on the connection to \(peer) failed: \(String(cString: strerror(code)))")
  }
}

/// A listening TCP socket.
public final class TCPListener: @unchecked Sendable {
  // @unchecked: an immutable descriptor; accept and shutdown are safe from any thread.
  public let descriptor: Int32
  /// The address actually bound (the port is filled in when 0 was asked for); for a Unix-domain
  /// listener, its path with port 0.
  public let address: HostPort
  /// The socket file of a Unix-domain listener (removed when the listener goes); nil for TCP.
  public let unixPath: String?

  /// `setting` names the configuration key the address came from, for the errors.
  public init(binding requested: HostPort, setting: String = "listen", backlog: Int32 = 512) throws(StrataError) {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_flags = AI_PASSIVE
    var results: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(requested.host, String(requested.port), &hints, &results)
    guard status == 0, let info = results else {
      throw StrataError(
        .invalidConfiguration, "\(setting): cannot resolve \(requested): \(String(cString: gai_strerror(status)))")
    }
    defer { freeaddrinfo(results) }
    let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else {
      throw StrataError(.ioError, "\(setting): socket() failed: \(String(cString: strerror(errno)))")
    }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
      let code = errno
      Glibc.close(fd)
      throw StrataError(
        code == EADDRINUSE ? .unavailable : .ioError,
        "\(setting): cannot bind \(requested): \(String(cString: strerror(code)))"
          + (code == EADDRINUSE ? " (another process holds it: give this one another \(setting))" : ""))
    }
    guard listen(fd, backlog) == 0 else {
      let code = errno
      Glibc.close(fd)
      throw StrataError(.ioError, "\(setting): listen(\(requested)) failed: \(String(cString: strerror(code)))")
    }
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    var port = requested.port
    withUnsafeMutablePointer(to: &storage) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
        if getsockname(fd, address, &length) == 0 {
          if address.pointee.sa_family == sa_family_t(AF_INET) {
            port = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
              UInt16(bigEndian: $0.pointee.sin_port)
            }
          } else if address.pointee.sa_family == sa_family_t(AF_INET6) {
            port = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
              UInt16(bigEndian: $0.pointee.sin6_port)
            }
          }
        }
      }
    }
    descriptor = fd
    address = HostPort(host: requested.host, port: port)
    unixPath = nil
  }

  /// A Unix-domain listener at `path` whose socket file has permissions `mode` (a stale socket
  /// file is replaced). Its connections' peers are named by their credentials (`uid:N`).
  public init(unixPath path: String, mode: UInt32 = 0o660, backlog: Int32 = 512) throws(StrataError) {
    let fd = strata_unix_listen(path, backlog, mode)
    guard fd >= 0 else {
      let code = errno
      throw StrataError(
        code == ENAMETOOLONG ? .invalidConfiguration : .ioError,
        code == ENAMETOOLONG
          ? "listen: unix socket path \(path) is longer than \(strata_unix_path_max()) bytes"
          : "listen: cannot bind unix:\(path): \(String(cString: strerror(code)))")
    }
    descriptor = fd
    address = HostPort(host: path, port: 0)
    unixPath = path
  }

  deinit {
    Glibc.close(descriptor)
    if let unixPath { unlink(unixPath) }
  }

  /// What a non-blocking `acceptAvailable` found.
  public enum Accepted {
    case connection(TCPSocket)
    /// No connection is waiting.
    case none
    /// The process or system is out of descriptors (EMFILE, ENFILE): free some, back off.
    case outOfDescriptors
    /// The listener was shut down.
    case closed
  }

  /// Makes `acceptAvailable` return at once when no connection waits (a poller watches the
  /// listener).
  public func setNonBlocking() {
    let flags = fcntl(descriptor, F_GETFL)
    _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK)
  }

  /// Takes the next waiting connection, if any, without blocking (after `setNonBlocking`). The
  /// new socket is non-blocking too, until `setBlocking(true)`.
  public func acceptAvailable() -> Accepted {
    while true {
      var storage = sockaddr_storage()
      var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
      let fd = withUnsafeMutablePointer(to: &storage) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          strata_accept(descriptor, $0, &length, 1)
        }
      }
      if fd >= 0 {
        let (peer, host) = peerName(storage, descriptor: fd)
        let socket = TCPSocket(descriptor: fd, peer: peer, peerHost: host)
        if unixPath == nil { socket.configure(timeoutMilliseconds: 0) }
        return .connection(socket)
      }
      switch errno {
      case EINTR, ECONNABORTED: continue
      case EAGAIN, EWOULDBLOCK: return .none
      case EMFILE, ENFILE, ENOBUFS, ENOMEM: return .outOfDescriptors
      default: return .closed
      }
    }
  }

  /// Waits for the next connection; nil once the listener was shut down.
  public func accept() -> TCPSocket? {
    while true {
      var storage = sockaddr_storage()
      var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
      let fd = withUnsafeMutablePointer(to: &storage) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { strata_accept(descriptor, $0, &length, 0) }
      }
      if fd >= 0 {
        let (peer, host) = peerName(storage, descriptor: fd)
        let socket = TCPSocket(descriptor: fd, peer: peer, peerHost: host)
        if unixPath == nil { socket.configure(timeoutMilliseconds: 0) }
        return socket
      }
      let code = errno
      if code == EINTR || code == ECONNABORTED || code == EMFILE || code == ENFILE { continue }
      return nil
    }
  }

  /// Wakes a thread blocked in `accept` (which then returns nil).
  public func shutdown() { _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR)) }
}

/// The peer as "host:port", and its host alone; a Unix-domain peer as "unix:pid=P,uid=U" and
/// "uid:U" (connection limits per source count per user).
private func peerName(_ storage: sockaddr_storage, descriptor: Int32) -> (String, String) {
  var storage = storage
  if storage.ss_family == sa_family_t(AF_UNIX) {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    guard strata_peer_credentials(descriptor, &pid, &uid) == 0 else { return ("unix:unknown", "uid:unknown") }
    return ("unix:pid=\(pid),uid=\(uid)", "uid:\(uid)")
  }
  var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
  var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
  let status = withUnsafePointer(to: &storage) { pointer in
    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      getnameinfo(
        $0, socklen_t(MemoryLayout<sockaddr_storage>.size), &host, socklen_t(host.count), &service,
        socklen_t(service.count), NI_NUMERICHOST | NI_NUMERICSERV)
    }
  }
  guard status == 0 else { return ("unknown peer", "unknown") }
  return ("\(String(nulTerminated: host)):\(String(nulTerminated: service))", String(nulTerminated: host))
}

extension TCPSocket: ByteSource {
  /// Fills all of `buffer` (a frame reader asks only for bytes the frame still owes).
  public func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: Deadline) throws(StrataError) -> Int {
    try readExactly(buffer, deadline: deadline)
    return buffer.count
  }

  public func receive(
    into segments: [UnsafeMutableRawBufferPointer], deadline: Deadline, followedBy: Int
  ) throws(StrataError) -> Int {
    try readSome(into: segments, deadline: deadline, followedBy: followedBy)
  }
}
