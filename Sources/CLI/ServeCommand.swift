// `strata serve`: run a node. Until the data plane lands it resolves and validates the
// configuration (defaults ← file ← flags), prints it, and exits.

import ArgumentParser
import StrataCore

struct Serve: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a node (embedded default: one node, RAM + NVMe tier under ./strata-data).",
    discussion: """
      This build resolves and validates the node's configuration, prints it and exits: the
      storage tiers and the data plane are not built yet.
      """)

  @Option(help: "A YAML configuration file (docs/configuration.md).")
  var config: String?

  @Option(help: "Data folder; the NVMe tier defaults to DIR/nvme.")
  var dataDir: String?

  @Option(help: "Address to listen on, HOST:PORT.")
  var listen: String?

  @Option(help: "RAM tier size, like 512MiB or 4GiB.")
  var ram: String?

  @Option(help: "NVMe tier size of the default path, like 8GiB.")
  var nvme: String?

  func run() throws {
    do throws(StrataError) {
      var settings =
        try config.map { path throws(StrataError) in
          try NodeConfiguration(yaml: try readText(path, what: "configuration file"))
        } ?? NodeConfiguration()
      if let dataDir { settings.dataDirectory = dataDir }
      if let listen {
        settings.listen = try flag("--listen") { () throws(StrataError) in try HostPort(parsing: listen) }
      }
      if let ram { settings.ram.capacity = try flag("--ram") { () throws(StrataError) in try ByteSize(parsing: ram) } }
      if let nvme {
        settings.nvme.defaultCapacity = try flag("--nvme") { () throws(StrataError) in try ByteSize(parsing: nvme) }
      }
      try settings.validate(on: thisMachine())
      print("# resolved configuration")
      print(settings.yaml, terminator: "")
      print("# the storage tiers and data plane are not built yet: nothing is served")
    } catch {
      throw report(error)
    }
  }

  private func flag<T>(_ name: String, _ parse: () throws(StrataError) -> T) throws(StrataError) -> T {
    do {
      return try parse()
    } catch {
      throw StrataError(.invalidArgument, "\(name): \(error.message)")
    }
  }
}
