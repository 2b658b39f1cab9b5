// Namespace: the tenant scope of a block. A block's identity is (namespace, key).

/// A tenant scope, assigned by the server from a connection's credentials, never chosen by
/// the client on the data path. Names are 1 to 64 characters of a-z, 0-9, '.', '_' and '-'.
public struct Namespace: Hashable, Sendable, CustomStringConvertible {
  public static let nameBytesMax = 64
  /// The one open namespace of the embedded default configuration.
  public static let embeddedDefault = Namespace(unchecked: "default")

  public let name: String

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
    self.name = name
  }

  private init(unchecked name: String) { self.name = name }

  public var description: String { name }
}
