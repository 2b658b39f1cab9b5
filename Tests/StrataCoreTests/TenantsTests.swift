// Tenants as pure values: token digests and their configuration forms, scopes, quotas resolved
// from `limits` and `namespaces:`, and the token bucket behind request rates and probe limits.

import StrataCore
import Testing

@Suite struct TenantsTests {
  let machine = NodeConfiguration.Machine(physicalMemoryBytes: 24 << 30)

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

  @Test func tokensReadFromDigestsOrPlainSecretsWithScopes() throws {
    let secret = "operator-secret-00000001"
    let yaml = """
      auth:
        tokens:
          - {token: "\(TokenDigest(secret: "reader-secret-000000001"))", namespace: t1, scopes: [read]}
          - {token: "\(secret)", namespace: ops, admin: true}
          - {token: "writer-secret-000000001", namespace: t1}
          - {token: "deleter-secret-00000001", namespace: t1, scopes: [read, delete]}
      """
    let config = try NodeConfiguration(yaml: yaml)
    #expect(config.problems(on: machine).isEmpty)
    let tokens = config.auth.tokens
    #expect(tokens.map(\.scopes) == [[.read], .all, [.read, .write], [.read, .delete]])
    #expect(tokens.map(\.givenInPlain) == [false, true, true, true])
    #expect(tokens[1].admin && !tokens[0].admin)
    // Matching is by digest; the printed configuration holds digests only, and reads back the same.
    #expect(
      NodeConfiguration.Auth.match(secret: Array("reader-secret-000000001".utf8), in: tokens)?.namespace.name == "t1")
    #expect(NodeConfiguration.Auth.match(secret: Array("reader-secret-000000002".utf8), in: tokens) == nil)
    #expect(!config.yaml.contains(secret) && config.yaml.contains(TokenDigest(secret: secret).description))
    let reread = try NodeConfiguration(yaml: config.yaml)
    #expect(reread.auth.tokens.map(\.digest) == tokens.map(\.digest))
    #expect(reread.auth.tokens.map(\.scopes) == tokens.map(\.scopes))
  }

  @Test func badTokenEntriesAreReportedWithTheirField() throws {
    func problems(_ yaml: String) -> String {
      do {
        let config = try NodeConfiguration(yaml: yaml)
        return config.problems(on: machine).map(\.description).joined(separator: "\n")
      } catch { return error.message }
    }
    #expect(problems("auth: {tokens: [{token: \"sha256:12\", namespace: a}]}").contains("auth.tokens[0].token"))
    #expect(
      problems("auth: {tokens: [{token: tenant-secret-0000001, namespace: a, scopes: [read, admin]}]}")
        .contains("'admin' is not a scope"))
    #expect(
      problems("auth: {tokens: [{token: tenant-secret-0000001, namespace: a, scopes: [read], admin: true}]}")
        .contains("give scopes or admin, not both"))
    #expect(
      problems("auth: {tokens: [{token: tenant-secret-0000001, namespace: a, scopes: []}]}")
        .contains("auth.tokens[0].scopes: a token with no scope"))
    #expect(problems("auth: {tokens: [{token: short, namespace: a}]}").contains("at least 16 characters"))
    // The same secret given once plain and once as its digest is listed twice.
    let digest = TokenDigest(secret: "tenant-secret-0000001")
    #expect(
      problems(
        "auth: {tokens: [{token: tenant-secret-0000001, namespace: a}, {token: \"\(digest)\", namespace: b}]}"
      ).contains("a token is listed twice"))
  }

  @Test func quotasComeFromLimitsAndNamespaceOverrides() throws {
    let config = try NodeConfiguration(
      yaml: """
        limits:
          max_ram_bytes_per_namespace: 64MiB
          max_inflight_bytes_per_namespace: 128MiB
          requests_per_second_per_namespace: 1000
          lookup_keys_per_second_per_namespace: unlimited
        namespaces:
          - {namespace: big, ram: 256MiB, nvme: 1GiB, requests_per_second: 5000, misses_per_second: 100}
        """)
    #expect(config.problems(on: machine).isEmpty)
    let quotas = config.quotas
    let other = quotas[try Namespace("small")]
    #expect(other.ramBytesMax == 64 << 20 && other.nvmeBytesMax == nil && other.inflightBytesMax == 128 << 20)
    #expect(other.requestsPerSecond == 1000 && other.lookupKeysPerSecond == nil && other.missesPerSecond == nil)
    let big = quotas[try Namespace("big")]
    #expect(big.ramBytesMax == 256 << 20 && big.nvmeBytesMax == 1 << 30 && big.inflightBytesMax == 128 << 20)
    #expect(big.requestsPerSecond == 5000 && big.missesPerSecond == 100)
    #expect(quotas.limitsRAM)
    #expect(try NodeConfiguration(yaml: config.yaml).quotas == quotas)
    let wrong = try NodeConfiguration(
      yaml: "limits: {max_ram_bytes_per_namespace: 1MiB}\nnamespaces: [{namespace: a, requests_per_second: 0}]")
    let reasons = wrong.problems(on: machine).map(\.description).joined(separator: "\n")
    #expect(
      reasons.contains("limits.max_ram_bytes_per_namespace") && reasons.contains("namespaces[0].requests_per_second"))
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
