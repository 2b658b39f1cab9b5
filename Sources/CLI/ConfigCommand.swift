// `strata config check`: validate a node configuration file without starting anything.

import ArgumentParser
import Foundation
import StrataConfig
import StrataCore

struct ConfigCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "config",
    abstract: "Work with node configuration files (format: docs/configuration.md).",
    subcommands: [Check.self, Defaults.self, Reload.self])

  struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Validate a configuration file; exit 2 naming each bad field.")

    @Argument(help: "A YAML configuration file, or - for standard input.")
    var file: String

    @Flag(help: "Print the resolved configuration (defaults filled in) when it is valid.")
    var print = false

    func run() throws {
      do throws(StrataError) {
        let config = try loadConfiguration(file)
        for advisory in config.advisories(showingDigests: true) {
          FileHandle.standardError.write(Data("warning: \(advisory)\n".utf8))
        }
        if print {
          Swift.print(config.yaml, terminator: "")
        } else {
          Swift.print("\(file): valid")
        }
      } catch {
        throw report(error, context: "configuration '\(file)' is invalid")
      }
    }
  }

  struct Defaults: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Print the embedded default configuration as YAML.")

    func run() {
      print(NodeConfiguration().yaml, terminator: "")
    }
  }
}

/// Reads, parses and validates a configuration file against this machine.
func loadConfiguration(_ path: String) throws(StrataError) -> NodeConfiguration {
  let config = try NodeConfiguration(yaml: try readText(path, what: "configuration file"))
  try config.validate(on: thisMachine())
  return config
}
