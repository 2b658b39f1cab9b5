// The one operating-error type of the project: a stable code, a message for people, and a cause.
// Programmer errors are preconditions, not StrataErrors.

/// An error that a caller can act on: its `code` is stable across releases (and travels on the
/// wire and in exit codes), its `message` says what went wrong in words, its `cause` keeps the
/// underlying error where there is one.
public struct StrataError: Error, Sendable, CustomStringConvertible {
  /// A stable, extensible error code. Numbers are part of the wire protocol and never reused.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let number: UInt16
    public let name: String

    private init(_ number: UInt16, _ name: String) {
      self.number = number
      self.name = name
    }

    public var description: String { name }

    public static func == (lhs: Code, rhs: Code) -> Bool { lhs.number == rhs.number }
    public func hash(into hasher: inout Hasher) { hasher.combine(number) }

    /// A request or value that can never succeed as given (bad key, bad size, bad token).
    public static let invalidArgument = Code(1, "invalid_argument")
    /// A configuration value that is missing, out of range or of the wrong kind.
    public static let invalidConfiguration = Code(2, "invalid_configuration")
    /// The named block, node or object does not exist.
    public static let notFound = Code(3, "not_found")
    /// The object exists already (blocks are immutable: the first write wins).
    public static let alreadyExists = Code(4, "already_exists")
    /// Data failed its checksum: it is never returned as data.
    public static let checksumMismatch = Code(5, "checksum_mismatch")
    /// A limit was reached: capacity, connections, in-flight bytes, leases, queue depth.
    public static let resourceExhausted = Code(6, "resource_exhausted")
    /// The operating system reported an I/O failure (disk full, EIO, vanished directory).
    public static let ioError = Code(7, "io_error")
    /// A peer sent bytes that break the protocol.
    public static let protocolError = Code(8, "protocol_error")
    /// A peer or service cannot be reached now; the same call may succeed later.
    public static let unavailable = Code(9, "unavailable")
    /// The operation did not finish within its deadline.
    public static let timeout = Code(10, "timeout")
    /// The caller's credentials do not allow the operation.
    public static let permissionDenied = Code(11, "permission_denied")
    /// The platform or build lacks what the operation needs (no RDMA device, no CUDA).
    public static let unsupported = Code(12, "unsupported")
    /// The request was made against an older ring epoch than the receiver's.
    public static let staleEpoch = Code(13, "stale_epoch")
    /// The operation was cancelled before it finished.
    public static let cancelled = Code(14, "cancelled")
    /// A broken invariant inside Strata; a bug to report.
    public static let internalError = Code(15, "internal")
    /// A write reached fewer of the block's owners than its write quorum before its deadline: it
    /// was not acknowledged (the copies made stay, and the rest are still attempted later).
    public static let quorumNotReached = Code(16, "quorum_not_reached")

    /// Every code, in number order.
    public static let all: [Code] = [
      .invalidArgument, .invalidConfiguration, .notFound, .alreadyExists, .checksumMismatch,
      .resourceExhausted, .ioError, .protocolError, .unavailable, .timeout, .permissionDenied,
      .unsupported, .staleEpoch, .cancelled, .internalError, .quorumNotReached,
    ]

    /// The code with `number`, or nil for a number this build does not know.
    public init?(number: UInt16) {
      guard let code = Code.all.first(where: { $0.number == number }) else { return nil }
      self = code
    }
  }

  public var code: Code
  public var message: String
  public var cause: (any Error & Sendable)?

  public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
    self.code = code
    self.message = message
    self.cause = cause
  }

  public var description: String {
    if let cause { return "\(message) (\(code.name); cause: \(cause))" }
    return "\(message) (\(code.name))"
  }
}
