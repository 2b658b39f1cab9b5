// TLS 1.3 over the system OpenSSL: a context built from PEM files (certificate, key, the CAs to
// trust), and one session per socket that TCPSocket's reads and writes go through once attached.
// The client handshake blocks under the socket's deadline; the server handshake is driven
// step by step on a non-blocking socket, so a poller can hold many at once with no thread each.

import COpenSSL
public import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

/// Where record encryption runs for one session.
public enum TLSMode: String, Sendable {
  /// The kernel (the `tls` ULP): OpenSSL handed it the keys after the handshake.
  case kernel
  /// OpenSSL in user space.
  case user
}

/// The PEM files of one side of TLS, and what it asks of the other side.
public struct TLSFiles: Hashable, Sendable {
  /// This side's certificate chain (leaf first); empty: present none (a client without one).
  public var certificate: String
  /// The private key of `certificate`.
  public var key: String
  /// The CA certificates that verify the other side; empty: verify nothing (servers only). For a
  /// server these are the cluster CA: `TLSSession.peerVerifies(against:)` checks against them alone.
  public var trusted: String
  /// Servers: further CAs that sign client certificates (trusted in the handshake too).
  public var clientTrusted: String
  /// Try kernel TLS when the kernel offers the `tls` ULP.
  public var kernel: Bool

  public init(
    certificate: String = "", key: String = "", trusted: String = "", clientTrusted: String = "", kernel: Bool = true
  ) {
    self.certificate = certificate
    self.key = key
    self.trusted = trusted
    self.clientTrusted = clientTrusted
    self.kernel = kernel
  }
}

/// What a client checks the server's certificate names, beyond its chain to the trusted CAs.
public enum TLSServerIdentity: Hashable, Sendable {
  /// The host the client connected to (a DNS name or an IP address).
  case host
  /// One of these (a ring member's node id, or its address's host): node-to-node connections.
  case anyOf([String])
}

/// A configured SSL_CTX. Building one reads and checks every file, so a bad path or a key that
/// does not match its certificate is an `invalidConfiguration` at start or reload, never later.
public final class TLSContext: @unchecked Sendable {
  // @unchecked: the SSL_CTX is configured in `init` and only read afterwards (SSL_new from any
  // thread), which OpenSSL documents as thread-safe; `anchors` is an immutable X509_STORE used
  // for verification only (X509_STORE is locked internally).
  let context: OpaquePointer
  /// The CA certificates that `peerVerifies(against:)` checks a peer's chain with.
  let anchors: OpaquePointer?
  public let isServer: Bool
  public let files: TLSFiles
  /// Whether a peer without a certificate is refused in the handshake (servers).
  public let requiresPeerCertificate: Bool
  /// Whether kernel TLS was asked for and this OpenSSL and kernel can give it.
  public let kernelRequested: Bool

  /// A server context: presents `files.certificate`; asks for a client certificate when
  /// `files.trusted` names CAs (and refuses a client without one when `requirePeerCertificate`).
  public static func server(_ files: TLSFiles, requirePeerCertificate: Bool = false) throws(StrataError) -> TLSContext {
    try TLSContext(files, isServer: true, requirePeerCertificate: requirePeerCertificate)
  }

  /// A client context: verifies the server against `files.trusted` (required) and presents
  /// `files.certificate` when one is given.
  public static func client(_ files: TLSFiles) throws(StrataError) -> TLSContext {
    guard !files.trusted.isEmpty else {
      throw StrataError(.invalidConfiguration, "TLS: a client needs the CA file that signed the server's certificate")
    }
    return try TLSContext(files, isServer: false, requirePeerCertificate: true)
  }

