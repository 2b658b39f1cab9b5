// Bodies of the block operations: LOOKUP (which keys are here, optionally pinned under a lease),
// GET and PUT (whose block bytes travel as the frame's payload), DELETE.

public import StrataCore

public struct LookupRequest: MessageBody {
  public static let messageName: StaticString = "LookupRequest"
  public static let opcode = Opcode.lookup
  public static let direction = FrameDirection.request
  public var wireMessage: WireMessage { .lookupRequest(self) }

  /// Keys in prompt order; the namespace is the connection's, never the request's.
  public var keys: [BlockKey]
  /// Pin the leading run of present blocks for this long; 0 asks for no lease.
  public var leaseMilliseconds: UInt32
  /// Ask for each present block's length in the answer (buffer sizing). An optional trailing
  /// flags byte (bit 0), absent from the encoding when false.
  public var wantsSizes: Bool

  public init(keys: [BlockKey], leaseMilliseconds: UInt32 = 0, wantsSizes: Bool = false) {
    self.keys = keys
    self.leaseMilliseconds = leaseMilliseconds
    self.wantsSizes = wantsSizes
  }

  public var encodedByteCount: Int {
    WireSize.u32 + WireSize.u32 + keys.count * WireSize.key + (wantsSizes ? WireSize.u8 : 0)
  }

  public func encode(into out: inout [UInt8]) {
    out.append(littleEndian: leaseMilliseconds)
    out.append(keys: keys)
    if wantsSizes { out.append(UInt8(1)) }
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    leaseMilliseconds = try reader.read(UInt32.self, "leaseMilliseconds")
    keys = try readKeys(&reader, "keys", limits: limits)
    wantsSizes = false
    if reader.remaining > 0 {
      let flags = try reader.read(UInt8.self, "flags")
      guard flags == 1 else {
        throw reader.error(.invalidValue, "flags", "\(flags) (only bit 0, sizes, is defined; absent when 0)")
      }
      wantsSizes = true
    }
    try reader.finish()
  }
}

public struct LookupResponse: MessageBody {
  public static let messageName: StaticString = "LookupResponse"
  public static let opcode = Opcode.lookup
  public static let direction = FrameDirection.response
  public var wireMessage: WireMessage { .lookupResponse(self) }

  /// One entry per requested key, in request order.
  public var tiers: [BlockTier]
  /// How many leading keys are present (and pinned, when a lease was granted).
  public var leadingRun: UInt32
  /// 0 when no lease was asked for or none could be granted.
  public var leaseID: UInt64
  public var leaseExpiresInMilliseconds: UInt32
  /// Each block's length in bytes (0 where absent), when the request asked for sizes: an optional
  /// trailing field (count, then one u64 per key), absent from the encoding when nil.
  public var sizes: [UInt64]?

  public init(
    tiers: [BlockTier], leadingRun: UInt32, leaseID: UInt64 = 0, leaseExpiresInMilliseconds: UInt32 = 0,
    sizes: [UInt64]? = nil
  ) {
    self.tiers = tiers
    self.leadingRun = leadingRun
    self.leaseID = leaseID
    self.leaseExpiresInMilliseconds = leaseExpiresInMilliseconds
    self.sizes = sizes
  }

  public var encodedByteCount: Int {
    WireSize.u32 + WireSize.u64 + WireSize.u32 + WireSize.u32 + tiers.count
      + (sizes.map { WireSize.u32 + $0.count * WireSize.u64 } ?? 0)
  }

