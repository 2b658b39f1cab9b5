// Admin CLI commands against a node's admin API (docs/cli.md): status, evict, verify and config
// reload, each with a table for people or --json for scripts, and stable exit codes.

import ArgumentParser
import StrataAdmin
import StrataConfig
import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

struct AdminOptions: ParsableArguments {
  @Option(help: "The node's admin API, HOST:PORT.")
  var admin: String = "127.0.0.1:\(NodeConfiguration.defaultAdminPort)"

  @Option(help: "An admin token (default: the STRATA_ADMIN_TOKEN environment variable).")
  var token: String?

  @Option(help: "Timeout of each call, in milliseconds.")
  var timeoutMs: UInt64 = 30_000

  @Flag(help: "Print JSON instead of a table.")
  var json = false

  @OptionGroup var tls: TLSOptions

  func client() throws(StrataError) -> AdminClient {
    let address: HostPort
    do {
      address = try HostPort(parsing: admin)
    } catch {
      throw StrataError(.invalidArgument, "--admin: \(error.message)")
    }
    let fromEnvironment = getenv("STRATA_ADMIN_TOKEN").map { String(cString: $0) } ?? ""
    return AdminClient(
      address: address, token: token ?? fromEnvironment, timeoutMilliseconds: timeoutMs, tls: try tls.context())
  }
}

struct Status: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show a node at a glance: health, uptime, epoch, tiers, hit rates, transfers, top errors.",
    discussion: """
      Exit 0 when the node is healthy, 3 when it is unreachable, not ready or unhealthy. With --wait-ready, \
      first wait until it is ready (not listening yet, starting, or without a ring yet), showing \
      the NVMe recovery's progress on a terminal; exit 3 when it is not ready within --ready-timeout.
      """)

  @OptionGroup var options: AdminOptions

  @Flag(help: "Wait until the node is ready, showing its start's progress, then show its status.")
  var waitReady = false

  @Option(help: "With --wait-ready: how long to wait, such as 30m.")
  var readyTimeout: String = "30m"

  func run() throws {
    do throws(StrataError) {
      if waitReady {
        let limit = try DurationSetting(parsing: readyTimeout)
        try waitUntilReady(options, within: limit)
      }
      let status = try options.client().call("GET", "/v1/status")
      if options.json {
        print(status.pretty)
      } else {
        print(statusTable(status))
      }
      let health = status["health"]?.stringValue ?? "?"
      if health != "ok" {
        let state = health == "unhealthy" ? "unhealthy" : "not ready"
        throw StrataError(.unavailable, "node \(status["node_id"]?.stringValue ?? "?") is \(state)")
      }
    } catch {
      throw report(error)
    }
  }
}

/// Polls GET /ready until it answers 200; meanwhile a node that is not listening yet is waited
/// for, and one that is starting has its NVMe recovery drawn as a progress bar (on a terminal).
/// `unavailable` (exit 3) with the last answer when the node is not ready within `limit`.
func waitUntilReady(_ options: AdminOptions, within limit: DurationSetting) throws(StrataError) {
  let deadline = Deadline.after(milliseconds: limit.milliseconds)
  let bar = ProgressBar(
    "starting", total: 0, unit: .items("regions"), enabled: !options.json && isatty(STDOUT_FILENO) == 1)
  var last = "no answer yet"
  while true {
    do throws(StrataError) {
      var client = try options.client()
      client.timeoutMilliseconds = max(1, min(client.timeoutMilliseconds, deadline.remainingMilliseconds()))
      let reply = try client.send("GET", "/ready")
      if reply.status == 200 { break }
      let document = try? JSONValue.parse(reply.body)
      last = document?["reason"]?.stringValue ?? "/ready answered \(reply.status)"
      if let progress = document?["progress"], let total = progress["regions_total"]?.intValue, total > 0 {
        bar.update(done: progress["regions_read"]?.intValue ?? 0, total: total)
      }
    } catch  where error.code == .unavailable || error.code == .timeout || error.code == .ioError {
      last = error.message
    }
    guard !deadline.hasPassed() else {
      bar.finish()
      throw StrataError(.unavailable, "the node at \(options.admin) is not ready within \(limit): \(last)")
    }
    usleep(250_000)
  }
  bar.finish()
}

