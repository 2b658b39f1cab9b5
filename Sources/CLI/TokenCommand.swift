// `strata token`: make tenant tokens and the SHA-256 digests a node's configuration stores
// (auth.tokens[].token: "sha256:<hex>"), so no secret need sit in a configuration file.

import ArgumentParser
import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

struct TokenCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "token",
    abstract: "Make tenant tokens and their digests for auth.tokens (docs/security.md).",
    subcommands: [HashSecret.self, Generate.self])

  struct HashSecret: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "hash",
      abstract: "Print the sha256:<hex> digest of a token for auth.tokens[].token.",
      discussion:
        "With no argument (or -) the secret is read from standard input, one line, so it stays out of shell history.")

    @Argument(help: "The token's secret, or - to read it from standard input.")
    var secret: String?

    func run() throws {
      var text = secret ?? "-"
      if text == "-" {
        guard let line = readLine(strippingNewline: true) else {
          throw report(StrataError(.invalidArgument, "no secret on standard input"))
        }
        text = line
      }
      guard text.utf8.count >= 16 else {
        throw report(
          StrataError(.invalidArgument, "a token needs at least 16 characters (a guessable token is no credential)"))
      }
      print(TokenDigest(secret: text).description)
    }
  }

  struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Make a new random token (32 bytes, hex) and print it with its digest.",
      discussion: "Give the token to the tenant and put only the digest in the node's configuration.")

    func run() {
      var generator = SystemRandomNumberGenerator()
      let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
      let secret = Hex.encode(bytes)
      print("token:  \(secret)")
      print("digest: \(TokenDigest(secret: secret))")
    }
  }
}