  public func encode(into out: inout [UInt8]) {
    out.append(littleEndian: leadingRun)
    out.append(littleEndian: leaseID)
    out.append(littleEndian: leaseExpiresInMilliseconds)
    out.append(codes: tiers)
    if let sizes {
      out.append(count: sizes.count)
      for size in sizes { out.append(littleEndian: size) }
    }
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    leadingRun = try reader.read(UInt32.self, "leadingRun")
    leaseID = try reader.read(UInt64.self, "leaseID")
    leaseExpiresInMilliseconds = try reader.read(UInt32.self, "leaseExpiresInMilliseconds")
    if leaseID == 0 && leaseExpiresInMilliseconds != 0 {
      throw reader.error(
        .invalidValue, "leaseExpiresInMilliseconds", "\(leaseExpiresInMilliseconds) without a lease (leaseID 0)")
    }
    let tiers: [BlockTier] = try reader.codes("tiers", each: "tier", max: limits.itemsPerBatchMax, noun: "a tier")
    let count = tiers.count
    guard leadingRun <= count else {
      throw reader.error(.invalidValue, "leadingRun", "\(leadingRun) exceeds the \(count) keys answered")
    }
    if let gap = tiers.prefix(Int(leadingRun)).firstIndex(of: .absent) {
      throw reader.error(.invalidValue, "leadingRun", "\(leadingRun) but key \(gap) inside the run is absent")
    }
    self.tiers = tiers
    sizes = nil
    if reader.remaining > 0 {
      let sizeCount = try reader.count("sizes", max: limits.itemsPerBatchMax, itemBytes: WireSize.u64)
      guard sizeCount == count else {
        throw reader.error(.invalidValue, "sizes", "\(sizeCount) sizes for \(count) keys")
      }
      var index = 0
      sizes = try reader.list("sizes", count: sizeCount) { reader throws(StrataError) in
        let size = try reader.read(UInt64.self, "size")
        guard (size == 0) == (tiers[index] == .absent) else {
          throw reader.error(.invalidValue, "size", "\(size) for a block that is \(tiers[index])")
        }
        index += 1
        return size
      }
    }
    try reader.finish()
  }
}

public struct GetRequest: MessageBody {
  public static let messageName: StaticString = "GetRequest"
  public static let opcode = Opcode.get
  public static let direction = FrameDirection.request
  public var wireMessage: WireMessage { .getRequest(self) }

  public struct Item: Hashable, Sendable {
    public var key: BlockKey
    /// The first byte of the block to deliver.
    public var offset: UInt64
    /// How many bytes to deliver; 0 means "to the end of the block".
    public var length: UInt64

    public init(key: BlockKey, offset: UInt64 = 0, length: UInt64 = 0) {
      self.key = key
      self.offset = offset
      self.length = length
    }
  }

  public static let itemBytes = WireSize.key + 2 * WireSize.u64

  public var items: [Item]
  /// A lease from LOOKUP that pins these blocks; 0 for none.
  public var leaseID: UInt64
  /// On a same-host connection: where in the client's shared-memory region each item's bytes go
  /// (one range per item, its length the room there), instead of the stream. An optional
  /// trailing field (count, then offset and length per item), absent when nil.
  public var regionRanges: [RegionRange]?

  public init(items: [Item], leaseID: UInt64 = 0, regionRanges: [RegionRange]? = nil) {
    self.items = items
    self.leaseID = leaseID
    self.regionRanges = regionRanges
  }

  public var encodedByteCount: Int {
    WireSize.u64 + WireSize.u32 + items.count * Self.itemBytes + RegionRange.encodedByteCount(regionRanges)
  }

  public func encode(into out: inout [UInt8]) {
    out.append(littleEndian: leaseID)
    out.append(count: items.count)
    for item in items {
      out.append(key: item.key)
      out.append(littleEndian: item.offset)
      out.append(littleEndian: item.length)
    }
    RegionRange.encode(regionRanges, into: &out)
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    leaseID = try reader.read(UInt64.self, "leaseID")
    items = try reader.list("items", max: limits.itemsPerBatchMax, itemBytes: Self.itemBytes) {
      reader throws(StrataError) in
      let key = try reader.key("key")
      let offset = try reader.read(UInt64.self, "offset")
      let length = try reader.read(UInt64.self, "length")
      guard !offset.addingReportingOverflow(length).overflow else {
        throw reader.error(.lengthOverflow, "length", "offset \(offset) + length \(length) overflows 64 bits")
      }
      return Item(key: key, offset: offset, length: length)
    }
    regionRanges = reader.remaining > 0 ? try RegionRange.decode(&reader, items: items.count, limits: limits) : nil
    try reader.finish()
  }
}

