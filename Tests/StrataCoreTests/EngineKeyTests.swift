// strata-engine-key-v1 in Swift against Tests/Fixtures/engine-key-vectors.json, which the Python
// client (python/strata_kv/keys.py) generates and reproduces too: the two implementations agree.

import Foundation
import StrataCore
import Testing

struct EngineKeyCase: Codable {
  var name: String
  var engine: String
  /// The same fields as the block-key vectors' layouts.
  var layout: KeyCase.Layout?
  var saltHex: String?
  var blockHashHex: String?
  var blockHashInt: String?
  var kvGroup: UInt32?
  var pageHashHex: String?
  var rank: UInt32?
  var kind: String?
  var keyStr: String?
  var keyHex: String

  func key() throws -> BlockKey {
    let salt = try #require(Hex.decode(saltHex ?? ""))
    let tag = try layout.map {
      try LayoutTag(
        modelId: $0.modelId, dtype: $0.dtype, tokensPerBlock: $0.tokensPerBlock, tensorParallelRank: $0.tpRank,
        tensorParallelSize: $0.tpSize, layerStart: $0.layerStart, layerEnd: $0.layerEnd)
    }
    switch engine {
    case "string": return try EngineKeys.string(try #require(keyStr))
    case "lmcache": return try EngineKeys.lmcache(try #require(keyStr), salt: salt)
    case "vllm":
      let hash: EngineKeys.VLLMBlockHash
      if let blockHashHex {
        hash = .digest(try #require(Hex.decode(blockHashHex)))
      } else {
        let text = try #require(blockHashInt)
        hash = .integer(try #require(Int128(text)))
      }
      return try EngineKeys.vllm(hash, layout: try #require(tag), salt: salt, kvGroup: kvGroup ?? 0)
    case "sglang":
      return try EngineKeys.sglang(
        pageHashHex: try #require(pageHashHex), layout: try #require(tag), rank: rank ?? 0,
        kind: try EngineKeys.SGLangKind(parsing: try #require(kind)), salt: salt)
    default:
      Issue.record("unknown engine \(engine)")
      throw StrataError(.invalidArgument, "unknown engine \(engine)")
    }
  }
}

struct EngineKeyVectors: Codable {
  var scheme: String
  var cases: [EngineKeyCase]
}

@Suite struct EngineKeyTests {
  let layout = try! LayoutTag(
    modelId: "meta-llama/Llama-3.1-8B-Instruct", dtype: "bf16", tokensPerBlock: 16, layerStart: 0, layerEnd: 32)

  func vectors() throws -> EngineKeyVectors {
    try snakeCaseDecoder.decode(
      EngineKeyVectors.self, from: Data(contentsOf: TestPaths.fixture("engine-key-vectors.json")))
  }

  @Test func swiftReproducesEveryPythonVector() throws {
    let document = try vectors()
    #expect(document.scheme == "strata-engine-key-v1")
    #expect(document.cases.count >= 80)
    for vector in document.cases {
      #expect(try vector.key().hex == vector.keyHex, "\(vector.name)")
    }
  }

  @Test func vectorsCoverEveryEngineAndVariant() throws {
    let cases = try vectors().cases
    for engine in ["vllm", "sglang", "lmcache", "string"] {
      #expect(cases.contains { $0.engine == engine }, "\(engine)")
    }
    #expect(cases.contains { $0.blockHashInt?.hasPrefix("-") == true })
    #expect(cases.contains { ($0.kvGroup ?? 0) > 0 })
    #expect(cases.contains { !($0.saltHex ?? "").isEmpty })
    #expect(Set(cases.compactMap(\.kind)) == ["k", "v", "kv"])
    #expect(Set(cases.compactMap(\.layout?.tpRank)).count > 1)
  }

  @Test func whatMustDifferDiffers() throws {
    let digest = EngineKeys.VLLMBlockHash.digest(Array(0..<32))
    let base = try EngineKeys.vllm(digest, layout: layout)
    var other = layout
    other.dtype = "fp16"
    #expect(try EngineKeys.vllm(digest, layout: other) != base)
    #expect(try EngineKeys.vllm(digest, layout: layout, kvGroup: 1) != base)
    #expect(try EngineKeys.vllm(digest, layout: layout, salt: [0]) != base)
    #expect(try EngineKeys.vllm(.integer(1), layout: layout) != EngineKeys.vllm(.digest([1]), layout: layout))
    let page = String(repeating: "ab", count: 32)
    var keys = Set<BlockKey>()
    for rank: UInt32 in [0, 1] {
      for kind in EngineKeys.SGLangKind.allCases {
        keys.insert(try EngineKeys.sglang(pageHashHex: page, layout: layout, rank: rank, kind: kind))
      }
    }
    #expect(keys.count == 6)
    #expect(try EngineKeys.lmcache("m@2@0@abc@bf16") != EngineKeys.lmcache("m@2@1@abc@bf16"))
  }

  @Test func badInputsAreRejectedNamingTheField() {
    func message(_ body: () throws(StrataError) -> BlockKey) -> String {
      do {
        _ = try body()
        return ""
      } catch { return error.message }
    }
    #expect(
      message { () throws(StrataError) in try EngineKeys.vllm(.digest([]), layout: layout) }.contains("block_hash"))
    #expect(
      message { () throws(StrataError) in try EngineKeys.vllm(.digest(Array(repeating: 1, count: 65)), layout: layout) }
        .contains("block_hash"))
    #expect(
      message { () throws(StrataError) in try EngineKeys.sglang(pageHashHex: "xyz", layout: layout) }.contains("hex"))
    #expect(
      message { () throws(StrataError) in try EngineKeys.sglang(pageHashHex: "", layout: layout) }.contains("hex"))
    #expect(message { () throws(StrataError) in try EngineKeys.lmcache("model@1@0@hash") }.contains("model@world_size"))
    #expect(message { () throws(StrataError) in try EngineKeys.lmcache("model@+1@0@hash@bf16") }.contains("integers"))
    #expect(message { () throws(StrataError) in try EngineKeys.lmcache("model@2@2@hash@bf16") }.contains("less than"))
    #expect(
      message { () throws(StrataError) in try EngineKeys.string(String(repeating: "x", count: 4097)) }.contains("limit")
    )
    #expect(throws: StrataError.self) { try EngineKeys.SGLangKind(parsing: "q") }
  }
}
