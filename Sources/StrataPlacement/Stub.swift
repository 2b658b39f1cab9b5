import Foundation
// TEMPORARY STUB (not committed): replaced by the placement module.
public import StrataCore

public struct Member: Sendable, Hashable, Codable {
  public enum State: String, Sendable, Codable { case active, draining }
  public var id: String
  public var address: String
  public var adminAddress: String?
  public var capacityBytes: UInt64
  public var zone: String
  public var transports: [String]
  public var state: State
  public init(
    id: String, address: String, adminAddress: String? = nil, capacityBytes: UInt64 = 0, zone: String = "",
    transports: [String] = ["tcp"], state: State = .active
  ) {
    self.id = id
    self.address = address
    self.adminAddress = adminAddress
    self.capacityBytes = capacityBytes
    self.zone = zone
    self.transports = transports
    self.state = state
  }
}

public struct Ring: Sendable, Hashable {
  public let epoch: UInt64
  public let replicationFactor: Int
  public let members: [Member]
  public init(members: [Member], epoch: UInt64, replicationFactor: Int, virtualNodes: Int = 64) {
    self.members = members.sorted { $0.id < $1.id }
    self.epoch = epoch
    self.replicationFactor = replicationFactor
  }
  public static func defaultReplicationFactor(activeMembers: Int) -> Int { activeMembers >= 2 ? 2 : 1 }
  public var activeMembers: [Member] { members.filter { $0.state == .active } }
  public func owners(of key: BlockKey) -> [Member] {
    let active = activeMembers
    guard !active.isEmpty else { return [] }
    let start = Int(key.bytes[0]) % active.count
    return (0..<min(replicationFactor, active.count)).map { active[(start + $0) % active.count] }
  }
  public func primary(of key: BlockKey) -> Member? { owners(of: key).first }
  public func member(id: String) -> Member? { members.first { $0.id == id } }
  public func primaryShares() -> [String: Double] { [:] }
  public func ownerShares() -> [String: Double] { [:] }
  public func jsonBytes() -> [UInt8] {
    struct J: Codable {
      var epoch: UInt64
      var replicationFactor: Int
      var members: [Member]
    }
    return Array(try! JSONEncoder().encode(J(epoch: epoch, replicationFactor: replicationFactor, members: members)))
  }
  public init(jsonBytes: [UInt8]) throws(StrataError) {
    struct J: Codable {
      var epoch: UInt64
      var replicationFactor: Int
      var members: [Member]
    }
    guard let j = try? JSONDecoder().decode(J.self, from: Data(jsonBytes)) else {
      throw StrataError(.protocolError, "bad ring")
    }
    self.init(members: j.members, epoch: j.epoch, replicationFactor: j.replicationFactor)
  }
}
