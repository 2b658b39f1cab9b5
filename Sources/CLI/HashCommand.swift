// `strata hash`: the block keys of a token file's full blocks (scheme: docs/keys.md).

import ArgumentParser
import StrataCore

struct Hash: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print the block keys of a token sequence's full blocks.",
    discussion: """
      Tokens are whitespace-separated integers or a JSON array of integers (0 to 4294967295).
      A trailing partial block gets no key. Example:
        strata hash --layout model=llama-3-8b,dtype=bf16,block=16,tp=0/1,layers=0-32 --tokens prompt.txt
      """)

  @Option(help: "The KV layout: \(LayoutTag.example).")
  var layout: String

  @Option(help: "A file of token ids, or - for standard input.")
  var tokens: String

  @Option(help: "Salt as hex (empty: unsalted), e.g. a tenant's cache salt.")
  var salt: String = ""

  @Option(help: "Extra bytes of the next block as hex; repeat once per block, in order (\"\" for none).")
  var extra: [String] = []

  @Flag(help: "Print one JSON object with the layout, root and keys.")
  var json = false

  func run() throws {
    do throws(StrataError) {
      let layoutTag = try LayoutTag(parsing: layout)
      guard let saltBytes = Hex.decode(salt) else {
        throw StrataError(.invalidArgument, "--salt: '\(salt)' is not hex")
      }
      var extras: [[UInt8]] = []
      for (index, text) in extra.enumerated() {
        guard let bytes = Hex.decode(text) else {
          throw StrataError(.invalidArgument, "--extra #\(index + 1): '\(text)' is not hex")
        }
        extras.append(bytes)
      }
      let tokenIds = try TokenFile.parse(try readText(tokens, what: "token file"), source: tokens)
      let hasher = try PrefixHasher(layout: layoutTag, salt: saltBytes)
      let keys = try hasher.keys(tokens: tokenIds, extras: extras)
      if json {
        printJSONLine(
          HashLine(
            layout: Hex.encode(layoutTag.canonicalBytes), root: hasher.root.hex, tokens: tokenIds.count,
            keys: keys.map(\.hex)))
      } else {
        for key in keys { print(key.hex) }
      }
    } catch {
      throw report(error)
    }
  }
}

/// Token files: whitespace-separated integers, or one JSON array of integers.
enum TokenFile {
  static func parse(_ text: String, source: String) throws(StrataError) -> [UInt32] {
    var body = Substring(text)
    let isJSON = body.first(where: { !$0.isWhitespace }) == "["
    if isJSON {
      let trimmed = text.trimmingCharacters(whereSeparator: \.isWhitespace)
      guard trimmed.hasSuffix("]") else {
        throw StrataError(.invalidArgument, "token file '\(source)': a JSON array must end with ']'")
      }
      body = trimmed.dropFirst().dropLast()
      if body.allSatisfy(\.isWhitespace) { return [] }
    }
    let items = body.split(whereSeparator: { isJSON ? $0 == "," : $0.isWhitespace })
    var tokens: [UInt32] = []
    tokens.reserveCapacity(items.count)
    for (index, item) in items.enumerated() {
      let word = item.trimmingCharacters(whereSeparator: \.isWhitespace)
      guard let token = UInt32(word) else {
        throw StrataError(
          .invalidArgument, "token file '\(source)': item \(index + 1) '\(word)' is not a token id (0 to 4294967295)")
      }
      tokens.append(token)
    }
    return tokens
  }
}

extension StringProtocol {
  func trimmingCharacters(whereSeparator isSeparator: (Character) -> Bool) -> Substring {
    let text = Substring(self)
    guard let first = text.firstIndex(where: { !isSeparator($0) }) else { return text[text.endIndex...] }
    let last = text.lastIndex(where: { !isSeparator($0) })!
    return text[first...last]
  }
}

/// `strata hash --json`.
struct HashLine: Encodable {
  var layout: String
  var root: String
  var tokens: Int
  var keys: [String]
}
