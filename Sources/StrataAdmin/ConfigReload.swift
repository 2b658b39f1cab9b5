// Config reload: which settings changed between two readings of a node's configuration file,
// and which of them a running node can take without a restart.

public import StrataConfig
public import StrataCore

/// The outcome of `POST /v1/config/reload`.
public struct ReloadReport: Sendable, Hashable, Codable {
  /// Changed settings now in force.
  public var applied: [String] = []
  /// Changed settings that take effect at the next start.
  public var needsRestart: [String] = []
  /// Problems that kept the new file from being used at all (nothing was applied).
  public var rejected: [String] = []

  public init() {}

  enum CodingKeys: String, CodingKey {
    case applied
    case needsRestart = "needs_restart"
    case rejected
  }
}

/// Applies the safe part of a new configuration; returns the fields it put in force. Appliers are
/// registered by modules (the node registers one for auth.tokens; the cluster module may add its own).
public typealias ReloadApplier = @Sendable (_ old: NodeConfiguration, _ new: NodeConfiguration) -> [String]

/// Reads the certificates a module uses from a new configuration, on every config reload (changed
/// paths or not: a renewal rewrites the same files). It throws to reject the whole reload (nothing
/// is applied then) and otherwise returns what puts them in force, run once every file was read.
public typealias CertificateReloader =
  @Sendable (_ new: NodeConfiguration) throws(StrataError) -> @Sendable () -> Void
