// The check an etcd member record's certificate must pass before the ring honours the record
// (CertificateCheck, MemberRecord.swift): chain to the cluster CA at the time given, name the
// member id. Certificates from scripts/dev-ca.sh and the openssl CLI.

import Foundation
import StrataCore
import StrataTCP
import Testing

@Suite struct CertificateCheckTests {
  static var now: Int64 { Int64(Date().timeIntervalSince1970) }

  @Test func aCertificateOfTheCAForTheIDIsValid() async throws {
    let ca = try await DevCA(nodes: ["node-a"])
    defer { ca.remove() }
    let authority = try CertificateAuthority(file: ca.ca)
    let pem = try readPEMFile(ca.certificate("node-a"))
    #expect(CertificateCheck.verify(pem: pem, naming: "node-a", authority: authority, now: Self.now) == .valid)
    // The same certificate does not establish another id.
    let other = CertificateCheck.verify(pem: pem, naming: "node-b", authority: authority, now: Self.now)
    #expect(other.rejection == .wrongIdentity, "\(other)")
    if case .rejected(_, let words) = other { #expect(words.contains("node-a"), "\(words)") }
  }

  @Test func anotherCAsCertificateIsUntrusted() async throws {
    let ca = try await DevCA(nodes: ["node-a"])
    defer { ca.remove() }
    let rogue = try await DevCA(nodes: ["node-a"])
    defer { rogue.remove() }
    let authority = try CertificateAuthority(file: ca.ca)
    let verdict = CertificateCheck.verify(
      pem: try readPEMFile(rogue.certificate("node-a")), naming: "node-a", authority: authority, now: Self.now)
    #expect(verdict.rejection == .untrusted, "\(verdict)")
    // The rogue CA's own certificate (self-signed) is no member certificate either.
    let selfSigned = CertificateCheck.verify(
      pem: try readPEMFile(rogue.ca), naming: "strata-dev-ca", authority: authority, now: Self.now)
    #expect(selfSigned.rejection == .untrusted, "\(selfSigned)")
  }

  @Test func validityIsJudgedAtTheTimeGiven() async throws {
    let ca = try await DevCA(nodes: ["node-a"])
    defer { ca.remove() }
    let authority = try CertificateAuthority(file: ca.ca)
    let pem = try readPEMFile(ca.certificate("node-a"))
    let inTwoYears = Self.now + 2 * 366 * 86_400
    #expect(
      CertificateCheck.verify(pem: pem, naming: "node-a", authority: authority, now: inTwoYears).rejection
        == .expired)
    #expect(
      CertificateCheck.verify(pem: pem, naming: "node-a", authority: authority, now: Self.now - 86_400).rejection
        == .notYetValid)
    // A certificate that expired yesterday, checked now.
    let expired = try await ca.expired("node-a")
    #expect(
      CertificateCheck.verify(
        pem: try readPEMFile(expired.certificate), naming: "node-a", authority: authority, now: Self.now
      ).rejection == .expired)
  }

  @Test func missingAndUnreadableCertificatesAreRejected() async throws {
    let ca = try await DevCA(nodes: ["node-a"])
    defer { ca.remove() }
    let authority = try CertificateAuthority(file: ca.ca)
    #expect(
      CertificateCheck.verify(pem: "", naming: "node-a", authority: authority, now: Self.now).rejection == .missing)
    let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    #expect(
      CertificateCheck.verify(pem: garbage, naming: "node-a", authority: authority, now: Self.now).rejection
        == .unreadable)
    let huge = String(repeating: "A", count: CertificateCheck.pemBytesMax + 1)
    #expect(
      CertificateCheck.verify(pem: huge, naming: "node-a", authority: authority, now: Self.now).rejection
        == .unreadable)
    #expect(throws: StrataError.self) { try CertificateAuthority(pem: "no certificate here") }
  }

  /// What a node publishes from its tls.cert file: the certificates, never a key kept in the same file.
  @Test func onlyCertificatesArePublished() async throws {
    let ca = try await DevCA(nodes: ["node-a"])
    defer { ca.remove() }
    let certificate = try readPEMFile(ca.certificate("node-a"))
    let key = try readPEMFile(ca.key("node-a"))
    let published = CertificateCheck.certificatesOnly(key + certificate + key)
    #expect(!published.contains("PRIVATE KEY"))
    #expect(published.contains("-----BEGIN CERTIFICATE-----"))
    let authority = try CertificateAuthority(file: ca.ca)
    #expect(CertificateCheck.verify(pem: published, naming: "node-a", authority: authority, now: Self.now) == .valid)
    #expect(CertificateCheck.certificatesOnly(key).isEmpty)
  }
}
