import StrataCore
import StrataStorage
import Testing

@Suite struct BlockIDTests {
  @Test func namespaceIsPartOfIdentity() throws {
    let key = try #require(BlockKey(hex: String(repeating: "ab", count: 32)))
    let a = BlockID(namespace: try Namespace("tenant-a"), key: key)
    let b = BlockID(namespace: try Namespace("tenant-b"), key: key)
    #expect(a != b)
    #expect(Set([a, b, a]).count == 2)
    #expect(a.description == "tenant-a/" + String(repeating: "ab", count: 32))
  }
}
