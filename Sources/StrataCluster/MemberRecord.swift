// The value of a member's etcd key, and which records the ring honours. With TLS, a record carries
// its node's certificate chain (certificates only, never a key), and it is admitted only when that
// chain verifies against the cluster CA at the time of the check and names the record's member id.
// A record anyone wrote into etcd without such a certificate takes no share of the ring, so it
// attracts no replicas, no peer connections (which would carry the cluster token) and no clients
// (RING `members` lists only ring members). The certificate proves the CA issued that identity;
// the TLS handshake of every connection to the record's address then proves its key is there.

import Foundation
import StrataCore
import StrataPlacement
import StrataTCP

/// A member record as stored in etcd: the `Member` fields at the top level (what nodes that know
/// no more than `Member` read), plus the process `instance` (left out when 0) and the node's
/// certificate chain in PEM (left out without TLS).
struct MemberRecord: Codable, Sendable, Hashable {
  var member: Member
  var instance: Int
  var certificate: String

  init(member: Member, instance: Int, certificate: String) {
    self.member = member
    self.instance = instance
    self.certificate = certificate
  }

  private enum ExtraKeys: String, CodingKey {
    case instance
    case certificate
  }

  init(from decoder: any Decoder) throws {
    member = try Member(from: decoder)
    let container = try decoder.container(keyedBy: ExtraKeys.self)
    instance = try container.decodeIfPresent(Int.self, forKey: .instance) ?? 0
    certificate = try container.decodeIfPresent(String.self, forKey: .certificate) ?? ""
  }

  func encode(to encoder: any Encoder) throws {
    try member.encode(to: encoder)
    var container = encoder.container(keyedBy: ExtraKeys.self)
    if instance != 0 { try container.encode(instance, forKey: .instance) }
    if !certificate.isEmpty { try container.encode(certificate, forKey: .certificate) }
  }

  /// The record's bytes (JSON, keys sorted).
  var bytes: [UInt8] {
    // A member and two plain fields always encode.
    (try? JSONCoding.encode(self)) ?? []
  }

  /// Records over this size are not decoded (a member record is well under 16 KiB).
  static let bytesMax = CertificateCheck.pemBytesMax + (16 << 10)
}

/// Which of etcd's member records make the ring. Pure: the records, the CA and the time in, the
/// verdicts out.
struct MemberAdmission: Sendable, Hashable {
  /// Why a record is not honoured.
  enum Rejection: Sendable, Hashable {
    /// Not a member record (not JSON, a key that is not its id, over `MemberRecord.bytesMax`).
    case malformed
    /// Its certificate does not establish its id (`CertificateCheck`).
    case certificate(CertificateRejection, String)

    /// The metric label.
    var label: String {
      switch self {
      case .malformed: return "malformed"
      case .certificate(let reason, _): return reason.rawValue
      }
    }

    var words: String {
      switch self {
      case .malformed: return "not a member record for its key"
      case .certificate(let reason, let words): return "certificate \(reason.rawValue): \(words)"
      }
    }
  }

  /// The metric labels of rejections, in a fixed order.
  static let rejectionLabels = ["malformed"] + CertificateRejection.allCases.map(\.rawValue)

  var members: [Member] = []
  var instances: [String: Int] = [:]
  var rejected: [String: Rejection] = [:]

  /// Sorts `records` (id to value) into members and rejections. Without `authority` (a cluster
  /// without TLS) every well-formed record is honoured, certificate or not.
  init(records: [String: [UInt8]], authority: CertificateAuthority?, now: Int64) {
    for (id, value) in records.sorted(by: { $0.key < $1.key }) {
      guard value.count <= MemberRecord.bytesMax,
        let record = try? JSONCoding.decode(MemberRecord.self, from: value), record.member.id == id
      else {
        rejected[id] = .malformed
        continue
      }
      if let authority {
        let verdict = CertificateCheck.verify(pem: record.certificate, naming: id, authority: authority, now: now)
        if case .rejected(let reason, let words) = verdict {
          rejected[id] = .certificate(reason, words)
          continue
        }
      }
      members.append(record.member)
      instances[id] = record.instance
    }
  }
}

/// Rejected member records seen so far: counted once per distinct record value, so a watch event
/// that repeats the map does not count them again. Bounded by the records etcd holds now.
struct MemberRejections: Sendable {
  /// Records rejected now: id to (the value's hash, the rejection).
  private(set) var current: [String: (value: Int, rejection: MemberAdmission.Rejection)] = [:]
  /// Distinct rejected records since start, by metric label.
  private(set) var totals: [String: Int] = [:]

  /// Takes the rejections of a new member map; returns those not seen before (to be logged).
  mutating func note(_ rejected: [String: MemberAdmission.Rejection], values: [String: [UInt8]])
    -> [(id: String, rejection: MemberAdmission.Rejection)]
  {
    var fresh: [(id: String, rejection: MemberAdmission.Rejection)] = []
    var next: [String: (value: Int, rejection: MemberAdmission.Rejection)] = [:]
    for (id, rejection) in rejected.sorted(by: { $0.key < $1.key }) {
      let value = (values[id] ?? []).hashValue
      if current[id]?.value != value {
        fresh.append((id, rejection))
        totals[rejection.label, default: 0] += 1
      }
      next[id] = (value, rejection)
    }
    current = next
    return fresh
  }
}

/// Member records that claim one address. One process listens there, so at most one of them is
/// live; the others were left behind (a node that came back under a new id, with its old record
/// not yet expired; a dead node's record at an address another node now uses). Ring owners are
/// picked by id, so both would take shares, and a block's two owners could be one node: its write
/// quorum met by a single copy (simulation: `rename`). The record written last (the highest
/// revision it was written at; of equals, the greater id) keeps the address; the others take no
/// share of the ring while they stay. Pure: the members and revisions in, the verdict out.
enum AddressClaims {
  /// `members` without the records another record's claim supersedes, in their order, and the
  /// superseded ids with the id that holds their address.
  static func resolve(_ members: [Member], written: [String: UInt64]) -> (kept: [Member], superseded: [String: String])
  {
    var holder: [String: Member] = [:]
    for member in members {
      guard let other = holder[member.address] else {
        holder[member.address] = member
        continue
      }
      let mine = (written[member.id] ?? 0, member.id)
      let theirs = (written[other.id] ?? 0, other.id)
      if mine > theirs { holder[member.address] = member }
    }
    var superseded: [String: String] = [:]
    let kept = members.filter { member in
      let holding = holder[member.address]!.id
      if holding != member.id { superseded[member.id] = holding }
      return holding == member.id
    }
    return (kept, superseded)
  }
}