/// The human view of GET /v1/status.
func statusTable(_ status: JSONValue) -> String {
  func int(_ value: JSONValue?) -> Int { value?.intValue ?? 0 }
  func percent(_ value: JSONValue?) -> String { "\(rounded((value?.doubleValue ?? 0) * 100, 1))%" }
  var rows: [(String, String)] = [
    ("node", status["node_id"]?.stringValue ?? "?"),
    ("version", status["version"]?.stringValue ?? "?"),
    ("health", status["health"]?.stringValue ?? "?"),
    ("uptime", clock(status["uptime_seconds"]?.doubleValue ?? 0)),
    ("epoch", "\(int(status["epoch"]))"),
  ]
  for tier in ["ram", "nvme"] {
    let entry = status["tiers"]?[tier]
    let used = int(entry?["used"])
    let capacity = int(entry?["capacity"])
    let fill = capacity > 0 ? " (\(rounded(Double(used) * 100 / Double(capacity), 1))%)" : ""
    rows.append(
      (
        tier == "ram" ? "RAM" : "NVMe",
        "\(ByteSize(bytes: UInt64(max(0, used)))) of \(ByteSize(bytes: UInt64(max(0, capacity))))\(fill), "
          + "\(int(entry?["blocks"])) blocks"
      ))
  }
  let hits = status["hit_rate"]
  rows.append(
    ("hit rate", "RAM \(percent(hits?["ram"])), NVMe \(percent(hits?["nvme"])), miss \(percent(hits?["miss"]))"))
  for transport in ["tcp", "rdma", "shm"] {
    let entry = status["transfers"]?[transport]
    rows.append(
      (
        "transfers \(transport)",
        "get \(humanBytes(Double(int(entry?["get_bytes"])))), put \(humanBytes(Double(int(entry?["put_bytes"]))))"
      ))
  }
  let errors = status["top_errors"]?.arrayValue ?? []
  rows.append(
    (
      "top errors",
      errors.isEmpty
        ? "none"
        : errors.map { "\($0["code"]?.stringValue ?? "?") \(int($0["count"]))" }.joined(separator: ", ")
    ))
  if let verify = status["verify"]?.stringValue { rows.append(("verify", verify)) }
  if let cluster = status["cluster"] {
    let members = cluster["members"]?.arrayValue ?? []
    let health = Dictionary(grouping: members) { $0["health"]?.stringValue ?? "unknown" }
      .map { "\($0.value.count) \($0.key)" }.sorted()
    rows.append(
      (
        "cluster",
        "\(membershipText(cluster)), member \(cluster["self"]?.stringValue ?? "?"); "
          + "\(members.count) members (\(health.joined(separator: ", "))), replicas \(int(cluster["replication_factor"]))"
      ))
    rows += clusterCounterRows(cluster)
  }
  let known: Set<String> = [
    "node_id", "version", "health", "uptime_seconds", "epoch", "tiers", "hit_rate", "transfers", "top_errors",
    "verify", "connections", "leases_active", "not_ready", "warnings", "cluster",
  ]
  if let reasons = status["not_ready"]?.arrayValue {
    rows.append(("not ready", reasons.compactMap(\.stringValue).joined(separator: "; ")))
  }
  for warning in status["warnings"]?.arrayValue ?? [] { rows.append(("warning", warning.stringValue ?? "")) }
  for (name, value) in (status.objectValue ?? [:]).sorted(by: { $0.key < $1.key }) where !known.contains(name) {
    rows.append((name, value.encoded))
  }
  return rows.map { $0.0.padding(16) + $0.1 }.joined(separator: "\n")
}

struct Evict: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Evict the blocks matching every criterion given, from every tier.",
    discussion: "At least one of --namespace, --key-prefix, --older-than. Prints how many blocks and bytes left.")

  @OptionGroup var options: AdminOptions

  @Option(help: "Only blocks of this namespace.")
  var namespace: String?

  @Option(name: .customLong("key-prefix"), help: "Only blocks whose key starts with these hex digits (repeatable).")
  var keyPrefixes: [String] = []

  @Option(help: "Only blocks stored at least this long ago, like 90s, 30m or 24h.")
  var olderThan: String?

  func run() throws {
    do throws(StrataError) {
      var body: [String: JSONValue] = [:]
      if let namespace { body["namespace"] = .string(namespace) }
      if !keyPrefixes.isEmpty { body["key_prefixes"] = .array(keyPrefixes.map(JSONValue.string)) }
      if let olderThan {
        let duration = try DurationSetting(parsing: olderThan)
        body["older_than_seconds"] = .int(Int(duration.milliseconds / 1000))
      }
      guard !body.isEmpty else {
        throw StrataError(.invalidArgument, "give at least one of --namespace, --key-prefix, --older-than")
      }
      let result = try options.client().call("POST", "/v1/evict", body: .object(body))
      if options.json {
        print(result.encoded)
      } else {
        let blocks = result["evicted_blocks"]?.intValue ?? 0
        let bytes = result["evicted_bytes"]?.intValue ?? 0
        print(
          "evicted \(blocks) block(s), \(ByteSize(bytes: UInt64(max(0, bytes)))) "
            + "(RAM \(result["ram_blocks"]?.intValue ?? 0), NVMe \(result["nvme_blocks"]?.intValue ?? 0))")
      }
    } catch {
      throw report(error)
    }
  }
}

