// Tenants in the configuration file: tokens as digests or plain secrets with scopes, bad token
// entries named by field, and quotas resolved from `limits` and `namespaces:`.

import StrataConfig
import StrataCore
import Testing

@Suite struct TenantConfigurationTests {
  let machine = NodeConfiguration.Machine(physicalMemoryBytes: 24 << 30)

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
}
