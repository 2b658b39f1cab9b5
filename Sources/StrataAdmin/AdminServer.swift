// The admin API server: routes registered by method and path (the node's own and, through the
// same call, other modules' such as the cluster's), admin-token checks, StrataError → HTTP status
// mapping with JSON error bodies, status sections and readiness checks contributed by modules.

import Dispatch
public import Logging
public import StrataConfig
public import StrataCore
import StrataHTTP
public import StrataNode
public import StrataTCP
import Synchronization

/// A request to an admin route.
public struct AdminRequest: Sendable {
  public var method: String
  public var path: String
  public var query: [String: String]
  /// Header names lower-cased.
  public var headers: [String: String]
  public var body: [UInt8]
  /// The request's id: the client's X-Request-Id when given, else one made by the server. It is
  /// logged and sent back in the response's X-Request-Id header.
  public var requestID: String

  public init(
    method: String, path: String, query: [String: String] = [:], headers: [String: String] = [:], body: [UInt8] = [],
    requestID: String = ""
  ) {
    self.method = method
    self.path = path
    self.query = query
    self.headers = headers
    self.body = body
    self.requestID = requestID
  }

  /// The body as a JSON object; an empty body is an empty object. Throws `invalidArgument`.
  public func jsonBody() throws(StrataError) -> [String: JSONValue] {
    if body.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return [:] }
    guard let document = try? JSONValue.parse(body) else {
      throw StrataError(.invalidArgument, "the request body is not valid JSON")
    }
    guard let object = document.objectValue else {
      throw StrataError(.invalidArgument, "the request body must be a JSON object")
    }
    return object
  }
}

/// A response from an admin route.
public struct AdminResponse: Sendable {
  public var status: Int
  public var contentType: String
  public var body: [UInt8]

  public init(status: Int, contentType: String, body: [UInt8]) {
    self.status = status
    self.contentType = contentType
    self.body = body
  }

  /// A JSON document (JSONCoding: compact, keys sorted); a value that cannot be encoded is
  /// answered 500 with the reason.
  public static func json(_ value: some Encodable, status: Int = 200) -> AdminResponse { document(value, status) }

  /// A JSON document of no fixed shape.
  public static func json(_ value: JSONValue, status: Int = 200) -> AdminResponse { document(value, status) }

  private static func document(_ value: some Encodable, _ status: Int) -> AdminResponse {
    do throws(StrataError) {
      return AdminResponse(status: status, contentType: "application/json", body: try JSONCoding.encode(value))
    } catch {
      return .error(error)
    }
  }

  /// The JSON error body for `error`, with the HTTP status its code maps to.
  public static func error(_ error: StrataError) -> AdminResponse {
    AdminResponse(
      status: AdminServer.httpStatus(for: error.code), contentType: "application/json",
      body: adminErrorBody(error.code, error.message))
  }
}

/// The admin API's error body: `{"error":{"code":"name","message":"..."}}`.
public struct AdminErrorBody: Codable, Sendable {
  public struct Detail: Codable, Sendable {
    public var code: String
    public var message: String
  }
  public var error: Detail
}

/// The bytes of an error body.
func adminErrorBody(_ code: StrataError.Code, _ message: String) -> [UInt8] {
  // Two strings always encode.
  (try? JSONCoding.encode(AdminErrorBody(error: .init(code: code.name, message: message)))) ?? []
}

/// The admin HTTP server. Register routes, status sections and readiness checks, then `start()`.
public final class AdminServer: Sendable {
  public typealias Handler = @Sendable (AdminRequest) async throws(StrataError) -> AdminResponse

  /// Settings of the admin server.
  public struct Configuration: Sendable {
    public var listen: HostPort
    /// The node's tokens (digests and scopes): those with the `operator` scope may call protected
    /// routes, others get 403, unknown ones 401. With none the API is open (the embedded default,
    /// bound to loopback).
    public var tokens: [NodeConfiguration.Auth.Token]
    /// Connections open at once (admin.connections); at the limit the oldest one not being
    /// answered is closed to make room, so probes always get in.
    public var connectionsMax: Int
    /// A request must arrive whole within this (admin.request_timeout).
    public var requestTimeoutMilliseconds: UInt64
    /// Threads running the handlers of calls other than probes.
    public var workers: Int

    public init(
      listen: HostPort, tokens: [NodeConfiguration.Auth.Token] = [], connectionsMax: Int = 64,
      requestTimeoutMilliseconds: UInt64 = 10_000, workers: Int = 4
    ) {
      self.listen = listen
      self.tokens = tokens
      self.connectionsMax = connectionsMax
      self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
      self.workers = workers
    }

