// A JSON value for the admin API: built by handlers and status sections, written with sorted
// keys (stable output for people, diffs and tests), and parsed from request bodies and by the CLI.

public import StrataCore

/// A JSON document. Integers stay integers (byte counts exceed a Double's exact range).
public enum JSONValue: Sendable, Hashable {
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
  public var encoded: String {
    var out = ""
    write(to: &out, indent: nil, level: 0)
    return out
  }

  /// Indented JSON text, object keys sorted.
  public var pretty: String {
    var out = ""
    write(to: &out, indent: "  ", level: 0)
    return out
  }

  private func write(to out: inout String, indent: String?, level: Int) {
    let newline = indent == nil ? "" : "\n"
    let pad = { (depth: Int) in indent.map { String(repeating: $0, count: depth) } ?? "" }
    switch self {
    case .null: out += "null"
    case .bool(let value): out += value ? "true" : "false"
    case .int(let value): out += String(value)
    case .double(let value):
      if value.isFinite {
        out += value.rounded() == value && abs(value) < 1e15 ? String(Int(value)) : "\(value)"
      } else {
        out += "null"
      }
    case .string(let value): JSONValue.quote(value, into: &out)
    case .array(let items):
      guard !items.isEmpty else {
        out += "[]"
        return
      }
      out += "[" + newline
      for (index, item) in items.enumerated() {
        out += pad(level + 1)
        item.write(to: &out, indent: indent, level: level + 1)
        out += (index == items.count - 1 ? "" : ",") + newline
      }
      out += pad(level) + "]"
    case .object(let fields):
      guard !fields.isEmpty else {
        out += "{}"
        return
      }
      out += "{" + newline
      let keys = fields.keys.sorted()
      for (index, key) in keys.enumerated() {
        out += pad(level + 1)
        JSONValue.quote(key, into: &out)
        out += indent == nil ? ":" : ": "
        fields[key]!.write(to: &out, indent: indent, level: level + 1)
        out += (index == keys.count - 1 ? "" : ",") + newline
      }
      out += pad(level) + "}"
    }
  }

  private static func quote(_ text: String, into out: inout String) {
    out += "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case _ where scalar.value < 0x20:
        let digits = String(scalar.value, radix: 16)
        out += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
      default: out.unicodeScalars.append(scalar)
      }
    }
    out += "\""
  }

  /// Parses JSON text; throws `invalidArgument` naming the byte offset of the first problem.
  public static func parse(_ text: String) throws(StrataError) -> JSONValue {
    try parse(Array(text.utf8))
  }

  /// Parses UTF-8 JSON bytes; throws `invalidArgument` naming the byte offset of the first problem.
  public static func parse(_ bytes: [UInt8]) throws(StrataError) -> JSONValue {
    var parser = JSONParser(bytes: bytes)
    let value = try parser.value(depth: 0)
    parser.skipSpace()
    guard parser.offset == bytes.count else { throw parser.failure("trailing characters") }
    return value
  }
}

/// A recursive-descent JSON parser with a depth limit.
private struct JSONParser {
  let bytes: [UInt8]
  var offset = 0

  init(bytes: [UInt8]) { self.bytes = bytes }

  func failure(_ reason: String) -> StrataError {
    StrataError(.invalidArgument, "not valid JSON at byte \(offset): \(reason)")
  }

