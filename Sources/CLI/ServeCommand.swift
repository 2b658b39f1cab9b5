// `strata serve`: run a node. Until the data plane lands it resolves and validates the
// configuration (defaults ← file ← flags), opens the storage tiers (recovering the NVMe tier's
// blocks), reports them, writes RAM blocks back to disk, and exits.

import ArgumentParser
import Logging
import StrataCore
import StrataStorage

struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a node (embedded default: one node, RAM + NVMe tier under ./strata-data).",
    discussion: """
      This build opens the storage tiers (RAM arena, NVMe tier recovered from disk), reports them \
      and exits: the data plane is not built yet.
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

  @Flag(help: "Do not lock the RAM arena in memory (no CAP_IPC_LOCK needed; it may be swapped).")
  var ramUnlocked = false

  @Flag(help: "Print the resolved configuration and exit without opening storage.")
  var dryRun = false

  func run() async throws {
    do throws(StrataError) {
      let settings = try resolvedConfiguration()
      print("# resolved configuration")
      print(settings.yaml, terminator: "")
      if dryRun { return }
      LoggingSystem.bootstrap(StreamLogHandler.standardError)
      let logger = Logger(label: "strata.node")
      let (tiers, recovery) = try TierManager.open(settings, logger: logger)
      let stats = tiers.stats
      print(
        "storage ready: RAM \(ByteSize(bytes: UInt64(stats.ramCapacityBytes))) "
          + "(\(tiers.arena.isLocked ? "locked" : "not locked")), NVMe \(ByteSize(bytes: UInt64(stats.nvmeCapacityBytes))) "
          + "holding \(recovery?.blocksRecovered ?? 0) block(s)")
      print("the data plane is not built yet: nothing is served; closing")
      try await tiers.flush()
    } catch {
      throw report(error)
    }
  }

  private func resolvedConfiguration() throws(StrataError) -> NodeConfiguration {
    var settings =
      try config.map { path throws(StrataError) in
        try NodeConfiguration(yaml: try readText(path, what: "configuration file"))
      } ?? NodeConfiguration()
    if let dataDir { settings.dataDirectory = dataDir }
    if let listen { settings.listen = try flag("--listen") { () throws(StrataError) in try HostPort(parsing: listen) } }
    if let ram { settings.ram.capacity = try flag("--ram") { () throws(StrataError) in try ByteSize(parsing: ram) } }
    if let nvme {
      settings.nvme.defaultCapacity = try flag("--nvme") { () throws(StrataError) in try ByteSize(parsing: nvme) }
    }
    if ramUnlocked { settings.ram.lock = false }
    try settings.validate(on: thisMachine())
    return settings
  }

  private func flag<T>(_ name: String, _ parse: () throws(StrataError) -> T) throws(StrataError) -> T {
    do {
      return try parse()
    } catch {
      throw StrataError(.invalidArgument, "\(name): \(error.message)")
    }
  }
}