  private init(_ files: TLSFiles, isServer: Bool, requirePeerCertificate: Bool) throws(StrataError) {
    guard let context = SSL_CTX_new(isServer ? TLS_server_method() : TLS_client_method()) else {
      throw StrataError(.internalError, "TLS: SSL_CTX_new failed: \(tlsErrorText(nil))")
    }
    func fail(_ what: String) -> StrataError {
      let reason = tlsErrorText(nil)
      SSL_CTX_free(context)
      return StrataError(.invalidConfiguration, "TLS: \(what)\(reason.isEmpty ? "" : ": \(reason)")")
    }
    _ = strata_ssl_ctx_set_min_proto_version(context, strata_tls1_3_version())
    strata_ssl_ctx_set_defaults(context)
    // AES-128-GCM first, on both sides, and a server picks by this order whatever the client
    // prefers: with AES-NI it is the fastest suite (10 AES rounds to AES-256's 14; security.md
    // gives the measured rates), and the one kernel TLS offloads most widely.
    _ = SSL_CTX_set_ciphersuites(context, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")
    if isServer { strata_ssl_ctx_prefer_own_ciphers(context) }
    if isServer && files.certificate.isEmpty { throw fail("a server needs a certificate (tls.cert) and its key") }
    if !files.certificate.isEmpty {
      guard SSL_CTX_use_certificate_chain_file(context, files.certificate) == 1 else {
        throw fail("cannot read the certificate \(files.certificate)")
      }
      guard !files.key.isEmpty, SSL_CTX_use_PrivateKey_file(context, files.key, SSL_FILETYPE_PEM) == 1 else {
        throw fail("cannot read the private key \(files.key.isEmpty ? "(none given)" : files.key)")
      }
      guard SSL_CTX_check_private_key(context) == 1 else {
        throw fail("the key \(files.key) does not match the certificate \(files.certificate)")
      }
    }
    var anchors: OpaquePointer?
    let trustedFiles = [files.trusted] + (isServer ? [files.clientTrusted] : [])
    for path in trustedFiles where !path.isEmpty {
      guard SSL_CTX_load_verify_locations(context, path, nil) == 1 else {
        throw fail("cannot read the CA file \(path)")
      }
    }
    if !files.trusted.isEmpty { anchors = strata_x509_store_from_file(files.trusted) }
    if trustedFiles.contains(where: { !$0.isEmpty }) {
      let mode = SSL_VERIFY_PEER | (requirePeerCertificate ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0)
      SSL_CTX_set_verify(context, mode, nil)
    } else {
      SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
    }
    kernelRequested = files.kernel && KernelTLS.available && strata_ssl_ctx_enable_ktls(context) == 1
    self.context = context
    self.anchors = anchors
    self.isServer = isServer
    self.files = files
    self.requiresPeerCertificate = requirePeerCertificate && trustedFiles.contains { !$0.isEmpty }
  }

  deinit {
    SSL_CTX_free(context)
    if let anchors { X509_STORE_free(anchors) }
  }
}

/// Whether this kernel offers the `tls` ULP now (the `tls` module is loaded).
public enum KernelTLS {
  public static var available: Bool {
    guard let file = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "re") else { return false }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    guard fgets(&line, Int32(line.count), file) != nil else { return false }
    let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("tls")
  }
}

/// One TLS session on one socket. Used by its socket's owner only, one call at a time (the same
/// discipline as the socket itself): OpenSSL sessions are not safe for concurrent calls.
public final class TLSSession: @unchecked Sendable {
  // @unchecked: the SSL object is touched by one thread at a time — the poller while it
  // handshakes, then the connection's own thread — and handed over with the socket (a thread
  // start or a queue hop orders the two).
  let ssl: OpaquePointer
  public let context: TLSContext

  /// A session on `descriptor` (which the caller keeps open while the session lives), server or
  /// client after `context`.
  public init(context: TLSContext, descriptor: Int32) throws(StrataError) {
    guard let ssl = SSL_new(context.context) else {
      throw StrataError(.resourceExhausted, "TLS: SSL_new failed: \(tlsErrorText(nil))")
    }
    // Kernel TLS needs the socket itself as the write BIO; user-space sessions write through a
    // buffer that gathers records into large sends.
    let buffered = !context.kernelRequested && TLSSession.writeBuffering
    let attached =
      buffered
      ? strata_ssl_set_buffered_fd(ssl, descriptor, Int32(Self.writeBufferBytes)) : SSL_set_fd(ssl, descriptor)
    guard attached == 1 else {
      SSL_free(ssl)
      throw StrataError(.internalError, "TLS: attaching the socket failed: \(tlsErrorText(nil))")
    }
    if context.isServer { SSL_set_accept_state(ssl) } else { SSL_set_connect_state(ssl) }
    self.ssl = ssl
    self.context = context
  }

  deinit { SSL_free(ssl) }

  /// Encrypted bytes gathered before one `send` (user-space sessions): 16 records. The receiver's
  /// read-ahead buffer (shim.h) is as large, so one send is one wakeup and one `recv` there.
  public static let writeBufferBytes = 256 << 10

  /// STRATA_TLS_WRITE_BUFFER=0 in the environment writes each record with its own `send`, as
  /// before the buffer: the switch docs/performance.md's before/after rows were measured with.
  static let writeBuffering: Bool = getenv("STRATA_TLS_WRITE_BUFFER").map { String(cString: $0) != "0" } ?? true

  /// Where records are encrypted: the kernel only when both directions were handed to it.
  public var mode: TLSMode { strata_ssl_ktls_send(ssl) == 1 && strata_ssl_ktls_recv(ssl) == 1 ? .kernel : .user }

  /// The negotiated protocol ("TLSv1.3").
  public var version: String { String(cString: SSL_get_version(ssl)) }