  mutating func skipSpace() {
    while offset < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[offset]) { offset += 1 }
  }

  mutating func literal(_ word: String, _ value: JSONValue) throws(StrataError) -> JSONValue {
    let utf8 = Array(word.utf8)
    guard offset + utf8.count <= bytes.count, Array(bytes[offset..<(offset + utf8.count)]) == utf8 else {
      throw failure("unexpected character")
    }
    offset += utf8.count
    return value
  }

  mutating func value(depth: Int) throws(StrataError) -> JSONValue {
    guard depth < 64 else { throw failure("nested deeper than 64 levels") }
    skipSpace()
    guard offset < bytes.count else { throw failure("unexpected end") }
    switch bytes[offset] {
    case UInt8(ascii: "{"):
      offset += 1
      var fields: [String: JSONValue] = [:]
      skipSpace()
      if offset < bytes.count, bytes[offset] == UInt8(ascii: "}") {
        offset += 1
        return .object(fields)
      }
      while true {
        skipSpace()
        guard offset < bytes.count, bytes[offset] == UInt8(ascii: "\"") else { throw failure("expected a key") }
        let key = try string()
        skipSpace()
        guard offset < bytes.count, bytes[offset] == UInt8(ascii: ":") else { throw failure("expected ':'") }
        offset += 1
        fields[key] = try value(depth: depth + 1)
        skipSpace()
        guard offset < bytes.count else { throw failure("unexpected end") }
        if bytes[offset] == UInt8(ascii: ",") {
          offset += 1
          continue
        }
        guard bytes[offset] == UInt8(ascii: "}") else { throw failure("expected ',' or '}'") }
        offset += 1
        return .object(fields)
      }
    case UInt8(ascii: "["):
      offset += 1
      var items: [JSONValue] = []
      skipSpace()
      if offset < bytes.count, bytes[offset] == UInt8(ascii: "]") {
        offset += 1
        return .array(items)
      }
      while true {
        items.append(try value(depth: depth + 1))
        skipSpace()
        guard offset < bytes.count else { throw failure("unexpected end") }
        if bytes[offset] == UInt8(ascii: ",") {
          offset += 1
          continue
        }
        guard bytes[offset] == UInt8(ascii: "]") else { throw failure("expected ',' or ']'") }
        offset += 1
        return .array(items)
      }
    case UInt8(ascii: "\""): return .string(try string())
    case UInt8(ascii: "t"): return try literal("true", .bool(true))
    case UInt8(ascii: "f"): return try literal("false", .bool(false))
    case UInt8(ascii: "n"): return try literal("null", .null)
    default: return try number()
    }
  }

  mutating func number() throws(StrataError) -> JSONValue {
    let start = offset
    while offset < bytes.count, "+-0123456789.eE".utf8.contains(bytes[offset]) { offset += 1 }
    let text = String(decoding: bytes[start..<offset], as: UTF8.self)
    if let value = Int(text) { return .int(value) }
    if let value = Double(text), !text.isEmpty { return .double(value) }
    offset = start
    throw failure("unexpected character")
  }

  mutating func string() throws(StrataError) -> String {
    offset += 1  // the opening quote
    var scalars = String.UnicodeScalarView()
    var raw: [UInt8] = []
    func flush() {
      scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars)
      raw.removeAll()
    }
    while offset < bytes.count {
      let byte = bytes[offset]
      offset += 1
      switch byte {
      case UInt8(ascii: "\""):
        flush()
        return String(scalars)
      case UInt8(ascii: "\\"):
        flush()
        guard offset < bytes.count else { throw failure("unfinished escape") }
        let escape = bytes[offset]
        offset += 1
        switch escape {
        case UInt8(ascii: "n"): scalars.append("\n")
        case UInt8(ascii: "t"): scalars.append("\t")
        case UInt8(ascii: "r"): scalars.append("\r")
        case UInt8(ascii: "b"): scalars.append("\u{08}")
        case UInt8(ascii: "f"): scalars.append("\u{0C}")
        case UInt8(ascii: "u"):
          guard offset + 4 <= bytes.count,
            let code = UInt32(String(decoding: bytes[offset..<(offset + 4)], as: UTF8.self), radix: 16)
          else { throw failure("bad \\u escape") }
          offset += 4
          scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}")
        default: scalars.append(Unicode.Scalar(escape))
        }
      default:
        guard byte >= 0x20 else { throw failure("control character in a string") }
        raw.append(byte)
      }
    }
    throw failure("unfinished string")
  }
}
