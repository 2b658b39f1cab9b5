// Cluster commands: `strata cluster members`, `strata cluster ring` (ownership per node, epoch,
// health) and `strata drain NODE-ID` (hand a node's blocks to their new owners, with progress,
// then the node leaves the ring and exits). All speak RING requests to the seed nodes.

import ArgumentParser
import Foundation
import StrataAdmin
import StrataClient
import StrataConfig
import StrataCore
import StrataPlacement

struct ClusterCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cluster", abstract: "Show a cluster's members and ring.",
    subcommands: [ClusterMembers.self, ClusterRing.self])
}

struct ClusterOptions: ParsableArguments {
  @Option(help: "Nodes of the cluster, HOST:PORT,HOST:PORT… (any member answers).")
  var seeds: String = "127.0.0.1:\(NodeConfiguration.defaultPort)"

  @Option(help: "Credentials (an admin token for drain).")
  var token: String = ""

  @OptionGroup var tls: TLSOptions

  @Option(help: "Timeout of each request, in milliseconds.")
  var timeoutMs: UInt64 = 10_000

  @Flag(help: "Print JSON instead of text.")
  var json = false

  func client() throws(StrataError) -> StrataClient {
    var configuration = StrataClient.Configuration(seeds: try parseSeeds(seeds))
    configuration.token = token
    configuration.timeoutMilliseconds = timeoutMs
    configuration.connections = 1
    configuration.retries = 0
    configuration.clientName = "strata-cli"
    configuration.tls = try tls.context()
    return StrataClient(configuration)
  }
}

/// A RING answer decoded as a JSON object.
func jsonObject(_ bytes: [UInt8]) throws(StrataError) -> JSONValue {
  guard let object = try? JSONValue.parse(bytes), object.objectValue != nil else {
    throw StrataError(.protocolError, "the node's answer is not a JSON object")
  }
  return object
}

/// Prints `value` as indented JSON (JSONCoding).
func printJSON(_ value: some Encodable) {
  if let bytes = try? JSONCoding.encodePretty(value) { print(String(decoding: bytes, as: UTF8.self)) }
}

/// Prints `value` as one line of JSON (JSONCoding).
func printJSONLine(_ value: some Encodable) {
  if let text = try? JSONCoding.text(value) { print(text) }
}

func percent(_ value: Double?) -> String {
  String(format: "%.1f%%", (value ?? 0) * 100)
}

/// One member in `strata cluster ring --json`.
struct RingMemberRow: Encodable {
  var id: String
  var address: String
  var zone: String
  var state: String
  var capacityBytes: UInt64
  var primaryShare: Double
  var ownerShare: Double

  enum CodingKeys: String, CodingKey {
    case id, address, zone, state
    case capacityBytes = "capacity_bytes"
    case primaryShare = "primary_share"
    case ownerShare = "owner_share"
  }
}

/// `strata cluster ring --json`.
struct RingRows: Encodable {
  var epoch: UInt64
  var replicationFactor: Int
  var members: [RingMemberRow]

  enum CodingKeys: String, CodingKey {
    case epoch
    case replicationFactor = "replication_factor"
    case members
  }
}

/// Rows as aligned columns under a header.
func table(_ header: [String], _ rows: [[String]]) -> String {
  var widths = header.map(\.count)
  for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
  func line(_ cells: [String]) -> String {
    cells.enumerated().map { index, cell in cell.padding(toLength: widths[index], withPad: " ", startingAt: 0) }
      .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
  }
  return ([line(header)] + rows.map(line)).joined(separator: "\n")
}

/// The membership service of a RING members report in words: "etcd membership, connected",
/// "static membership" (static membership has no service to be connected to).
func membershipText(_ report: JSONValue) -> String {
  let membership = report["membership"]
  var text = "\(membership?["mode"]?.stringValue ?? "?") membership"
  if let state = membership?["state"]?.stringValue, state != "not_used" { text += ", \(state)" }
  if let reason = membership?["reason"]?.stringValue { text += " (\(reason))" }
  return text
}

