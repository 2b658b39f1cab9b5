// Certificates checked outside a handshake: a ring member's certificate, carried in its etcd member
// record, verified against the cluster CA at a time passed in, and required to name the member id
// (as a peer's certificate must in a handshake). Pure apart from OpenSSL's parsing: the same bytes,
// CA and time give the same verdict.

import COpenSSL
public import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

/// CA certificates (PEM) that other certificates are verified against.
public final class CertificateAuthority: @unchecked Sendable {
  // @unchecked: the X509_STORE is filled in `init` and only read afterwards (verification locks
  // it internally, as OpenSSL documents for shared stores).
  let store: OpaquePointer

  /// The CAs of `pem` (one or more PEM certificates); `invalidConfiguration` when it holds none.
  public init(pem: String, source: String = "the CA") throws(StrataError) {
    let bytes = Array(pem.utf8)
    guard
      let store = bytes.withUnsafeBufferPointer({ buffer in
        buffer.withMemoryRebound(to: CChar.self) { strata_x509_store_from_pem($0.baseAddress, Int32(buffer.count)) }
      })
    else {
      throw StrataError(.invalidConfiguration, "TLS: \(source) holds no PEM certificate")
    }
    self.store = store
  }

  /// The CAs of the PEM file at `path`.
  public convenience init(file path: String) throws(StrataError) {
    try self.init(pem: try readPEMFile(path), source: path)
  }

  deinit { X509_STORE_free(store) }
}

/// Why a certificate was not accepted as naming an identity; the metric label is `rawValue`.
public enum CertificateRejection: String, Sendable, Hashable, CaseIterable {
  /// No certificate was given.
  case missing
  /// The bytes hold no PEM certificate.
  case unreadable
  /// It does not chain to the CA (another CA signed it, or it is self-signed).
  case untrusted
  case expired
  case notYetValid = "not_yet_valid"
  /// It verifies but names another identity.
  case wrongIdentity = "wrong_identity"
}

/// The verdict on one certificate.
public enum CertificateVerdict: Sendable, Hashable {
  case valid
  /// Rejected, with OpenSSL's words (or the name the certificate does carry) for the log.
  case rejected(CertificateRejection, String)

  public var rejection: CertificateRejection? {
    if case .rejected(let reason, _) = self { return reason }
    return nil
  }
}

public enum CertificateCheck {
  /// Certificates larger than this are refused unread (a record's chain is a few KiB).
  public static let pemBytesMax = 64 << 10

  /// Whether the certificate chain `pem` (leaf first, then any intermediates) verifies against
  /// `authority` at `now` (Unix seconds) and its leaf names `identity` (common name, DNS or IP
  /// alternative name: what `TLSSession.peerNames` checks in a handshake).
  public static func verify(
    pem: String, naming identity: String, authority: CertificateAuthority, now: Int64
  ) -> CertificateVerdict {
    guard !pem.isEmpty else { return .rejected(.missing, "no certificate") }
    guard pem.utf8.count <= pemBytesMax else {
      return .rejected(.unreadable, "over \(pemBytesMax) bytes")
    }
    var reason = [CChar](repeating: 0, count: 256)
    let bytes = Array(pem.utf8)
    let code = bytes.withUnsafeBufferPointer { buffer in
      buffer.withMemoryRebound(to: CChar.self) { pemBytes in
        strata_verify_certificate_pem(
          pemBytes.baseAddress, Int32(pemBytes.count), authority.store, identity, now, &reason, Int32(reason.count))
      }
    }
    let words = String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    switch code {
    case STRATA_CERT_VALID: return .valid
    case STRATA_CERT_EXPIRED: return .rejected(.expired, words)
    case STRATA_CERT_NOT_YET_VALID: return .rejected(.notYetValid, words)
    case STRATA_CERT_UNTRUSTED: return .rejected(.untrusted, words)
    case STRATA_CERT_WRONG_IDENTITY:
      return .rejected(.wrongIdentity, "it names '\(words)', not '\(identity)'")
    default: return .rejected(.unreadable, "no PEM certificate")
    }
  }

  /// The CERTIFICATE blocks of a PEM text, in order, and nothing else: what may be published (a
  /// file that also holds the private key gives only its certificates).
  public static func certificatesOnly(_ pem: String) -> String {
    let begin = "-----BEGIN CERTIFICATE-----"
    let end = "-----END CERTIFICATE-----"
    var blocks: [String] = []
    var current: [Substring]?
    for line in pem.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r" }) {
      let trimmed = line.trimmingSpaces
      if trimmed == begin {
        current = [trimmed]
      } else if trimmed == end, var lines = current {
        lines.append(trimmed)
        blocks.append(lines.joined(separator: "\n") + "\n")
        current = nil
      } else if current != nil {
        current?.append(trimmed)
      }
    }
    return blocks.joined()
  }
}

extension Substring {
  fileprivate var trimmingSpaces: Substring {
    var text = self
    while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
    while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
    return text
  }
}

/// The whole of a PEM file (certificates are small; a file over `CertificateCheck.pemBytesMax`
/// is refused).
public func readPEMFile(_ path: String) throws(StrataError) -> String {
  guard let file = fopen(path, "re") else {
    throw StrataError(.invalidConfiguration, "TLS: cannot read \(path): \(String(cString: strerror(errno)))")
  }
  defer { fclose(file) }
  var bytes = [UInt8](repeating: 0, count: CertificateCheck.pemBytesMax + 1)
  let count = bytes.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
  guard count <= CertificateCheck.pemBytesMax else {
    throw StrataError(.invalidConfiguration, "TLS: \(path) is over \(CertificateCheck.pemBytesMax) bytes")
  }
  return String(decoding: bytes[0..<count], as: UTF8.self)
}