/// A byte range of a same-host client's shared-memory region (docs/protocol.md, "Same-host path").
public struct RegionRange: Hashable, Sendable {
  public var offset: UInt64
  public var length: UInt64

  public init(offset: UInt64, length: UInt64) {
    self.offset = offset
    self.length = length
  }

  static let byteCount = 2 * WireSize.u64

  static func encodedByteCount(_ ranges: [RegionRange]?) -> Int {
    ranges.map { WireSize.u32 + $0.count * byteCount } ?? 0
  }

  static func encode(_ ranges: [RegionRange]?, into out: inout [UInt8]) {
    guard let ranges else { return }
    out.append(count: ranges.count)
    for range in ranges {
      out.append(littleEndian: range.offset)
      out.append(littleEndian: range.length)
    }
  }

  /// One range per item (`items` of them), none overflowing 64 bits.
  static func decode(_ reader: inout WireReader, items: Int, limits: WireLimits) throws(StrataError) -> [RegionRange] {
    let count = try reader.count("regionRanges", max: limits.itemsPerBatchMax, itemBytes: byteCount)
    guard count == items else {
      throw reader.error(.invalidValue, "regionRanges", "\(count) ranges for \(items) items")
    }
    return try reader.list("regionRanges", count: count) { reader throws(StrataError) in
      let offset = try reader.read(UInt64.self, "offset")
      let length = try reader.read(UInt64.self, "length")
      guard !offset.addingReportingOverflow(length).overflow else {
        throw reader.error(.lengthOverflow, "length", "offset \(offset) + length \(length) overflows 64 bits")
      }
      return RegionRange(offset: offset, length: length)
    }
  }
}

/// What happened to one item of a GET.
public enum GetItemStatus: UInt8, Hashable, Sendable, CaseIterable {
  /// The bytes are in the payload.
  case ok = 0
  case missing = 1
  /// The requested offset lies beyond the block's end.
  case rangeOutOfBounds = 2
  /// The stored block failed its checksum: it is reported, never sent.
  case corrupt = 3
}

public struct GetResponse: MessageBody {
  public static let messageName: StaticString = "GetResponse"
  public static let opcode = Opcode.get
  public static let direction = FrameDirection.response
  public var wireMessage: WireMessage { .getResponse(self) }

  public struct Item: Hashable, Sendable {
    public var status: GetItemStatus
    /// Bytes delivered in the payload; 0 unless `status` is `.ok`.
    public var length: UInt64
    /// CRC-32C of exactly the delivered bytes; 0 unless `status` is `.ok`.
    public var checksum: UInt32

    public init(status: GetItemStatus, length: UInt64 = 0, checksum: UInt32 = 0) {
      self.status = status
      self.length = length
      self.checksum = checksum
    }

    public static func ok(length: UInt64, checksum: UInt32) -> Item {
      Item(status: .ok, length: length, checksum: checksum)
    }
  }

  public static let itemBytes = WireSize.u8 + WireSize.u64 + WireSize.u32

  /// One per requested item, in request order.
  public var items: [Item]

  public init(items: [Item]) { self.items = items }

  /// The payload: the delivered ranges concatenated in item order.
  public var payloadBytes: UInt64 { items.reduce(0) { $0 + $1.length } }

  /// Where each item's bytes lie in the payload (an empty range for items that delivered nothing),
  /// so a receiver can point each range at its destination before the payload arrives.
  public var payloadRanges: [Range<UInt64>] { concatenatedRanges(items.lazy.map(\.length)) }

  public var encodedByteCount: Int { WireSize.u32 + items.count * Self.itemBytes }