/// The node-wide counters of a RING members report (also /v1/status's `cluster` section) as
/// labelled rows for people: replication, write quorum, repair, drain, read-through. Empty for a
/// tenant without `operator`, whose report leaves them out.
func clusterCounterRows(_ report: JSONValue) -> [(String, String)] {
  func int(_ value: JSONValue?) -> Int { value?.intValue ?? 0 }
  func bytes(_ value: JSONValue?) -> String { humanBytes(Double(int(value))) }
  func nonZero(_ object: JSONValue?) -> String {
    let counts = (object?.objectValue ?? [:]).filter { int($0.value) > 0 }.sorted { $0.key < $1.key }
    return counts.isEmpty ? "none" : counts.map { "\(int($0.value)) \($0.key)" }.joined(separator: ", ")
  }
  var rows: [(String, String)] = []
  if let replication = report["replication"] {
    rows.append(
      (
        "replication",
        "\(int(replication["queued"])) queued (at most \(int(replication["queue_max"]))), "
          + "\(int(replication["sent_blocks"])) blocks sent (\(bytes(replication["sent_bytes"]))), "
          + "\(int(replication["already_present"])) already present, dropped: \(nonZero(replication["dropped"]))"
      ))
  }
  if let quorum = report["write_quorum"] {
    rows.append(
      (
        "write quorum",
        "\(quorum["configured"]?.stringValue ?? "?"): \(int(quorum["sync_writes"])) PUTs copied "
          + "\(int(quorum["copied_blocks"])) blocks before answering, \(int(quorum["missed_blocks"])) blocks missed it; "
          + "under-replicated now \(int(quorum["under_replicated_blocks"])) blocks"
      ))
  }
  for (name, progress) in [("repair", report["repair"]), ("drain", report["drain"])] {
    guard let progress, let state = progress["state"]?.stringValue else { continue }
    var text = state
    if state == "running" {
      let total = int(progress["total_blocks"])
      let done = int(progress["processed_blocks"])
      text +=
        ": \(done) of \(total) blocks (\(total > 0 ? done * 100 / total : 0)%), "
        + "\(bytes(progress["rate_bytes_per_second"]))/s"
    }
    if state != "idle" {
      text += "; \(int(progress["handed_blocks"])) handed, \(int(progress["present_blocks"])) already with their owners"
      let failed = int(progress["failed_blocks"])
      if failed > 0 { text += ", \(failed) not placed" }
      if let message = progress["message"]?.stringValue, !message.isEmpty { text += " (\(message))" }
      if let finished = progress["finished_at"]?.stringValue, state != "running" { text += ", at \(finished)" }
    }
    rows.append((name, text))
  }
  if let fill = report["read_through"] {
    rows.append(
      (
        "read-through",
        "\(int(fill["attempts"])) misses fetched from peers: \(int(fill["filled_blocks"])) blocks "
          + "(\(bytes(fill["filled_bytes"]))), \(int(fill["skipped_busy"])) skipped busy, \(int(fill["failures"])) failed"
      ))
  }
  return rows
}

struct ClusterMembers: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "members", abstract: "List members: address, zone, state, health, ownership; membership service.")

  @OptionGroup var options: ClusterOptions

  func run() async throws {
    do throws(StrataError) {
      let client = try options.client()
      defer { client.close() }
      let report = try jsonObject(try await client.ringCall(RingCall.members))
      if options.json {
        printJSON(report)
        return
      }
      print(
        "epoch \(report["epoch"]?.intValue ?? 0), replicas \(report["replication_factor"]?.intValue ?? 0), "
          + membershipText(report))
      let members = report["members"]?.arrayValue ?? []
      print(
        table(
          ["ID", "ADDRESS", "ZONE", "STATE", "HEALTH", "PRIMARY", "OWNER"],
          members.map { member in
            [
              "\(member["id"]?.stringValue ?? "")\(member["self"]?.boolValue == true ? " *" : "")",
              member["address"]?.stringValue ?? "", member["zone"]?.stringValue ?? "",
              member["state"]?.stringValue ?? "", member["health"]?.stringValue ?? "",
              percent(member["primary_share"]?.doubleValue), percent(member["owner_share"]?.doubleValue),
            ]
          }))
      let counters = clusterCounterRows(report)
      if !counters.isEmpty { print("\n" + counters.map { $0.0.padding(16) + $0.1 }.joined(separator: "\n")) }
    } catch {
      throw report(error)
    }
  }
}

