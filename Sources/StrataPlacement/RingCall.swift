// The RING request body, `{"op":"...","node":"..."}` (docs/protocol.md, docs/cluster.md): one
// definition for the client that sends it, the admin routes that call it in process and the node
// that answers it.

public import StrataCore

/// One RING request: an operation and, for `drain`, the node it names.
public struct RingCall: Hashable, Sendable {
  public enum Operation: String, Sendable, CaseIterable {
    /// The ring as JSON (`Ring.jsonBytes`).
    case ring
    /// The members with their state (node-wide counters with `operator` only).
    case members
    /// Drain the node named by `node` (which must be the answering node).
    case drain
    /// The drain's progress.
    case drainStatus = "drain_status"
    /// Answered once every replica copy queued before it has been sent or dropped.
    case sync

    /// Whether the operation needs the `operator` scope (or a peer node).
    public var needsOperator: Bool { self == .drain || self == .drainStatus || self == .sync }
  }

  public var operation: Operation
  public var node: String?

  public init(_ operation: Operation, node: String? = nil) {
    self.operation = operation
    self.node = node
  }

  public static let ring = RingCall(.ring)
  public static let members = RingCall(.members)
  public static let drainStatus = RingCall(.drainStatus)
  public static let sync = RingCall(.sync)
  public static func drain(node: String) -> RingCall { RingCall(.drain, node: node) }

  private struct Body: Codable {
    var op: String
    var node: String?
  }

  /// The JSON body sent in the RING frame (keys sorted; `node` only when set).
  public var body: [UInt8] {
    // Two strings always encode.
    (try? JSONCoding.encode(Body(op: operation.rawValue, node: node))) ?? []
  }

  /// Reads a RING body; throws `invalidArgument` when it is not a JSON object with an `op`
  /// string, or names an operation that does not exist.
  public init(decoding body: [UInt8]) throws(StrataError) {
    let decoded: Body
    do throws(StrataError) {
      decoded = try JSONCoding.decode(Body.self, from: body)
    } catch {
      throw StrataError(.invalidArgument, "RING body is not a JSON object with an \"op\" string: \(error.message)")
    }
    guard let operation = Operation(rawValue: decoded.op) else {
      let known = Operation.allCases.map(\.rawValue).joined(separator: ", ")
      throw StrataError(.invalidArgument, "unknown RING operation '\(decoded.op)' (known: \(known))")
    }
    self.init(operation, node: decoded.node)
  }
}
