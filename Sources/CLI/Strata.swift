// The `strata` executable: node daemon and admin CLI as subcommands.

import ArgumentParser
import StrataConfig
import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

@main
struct Strata: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "strata",
    abstract: "Distributed storage for LLM inference KV-cache blocks.",
    discussion: """
      Exit codes: 0 success; 1 the operation failed; 2 invalid input (configuration, tokens, \
      layout, arguments); 3 the node is unreachable, not ready or timed out; 4 corruption found \
      (verify); 64 bad command-line usage. Shell completion: \
      strata --generate-completion-script bash|zsh|fish (docs/cli.md).
      """,
    version: StrataVersion.current,
    subcommands: [
      Serve.self, Status.self, Put.self, Get.self, Lookup.self, Stat.self, Bench.self, ClusterCommand.self, Drain.self,
      Evict.self, Verify.self, Hash.self, TokenCommand.self, ConfigCommand.self, Debug.self, Version.self,
    ]
  )
}

struct Version: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Print the version of this build.")

  func run() {
    print("strata \(StrataVersion.current)")
  }
}

/// Exit codes that scripts can rely on (also listed in `strata --help` and docs/cli.md).
enum ExitCodes {
  static let failure = ExitCode(1)
  static let invalidInput = ExitCode(2)
  /// The node could not be reached, is not ready, or did not answer in time: retrying may help.
  static let unavailable = ExitCode(3)
  /// A verify found corrupt blocks (they were dropped).
  static let corruptionFound = ExitCode(4)
}

/// Prints `error` for a person on stderr and returns the exit code that matches its kind.
func report(_ error: StrataError, context: String? = nil) -> ExitCode {
  fflush(nil)  // what was printed before the error comes before it in a shared log
  let prefix = context.map { "strata: \($0):" } ?? "strata:"
  let lines = error.message.split(separator: "\n", omittingEmptySubsequences: false)
  if lines.count > 1 {
    printError(prefix)
    for line in lines { printError("  \(line)") }
  } else {
    printError("\(prefix) \(error.message)")
  }
  switch error.code {
  case .invalidArgument, .invalidConfiguration: return ExitCodes.invalidInput
  case .unavailable, .timeout, .quorumNotReached: return ExitCodes.unavailable
  default: return ExitCodes.failure
  }
}

func printError(_ text: String) {
  var line = text + "\n"
  line.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
}

/// Reads a whole file (or standard input for "-") as UTF-8.
func readText(_ path: String, what: String) throws(StrataError) -> String {
  let descriptor = path == "-" ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC)
  guard descriptor >= 0 else {
    throw StrataError(.invalidArgument, "cannot open \(what) '\(path)': \(String(cString: strerror(errno)))")
  }
  defer { if descriptor != STDIN_FILENO { close(descriptor) } }
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 65536)
  while true {
    let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
    if count < 0 {
      if errno == EINTR { continue }
      throw StrataError(.ioError, "cannot read \(what) '\(path)': \(String(cString: strerror(errno)))")
    }
    if count == 0 { break }
    bytes.append(contentsOf: chunk[0..<count])
  }
  guard let text = String(validating: bytes, as: UTF8.self) else {
    throw StrataError(.invalidArgument, "\(what) '\(path)' is not UTF-8 text")
  }
  return text
}

/// Physical memory of this machine, for validating the RAM tier's size.
func thisMachine() -> NodeConfiguration.Machine {
  let pages = UInt64(max(0, sysconf(Int32(_SC_PHYS_PAGES))))
  let pageSize = UInt64(max(0, sysconf(Int32(_SC_PAGESIZE))))
  return NodeConfiguration.Machine(physicalMemoryBytes: pages * pageSize)
}
