// The block-key scheme against the checked-in vectors and against the independent Python reference.

import Foundation
import StrataCore
import StrataTestKit
import Testing

struct KeyCase: Codable {
  struct Layout: Codable {
    var modelId: String
    var dtype: String
    var tokensPerBlock: UInt32
    var tpRank: UInt16
    var tpSize: UInt16
    var layerStart: UInt16
    var layerEnd: UInt16
  }
  var name: String
  var layout: Layout
  var saltHex: String
  var tokens: [UInt32]
  var extrasHex: [String]
  var layoutHex: String?
  var rootHex: String?
  var keysHex: [String]?

  func hasher() throws -> PrefixHasher {
    let tag = try LayoutTag(
      modelId: layout.modelId, dtype: layout.dtype, tokensPerBlock: layout.tokensPerBlock,
      tensorParallelRank: layout.tpRank, tensorParallelSize: layout.tpSize,
      layerStart: layout.layerStart, layerEnd: layout.layerEnd)
    return try PrefixHasher(layout: tag, salt: try #require(Hex.decode(saltHex)))
  }

  func extras() throws -> [[UInt8]] { try extrasHex.map { try #require(Hex.decode($0)) } }
}

struct KeyVectors: Codable {
  var scheme: String
  var cases: [KeyCase]
}

/// The fixture's fields are snake_case, as Python writes them.
let snakeCaseDecoder: JSONDecoder = {
  let decoder = JSONDecoder()
  decoder.keyDecodingStrategy = .convertFromSnakeCase
  return decoder
}()

let snakeCaseEncoder: JSONEncoder = {
  let encoder = JSONEncoder()
  encoder.keyEncodingStrategy = .convertToSnakeCase
  return encoder
}()

func loadVectors() throws -> KeyVectors {
  try snakeCaseDecoder.decode(KeyVectors.self, from: Data(contentsOf: TestPaths.fixture("key-vectors.json")))
}

@Suite struct KeyVectorTests {
  @Test func swiftReproducesEveryVector() throws {
    let vectors = try loadVectors()
    #expect(vectors.scheme == "strata-block-key-v1")
    #expect(vectors.cases.count >= 20)
    for vector in vectors.cases {
      let hasher = try vector.hasher()
      #expect(Hex.encode(hasher.layout.canonicalBytes) == vector.layoutHex, "\(vector.name): layout bytes")
      #expect(hasher.root.hex == vector.rootHex, "\(vector.name): root")
      let keys = try hasher.keys(tokens: vector.tokens, extras: try vector.extras())
      #expect(keys.map(\.hex) == vector.keysHex, "\(vector.name): keys")
    }
  }

  @Test func vectorsCoverTheRequiredShapes() throws {
    let cases = try loadVectors().cases
    #expect(cases.contains { $0.layout.tokensPerBlock == 1 && ($0.keysHex?.count ?? 0) > 0 })
    #expect(cases.contains { $0.layout.tokensPerBlock == 256 && ($0.keysHex?.count ?? 0) > 0 })
    #expect(cases.contains { !$0.saltHex.isEmpty })
    #expect(cases.contains { $0.extrasHex.contains { !$0.isEmpty } })
    #expect(cases.contains { ($0.keysHex?.count ?? 0) >= 5 })
    #expect(cases.contains { $0.tokens.count % Int($0.layout.tokensPerBlock) != 0 })
  }

  @Test func pythonReferenceAgreesWithTheVectors() async throws {
    let script = TestPaths.packageRoot.appendingPathComponent("scripts/keyref.py").path
    let result = try await runProcess(
      python3(), pythonArguments([script, "verify", TestPaths.fixture("key-vectors.json").path]))
    #expect(result.status == 0, "keyref.py verify failed: \(result.stdoutText) \(result.stderrText)")
  }

  /// 1,000 random chains computed by Swift and by the Python reference must agree key for key.
  @Test func pythonReferenceAgreesOnRandomChains() async throws {
    let seed = UInt64(0x5EED_0001)
    var random = SplitMix64(seed: seed)
    let dtypes = ["bf16", "fp16", "fp8_e4m3", "fp32", "int8"]
    var cases: [KeyCase] = []
    for index in 0..<1000 {
      let tokensPerBlock = [1, 2, 3, 16, 32, 64, 128, 256][Int(random.next() % 8)]
      let tokenCount = Int(random.next() % UInt64(tokensPerBlock * 12 + 1))
      let tpSize = UInt16(1 + random.next() % 8)
      let layerStart = UInt16(random.next() % 40)
      let fullBlocks = tokenCount / tokensPerBlock
      let extrasCount = fullBlocks == 0 ? 0 : Int(random.next() % UInt64(fullBlocks + 1))
      let extras = (0..<extrasCount).map { _ -> String in
        let length = random.next() % 3 == 0 ? Int(random.next() % 48) : 0
        return Hex.encode((0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) })
      }
      let saltLength = random.next() % 2 == 0 ? 0 : Int(1 + random.next() % 40)
      cases.append(
        KeyCase(
          name: "random-\(index)",
          layout: .init(
            modelId: "model-\(random.next() % 1000)/\u{00e9}-\(index)", dtype: dtypes[Int(random.next() % 5)],
            tokensPerBlock: UInt32(tokensPerBlock), tpRank: UInt16(random.next() % UInt64(tpSize)),
            tpSize: tpSize, layerStart: layerStart, layerEnd: layerStart + UInt16(1 + random.next() % 80)),
          saltHex: Hex.encode((0..<saltLength).map { _ in UInt8(truncatingIfNeeded: random.next()) }),
          tokens: (0..<tokenCount).map { _ in
            random.next() % 10 == 0 ? UInt32.max - UInt32(random.next() % 3) : UInt32(random.next() % 200_000)
          },
          extrasHex: extras))
    }
    let input = try snakeCaseEncoder.encode(KeyVectors(scheme: "strata-block-key-v1", cases: cases))
    let script = TestPaths.packageRoot.appendingPathComponent("scripts/keyref.py").path
    let result = try await runProcess(python3(), pythonArguments([script, "compute"]), input: input)
    try #require(result.status == 0, "keyref.py compute failed: \(result.stderrText)")
    let computed = try snakeCaseDecoder.decode(KeyVectors.self, from: result.stdout).cases
    try #require(computed.count == cases.count)
    var mismatches = 0
    for (ours, theirs) in zip(cases, computed) {
      let hasher = try ours.hasher()
      let keys = try hasher.keys(tokens: ours.tokens, extras: try ours.extras())
      if hasher.root.hex != theirs.rootHex || keys.map(\.hex) != theirs.keysHex {
        mismatches += 1
        Issue.record("seed \(seed), \(ours.name): Swift and Python disagree")
      }
    }
    #expect(mismatches == 0)
    #expect(computed.reduce(0) { $0 + ($1.keysHex?.count ?? 0) } > 2000, "too few keys compared")
  }
}
