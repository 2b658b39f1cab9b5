// Tenants as pure values: token digests, scopes, and the token bucket behind request rates and
// probe limits (their configuration forms: StrataConfigTests/TenantConfigurationTests.swift).

import StrataCore
import Testing

@Suite struct TenantsTests {
  @Test func tokenDigestsParseCompareAndNeverPrintTheSecret() throws {
    let digest = TokenDigest(secret: "tenant-secret-0000000001")
    #expect(digest.description.hasPrefix("sha256:") && digest.description.utf8.count == 7 + 64)
    // SHA-256("abc"), the FIPS 180-2 test vector.
    #expect(
      TokenDigest(secret: "abc").description
        == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    #expect(try TokenDigest(parsing: digest.description) == digest)
    #expect(
      try TokenDigest(parsing: digest.description.uppercased().replacingOccurrences(of: "SHA256:", with: "sha256:"))
        == digest)
    #expect(digest.constantTimeEquals(TokenDigest(secret: "tenant-secret-0000000001")))
    #expect(!digest.constantTimeEquals(TokenDigest(secret: "tenant-secret-0000000002")))
    for bad in [
      "sha256:", "sha256:abc", "sha256:" + String(repeating: "g", count: 64),
      "md5:" + String(repeating: "0", count: 64),
    ] {
      #expect(throws: StrataError.self) { try TokenDigest(parsing: bad) }
    }
  }

  @Test func scopesNameWhatIsMissing() {
    #expect(throws: ScopeRefusal.self) { try ScopeRefusal.check("PUT", needs: .write, held: [.read]) }
    do throws(ScopeRefusal) {
      try ScopeRefusal.check("DELETE", needs: .delete, held: [.read, .write])
      Issue.record("DELETE allowed without the delete scope")
    } catch {
      #expect(error.error.code == .permissionDenied)
      #expect(error.error.message.contains("'delete'") && error.error.message.contains("read,write"))
    }
    #expect((try? ScopeRefusal.check("GET", needs: .read, held: .all)) != nil)
    #expect(TokenScopes(name: "operator") == .operator && TokenScopes(name: "admin") == nil)
  }

  @Test func tokenBucketRefillsAtItsRateAndHoldsAtMostItsCapacity() {
    let second: UInt64 = 1_000_000_000
    var bucket = TokenBucket(ratePerSecond: 10, now: 0)
    var outcomes: [Bool] = []
    outcomes.append(bucket.take(10, now: 0))
    outcomes.append(bucket.take(1, now: 0))
    // 100 ms gives one token back, no more.
    outcomes.append(bucket.take(1, now: second / 10))
    outcomes.append(bucket.take(1, now: second / 10))
    #expect(outcomes == [true, false, true, false])
    // A long idle spell fills it to its capacity only; more than the capacity is never granted,
    // and a refused take takes nothing.
    let full = bucket.available(now: 3600 * second)
    let tooMany = bucket.take(11, now: 3600 * second)
    let after = bucket.available(now: 3600 * second)
    #expect(full == 10 && !tooMany && after == 10)
    // Time going backwards (another clock's reading) refills nothing and breaks nothing.
    let all = bucket.take(10, now: 10 * second)
    let more = bucket.take(1, now: 10 * second)
    #expect(all && !more)
  }

  @Test func tokenBucketChargesGoIntoBoundedDebt() {
    let second: UInt64 = 1_000_000_000
    var bucket = TokenBucket(ratePerSecond: 10, now: 0)
    bucket.charge(1_000_000, now: 0)
    let debt = bucket.available(now: 0)
    // Paid back at the rate: 1 s brings it to zero, a token more takes another 100 ms.
    let atOneSecond = bucket.hasCredit(now: second)
    let atOneAndAHalfTenth = bucket.hasCredit(now: second + second / 20)
    let atOneAndATenth = bucket.hasCredit(now: second + second / 10)
    #expect(debt == -10, "debt is bounded by one bucket")
    #expect(!atOneSecond && !atOneAndAHalfTenth && atOneAndATenth)
  }
}

@Suite struct NamespaceTests {
  /// Namespaces hash by a fingerprint of the name: equal names hash alike, and distinct names
  /// stay distinct keys (equality compares the names themselves).
  @Test func namespacesAreEqualAndHashByName() throws {
    let names = ["default", "a", "b", "tenant-a", "tenant-b", "t.1", "t_1", String(repeating: "z", count: 64)]
    let spaces = try names.map { try Namespace($0) }
    #expect(Set(spaces).count == names.count)
    for (name, space) in zip(names, spaces) {
      let again = try Namespace(name)
      #expect(again == space && again.hashValue == space.hashValue)
    }
    #expect(try Namespace("default") == Namespace.embeddedDefault)
    var blocks: [Namespace: Int] = [:]
    for (index, space) in spaces.enumerated() { blocks[space] = index }
    #expect(try blocks[Namespace("tenant-b")] == 4)
  }
}
