// BlockID: the identity of a stored block, its namespace and its key.

public import StrataCore

/// What the tier manager stores blocks under. Two tenants' blocks with equal keys are distinct
/// unless they share a namespace.
public struct BlockID: Hashable, Sendable, CustomStringConvertible {
  public var namespace: Namespace
  public var key: BlockKey

  public init(namespace: Namespace, key: BlockKey) {
    self.namespace = namespace
    self.key = key
  }

  public var description: String { "\(namespace)/\(key.hex)" }
}
