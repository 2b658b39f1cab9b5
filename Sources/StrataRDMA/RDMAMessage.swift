// The two-sided messages of an RDMA connection: a data-plane frame (header and body, never a
// payload) with piggybacked credits and, on requests, the client's memory descriptors that the
// node's one-sided WRITE or READ targets. The payloads themselves never travel in messages.

public import StrataCore
public import StrataWire

/// A range of the client's registered memory that the node may write (GET) or read (PUT): the
/// client hands these out; the node never hands out its own keys.
public struct RemoteDescriptor: Sendable, Hashable {
  public var address: UInt64
  /// The rkey of the client's memory region.
  public var key: UInt32
  public var length: UInt32

  public init(address: UInt64, key: UInt32, length: UInt32) {
    self.address = address
    self.key = key
    self.length = length
  }

  public static let byteCount = 16
}

/// One message: `frame` is a complete data-plane frame (64-byte header + body, payloadBytes 0).
///
/// Layout, little-endian: magic u32 "SRDM", credits u16, descriptorCount u16, frameBytes u32,
/// reserved u32 (0), then the frame, then the descriptors (address u64, key u32, length u32).
public struct RDMAMessage: Sendable, Hashable {
  public static let magic: UInt32 = 0x4D44_5253  // "SRDM"
  public static let prefixBytes = 16
  /// The size of every posted receive buffer, and so the largest message.
  public static let bytesMax = 512 << 10

  public var credits: UInt16
  public var frame: [UInt8]
  public var descriptors: [RemoteDescriptor]

  public init(credits: UInt16 = 0, frame: [UInt8], descriptors: [RemoteDescriptor] = []) {
    self.credits = credits
    self.frame = frame
    self.descriptors = descriptors
  }

  public var encodedByteCount: Int { Self.prefixBytes + frame.count + descriptors.count * RemoteDescriptor.byteCount }

  public func encoded() throws(StrataError) -> [UInt8] {
    guard encodedByteCount <= Self.bytesMax, descriptors.count <= Int(UInt16.max) else {
      throw StrataError(
        .invalidArgument,
        "an RDMA message of \(encodedByteCount) bytes and \(descriptors.count) descriptors exceeds \(Self.bytesMax) bytes; split the batch"
      )
    }
    var out: [UInt8] = []
    out.reserveCapacity(encodedByteCount)
    out.append(littleEndian: Self.magic)
    out.append(littleEndian: credits)
    out.append(littleEndian: UInt16(descriptors.count))
    out.append(littleEndian: UInt32(frame.count))
    out.append(littleEndian: UInt32(0))
    out += frame
    for descriptor in descriptors {
      out.append(littleEndian: descriptor.address)
      out.append(littleEndian: descriptor.key)
      out.append(littleEndian: descriptor.length)
    }
    return out
  }

  public init(decoding bytes: UnsafeRawBufferPointer) throws(StrataError) {
    guard bytes.count >= Self.prefixBytes else { throw Self.malformed("\(bytes.count) bytes cannot hold the prefix") }
    guard Self.load(UInt32.self, bytes, 0) == Self.magic else { throw Self.malformed("bad magic") }
    credits = Self.load(UInt16.self, bytes, 4)
    let count = Int(Self.load(UInt16.self, bytes, 6))
    let frameBytes = Int(Self.load(UInt32.self, bytes, 8))
    guard Self.load(UInt32.self, bytes, 12) == 0 else { throw Self.malformed("reserved bytes are not zero") }
    guard frameBytes >= FrameHeader.byteCount else { throw Self.malformed("a \(frameBytes)-byte frame has no header") }
    let expected = Self.prefixBytes + frameBytes + count * RemoteDescriptor.byteCount
    guard bytes.count == expected else {
      throw Self.malformed("\(bytes.count) bytes, but the prefix describes \(expected)")
    }
    frame = Array(bytes[Self.prefixBytes..<Self.prefixBytes + frameBytes])
    var offset = Self.prefixBytes + frameBytes
    descriptors = []
    descriptors.reserveCapacity(count)
    for _ in 0..<count {
      descriptors.append(
        RemoteDescriptor(
          address: Self.load(UInt64.self, bytes, offset), key: Self.load(UInt32.self, bytes, offset + 8),
          length: Self.load(UInt32.self, bytes, offset + 12)))
      offset += RemoteDescriptor.byteCount
    }
  }

  private static func load<T: FixedWidthInteger>(_: T.Type, _ bytes: UnsafeRawBufferPointer, _ offset: Int) -> T {
    T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
  }

  private static func malformed(_ reason: String) -> StrataError {
    StrataError(.protocolError, "malformed RDMA message: \(reason)")
  }
}

extension [UInt8] {
  fileprivate mutating func append<T: FixedWidthInteger>(littleEndian value: T) {
    Swift.withUnsafeBytes(of: value.littleEndian) { self.append(contentsOf: $0) }
  }
}

extension RDMAMessage {
  /// Decodes the message's frame (header and body) with StrataWire's frame assembler, as every
  /// transport receives frames; its payload moves by one-sided operations, not in the message.
  public func decodedFrame(limits: WireLimits, receiving: FrameDirection) throws(StrataError) -> (
    FrameHeader, WireMessage
  ) {
    let decoded = frame.withUnsafeBytes { raw in
      Result { () throws(StrataError) in try FrameAssembler.decode(message: raw, limits: limits, receiving: receiving) }
    }
    return try decoded.get()
  }
}