struct ClusterRing: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ring", abstract: "Show the ring: epoch, replication factor, ownership share per node.")

  @OptionGroup var options: ClusterOptions

  func run() async throws {
    do throws(StrataError) {
      let client = try options.client()
      defer { client.close() }
      let ring = try await client.refreshRing()
      let primary = ring.primaryShares()
      let owner = ring.ownerShares()
      if options.json {
        printJSON(
          RingRows(
            epoch: ring.epoch, replicationFactor: ring.replicationFactor,
            members: ring.members.map { member in
              RingMemberRow(
                id: member.id, address: member.address, zone: member.zone, state: member.state.rawValue,
                capacityBytes: member.capacityBytes, primaryShare: primary[member.id] ?? 0,
                ownerShare: owner[member.id] ?? 0)
            }))
        return
      }
      print("epoch \(ring.epoch), replicas \(ring.replicationFactor), \(ring.activeMembers.count) active member(s)")
      print(
        table(
          ["ID", "ADDRESS", "ZONE", "STATE", "CAPACITY", "PRIMARY", "OWNER"],
          ring.members.map { member in
            [
              member.id, member.address, member.zone, member.state.rawValue,
              member.capacityBytes == 0 ? "-" : ByteSize(bytes: member.capacityBytes).description,
              percent(primary[member.id]), percent(owner[member.id]),
            ]
          }))
    } catch {
      throw report(error)
    }
  }
}

struct Drain: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Hand a node's blocks to their new owners (hottest first), then remove it from the ring.",
    discussion: """
      The node stops owning keys, copies every block it holds to the block's owners in the ring \
      without it, deregisters and exits 0. Progress is shown until the node is done. Exit codes: \
      0 drained, 1 the drain failed (after its retries some blocks were not on all their owners; the node stays up, draining), 3 unreachable.
      """)

  @OptionGroup var options: ClusterOptions

  @Argument(help: "The node to drain: its node id (or, in static mode, its address).")
  var node: String

  @Flag(help: "Start the drain and return without waiting for it.")
  var noWait = false

  func run() async throws {
    do throws(StrataError) {
      let client = try options.client()
      defer { client.close() }
      let report = try jsonObject(try await client.ringCall(RingCall.members))
      let members = report["members"]?.arrayValue ?? []
      guard
        let member = members.first(where: { $0["id"]?.stringValue == node || $0["address"]?.stringValue == node }),
        let addressText = member["address"]?.stringValue
      else {
        throw StrataError(
          .notFound,
          "no member '\(node)' in the ring (members: \(members.compactMap { $0["id"]?.stringValue }.joined(separator: ", ")))"
        )
      }
      let address = try HostPort(parsing: addressText)
      let memberID = member["id"]?.stringValue ?? node
      _ = try await client.ringCall(RingCall.drain(node: memberID), node: address)
      if noWait {
        print("drain of \(memberID) started")
        return
      }
      let progress = ProgressBar("drain \(memberID)", total: 0, unit: .items("blocks"))
      var last = JSONValue.object([:])
      while true {
        do {
          last = try jsonObject(try await client.ringCall(RingCall.drainStatus, node: address))
        } catch {
          // The node exits once it has reported "done"; a closed connection after that is the normal end.
          if last["state"]?.stringValue == "done" { break }
          throw error
        }
        let state = last["state"]?.stringValue ?? "?"
        progress.update(done: last["processed_blocks"]?.intValue ?? 0, total: last["total_blocks"]?.intValue ?? 0)
        if state == "done" || state == "failed" { break }
        try? await Task.sleep(for: .milliseconds(500))
      }
      progress.finish()
      if options.json {
        printJSON(last)
      } else {
        func count(_ key: String) -> Int { last[key]?.intValue ?? 0 }
        print(
          "drain of \(memberID): \(last["state"]?.stringValue ?? "?") — \(count("handed_blocks")) block(s) handed off, "
            + "\(count("present_blocks")) already with their owners, \(count("failed_blocks")) not on all their owners. "
            + "\(last["message"]?.stringValue ?? "")")
      }
      if last["state"]?.stringValue != "done" {
        throw StrataError(.internalError, "the drain did not finish: \(last["message"]?.stringValue ?? "")")
      }
    } catch {
      throw report(error)
    }
  }
}
