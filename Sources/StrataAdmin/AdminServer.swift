// The admin API server: routes registered by method and path (the node's own and, through the
// same call, other modules' such as the cluster's), admin-token checks, StrataError → HTTP status
// mapping with JSON error bodies, status sections and readiness checks contributed by modules.

import Dispatch
public import Logging
public import StrataCore
import StrataNode
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
    guard let object = try JSONValue.parse(body).objectValue else {
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

  /// A JSON document (compact, keys sorted).
  public static func json(_ value: JSONValue, status: Int = 200) -> AdminResponse {
    AdminResponse(status: status, contentType: "application/json", body: Array(value.encoded.utf8))
  }

  /// The JSON error body for `error`, with the HTTP status its code maps to.
  public static func error(_ error: StrataError) -> AdminResponse {
    AdminResponse(
      status: AdminServer.httpStatus(for: error.code), contentType: "application/json",
      body: Array(adminErrorBody(error.code, error.message).utf8))
  }
}

/// The admin HTTP server. Register routes, status sections and readiness checks, then `start()`.
public final class AdminServer: Sendable {
  public typealias Handler = @Sendable (AdminRequest) async throws(StrataError) -> AdminResponse

  /// Settings of the admin server.
  public struct Configuration: Sendable {
    public var listen: HostPort
    /// Tokens that may call protected routes. When `anyTokensConfigured` is false the API is
    /// open (the embedded default, bound to loopback).
    public var adminTokens: Set<String>
    /// Whether the node has any tokens at all (a non-admin token gets 403, an unknown one 401).
    public var knownTokens: Set<String>
    /// Connections open at once (admin.connections); at the limit the oldest one not being
    /// answered is closed to make room, so probes always get in.
    public var connectionsMax: Int
    /// A request must arrive whole within this (admin.request_timeout).
    public var requestTimeoutMilliseconds: UInt64
    /// Threads running the handlers of calls other than probes.
    public var workers: Int

    public init(
      listen: HostPort, adminTokens: Set<String> = [], knownTokens: Set<String> = [], connectionsMax: Int = 64,
      requestTimeoutMilliseconds: UInt64 = 10_000, workers: Int = 4
    ) {
      self.listen = listen
      self.adminTokens = adminTokens
      self.knownTokens = knownTokens.union(adminTokens)
      self.connectionsMax = connectionsMax
      self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
      self.workers = workers
    }

    /// The admin settings of a node configuration: its tokens marked admin may call the API.
    /// The TLS context new admin connections handshake with (read at each accept, so a reload's
    /// certificates apply to new connections); nil or returning nil: plaintext HTTP.
    public var tls: (@Sendable () -> TLSContext?)?

    public init(_ node: NodeConfiguration) {
      self.init(
        listen: node.admin.listen, adminTokens: Set(node.auth.tokens.filter(\.admin).map(\.token)),
        knownTokens: Set(node.auth.tokens.map(\.token)), connectionsMax: node.admin.connectionsMax,
        requestTimeoutMilliseconds: node.admin.requestTimeout.milliseconds)
    }
  }

  private struct Route: Sendable {
    var method: String
    var path: String
    var requiresToken: Bool
    var handler: Handler
  }

  private struct State {
    var routes: [Route] = []
    var sections: [String: @Sendable () -> JSONValue] = [:]
    var readiness: [(String, @Sendable () -> String?)] = []
    var adminTokens: Set<String>
    var knownTokens: Set<String>
    var started = false
    var nextRequest: UInt64 = 0
  }

  private let state: Mutex<State>
  private let logger: Logger
  private let http: Mutex<HTTPServer?>
  private let configuration: Configuration

