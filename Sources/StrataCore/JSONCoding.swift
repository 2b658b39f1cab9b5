// The one JSON configuration of the project: every document Strata writes or reads (admin API,
// STAT, RING, reports, etcd records and gateway messages, CLI output) goes through Codable with
// these settings, so equal values give equal bytes everywhere.

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// Encodes and decodes Codable values as JSON with the project's settings:
/// - object keys sorted (documents compare and diff cleanly), `/` not escaped;
/// - integers as integers, floating-point numbers in their shortest exact form (`2.0` as `2`);
///   a non-finite number is refused (`internalError`), never written as a string;
/// - dates as ISO 8601 strings in UTC (`2026-12-02T20:30:00Z`);
/// - `Optional` fields left out when nil, unless a type's `encode(to:)` writes `null` on purpose;
/// - on reading, unknown keys are ignored and every failure is `invalidArgument` naming where.
public enum JSONCoding {
  /// Compact JSON of `value`.
  public static func encode(_ value: some Encodable) throws(StrataError) -> [UInt8] {
    try encode(value, formatting: [.sortedKeys, .withoutEscapingSlashes])
  }

  /// JSON of `value` indented by two spaces, for people.
  public static func encodePretty(_ value: some Encodable) throws(StrataError) -> [UInt8] {
    try encode(value, formatting: [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted])
  }

  /// Compact JSON of `value` as text.
  public static func text(_ value: some Encodable) throws(StrataError) -> String {
    String(decoding: try encode(value), as: UTF8.self)
  }

  /// The value of type `type` in `bytes`.
  public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(StrataError) -> T {
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .iso8601
    do {
      return try decoder.decode(type, from: Data(bytes))
    } catch {
      throw StrataError(.invalidArgument, "not valid JSON for \(type): \(describe(error))")
    }
  }

  private static func encode(_ value: some Encodable, formatting: JSONEncoder.OutputFormatting) throws(StrataError)
    -> [UInt8]
  {
    let encoder = JSONEncoder()
    encoder.outputFormatting = formatting
    encoder.dateEncodingStrategy = .iso8601
    encoder.nonConformingFloatEncodingStrategy = .throw
    do {
      return Array(try encoder.encode(value))
    } catch {
      throw StrataError(.internalError, "JSON encoding failed: \(describe(error))")
    }
  }

  /// A decoding or encoding error in words: what went wrong and where.
  public static func describe(_ error: any Error) -> String {
    func path(_ keys: [any CodingKey]) -> String {
      keys.isEmpty ? "(top level)" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
    switch error {
    case DecodingError.dataCorrupted(let context):
      return context.codingPath.isEmpty
        ? context.debugDescription : "\(path(context.codingPath)): \(context.debugDescription)"
    case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
      return "\(path(context.codingPath)): \(context.debugDescription)"
    case DecodingError.keyNotFound(let key, let context): return "missing '\(path(context.codingPath + [key]))'"
    case EncodingError.invalidValue(_, let context): return "\(path(context.codingPath)): \(context.debugDescription)"
    default: return "\(error)"
    }
  }
}
