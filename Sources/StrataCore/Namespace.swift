// Namespace: the tenant scope of a block. A block's identity is (namespace, key).

/// A tenant scope, assigned by the server from a connection's credentials, never chosen by
/// the client on the data path. Names are 1 to 64 characters of a-z, 0-9, '.', '_' and '-'.
public struct Namespace: Hashable, Sendable, CustomStringConvertible {
  public static let nameBytesMax = 64
  /// The one open namespace of the embedded default configuration.
  public static let embeddedDefault = Namespace(unchecked: "default")

  public let name: String
  /// FNV-1a of the name, fed to hashers in place of the string: a namespace is part of every
  /// `BlockID`, hashed on each of the tier manager's dictionary operations.
  private let fingerprint: UInt64

  public init(_ name: String) throws(StrataError) {
    guard (1...Namespace.nameBytesMax).contains(name.utf8.count),
      name.utf8.allSatisfy({ byte in
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
          || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
          || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
      })
    else {
      throw StrataError(
        .invalidArgument,
        "namespace '\(name)': must be 1 to \(Namespace.nameBytesMax) characters of a-z, 0-9, '.', '_', '-'")
    }
    self.init(unchecked: name)
  }

  private init(unchecked name: String) {
    self.name = name
    fingerprint = name.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01b3 }
  }

  public static func == (a: Namespace, b: Namespace) -> Bool { a.name == b.name }

  public func hash(into hasher: inout Hasher) { hasher.combine(fingerprint) }

  public var description: String { name }
}
