// The one exchange of the same-host path that is not a frame: right after a HELLO granted with
// `sharedMemory` on the node's Unix-domain socket, the client passes its shared-memory region
// (a sealed memfd, attached as SCM_RIGHTS to the offer's bytes) and the node answers whether it
// mapped it (docs/protocol.md, "Same-host path").

public import StrataCore

/// The client's offer: the region's size (0 and no descriptor: no region; payloads then travel in
/// the stream). Layout, little-endian: magic u32 "SSHM", flags u32 (0), bytes u64.
public struct RegionOffer: Sendable, Hashable {
  public static let magic: UInt32 = 0x4D48_5353  // "SSHM"
  public static let byteCount = 16

  public var bytes: UInt64

  public init(bytes: UInt64) { self.bytes = bytes }

  public var encoded: [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(Self.byteCount)
    out.append(littleEndian: Self.magic)
    out.append(littleEndian: UInt32(0))
    out.append(littleEndian: bytes)
    return out
  }

  public init(decoding raw: UnsafeRawBufferPointer) throws(StrataError) {
    guard raw.count == Self.byteCount, load(UInt32.self, raw, 0) == Self.magic else {
      throw StrataError(.protocolError, "a same-host region offer must be 16 bytes starting with \"SSHM\"")
    }
    guard load(UInt32.self, raw, 4) == 0 else {
      throw StrataError(.protocolError, "a same-host region offer's flags must be 0")
    }
    bytes = load(UInt64.self, raw, 8)
  }
}

/// The node's answer: `code` 0 and the bytes mapped, or the number of the `StrataError.Code` it
/// refused the region with (the node then closes the connection). Layout, little-endian: magic
/// u32 "SSHM", code u16, reserved u16 (0), bytes u64.
public struct RegionAnswer: Sendable, Hashable {
  public static let byteCount = 16

  public var code: UInt16
  public var bytes: UInt64

  public init(code: UInt16, bytes: UInt64) {
    self.code = code
    self.bytes = bytes
  }

  public var encoded: [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(Self.byteCount)
    out.append(littleEndian: RegionOffer.magic)
    out.append(littleEndian: code)
    out.append(littleEndian: UInt16(0))
    out.append(littleEndian: bytes)
    return out
  }

  public init(decoding raw: UnsafeRawBufferPointer) throws(StrataError) {
    guard raw.count == Self.byteCount, load(UInt32.self, raw, 0) == RegionOffer.magic,
      load(UInt16.self, raw, 6) == 0
    else {
      throw StrataError(.protocolError, "a same-host region answer must be 16 bytes starting with \"SSHM\"")
    }
    code = load(UInt16.self, raw, 4)
    bytes = load(UInt64.self, raw, 8)
  }
}

private func load<T: FixedWidthInteger>(_: T.Type, _ raw: UnsafeRawBufferPointer, _ offset: Int) -> T {
  T(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: T.self))
}
