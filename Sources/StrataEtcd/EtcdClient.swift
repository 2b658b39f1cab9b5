// A small etcd v3 client over the JSON gateway: key-value, leases and watches, on keep-alive
// HTTP/1.1 connections. Every call blocks its thread: call it from threads of your own, never
// from Swift's cooperative pool.

import Foundation
public import StrataCore
import StrataHTTP
public import StrataTCP
import Synchronization

/// A blocking etcd v3 client. Requests go to the endpoint that answered last; when it cannot be
/// reached (or times out) the next is tried, in turn.
public final class EtcdClient: Sendable {
  /// One key and its value as stored in etcd.
  public struct KeyValue: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]
    /// The revision of the last write to this key.
    public var modRevision: Int64
    /// The lease the key is attached to; 0 for none.
    public var lease: Int64

    public init(key: String, value: [UInt8], modRevision: Int64, lease: Int64) {
      self.key = key
      self.value = value
      self.modRevision = modRevision
      self.lease = lease
    }
  }

  public let endpoints: [EtcdEndpoint]
  /// Bounds each connect, read and write of a request (not the wait for watch events).
  public let timeoutMilliseconds: UInt64

  private struct Pool {
    var idle: [(endpoint: EtcdEndpoint, connection: HTTPClientConnection)] = []
    var preferred = 0
  }

  private let pool = Mutex(Pool())
  /// TLS for `https://` endpoints (the CA of etcd's certificate; a client certificate when etcd
  /// asks for one, `--client-cert-auth`). New connections use the context in force when they open.
  public var tls: TLSContext? { tlsContext.withLock { $0 } }
  private let tlsContext: Mutex<TLSContext?>
  /// etcd user and password (`auth enable`): requests carry the token they are exchanged for.
  private let credentials: (user: String, password: String)?
  /// The current auth token; nil until the first request, and again after etcd refuses it.
  private let authToken = Mutex<String?>(nil)
  /// Idle connections kept for reuse.
  private static let idleConnectionsMax = 4

  /// `endpoints` must not be empty.
  public init(
    endpoints: [EtcdEndpoint], timeoutMilliseconds: UInt64 = 2000, tls: TLSContext? = nil, user: String = "",
    password: String = ""
  ) {
    precondition(!endpoints.isEmpty, "EtcdClient needs at least one endpoint")
    self.endpoints = endpoints
    self.timeoutMilliseconds = timeoutMilliseconds
    tlsContext = Mutex(tls)
    credentials = user.isEmpty ? nil : (user, password)
  }

  /// Puts a new TLS context in force for connections opened from now on (config reload: a renewed
  /// client certificate); open and idle connections keep the one they were made with.
  public func replaceTLS(_ tls: TLSContext?) { tlsContext.withLock { $0 = tls } }

  // MARK: Authentication

  /// The token requests carry: exchanged for the user and password on first use, and again after
  /// etcd refused it (simple tokens expire when idle). nil without credentials.
  private func authorization(renew: Bool = false) throws(StrataError) -> String? {
    guard let credentials else { return nil }
    if !renew, let token = authToken.withLock({ $0 }) { return token }
    let body = GatewayJSON.encode(AuthenticateRequest(name: credentials.user, password: credentials.password))
    let bytes = try exchange("/v3/auth/authenticate", body, authorization: nil)
    let response = try GatewayJSON.decode(AuthenticateResponse.self, from: bytes, what: "authenticate")
    guard let token = response.token, !token.isEmpty else {
      throw StrataError(.permissionDenied, "etcd authenticate: no token in the answer (is auth enabled?)")
    }
    authToken.withLock { $0 = token }
    return token
  }

  /// Whether etcd refused a request for its token (expired, or auth enabled since).
  private static func isAuthTokenRefusal(_ error: StrataError) -> Bool {
    error.message.contains("invalid auth token") || error.message.contains("user name is empty")
  }

  // MARK: Key-value

  /// Writes `value` under `key` (attached to `lease` unless 0); returns the revision of the write.
  @discardableResult
  public func put(_ key: String, value: [UInt8], lease: Int64 = 0) throws(StrataError) -> Int64 {
    let request = PutRequest(
      key: JSONBytes(Array(key.utf8)), value: JSONBytes(value), lease: lease == 0 ? nil : JSONInt64(lease))
    let response = try call("/v3/kv/put", request, as: PutResponse.self)
    return try revision(response.header, "put")
  }

  /// Every key starting with `prefix`, in key order, and the store's revision when read.
  public func range(prefix: String) throws(StrataError) -> (kvs: [KeyValue], revision: Int64) {
    let request = RangeRequest(key: JSONBytes(Self.rangeStart(prefix)), rangeEnd: JSONBytes(Self.rangeEnd(prefix)))
    let response = try call("/v3/kv/range", request, as: RangeResponse.self)
    return (
      try (response.kvs ?? []).map { kv throws(StrataError) in try Self.keyValue(kv, "range") },
      try revision(response.header, "range")
    )
  }

  /// The value under exactly `key`, or nil.
  public func get(_ key: String) throws(StrataError) -> KeyValue? {
    let request = RangeRequest(key: JSONBytes(Array(key.utf8)), rangeEnd: nil)
    let response = try call("/v3/kv/range", request, as: RangeResponse.self)
    guard let first = response.kvs?.first else { return nil }
    return try Self.keyValue(first, "get")
  }

  /// Deletes `key` (nothing happens if it is absent); returns the store's revision afterwards.
  @discardableResult
  public func delete(_ key: String) throws(StrataError) -> Int64 {
    let request = RangeRequest(key: JSONBytes(Array(key.utf8)), rangeEnd: nil)
    let response = try call("/v3/kv/deleterange", request, as: DeleteRangeResponse.self)
    return try revision(response.header, "delete")
  }

  // MARK: Leases

  /// Grants a lease of `ttlSeconds`; returns its id and the TTL etcd granted (it may raise a
  /// TTL below its minimum).
  public func grantLease(ttlSeconds: Int64) throws(StrataError) -> (id: Int64, ttlSeconds: Int64) {
    let response = try call(
      "/v3/lease/grant", LeaseGrantRequest(ttl: JSONInt64(ttlSeconds)), as: LeaseGrantResponse.self)
    if let error = response.error, !error.isEmpty {
      throw StrataError(.unavailable, "etcd refused a lease: \(error)")
    }
    guard let id = response.id?.value, id != 0 else {
      throw StrataError(.protocolError, "etcd lease grant: the response has no lease ID")
    }
    return (id, response.ttl?.value ?? ttlSeconds)
  }

  /// Refreshes `lease`; returns its remaining TTL in seconds, 0 when the lease no longer exists.
  public func keepAlive(lease: Int64) throws(StrataError) -> Int64 {
    do throws(StrataError) {
      return try keepAlive(lease: lease, authorization: try authorization())
    } catch  where credentials != nil && Self.isAuthTokenRefusal(error) {
      return try keepAlive(lease: lease, authorization: try authorization(renew: true))
    }
  }

  private func keepAlive(lease: Int64, authorization: String?) throws(StrataError) -> Int64 {
    let body = GatewayJSON.encode(LeaseIDRequest(id: JSONInt64(lease)))
    let bytes = try exchange("/v3/lease/keepalive", body, authorization: authorization)
    guard let first = bytes.split(separator: UInt8(ascii: "\n")).first(where: { !$0.isEmpty }) else {
      throw StrataError(.protocolError, "etcd lease keepalive: empty response")
    }
    let envelope = try GatewayJSON.decode(
      StreamEnvelope<LeaseKeepAliveResponse>.self, from: Array(first), what: "lease keepalive")
    if let error = envelope.error { throw StrataError(error.strataCode, "etcd lease keepalive: \(error.message)") }
    guard let result = envelope.result else {
      throw StrataError(.protocolError, "etcd lease keepalive: no result in '\(GatewayJSON.printable(Array(first)))'")
    }
    return result.ttl?.value ?? 0
  }

  /// Revokes `lease` and deletes the keys attached to it. A lease that is already gone is not an error.
  public func revoke(lease: Int64) throws(StrataError) {
    do {
      _ = try call("/v3/kv/lease/revoke", LeaseIDRequest(id: JSONInt64(lease)), as: EmptyResponse.self)
    } catch  where error.code == .notFound {
      return
    }
  }

  // MARK: Watch

  /// Streams events under `prefix` from `startRevision` on a thread of its own; `onEvents` gets
  /// each batch with the header revision; `onEnd` once when the stream ends (error or cancel).
  /// Returns once etcd has confirmed the watch, so writes made after it returns are seen.
  public func watch(
    prefix: String, startRevision: Int64,
    onEvents: @escaping @Sendable ([WatchEvent], Int64) -> Void,
    onEnd: @escaping @Sendable (StrataError?) -> Void
  ) throws(StrataError) -> EtcdWatch {
    let request = WatchRequest(
      createRequest: .init(
        key: JSONBytes(Self.rangeStart(prefix)), rangeEnd: JSONBytes(Self.rangeEnd(prefix)),
        startRevision: JSONInt64(startRevision)))
    let body = GatewayJSON.encode(request)
    var lastError = StrataError(.unavailable, "no etcd endpoint")
    for endpoint in endpointOrder() {
      let connection: HTTPClientConnection
      do throws(StrataError) {
        connection = try open(endpoint)
        try connection.send(Self.request(endpoint, "/v3/watch", body, authorization: try authorization()))
        let head = try connection.readHead()
        guard head.status == 200 else {
          let (bytes, _) = try connection.readBody()
          throw Self.failure(head, bytes, what: "watch")
        }
      } catch {
        guard Self.isTransport(error) else { throw error }
        lastError = error
        continue
      }
      let watch = EtcdWatch(connection: connection, prefix: prefix)
      // The first message confirms the watch (or says why not): read it before returning.
      try watch.awaitCreated()
      // Events may be minutes apart, so reads have no timeout; the kernel's probes find a dead
      // stream instead (the watch then ends and the session reads the members again).
      connection.socket.setTimeout(milliseconds: 0)
      let probing = EtcdWatch.idleProbing
      connection.socket.probeWhileIdle(
        idleSeconds: probing.idleSeconds, intervalSeconds: probing.intervalSeconds, probes: probing.probes)
      let thread = Thread { watch.run(onEvents: onEvents, onEnd: onEnd) }
      thread.name = "etcd-watch"
      thread.start()
      return watch
    }
    throw lastError
  }

  // MARK: Transport

  private func call<Response: Decodable>(
    _ path: String, _ request: some Encodable, as type: Response.Type
  ) throws(StrataError) -> Response {
    let body = GatewayJSON.encode(request)
    let bytes: [UInt8]
    do throws(StrataError) {
      bytes = try exchange(path, body, authorization: try authorization())
    } catch  where credentials != nil && Self.isAuthTokenRefusal(error) {
      bytes = try exchange(path, body, authorization: try authorization(renew: true))
    }
    return try GatewayJSON.decode(type, from: bytes, what: path)
  }

  /// Sends one request and returns the body of a 200 response; other statuses become errors.
  /// Transport failures move on to the next endpoint; a failure on a reused connection is retried
  /// once on a fresh one (etcd may have closed it while idle).
  private func exchange(_ path: String, _ body: [UInt8], authorization: String?) throws(StrataError) -> [UInt8] {
    var failures: [String] = []
    var lastError = StrataError(.unavailable, "no etcd endpoint")
    for endpoint in endpointOrder() {
      var connection = takeIdle(for: endpoint)
      var attempts = connection == nil ? 1 : 2
      while attempts > 0 {
        attempts -= 1
        do throws(StrataError) {
          let current: HTTPClientConnection
          if let connection { current = connection } else { current = try open(endpoint) }
          connection = nil
          try current.send(Self.request(endpoint, path, body, authorization: authorization))
          let head = try current.readHead()
          let (bytes, reusable) = try current.readBody()
          if reusable { giveBack(current, endpoint) }
          markPreferred(endpoint)
          guard head.status == 200 else { throw Self.failure(head, bytes, what: path) }
          return bytes
        } catch {
          guard Self.isTransport(error) else { throw error }
          lastError = error
          if attempts == 0 { failures.append("\(endpoint): \(error.message)") }
        }
      }
    }
    if failures.count == 1 { throw lastError }
    throw StrataError(
      lastError.code, "no etcd endpoint answered \(path): \(failures.joined(separator: "; "))", cause: lastError)
  }

  private static func isTransport(_ error: StrataError) -> Bool {
    error.code == .unavailable || error.code == .timeout || error.code == .ioError
  }

  /// Endpoints starting with the one that answered last.
  private func endpointOrder() -> [EtcdEndpoint] {
    let first = pool.withLock { $0.preferred }
    return Array(endpoints[first...] + endpoints[..<first])
  }

  private func markPreferred(_ endpoint: EtcdEndpoint) {
    guard let index = endpoints.firstIndex(of: endpoint) else { return }
    pool.withLock { $0.preferred = index }
  }

  private func takeIdle(for endpoint: EtcdEndpoint) -> HTTPClientConnection? {
    pool.withLock { pool in
      guard let index = pool.idle.lastIndex(where: { $0.endpoint == endpoint }) else { return nil }
      return pool.idle.remove(at: index).connection
    }
  }

  private func giveBack(_ connection: HTTPClientConnection, _ endpoint: EtcdEndpoint) {
    pool.withLock { pool in
      if pool.idle.count < Self.idleConnectionsMax { pool.idle.append((endpoint, connection)) }
    }
  }

  /// Connects to `endpoint`; an `https://` one over TLS with `tls` (which verifies etcd's
  /// certificate against its CA and the endpoint's host, and presents the client certificate).
  private func open(_ endpoint: EtcdEndpoint) throws(StrataError) -> HTTPClientConnection {
    if endpoint.isTLS && tls == nil {
      throw StrataError(
        .invalidConfiguration, "etcd endpoint \(endpoint) is https: give the CA of etcd's certificate (cluster.etcd_ca)"
      )
    }
    return try HTTPClientConnection.open(
      endpoint.address, timeoutMilliseconds: timeoutMilliseconds, tls: endpoint.isTLS ? tls : nil)
  }

  /// `POST path` with a JSON body (and etcd's auth token, when given).
  private static func request(_ endpoint: EtcdEndpoint, _ path: String, _ body: [UInt8], authorization: String?)
    -> HTTPClientRequest
  {
    var headers = [("Host", endpoint.hostHeader), ("Content-Type", "application/json")]
    if let authorization { headers.append(("Authorization", authorization)) }
    headers.append(("Accept", "application/json"))
    return HTTPClientRequest(method: "POST", target: path, headers: headers, body: body)
  }

  static func failure(_ head: HTTPResponseHead, _ body: [UInt8], what: String) -> StrataError {
    if let error = try? GatewayJSON.decode(GatewayError.self, from: body, what: what), error.grpcCode != nil {
      return StrataError(error.strataCode, "etcd \(what): \(error.message)")
    }
    if head.status == 404 {
      return StrataError(
        .protocolError, "etcd \(what): the server has no such path (HTTP 404); is it etcd 3.4+ with its v3 gateway?")
    }
    return StrataError(
      head.status >= 500 ? .unavailable : .protocolError,
      "etcd \(what): HTTP \(head.status) \(head.reason): '\(GatewayJSON.printable(body))'")
  }

  private func revision(_ header: ResponseHeader?, _ what: String) throws(StrataError) -> Int64 {
    guard let revision = header?.revision?.value else {
      throw StrataError(.protocolError, "etcd \(what): the response has no header revision")
    }
    return revision
  }

  static func keyValue(_ kv: KeyValueJSON, _ what: String) throws(StrataError) -> KeyValue {
    guard let key = kv.key?.bytes, let text = String(validating: key, as: UTF8.self) else {
      throw StrataError(.protocolError, "etcd \(what): a key is missing or not UTF-8")
    }
    return KeyValue(
      key: text, value: kv.value?.bytes ?? [], modRevision: kv.modRevision?.value ?? 0, lease: kv.lease?.value ?? 0)
  }

  /// The first key of a prefix range ("\0" for the empty prefix: every key).
  static func rangeStart(_ prefix: String) -> [UInt8] {
    prefix.isEmpty ? [0] : Array(prefix.utf8)
  }

  /// The end of the range of keys starting with `prefix`: the prefix with its last byte below
  /// 0xff incremented ("\0", every key after the start, when there is none).
  static func rangeEnd(_ prefix: String) -> [UInt8] {
    var bytes = Array(prefix.utf8)
    while let last = bytes.last {
      if last < 0xff {
        bytes[bytes.count - 1] = last + 1
        return bytes
      }
      bytes.removeLast()
    }
    return [0]
  }
}
