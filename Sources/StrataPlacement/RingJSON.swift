// The ring as JSON: the body of the wire RING message and the output of `strata cluster ring
// --json`. Field names are snake_case and stable; keys are written sorted.

public import StrataCore

/// The JSON shape of a ring. Points are not sent: every reader derives them from these fields.
private struct RingDocument: Codable {
  var epoch: UInt64
  var replicationFactor: Int
  var virtualNodes: Int
  var members: [Member]

  enum CodingKeys: String, CodingKey {
    case epoch
    case replicationFactor = "replication_factor"
    case virtualNodes = "virtual_nodes"
    case members
  }

  init(epoch: UInt64, replicationFactor: Int, virtualNodes: Int, members: [Member]) {
    self.epoch = epoch
    self.replicationFactor = replicationFactor
    self.virtualNodes = virtualNodes
    self.members = members
  }

  init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    epoch = try container.decode(UInt64.self, forKey: .epoch)
    replicationFactor = try container.decode(Int.self, forKey: .replicationFactor)
    virtualNodes = try container.decodeIfPresent(Int.self, forKey: .virtualNodes) ?? Ring.defaultVirtualNodes
    members = try container.decode([Member].self, forKey: .members)
  }
}

extension Ring {
  /// The ring as JSON: `{"epoch", "members", "replication_factor", "virtual_nodes"}` with keys
  /// sorted, members in id order. Two equal rings give equal bytes.
  public func jsonBytes() -> [UInt8] {
    let document = RingDocument(
      epoch: epoch, replicationFactor: replicationFactor, virtualNodes: virtualNodes, members: members)
    do throws(StrataError) {
      return try JSONCoding.encode(document)
    } catch {
      // Strings, integers and arrays always encode; failing here is a bug, not an input problem.
      preconditionFailure("encoding a ring as JSON failed: \(error)")
    }
  }

  /// The ring described by `jsonBytes`; throws `.protocolError` naming what is wrong when the
  /// bytes are not JSON of the ring's shape or describe an impossible ring. `virtual_nodes` may be
  /// omitted (the default is used).
  public init(jsonBytes: [UInt8]) throws(StrataError) {
    let document: RingDocument
    do throws(StrataError) {
      document = try JSONCoding.decode(RingDocument.self, from: jsonBytes)
    } catch {
      throw StrataError(.protocolError, "ring JSON is malformed: \(error.message)")
    }
    if let problem = Ring.problem(
      members: document.members, replicationFactor: document.replicationFactor, virtualNodes: document.virtualNodes)
    {
      throw StrataError(.protocolError, "ring JSON describes an invalid ring: \(problem)")
    }
    self.init(
      members: document.members, epoch: document.epoch, replicationFactor: document.replicationFactor,
      virtualNodes: document.virtualNodes)
  }
}