    /// The TLS context new admin connections handshake with (read at each accept, so a reload's
    /// certificates apply to new connections); nil or returning nil: plaintext HTTP.
    public var tls: (@Sendable () -> TLSContext?)?

    /// The admin settings of a node configuration: its tokens with the `operator` scope may call
    /// the API.
    public init(_ node: NodeConfiguration) {
      self.init(
        listen: node.admin.listen, tokens: node.auth.tokens, connectionsMax: node.admin.connectionsMax,
        requestTimeoutMilliseconds: node.admin.requestTimeout.milliseconds)
    }
  }

  private struct Route: Sendable {
    var method: String
    var path: String
    var requiresToken: Bool
    var handler: Handler
  }

  /// Answers every request while the node starts, before its routes are in force (see
  /// `startWhileStarting`).
  public typealias StartingAnswer = @Sendable (AdminRequest) -> AdminResponse

  private enum Mode {
    /// Routes may be registered; nothing is served yet.
    case registering
    /// Served by the starting answer while routes may still be registered.
    case starting(StartingAnswer)
    /// Served by the routes, which are fixed from now on.
    case serving
  }

  private struct State {
    var routes: [Route] = []
    var sections: [String: @Sendable () -> any Encodable & Sendable] = [:]
    var readiness: [(String, @Sendable () -> String?)] = []
    var tokens: [NodeConfiguration.Auth.Token]
    var mode = Mode.registering
    var nextRequest: UInt64 = 0
  }

  private let state: Mutex<State>
  private let logger: Logger
  private let http: Mutex<HTTPServer?>
  private let configuration: Configuration
  /// Where new connections' TLS context comes from (`followTLS`).
  private final class TLSSource: Sendable {
    let provider: Mutex<(@Sendable () -> TLSContext?)?>
    init(_ provider: (@Sendable () -> TLSContext?)?) { self.provider = Mutex(provider) }
  }
  private let tlsSource: TLSSource

  /// Binds the listening socket now (port 0 picks a free one; see `address`).
  public init(configuration: Configuration, logger: Logger) throws(StrataError) {
    self.configuration = configuration
    self.logger = logger
    state = Mutex(State(tokens: configuration.tokens))
    http = Mutex(nil)
    let tlsSource = TLSSource(configuration.tls)
    self.tlsSource = tlsSource
    let limits = HTTPServerLimits(
      connectionsMax: configuration.connectionsMax,
      requestTimeoutMilliseconds: configuration.requestTimeoutMilliseconds,
      workers: configuration.workers)
    let server = try HTTPServer(
      name: "admin", listen: configuration.listen, limits: limits, logger: logger,
      tls: { tlsSource.provider.withLock { $0 }?() },
      inline: AdminServer.isProbe,
      refusal: { status, code, message in
        HTTPResponse(status: status, contentType: "application/json", body: adminErrorBody(code, message))
      },
      handler: { [weak self] request in
        guard let self else { return HTTPResponse(status: 503, contentType: "text/plain", body: []) }
        return self.answer(request)
      })
    http.withLock { $0 = server }
  }

  /// Liveness and readiness probes: answered on the HTTP event loop, never queued behind other
  /// admin calls (their handlers must stay cheap).
  static let probePaths: Set<String> = ["/health", "/ready"]

  @Sendable static func isProbe(_ request: HTTPRequest) -> Bool {
    (request.method == "GET" || request.method == "HEAD") && probePaths.contains(request.path)
  }

  /// Counters of the admin port's connections, for metrics.
  public var connectionStats: AdminConnectionStats {
    let stats = http.withLock { $0!.stats }
    return AdminConnectionStats(
      open: stats.connectionsOpen, accepted: stats.connectionsAccepted, refusedMalformed: stats.refusedMalformed,
      refusedTimeout: stats.refusedTimeout, refusedEvicted: stats.refusedEvicted, refusedBusy: stats.refusedBusy)
  }

  /// Where the admin API listens.
  public var address: HostPort { http.withLock { $0!.address } }

  /// Registers `handler` for `method` (GET, POST, ...) on `path` (exact match). Routes need an
  /// admin token unless `requiresToken` is false (/health, /ready and /metrics). Call before
  /// `start()`; registering a method and path twice is a programmer error.
  public func route(_ method: String, _ path: String, requiresToken: Bool = true, handler: @escaping Handler) {
    state.withLock { state in
      if case .serving = state.mode { preconditionFailure("AdminServer.route(\(method) \(path)) after start()") }
      precondition(
        !state.routes.contains { $0.method == method && $0.path == path }, "route \(method) \(path) registered twice")
      state.routes.append(Route(method: method, path: path, requiresToken: requiresToken, handler: handler))
    }
  }

