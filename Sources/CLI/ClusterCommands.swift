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
      let membership = report["membership"]
      func text(_ value: JSONValue?) -> String { value?.stringValue ?? "?" }
      // Static membership has no service to be connected to: its state (`not_used`) says nothing.
      var service = "\(text(membership?["mode"])) membership"
      if let state = membership?["state"]?.stringValue, state != "not_used" { service += ", \(state)" }
      if let reason = membership?["reason"]?.stringValue { service += " (\(reason))" }
      print(
        "epoch \(report["epoch"]?.intValue ?? 0), replicas \(report["replication_factor"]?.intValue ?? 0), \(service)")
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
