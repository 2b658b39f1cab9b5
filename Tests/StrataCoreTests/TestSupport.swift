// Helpers shared by the Core tests: the package root, fixtures, a seeded generator, subprocesses.

import Foundation
import StrataTestKit

enum TestPaths {
  /// The package root, found from this file's location (Tests/StrataCoreTests/...).
  static let packageRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  static func fixture(_ name: String) -> URL {
    packageRoot.appendingPathComponent("Tests/Fixtures").appendingPathComponent(name)
  }
}

func python3() -> String {
  for candidate in ["/usr/bin/python3", "/usr/local/bin/python3"]
  where FileManager.default.isExecutableFile(atPath: candidate) {
    return candidate
  }
  return "/usr/bin/env"
}

func pythonArguments(_ arguments: [String]) -> [String] {
  python3() == "/usr/bin/env" ? ["python3"] + arguments : arguments
}