struct Verify: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Scrub the node: check every RAM copy and NVMe record against its checksums, drop the corrupt ones.",
    discussion: """
      Starts a verify in the background and returns, or with --wait follows it with a progress bar \
      (on a terminal) and prints the result. --status shows the current or last verify. --max-rate \
      paces it (a busy node); without it, it runs at full speed. Exit 4 when a finished verify \
      found corrupt blocks.
      """)

  @OptionGroup var options: AdminOptions

  @Flag(help: "Wait for the verify to finish, showing its progress.")
  var wait = false

  @Flag(help: "Do not start a verify; show the one running or the last one.")
  var status = false

  @Option(help: "The most bytes per second to check, such as 64MiB (at least 1MiB); full speed without it.")
  var maxRate: String?

  func run() throws {
    var corruptionFound = false
    do throws(StrataError) {
      let client = try options.client()
      if !status {
        do {
          _ = try client.call("POST", "/v1/verify", body: maxRate.map { .object(["max_rate": .string($0)]) })
        } catch  where error.code == .alreadyExists {
          if !wait { throw error }  // with --wait, follow the verify already running
        }
      }
      var progress = try client.call("GET", "/v1/verify")
      if wait {
        let bar = ProgressBar("verify", total: progress["total_blocks"]?.intValue ?? 0, unit: .items("blocks"))
        while progress["state"]?.stringValue == "running" {
          bar.update(
            done: progress["scanned_blocks"]?.intValue ?? 0, total: progress["total_blocks"]?.intValue,
            rate: nil)
          usleep(200_000)
          progress = try client.call("GET", "/v1/verify")
        }
        bar.finish()
      }
      if options.json {
        print(progress.encoded)
      } else {
        print(verifyText(progress))
      }
      corruptionFound = progress["state"]?.stringValue == "done" && (progress["corrupt_blocks"]?.intValue ?? 0) > 0
    } catch {
      throw report(error)
    }
    if corruptionFound { throw ExitCodes.corruptionFound }
  }
}

/// The human view of GET /v1/verify.
func verifyText(_ progress: JSONValue) -> String {
  func int(_ name: String) -> Int { progress[name]?.intValue ?? 0 }
  let state = progress["state"]?.stringValue ?? "?"
  var lines = [
    "verify \(state): \(int("scanned_blocks")) of \(int("total_blocks")) copies (\(int("ram_blocks")) in RAM), "
      + "\(humanBytes(Double(int("scanned_bytes")))) read at \(humanBytes(progress["rate_bytes_per_second"]?.doubleValue ?? 0))/s; "
      + "\(int("corrupt_blocks")) corrupt, \(int("dropped_blocks")) dropped"
  ]
  for entry in progress["corrupt"]?.arrayValue ?? [] {
    lines.append("  corrupt: \(entry["namespace"]?.stringValue ?? "?")/\(entry["key"]?.stringValue ?? "?")")
  }
  return lines.joined(separator: "\n")
}

struct Reload: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Make a running node re-read its configuration file and apply the settings that are safe to change.",
    discussion: "Exit 2 when the new file was rejected (nothing applied); settings that need a restart are listed.")

  @OptionGroup var options: AdminOptions

  func run() throws {
    do throws(StrataError) {
      let result = try options.client().call("POST", "/v1/config/reload")
      func list(_ name: String) -> [String] { result[name]?.arrayValue?.compactMap(\.stringValue) ?? [] }
      if options.json {
        print(result.encoded)
      } else {
        print("applied".padding(16) + (list("applied").isEmpty ? "nothing" : list("applied").joined(separator: ", ")))
        print(
          "needs restart".padding(16)
            + (list("needs_restart").isEmpty ? "nothing" : list("needs_restart").joined(separator: ", ")))
        for problem in list("rejected") { print("rejected".padding(16) + problem) }
      }
      if !list("rejected").isEmpty { throw StrataError(.invalidConfiguration, "the new configuration was rejected") }
    } catch {
      throw report(error)
    }
  }
}