  /// The peer certificate's subject common name, when it presented a certificate that verified.
  public var peerCommonName: String? {
    guard SSL_get_verify_result(ssl) == X509_V_OK else { return nil }
    var buffer = [CChar](repeating: 0, count: 256)
    let length = strata_ssl_peer_common_name(ssl, &buffer, Int32(buffer.count))
    guard length >= 0 else { return nil }
    return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// Whether the peer's certificate names `identity` (common name or DNS alternative name).
  public func peerNames(_ identity: String) -> Bool { strata_ssl_peer_names(ssl, identity) == 1 }

  /// Whether the peer's certificate chains to one of `context`'s CAs alone (and is valid now).
  public func peerVerifies(against context: TLSContext) -> Bool {
    guard let anchors = context.anchors else { return false }
    return strata_ssl_peer_verifies_against(ssl, anchors) == 1
  }

  /// What one step of a non-blocking handshake came to.
  public enum HandshakeStep: Sendable {
    case done
    /// The peer has not sent enough yet: wait until the socket is readable.
    case wantRead
    /// The socket buffer is full: wait until it is writable.
    case wantWrite
  }

  /// Advances the handshake as far as the socket allows without blocking (non-blocking socket),
  /// or to its end (blocking socket, bounded by the socket's timeouts).
  public func handshake(peer: String) throws(StrataError) -> HandshakeStep {
    while true {
      let result = SSL_do_handshake(ssl)
      if result == 1 { return .done }
      let error = SSL_get_error(ssl, result)
      let code = errno
      switch error {
      case SSL_ERROR_WANT_READ:
        if code == EINTR { continue }
        return .wantRead
      case SSL_ERROR_WANT_WRITE:
        if code == EINTR { continue }
        return .wantWrite
      case SSL_ERROR_ZERO_RETURN:
        throw StrataError(.unavailable, "TLS handshake with \(peer): the peer closed the connection")
      case SSL_ERROR_SYSCALL:
        let reason = tlsErrorText(ssl)
        if code == 0 || code == ECONNRESET || code == EPIPE {
          throw StrataError(
            .unavailable,
            "TLS handshake with \(peer) failed: the peer closed the connection"
              + (reason.isEmpty ? " (does it speak TLS, and accept this certificate?)" : ": \(reason)"))
        }
        throw StrataError(.unavailable, "TLS handshake with \(peer) failed: \(String(cString: strerror(code)))")
      default:
        throw StrataError(.permissionDenied, "TLS handshake with \(peer) failed: \(tlsErrorText(ssl))")
      }
    }
  }

  /// What one read or write came to.
  public enum Outcome: Sendable {
    case moved(Int)
    case wouldBlock
    case closed
    case failed(Int32, String)
  }

  /// Reads decrypted bytes (at most one record's); `wouldBlock` on a non-blocking socket with
  /// nothing whole yet, or when a blocking socket's timeout passed.
  public func read(_ base: UnsafeMutableRawPointer, _ count: Int) -> Outcome {
    while true {
      if let outcome = outcome(of: SSL_read(ssl, base, Int32(clamping: count)), writing: false) { return outcome }
    }
  }

  /// Writes `count` bytes (all of them, or `wouldBlock`: retry later with the same bytes). With
  /// `flush` false the last records may wait in the write buffer for the next write that flushes:
  /// only a caller with more bytes to send at once passes false.
  public func write(_ base: UnsafeRawPointer, _ count: Int, flush: Bool = true) -> Outcome {
    while true {
      if let outcome = outcome(of: SSL_write(ssl, base, Int32(clamping: count)), writing: true) {
        guard flush, case .moved = outcome else { return outcome }
        if let failure = self.flush() { return failure }
        return outcome
      }
    }
  }

  /// Sends what waits in the write buffer; nil when all of it went.
  private func flush() -> Outcome? {
    while true {
      switch strata_ssl_flush(ssl) {
      case 1: return nil
      case 0:
        if errno == EINTR { continue }
        return .wouldBlock
      default:
        let code = errno
        if code == EINTR { continue }
        if code == EPIPE || code == ECONNRESET { return .closed }
        return .failed(code, "")
      }
    }
  }

  /// What an `SSL_read`/`SSL_write` result means; nil when the call is to be retried (EINTR).
  /// A write's EPIPE or ECONNRESET is the peer having closed.
  private func outcome(of result: Int32, writing: Bool) -> Outcome? {
    if result > 0 { return .moved(Int(result)) }
    let code = errno
    switch SSL_get_error(ssl, result) {
    case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
      return code == EINTR ? nil : .wouldBlock
    case SSL_ERROR_ZERO_RETURN: return .closed
    case SSL_ERROR_SYSCALL:
      if code == EINTR { return nil }
      if code == 0 || (writing && (code == EPIPE || code == ECONNRESET)) { return .closed }
      return .failed(code, "")
    default: return .failed(0, tlsErrorText(ssl))
    }
  }

  /// Whether bytes wait in the session (decrypted, or read ahead and not yet decrypted): a
  /// poller sees none of them, so a non-blocking reader reads until `wouldBlock`.
  public var hasBufferedBytes: Bool { SSL_has_pending(ssl) == 1 }

  /// Sends close_notify without waiting for the peer's (the connection is closing anyway).
  public func sendCloseNotify() { _ = SSL_shutdown(ssl) }
}

/// The last verification failure or OpenSSL error as words (and clears the error queue).
func tlsErrorText(_ ssl: OpaquePointer?) -> String {
  var buffer = [CChar](repeating: 0, count: 512)
  strata_tls_error_text(ssl, &buffer, buffer.count)
  return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
