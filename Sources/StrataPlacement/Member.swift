// Member: one node as the placement ring sees it (identity, addresses, weight, zone, state).

/// One node of the cluster as placement sees it. Members are compared by value; the ring keys them
/// by `id`, which must be unique.
public struct Member: Sendable, Hashable, Codable {
  /// Whether a member takes new ownership. A draining member owns nothing in the ring but stays
  /// listed, so clients can still reach it for blocks it holds until they have moved.
  public enum State: String, Sendable, Codable {
    case active
    case draining
  }

  /// Unique node id; the member's ring points are derived from it alone.
  public var id: String
  /// Data-plane address, `host:port` (the `HostPort` description format).
  public var address: String
  /// Admin HTTP address, `host:port`, if the node serves one.
  public var adminAddress: String?
  /// RAM plus NVMe bytes. Weights the member's virtual nodes; 0 is treated as the mean of the
  /// active members that state a capacity.
  public var capacityBytes: UInt64
  /// Failure domain; replicas go to distinct zones while zones allow. "" means no zone, and all
  /// members without one count as one zone.
  public var zone: String
  /// Data-plane transports the node speaks, such as `["tcp"]` or `["tcp", "rdma"]`.
  public var transports: [String]
  /// Active members own keys; draining ones own none.
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

  /// True when the member owns keys.
  public var isActive: Bool { state == .active }

  // Snake-case names are part of the RING wire body and of `strata cluster ring --json`.
  private enum CodingKeys: String, CodingKey {
    case id
    case address
    case adminAddress = "admin_address"
    case capacityBytes = "capacity_bytes"
    case zone
    case transports
    case state
  }

  /// Decodes a member; only `id` and `address` are required, the rest take the `init` defaults.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    id = try container.decode(String.self, forKey: .id)
    address = try container.decode(String.self, forKey: .address)
    adminAddress = try container.decodeIfPresent(String.self, forKey: .adminAddress)
    capacityBytes = try container.decodeIfPresent(UInt64.self, forKey: .capacityBytes) ?? 0
    zone = try container.decodeIfPresent(String.self, forKey: .zone) ?? ""
    transports = try container.decodeIfPresent([String].self, forKey: .transports) ?? ["tcp"]
    state = try container.decodeIfPresent(State.self, forKey: .state) ?? .active
  }

  /// Encodes every field, `admin_address` as null when absent, so readers see a fixed shape.
  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(id, forKey: .id)
    try container.encode(address, forKey: .address)
    if let adminAddress {
      try container.encode(adminAddress, forKey: .adminAddress)
    } else {
      try container.encodeNil(forKey: .adminAddress)
    }
    try container.encode(capacityBytes, forKey: .capacityBytes)
    try container.encode(zone, forKey: .zone)
    try container.encode(transports, forKey: .transports)
    try container.encode(state, forKey: .state)
  }
}
