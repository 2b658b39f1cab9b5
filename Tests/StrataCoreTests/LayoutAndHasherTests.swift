import StrataCore
import Testing

@Suite struct LayoutAndHasherTests {
  let layout = try! LayoutTag(parsing: "model=m,dtype=bf16,block=4,tp=1/2,layers=0-8")

  @Test func parsesTheCommandLineForm() throws {
    #expect(layout.modelId == "m")
    #expect(layout.tensorParallelRank == 1 && layout.tensorParallelSize == 2)
    #expect(layout.layerStart == 0 && layout.layerEnd == 8)
    #expect(try LayoutTag(parsing: layout.description) == layout)
    let defaulted = try LayoutTag(parsing: "model=m,dtype=bf16,block=4,layers=0-8")
    #expect(defaulted.tensorParallelSize == 1 && defaulted.tensorParallelRank == 0)
  }

  @Test(arguments: [
    ("model=m,dtype=bf16,block=0,layers=0-8", "layout.block"),
    ("model=m,dtype=BF16,block=4,layers=0-8", "layout.dtype"),
    ("model=m,dtype=bf16,block=4,tp=2/2,layers=0-8", "layout.tp"),
    ("model=m,dtype=bf16,block=4,layers=8-8", "layout.layers"),
    ("model=,dtype=bf16,block=4,layers=0-8", "layout.model"),
    ("model=m,dtype=bf16,layers=0-8", "layout.block"),
    ("model=m,dtype=bf16,block=4,layers=0-8,colour=red", "layout.colour"),
    ("model=m,model=n,dtype=bf16,block=4,layers=0-8", "layout.model"),
    ("model=m,dtype=bf16,block=x,layers=0-8", "layout.block"),
  ])
  func rejectsBadLayoutsNamingTheField(text: String, field: String) {
    #expect {
      try LayoutTag(parsing: text)
    } throws: { error in
      guard let error = error as? StrataError else { return false }
      return error.code == .invalidArgument && error.message.hasPrefix(field)
    }
  }

  @Test func partialBlocksAreNeverKeyed() throws {
    let hasher = try PrefixHasher(layout: layout)
    #expect(try hasher.keys(tokens: [1, 2, 3]).isEmpty)
    #expect(try hasher.keys(tokens: [1, 2, 3, 4, 5, 6, 7]).count == 1)
    #expect(try hasher.keys(tokens: Array(1...8)).count == 2)
  }

  @Test func keysChainOnThePrefix() throws {
    let hasher = try PrefixHasher(layout: layout)
    let long = try hasher.keys(tokens: Array(1...12))
    let short = try hasher.keys(tokens: Array(1...8))
    #expect(Array(long.prefix(2)) == short)
    // Changing an early token changes every later key.
    var changed = Array(UInt32(1)...12)
    changed[0] = 99
    let other = try hasher.keys(tokens: changed)
    #expect(zip(long, other).allSatisfy { $0 != $1 })
  }

  @Test func saltsLayoutsAndExtrasSeparateKeys() throws {
    let tokens = Array(UInt32(1)...8)
    let plain = try PrefixHasher(layout: layout).keys(tokens: tokens)
    let salted = try PrefixHasher(layout: layout, salt: [1]).keys(tokens: tokens)
    let otherLayout = try PrefixHasher(layout: try LayoutTag(parsing: "model=m,dtype=fp16,block=4,tp=1/2,layers=0-8"))
      .keys(tokens: tokens)
    let withExtras = try PrefixHasher(layout: layout).keys(tokens: tokens, extras: [[], [0xaa]])
    #expect(plain != salted)
    #expect(plain != otherLayout)
    #expect(plain[0] == withExtras[0])
    #expect(plain[1] != withExtras[1])
  }

  @Test func rejectsOversizedSaltsAndExtras() throws {
    #expect(throws: StrataError.self) { try PrefixHasher(layout: layout, salt: [UInt8](repeating: 0, count: 1025)) }
    let hasher = try PrefixHasher(layout: layout)
    #expect(throws: StrataError.self) { try hasher.keys(tokens: [1, 2, 3, 4], extras: [[], []]) }
    #expect(throws: StrataError.self) {
      try hasher.keys(tokens: [1, 2, 3, 4], extras: [[UInt8](repeating: 0, count: 65537)])
    }
  }
}