  /// Adds a section to GET /v1/status under `name`, computed on each call.
  public func statusSection(_ name: String, _ provider: @escaping @Sendable () -> any Encodable & Sendable) {
    state.withLock { $0.sections[name] = provider }
  }

  /// Adds a section of no fixed shape to GET /v1/status.
  public func statusSection(_ name: String, _ provider: @escaping @Sendable () -> JSONValue) {
    statusSection(name) { provider() as any Encodable & Sendable }
  }

  /// Adds a readiness check to GET /ready: it returns nil when ready, else the reason it is not.
  public func readinessCheck(_ name: String, _ check: @escaping @Sendable () -> String?) {
    state.withLock { $0.readiness.append((name, check)) }
  }

  /// Every registered route, as (method, path), in registration order.
  public var routes: [(method: String, path: String)] { state.withLock { $0.routes.map { ($0.method, $0.path) } } }

  /// The status sections, each computed now.
  public func statusSections() -> [String: any Encodable & Sendable] {
    let providers = state.withLock { $0.sections }
    return providers.mapValues { $0() }
  }

  /// The reasons the node is not ready; empty when it is.
  public func notReadyReasons() -> [String] {
    let checks = state.withLock { $0.readiness }
    return checks.compactMap { name, check in check().map { "\(name): \($0)" } }
  }

  /// Replaces the tokens (config reload): the next request is checked against them.
  public func replaceTokens(_ tokens: [NodeConfiguration.Auth.Token]) {
    state.withLock { $0.tokens = tokens }
  }

  /// Told about every refused admin call (the node writes the audit line and counts it):
  /// the event, the detail (reason or missing scope), the message and the token's fingerprint.
  public typealias RefusalAuditor =
    @Sendable (
      _ event: AuditEvent, _ detail: String, _ message: String, _ fingerprint: String?
    ) -> Void

  private let auditor = Mutex<RefusalAuditor?>(nil)

  /// Sets where refused calls are reported (see `RefusalAuditor`).
  public func onRefusal(_ report: @escaping RefusalAuditor) { auditor.withLock { $0 = report } }

  /// Starts serving the routes on threads of its own (or, after `startWhileStarting`, switches
  /// every request from then on to them).
  public func start() {
    let wasStarting = state.withLock { state in
      defer { state.mode = .serving }
      if case .starting = state.mode { return true }
      return false
    }
    if !wasStarting { http.withLock { $0!.start() } }
  }

  /// Starts serving before the routes are in force: `answer` answers every request (tokens are
  /// not checked: it must give nothing away but how far the start has got) until `start()`.
  /// Routes may still be registered meanwhile. A node starts so while it reads its NVMe tier,
  /// which can take minutes, so that probes and Prometheus see it starting rather than down.
  public func startWhileStarting(_ answer: @escaping StartingAnswer) {
    state.withLock { state in
      guard case .registering = state.mode else { preconditionFailure("AdminServer.startWhileStarting after start") }
      state.mode = .starting(answer)
    }
    http.withLock { $0!.start() }
  }

  /// New connections take their TLS context from `provider` from now on (nil or returning nil:
  /// plaintext); a node started before its data plane existed follows the data plane's
  /// (reloadable) certificates once it does.
  public func followTLS(_ provider: @escaping @Sendable () -> TLSContext?) {
    tlsSource.provider.withLock { $0 = provider }
  }

  /// Stops accepting and closes every connection.
  public func stop() {
    http.withLock { $0 }?.stop()
  }

  /// The HTTP status for an error code (docs/admin.md).
  public static func httpStatus(for code: StrataError.Code) -> Int {
    switch code {
    case .invalidArgument, .invalidConfiguration: 400
    case .permissionDenied: 403
    case .notFound: 404
    case .alreadyExists: 409
    case .unavailable, .staleEpoch: 503
    case .resourceExhausted: 429
    case .timeout: 504
    case .unsupported: 501
    default: 500
    }
  }