  public func encode(into out: inout [UInt8]) {
    out.append(count: items.count)
    for item in items {
      out.append(item.status.rawValue)
      out.append(littleEndian: item.length)
      out.append(littleEndian: item.checksum)
    }
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    var total: UInt64 = 0
    items = try reader.list("items", max: limits.itemsPerBatchMax, itemBytes: Self.itemBytes) {
      reader throws(StrataError) in
      let status = try reader.read(GetItemStatus.self, "status", noun: "an item status")
      let length = try reader.read(UInt64.self, "length")
      let checksum = try reader.read(UInt32.self, "checksum")
      if status != .ok {
        guard length == 0, checksum == 0 else {
          throw reader.error(
            .invalidValue, "length", "\(status) item with length \(length), checksum \(checksum) (both must be 0)")
        }
      }
      try accumulate(&total, length, &reader, limits: limits)
      return Item(status: status, length: length, checksum: checksum)
    }
    try reader.finish()
  }
}

public struct PutRequest: MessageBody {
  public static let messageName: StaticString = "PutRequest"
  public static let opcode = Opcode.put
  public static let direction = FrameDirection.request
  public var wireMessage: WireMessage { .putRequest(self) }

  public struct Item: Hashable, Sendable {
    public var key: BlockKey
    /// The block's bytes in the payload.
    public var length: UInt64
    /// CRC-32C of the block's bytes.
    public var checksum: UInt32

    public init(key: BlockKey, length: UInt64, checksum: UInt32) {
      self.key = key
      self.length = length
      self.checksum = checksum
    }
  }

  public static let itemBytes = WireSize.key + WireSize.u64 + WireSize.u32

  public var items: [Item]
  /// How many of each block's owners must hold it before the node acknowledges the PUT; 0 means
  /// the node's `cluster.write_quorum`. An optional trailing field, present when nonzero or when
  /// `regionRanges` follow.
  public var writeQuorum: UInt8
  /// On a same-host connection: where in the client's shared-memory region each block lies (one
  /// range per item, its length the item's), instead of the stream. An optional trailing field
  /// after `writeQuorum`, absent when nil.
  public var regionRanges: [RegionRange]?
  /// With `regionRanges` only: the items' checksums are left zero, and the node checksums each
  /// block as it copies it out of the region (the bytes cross no network, so a second pass over
  /// them by the client would only re-read the same memory). An optional trailing byte after the
  /// ranges (bit 0; the other bits zero), absent when false.
  public var checksumsByNode: Bool

  static let checksumsByNodeFlag: UInt8 = 0x01

  public init(
    items: [Item], writeQuorum: UInt8 = 0, regionRanges: [RegionRange]? = nil, checksumsByNode: Bool = false
  ) {
    precondition(!checksumsByNode || regionRanges != nil, "PutRequest: checksumsByNode needs region ranges")
    self.items = items
    self.writeQuorum = writeQuorum
    self.regionRanges = regionRanges
    self.checksumsByNode = checksumsByNode
  }

  /// The payload: the blocks concatenated in item order.
  public var payloadBytes: UInt64 { items.reduce(0) { $0 + $1.length } }

  /// Where each block lies in the payload, so the server can receive each straight into its slot.
  public var payloadRanges: [Range<UInt64>] { concatenatedRanges(items.lazy.map(\.length)) }

  public var encodedByteCount: Int {
    WireSize.u32 + items.count * Self.itemBytes + (writeQuorum == 0 && regionRanges == nil ? 0 : 1)
      + RegionRange.encodedByteCount(regionRanges) + (checksumsByNode ? 1 : 0)
  }

