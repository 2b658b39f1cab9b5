// Cluster commands: `strata cluster members`, `strata cluster ring` (ownership per node, epoch,
// health) and `strata drain NODE-ID` (hand a node's blocks to their new owners, with progress,
// then the node leaves the ring and exits). All speak RING requests to the seed nodes.

import ArgumentParser
import Foundation
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
func jsonObject(_ bytes: [UInt8]) throws(StrataError) -> [String: Any] {
  guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
    throw StrataError(.protocolError, "the node's answer is not a JSON object")
  }
  return object
}

func printJSON(_ object: Any) {
  if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted]) {
    print(String(decoding: data, as: UTF8.self))
  }
}

func percent(_ value: Any?) -> String {
  String(format: "%.1f%%", ((value as? Double) ?? 0) * 100)
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
      let membership = report["membership"] as? [String: Any] ?? [:]
      var service = "\(membership["mode"] ?? "?") membership, \(membership["state"] ?? "?")"
      if let reason = membership["reason"] { service += " (\(reason))" }
      print("epoch \(report["epoch"] ?? 0), replicas \(report["replication_factor"] ?? 0), \(service)")
      let members = report["members"] as? [[String: Any]] ?? []
      print(
        table(
          ["ID", "ADDRESS", "ZONE", "STATE", "HEALTH", "PRIMARY", "OWNER"],
          members.map { member in
            [
              "\(member["id"] ?? "")\((member["self"] as? Bool) == true ? " *" : "")", "\(member["address"] ?? "")",
              "\(member["zone"] as? String ?? "")", "\(member["state"] ?? "")", "\(member["health"] ?? "")",
              percent(member["primary_share"]), percent(member["owner_share"]),
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
        printJSON([
          "epoch": ring.epoch, "replication_factor": ring.replicationFactor,
          "members": ring.members.map { member -> [String: Any] in
            [
              "id": member.id, "address": member.address, "zone": member.zone, "state": member.state.rawValue,
              "capacity_bytes": member.capacityBytes, "primary_share": primary[member.id] ?? 0,
              "owner_share": owner[member.id] ?? 0,
            ]
          },
        ])
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
      0 drained, 1 the drain failed (some blocks found no owner; the node stays up), 3 unreachable.
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
      let members = report["members"] as? [[String: Any]] ?? []
      guard
        let member = members.first(where: { ($0["id"] as? String) == node || ($0["address"] as? String) == node }),
        let addressText = member["address"] as? String
      else {
        throw StrataError(
          .notFound,
          "no member '\(node)' in the ring (members: \(members.compactMap { $0["id"] as? String }.joined(separator: ", ")))"
        )
      }
      let address = try HostPort(parsing: addressText)
      let memberID = member["id"] as? String ?? node
      _ = try await client.ringCall(RingCall.drain(node: memberID), node: address)
      if noWait {
        print("drain of \(memberID) started")
        return
      }
      let progress = ProgressBar("drain \(memberID)", total: 0, unit: .items("blocks"))
      var last: [String: Any] = [:]
      while true {
        do {
          last = try jsonObject(try await client.ringCall(RingCall.drainStatus, node: address))
        } catch {
          // The node exits once it has reported "done"; a closed connection after that is the normal end.
          if (last["state"] as? String) == "done" { break }
          throw error
        }
        let state = last["state"] as? String ?? "?"
        progress.update(done: last["processed_blocks"] as? Int ?? 0, total: last["total_blocks"] as? Int ?? 0)
        if state == "done" || state == "failed" { break }
        try? await Task.sleep(for: .milliseconds(500))
      }
      progress.finish()
      if options.json {
        printJSON(last)
      } else {
        print(
          "drain of \(memberID): \(last["state"] ?? "?") — \(last["handed_blocks"] ?? 0) block(s) handed off, "
            + "\(last["present_blocks"] ?? 0) already with their owners, \(last["failed_blocks"] ?? 0) failed. "
            + "\(last["message"] ?? "")")
      }
      if (last["state"] as? String) != "done" {
        throw StrataError(.internalError, "the drain did not finish: \(last["message"] ?? "")")
      }
    } catch {
      throw report(error)
    }
  }
}