  /// Binds the listening socket now (port 0 picks a free one; see `address`).
  public init(configuration: Configuration, logger: Logger) throws(StrataError) {
    self.configuration = configuration
    self.logger = logger
    state = Mutex(State(adminTokens: configuration.adminTokens, knownTokens: configuration.knownTokens))
    http = Mutex(nil)
    let limits = HTTPServerLimits(
      connectionsMax: configuration.connectionsMax,
      requestTimeoutMilliseconds: configuration.requestTimeoutMilliseconds,
      workers: configuration.workers)
    let server = try HTTPServer(
      listen: configuration.listen, limits: limits, logger: logger, tls: configuration.tls, inline: AdminServer.isProbe
    ) { [weak self] request in
      guard let self else { return HTTPResponse(status: 503, contentType: "text/plain", body: []) }
      return self.answer(request)
    }
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
      precondition(!state.started, "AdminServer.route(\(method) \(path)) after start()")
      precondition(
        !state.routes.contains { $0.method == method && $0.path == path }, "route \(method) \(path) registered twice")
      state.routes.append(Route(method: method, path: path, requiresToken: requiresToken, handler: handler))
    }
  }

  /// Adds a section to GET /v1/status under `name`, computed on each call.
  public func statusSection(_ name: String, _ provider: @escaping @Sendable () -> JSONValue) {
    state.withLock { $0.sections[name] = provider }
  }

  /// Adds a readiness check to GET /ready: it returns nil when ready, else the reason it is not.
  public func readinessCheck(_ name: String, _ check: @escaping @Sendable () -> String?) {
    state.withLock { $0.readiness.append((name, check)) }
  }

  /// Every registered route, as (method, path), in registration order.
  public var routes: [(method: String, path: String)] { state.withLock { $0.routes.map { ($0.method, $0.path) } } }

  /// The status sections, each computed now.
  public func statusSections() -> [String: JSONValue] {
    let providers = state.withLock { $0.sections }
    return providers.mapValues { $0() }
  }

  /// The reasons the node is not ready; empty when it is.
  public func notReadyReasons() -> [String] {
    let checks = state.withLock { $0.readiness }
    return checks.compactMap { name, check in check().map { "\(name): \($0)" } }
  }

  /// Replaces the tokens (config reload).
  public func replaceTokens(admin: Set<String>, known: Set<String>) {
    state.withLock { state in
      state.adminTokens = admin
      state.knownTokens = known.union(admin)
    }
  }

  /// Starts serving on threads of its own.
  public func start() {
    state.withLock { $0.started = true }
    http.withLock { $0!.start() }
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
    let (routes, adminTokens, knownTokens, number) = state.withLock { state in
      state.nextRequest += 1
      return (state.routes, state.adminTokens, state.knownTokens, state.nextRequest)
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
    if let route = onPath.first(where: { $0.method == http.method || ($0.method == "GET" && http.method == "HEAD") }) {
      if let denied = authorize(http, route: route, adminTokens: adminTokens, knownTokens: knownTokens) {
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
  /// one, 403 with a token that is not an admin token.
  private func authorize(
    _ request: HTTPRequest, route: Route, adminTokens: Set<String>, knownTokens: Set<String>
  ) -> AdminResponse? {
    guard route.requiresToken, !knownTokens.isEmpty else { return nil }
    var token = ""
    if let header = request.headers["authorization"], header.hasPrefix("Bearer ") {
      token = trimmed(header.dropFirst("Bearer ".count))
    }
    if adminTokens.contains(token) { return nil }
    let isKnown = knownTokens.contains(token)
    let message =
      token.isEmpty
      ? "this call needs an admin token: Authorization: Bearer TOKEN"
      : (isKnown ? "this token is not an admin token (auth.tokens[].admin)" : "unknown token")
    var refusal = AdminResponse.error(StrataError(.permissionDenied, message))
    refusal.status = isKnown ? 403 : 401
    return refusal
  }

  /// Runs an async handler from the connection's thread and waits for it. The handler runs on
  /// a task executor of this connection's own, never needing Swift's cooperative pool (which a
  /// busy process may have blocked).
  private func run(_ handler: @escaping Handler, _ request: AdminRequest) -> AdminResponse {
    let executor = QueueExecutor(label: "strata.admin.request")
    do throws(StrataError) {
      return try blocking(on: executor) { () async throws(StrataError) -> AdminResponse in try await handler(request) }
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