  public func encode(into out: inout [UInt8]) {
    out.append(count: items.count)
    for item in items {
      out.append(key: item.key)
      out.append(littleEndian: item.length)
      out.append(littleEndian: item.checksum)
    }
    if writeQuorum != 0 || regionRanges != nil { out.append(littleEndian: writeQuorum) }
    RegionRange.encode(regionRanges, into: &out)
    if checksumsByNode { out.append(littleEndian: Self.checksumsByNodeFlag) }
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    var total: UInt64 = 0
    items = try reader.list("items", max: limits.itemsPerBatchMax, itemBytes: Self.itemBytes) {
      reader throws(StrataError) in
      let key = try reader.key("key")
      let length = try reader.read(UInt64.self, "length")
      let checksum = try reader.read(UInt32.self, "checksum")
      try accumulate(&total, length, &reader, limits: limits)
      return Item(key: key, length: length, checksum: checksum)
    }
    writeQuorum = 0
    regionRanges = nil
    checksumsByNode = false
    if reader.remaining > 0 {
      writeQuorum = try reader.read(UInt8.self, "writeQuorum")
      if reader.remaining > 0 {
        regionRanges = try RegionRange.decode(&reader, items: items.count, limits: limits)
        if reader.remaining > 0 {
          // Absent when false: a present zero would be a second encoding, other bits are unknown.
          let flags = try reader.read(UInt8.self, "flags")
          guard flags == Self.checksumsByNodeFlag else {
            throw reader.error(
              .invalidValue, "flags", "0x\(String(flags, radix: 16)); only 0x01 (checksums by the node) is defined")
          }
          checksumsByNode = true
        }
      } else if writeQuorum == 0 {
        // Absent when 0 and no ranges follow: a present 0 would be a second encoding.
        throw reader.error(.invalidValue, "writeQuorum", "0 is sent by leaving the field out")
      }
    }
    try reader.finish()
  }
}

/// A response that is one outcome code per item of its request, in request order (PUT, VERIFY):
/// `outcomes` as a list of one-byte codes.
public protocol OutcomeListResponse: MessageBody {
  associatedtype Outcome: RawRepresentable & CaseIterable & Sendable & Hashable where Outcome.RawValue == UInt8
  /// What one outcome is called in a refusal ("an outcome").
  static var outcomeNoun: String { get }
  var outcomes: [Outcome] { get }
  init(outcomes: [Outcome])
}

extension OutcomeListResponse {
  public var encodedByteCount: Int { WireSize.u32 + outcomes.count }

  public func encode(into out: inout [UInt8]) { out.append(codes: outcomes) }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    self.init(
      outcomes: try reader.codes("outcomes", each: "outcome", max: limits.itemsPerBatchMax, noun: Self.outcomeNoun))
    try reader.finish()
  }
}

public struct PutResponse: OutcomeListResponse {
  public static let messageName: StaticString = "PutResponse"
  public static let opcode = Opcode.put
  public static let direction = FrameDirection.response
  public static let outcomeNoun = "an outcome"
  public var wireMessage: WireMessage { .putResponse(self) }

  /// One per PUT item, in request order.
  public var outcomes: [PutOutcome]

  public init(outcomes: [PutOutcome]) { self.outcomes = outcomes }
}

public struct DeleteRequest: MessageBody {
  public static let messageName: StaticString = "DeleteRequest"
  public static let opcode = Opcode.delete
  public static let direction = FrameDirection.request
  public var wireMessage: WireMessage { .deleteRequest(self) }

  public var keys: [BlockKey]

  public init(keys: [BlockKey]) { self.keys = keys }

  public var encodedByteCount: Int { WireSize.u32 + keys.count * WireSize.key }

  public func encode(into out: inout [UInt8]) {
    out.append(keys: keys)
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    keys = try readKeys(&reader, "keys", limits: limits)
    try reader.finish()
  }
}

public struct DeleteResponse: MessageBody {
  public static let messageName: StaticString = "DeleteResponse"
  public static let opcode = Opcode.delete
  public static let direction = FrameDirection.response
  public var wireMessage: WireMessage { .deleteResponse(self) }

  /// One per key, in request order: whether the key was present and is now gone.
  public var removed: [Bool]

  public init(removed: [Bool]) { self.removed = removed }

  public var encodedByteCount: Int { WireSize.u32 + removed.count }

