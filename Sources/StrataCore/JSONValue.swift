// A JSON document of any shape, for what has no fixed shape: admin request bodies (checked field
// by field) and the admin documents the CLI shows. Read and written through Codable with the
// project's one configuration (JSONCoding); fixed documents are Codable structs of their own.

/// A JSON document. Integers stay integers (byte counts exceed a Double's exact range).
public enum JSONValue: Sendable, Hashable, Codable {
  case null
  case bool(Bool)
  case int(Int)
  case double(Double)
  case string(String)
  case array([JSONValue])
  case object([String: JSONValue])

  /// The value at `key` of an object; nil for a missing key or a non-object.
  public subscript(key: String) -> JSONValue? {
    if case .object(let fields) = self { return fields[key] }
    return nil
  }

  public var intValue: Int? {
    switch self {
    case .int(let value): value
    case .double(let value) where value.rounded() == value && abs(value) < 9e18: Int(value)
    default: nil
    }
  }

  public var doubleValue: Double? {
    switch self {
    case .int(let value): Double(value)
    case .double(let value): value
    default: nil
    }
  }

  public var stringValue: String? {
    if case .string(let value) = self { return value }
    return nil
  }

  public var boolValue: Bool? {
    if case .bool(let value) = self { return value }
    return nil
  }

  public var arrayValue: [JSONValue]? {
    if case .array(let value) = self { return value }
    return nil
  }

  public var objectValue: [String: JSONValue]? {
    if case .object(let value) = self { return value }
    return nil
  }

  /// Compact JSON text, object keys sorted.
  public var encoded: String { String(decoding: (try? JSONCoding.encode(self)) ?? Array("null".utf8), as: UTF8.self) }

  /// Indented JSON text, object keys sorted.
  public var pretty: String {
    String(decoding: (try? JSONCoding.encodePretty(self)) ?? Array("null".utf8), as: UTF8.self)
  }

  /// Parses JSON text; throws `invalidArgument` naming the problem.
  public static func parse(_ text: String) throws(StrataError) -> JSONValue { try parse(Array(text.utf8)) }

  /// Parses UTF-8 JSON bytes; throws `invalidArgument` naming the problem.
  public static func parse(_ bytes: [UInt8]) throws(StrataError) -> JSONValue {
    try JSONCoding.decode(JSONValue.self, from: bytes)
  }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    if container.decodeNil() {
      self = .null
    } else if let value = try? container.decode(Bool.self) {
      self = .bool(value)
    } else if let value = try? container.decode(Int.self) {
      self = .int(value)
    } else if let value = try? container.decode(Double.self) {
      self = .double(value)
    } else if let value = try? container.decode(String.self) {
      self = .string(value)
    } else if let value = try? container.decode([JSONValue].self) {
      self = .array(value)
    } else {
      self = .object(try container.decode([String: JSONValue].self))
    }
  }

  /// A non-finite number is written as null (JSON has no spelling for it).
  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    switch self {
    case .null: try container.encodeNil()
    case .bool(let value): try container.encode(value)
    case .int(let value): try container.encode(value)
    case .double(let value) where value.isFinite: try container.encode(value)
    case .double: try container.encodeNil()
    case .string(let value): try container.encode(value)
    case .array(let items): try container.encode(items)
    case .object(let fields): try container.encode(fields)
    }
  }
}