  /// Answers one request (on its connection's thread): routing, auth, the handler, the log line.
  private func answer(_ http: HTTPRequest) -> HTTPResponse {
    let started = DispatchTime.now().uptimeNanoseconds
    let (routes, tokens, number, starting) = state.withLock { state in
      state.nextRequest += 1
      var starting: StartingAnswer?
      if case .starting(let answer) = state.mode { starting = answer }
      return (state.routes, state.tokens, state.nextRequest, starting)
    }
    // A client's id is used only when it is printable ASCII of at most 64 bytes: it is logged and
    // sent back in a response header, so it must not be able to start another line.
    let requestID =
      http.headers["x-request-id"].flatMap { isSafeHeaderValue($0, bytesMax: 64) ? $0 : nil } ?? "admin-\(number)"
    let request = AdminRequest(
      method: http.method, path: http.path, query: http.query, headers: http.headers, body: http.body,
      requestID: requestID)
    let response: AdminResponse
    let onPath = routes.filter { $0.path == http.path }
    if let starting {
      response = starting(request)
    } else if let route = onPath.first(where: {
      $0.method == http.method || ($0.method == "GET" && http.method == "HEAD")
    }) {
      if let denied = authorize(http, route: route, tokens: tokens) {
        response = denied
      } else {
        response = run(route.handler, request)
      }
    } else if onPath.isEmpty {
      response = .error(StrataError(.notFound, "no admin route \(http.path)"))
    } else {
      var refused = AdminResponse.error(
        StrataError(
          .invalidArgument,
          "\(http.method) is not allowed on \(http.path); use \(onPath.map(\.method).joined(separator: " or "))"))
      refused.status = 405
      response = refused
    }
    let milliseconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
    // Probes and scrapes arrive every few seconds: logged at debug, every other call at info.
    let quiet = ["/health", "/ready", "/metrics"].contains(http.path) && response.status < 400
    logger.log(
      level: quiet ? .debug : .info, "admin request",
      metadata: [
        "request_id": "\(requestID)", "method": "\(http.method)", "path": "\(http.path)",
        "status": "\(response.status)", "ms": "\((milliseconds * 10).rounded() / 10)",
      ])
    return HTTPResponse(
      status: response.status, contentType: response.contentType, headers: [("X-Request-Id", requestID)],
      body: http.method == "HEAD" ? [] : response.body)
  }

  /// nil when the call may go ahead, else the refusal: 401 without a token or with an unknown
  /// one, 403 naming the missing scope for a token without `operator`. Tokens are matched by
  /// digest in constant time; refusals are counted and reported to the auditor (never the token).
  private func authorize(_ request: HTTPRequest, route: Route, tokens: [NodeConfiguration.Auth.Token])
    -> AdminResponse?
  {
    guard route.requiresToken, !tokens.isEmpty else { return nil }
    var secret = ""
    if let header = request.headers["authorization"], header.hasPrefix("Bearer ") {
      secret = httpTrimmed(header.dropFirst("Bearer ".count))
    }
    let presented = Array(secret.utf8)
    let match = secret.isEmpty ? nil : NodeConfiguration.Auth.match(secret: presented, in: tokens)
    let operation = "\(request.method) \(request.path)"
    let refusal: (status: Int, event: AuditEvent, detail: String, message: String)
    if let match {
      do throws(ScopeRefusal) {
        try ScopeRefusal.check(operation, needs: .operator, held: match.scopes)
        return nil
      } catch {
        refusal = (403, .scopeDenied, "\(error.missing)", error.error.message)
      }
    } else if secret.isEmpty {
      refusal = (
        401, .authFailure, "no_token", "\(operation) needs a token with scope 'operator': Authorization: Bearer TOKEN"
      )
    } else {
      refusal = (401, .authFailure, "unknown_token", "unknown token")
    }
    let fingerprint = secret.isEmpty ? nil : tokenFingerprint(TokenDigest(secret: presented))
    auditor.withLock { $0 }?(refusal.event, refusal.detail, "admin API: \(refusal.message)", fingerprint)
    var response = AdminResponse.error(StrataError(.permissionDenied, refusal.message))
    response.status = refusal.status
    return response
  }

  /// Runs an async handler from the connection's thread and waits for it. The handler runs on
  /// this thread (`waitForTask`), never needing Swift's cooperative pool (which a busy process may
  /// have blocked).
  private func run(_ handler: @escaping Handler, _ request: AdminRequest) -> AdminResponse {
    do throws(StrataError) {
      return try waitForTask { () async throws(StrataError) -> AdminResponse in try await handler(request)
      }
    } catch {
      return .error(error)
    }
  }
}

/// Counters of the admin port's connections, read at one instant.
public struct AdminConnectionStats: Sendable, Hashable {
  public var open: Int
  public var accepted: Int
  /// Requests refused by the parser (4xx), cut at the request deadline, closed to make room for
  /// a newer connection, or refused because the worker queue was full.
  public var refusedMalformed: Int
  public var refusedTimeout: Int
  public var refusedEvicted: Int
  public var refusedBusy: Int
}