  public func encode(into out: inout [UInt8]) {
    out.append(count: removed.count)
    for flag in removed { out.append(flag ? 1 : 0) }
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    removed = try reader.list("removed", max: limits.itemsPerBatchMax, itemBytes: WireSize.u8) {
      reader throws(StrataError) in
      let raw = try reader.read(UInt8.self, "flag")
      guard raw <= 1 else { throw reader.error(.invalidValue, "flag", "\(raw) is not a boolean (0 or 1)") }
      return raw == 1
    }
    try reader.finish()
  }
}

/// VERIFY: "these blocks failed their checksum when I received them". The node checks each one it
/// holds against the checksum stored with it (reading it from disk if it is there only) and
/// removes a copy that fails; a copy that passes stays (the damage happened on the way), so a
/// report can never remove a good block.
public struct VerifyRequest: MessageBody {
  public static let messageName: StaticString = "VerifyRequest"
  public static let opcode = Opcode.verify
  public static let direction = FrameDirection.request
  public var wireMessage: WireMessage { .verifyRequest(self) }
  /// The most keys one VERIFY names: a report follows one GET's damaged blocks, and each key costs
  /// the node a read of its block (more than this many damaged at once is a fault to look into,
  /// not to report block by block).
  public static let keysMax = 64

  public var keys: [BlockKey]

  public init(keys: [BlockKey]) { self.keys = keys }

  public var encodedByteCount: Int { WireSize.u32 + keys.count * WireSize.key }

  public func encode(into out: inout [UInt8]) {
    out.append(keys: keys)
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    keys = try readKeys(&reader, "keys", max: min(limits.itemsPerBatchMax, Self.keysMax))
    try reader.finish()
  }
}

/// What the node found for one key of a VERIFY.
public enum VerifyOutcome: UInt8, Hashable, Sendable, CaseIterable {
  /// The node's copy matches its stored checksum, and stays.
  case intact = 0
  /// The node's copy failed its stored checksum and was removed.
  case corrupt = 1
  /// The node holds no copy.
  case absent = 2
}

public struct VerifyResponse: OutcomeListResponse {
  public static let messageName: StaticString = "VerifyResponse"
  public static let opcode = Opcode.verify
  public static let direction = FrameDirection.response
  public static let outcomeNoun = "a verify outcome"
  public var wireMessage: WireMessage { .verifyResponse(self) }

  /// One per key, in request order.
  public var outcomes: [VerifyOutcome]

  public init(outcomes: [VerifyOutcome]) { self.outcomes = outcomes }
}

private func readKeys(_ reader: inout WireReader, _ field: StaticString, limits: WireLimits) throws(StrataError)
  -> [BlockKey]
{
  try readKeys(&reader, field, max: limits.itemsPerBatchMax)
}

private func readKeys(_ reader: inout WireReader, _ field: StaticString, max: Int) throws(StrataError) -> [BlockKey] {
  try reader.list(field, max: max, itemBytes: WireSize.key) { reader throws(StrataError) in
    try reader.key("key")
  }
}

/// Adds one item's length to the running payload total, rejecting sums that overflow or that no
/// frame could carry.
private func accumulate(_ total: inout UInt64, _ length: UInt64, _ reader: inout WireReader, limits: WireLimits)
  throws(StrataError)
{
  let (sum, overflow) = total.addingReportingOverflow(length)
  guard !overflow else {
    throw reader.error(.lengthOverflow, "length", "\(length) makes the payload total overflow 64 bits")
  }
  guard sum <= limits.payloadBytesMax else {
    throw reader.error(
      .payloadTooLarge, "length",
      "\(length) brings the payload to \(sum) bytes, above the limit \(limits.payloadBytesMax)")
  }
  total = sum
}

private func concatenatedRanges(_ lengths: some Collection<UInt64>) -> [Range<UInt64>] {
  var ranges: [Range<UInt64>] = []
  ranges.reserveCapacity(lengths.count)
  var offset: UInt64 = 0
  for length in lengths {
    ranges.append(offset..<offset + length)
    offset += length
  }
  return ranges
}
