// The JSON shapes of etcd's v3 gateway (3.4): bytes travel as base64, int64 values as strings, and
// fields holding their zero value are left out. Requests are encoded, responses decoded here.

import Foundation
import StrataCore
import StrataHTTP

/// An int64 that the gateway writes as a JSON string ("42"); a bare number is accepted too.
struct JSONInt64: Codable, Hashable {
  var value: Int64

  init(_ value: Int64) { self.value = value }

  init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    if let text = try? container.decode(String.self) {
      guard let number = Int64(text) else {
        throw DecodingError.dataCorruptedError(in: container, debugDescription: "'\(text)' is not an int64")
      }
      value = number
    } else {
      value = try container.decode(Int64.self)
    }
  }

  func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(String(value))
  }
}

/// Bytes as base64 text.
struct JSONBytes: Codable, Hashable {
  var bytes: [UInt8]

  init(_ bytes: [UInt8]) { self.bytes = bytes }

  init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    let text = try container.decode(String.self)
    guard let data = Data(base64Encoded: text) else {
      throw DecodingError.dataCorruptedError(in: container, debugDescription: "'\(text.prefix(40))' is not base64")
    }
    bytes = Array(data)
  }

  func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(Data(bytes).base64EncodedString())
  }
}

// MARK: Requests

struct PutRequest: Encodable {
  var key: JSONBytes
  var value: JSONBytes
  var lease: JSONInt64?
}

struct RangeRequest: Encodable {
  var key: JSONBytes
  var rangeEnd: JSONBytes?

  enum CodingKeys: String, CodingKey {
    case key
    case rangeEnd = "range_end"
  }
}

/// POST /v3/auth/authenticate: a user's name and password for a token (etcd `auth enable`).
struct AuthenticateRequest: Encodable {
  var name: String
  var password: String
}

struct AuthenticateResponse: Decodable {
  var token: String?
}

struct LeaseGrantRequest: Encodable {
  var ttl: JSONInt64

  enum CodingKeys: String, CodingKey { case ttl = "TTL" }
}

struct LeaseIDRequest: Encodable {
  var id: JSONInt64

  enum CodingKeys: String, CodingKey { case id = "ID" }
}

struct WatchRequest: Encodable {
  struct Create: Encodable {
    var key: JSONBytes
    var rangeEnd: JSONBytes
    var startRevision: JSONInt64

    enum CodingKeys: String, CodingKey {
      case key
      case rangeEnd = "range_end"
      case startRevision = "start_revision"
    }
  }

  var createRequest: Create

  enum CodingKeys: String, CodingKey { case createRequest = "create_request" }
}

// MARK: Responses

struct ResponseHeader: Decodable {
  var revision: JSONInt64?
}

struct KeyValueJSON: Decodable {
  var key: JSONBytes?
  var value: JSONBytes?
  var modRevision: JSONInt64?
  var lease: JSONInt64?

  enum CodingKeys: String, CodingKey {
    case key, value, lease
    case modRevision = "mod_revision"
  }
}

struct PutResponse: Decodable {
  var header: ResponseHeader?
}

struct RangeResponse: Decodable {
  var header: ResponseHeader?
  var kvs: [KeyValueJSON]?
}

struct DeleteRangeResponse: Decodable {
  var header: ResponseHeader?
  var deleted: JSONInt64?
}

struct LeaseGrantResponse: Decodable {
  var header: ResponseHeader?
  var id: JSONInt64?
  var ttl: JSONInt64?
  var error: String?

  enum CodingKeys: String, CodingKey {
    case header, error
    case id = "ID"
    case ttl = "TTL"
  }
}

struct LeaseKeepAliveResponse: Decodable {
  var header: ResponseHeader?
  var id: JSONInt64?
  var ttl: JSONInt64?

  enum CodingKeys: String, CodingKey {
    case header
    case id = "ID"
    case ttl = "TTL"
  }
}

struct EmptyResponse: Decodable {
  var header: ResponseHeader?
}

struct WatchResponse: Decodable {
  struct Event: Decodable {
    var type: String?
    var kv: KeyValueJSON?
  }

  var header: ResponseHeader?
  var created: Bool?
  var canceled: Bool?
  var compactRevision: JSONInt64?
  var cancelReason: String?
  var events: [Event]?

  enum CodingKeys: String, CodingKey {
    case header, created, canceled, events
    case compactRevision = "compact_revision"
    case cancelReason = "cancel_reason"
  }
}

/// A streamed message: `{"result": {...}}` or `{"error": {...}}`.
struct StreamEnvelope<Result: Decodable>: Decodable {
  var result: Result?
  var error: GatewayError?
}

/// The gateway's error body: `{"error": "text", "message": "text", "code": N}` for a unary call,
/// `{"grpc_code": N, "message": "text", ...}` inside a stream's `error`.
struct GatewayError: Decodable {
  var message: String
  var grpcCode: Int?

  enum CodingKeys: String, CodingKey {
    case error, message, code
    case grpcCode = "grpc_code"
  }

  init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    let message = try? container.decodeIfPresent(String.self, forKey: .message)
    let error = try? container.decodeIfPresent(String.self, forKey: .error)
    self.message = message ?? error ?? "no message"
    grpcCode =
      (try? container.decodeIfPresent(Int.self, forKey: .code))
      ?? (try? container.decodeIfPresent(Int.self, forKey: .grpcCode))
  }

  /// The StrataError code for a gRPC status code.
  var strataCode: StrataError.Code {
    switch grpcCode {
    case 1: return .cancelled
    case 3, 11: return .invalidArgument  // INVALID_ARGUMENT, OUT_OF_RANGE (e.g. a compacted revision)
    case 4: return .timeout
    case 5: return .notFound
    case 6: return .alreadyExists
    case 7, 16: return .permissionDenied
    case 8: return .resourceExhausted
    case 12: return .unsupported
    case 14: return .unavailable
    default: return .internalError
    }
  }
}

enum GatewayJSON {
  static func encode(_ value: some Encodable) -> [UInt8] {
    // Encoding these flat structs of strings cannot fail.
    do throws(StrataError) { return try JSONCoding.encode(value) } catch { preconditionFailure(error.message) }
  }

  static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], what: String) throws(StrataError) -> T {
    do throws(StrataError) {
      return try JSONCoding.decode(type, from: bytes)
    } catch {
      throw StrataError(.protocolError, "etcd \(what): malformed JSON response '\(printable(bytes))': \(error.message)")
    }
  }

  /// Up to 120 bytes of a body, for messages.
  static func printable(_ bytes: [UInt8]) -> String {
    HTTPResponseDecoder.printable(String(decoding: bytes.prefix(120), as: UTF8.self))
  }
}
