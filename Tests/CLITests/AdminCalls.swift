// Admin API calls the process tests share: a call with a JSON body, a bit flipped in a block's RAM
// copy, a metric read from the exposition.

import StrataAdmin
import StrataCore
import Testing

/// An admin API call; the status and the body as text.
func adminCall(_ admin: HostPort, _ method: String, _ path: String, _ body: JSONValue? = nil) throws -> AdminReply {
  try AdminClient(address: admin, timeoutMilliseconds: 10_000).send(method, path, body: body)
}

/// Flips one bit (of byte `byte`) of `key`'s RAM copy on the node whose admin API is `admin`; the
/// node runs with `--fault-injection`.
func flipBit(_ admin: HostPort, _ key: BlockKey, byte: Int) throws {
  let reply = try adminCall(
    admin, "POST", "/v1/debug/flip-bit",
    .object(["key": .string(key.hex), "namespace": .string("default"), "byte": .int(byte)]))
  try #require(reply.status == 200, "\(reply.text)")
}

/// Arms or clears the disk faults of a node run with `--fault-injection` (`{"writes":"fail"}`,
/// `{"reads":"corrupt"}`, `{}` to read the counts); the body of the answer.
func diskFault(_ admin: HostPort, _ faults: [String: String]) throws -> String {
  let reply = try adminCall(admin, "POST", "/v1/debug/disk-fault", .object(faults.mapValues { .string($0) }))
  try #require(reply.status == 200, "\(reply.text)")
  return reply.text
}

/// The exposition of the node whose admin API is `admin`, scraped now.
func scrape(_ admin: HostPort) throws -> String {
  let reply = try adminCall(admin, "GET", "/metrics")
  guard reply.status == 200 else { throw StrataError(.unavailable, "/metrics answered \(reply.status)") }
  return reply.text
}
