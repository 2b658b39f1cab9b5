// The ring's JSON: round trip, stable bytes and field names, and clear errors on bad input.

import StrataCore
import StrataPlacement
import StrataTestKit
import Testing

@Suite struct RingJSONTests {
  @Test func roundTripKeepsTheRingAndItsPlacement() throws {
    var members = makeMembers(5, zones: ["a", "b"], capacityBytes: 1 << 40)
    members[1].adminAddress = "127.0.0.1:9401"
    members[2].transports = ["tcp", "rdma"]
    members[3].state = .draining
    members[4].capacityBytes = 3 << 40
    let ring = Ring(members: members, epoch: 42, replicationFactor: 3, virtualNodes: 300)
    let bytes = ring.jsonBytes()
    let decoded = try Ring(jsonBytes: bytes)
    #expect(decoded == ring)
    #expect(decoded.jsonBytes() == bytes)
    var generator = SplitMix64(seed: 0x5EED_0201)
    for _ in 0..<1000 {
      let key = randomKey(&generator)
      #expect(decoded.owners(of: key) == ring.owners(of: key))
    }
    let text = String(decoding: bytes, as: UTF8.self)
    for field in [
      "\"epoch\":42", "\"replication_factor\":3", "\"virtual_nodes\":300", "\"admin_address\":\"127.0.0.1:9401\"",
      "\"admin_address\":null", "\"capacity_bytes\":3298534883328", "\"state\":\"draining\"",
      "\"transports\":[\"tcp\",\"rdma\"]",
      "\"zone\":\"b\"",
    ] {
      #expect(text.contains(field), "missing \(field) in \(text)")
    }
  }

  @Test func optionalFieldsTakeDefaults() throws {
    let text = #"{"epoch":1,"replication_factor":2,"members":[{"id":"x","address":"127.0.0.1:7400"}]}"#
    let ring = try Ring(jsonBytes: Array(text.utf8))
    #expect(ring.virtualNodes == Ring.defaultVirtualNodes)
    #expect(ring.members == [Member(id: "x", address: "127.0.0.1:7400")])
    #expect(ring.members[0].transports == ["tcp"] && ring.members[0].state == .active)
  }

  @Test func badInputIsAProtocolErrorThatSaysWhy() {
    let cases: [(String, String)] = [
      ("not json", "malformed"),
      (#"{"epoch":1,"members":[]}"#, "replication_factor"),
      (#"{"epoch":"one","replication_factor":1,"members":[]}"#, "epoch"),
      (#"{"epoch":1,"replication_factor":1,"members":[{"id":"a"}]}"#, "members.[0].address"),
      (#"{"epoch":1,"replication_factor":0,"members":[]}"#, "replication factor 0"),
      (#"{"epoch":1,"replication_factor":1,"virtual_nodes":0,"members":[]}"#, "virtual nodes 0"),
      (
        #"{"epoch":1,"replication_factor":1,"members":[{"id":"a","address":"h:1"},{"id":"a","address":"h:2"}]}"#,
        "appears twice"
      ),
      (#"{"epoch":1,"replication_factor":1,"members":[{"id":"a","address":"h:1","state":"gone"}]}"#, "state"),
      (#"{"epoch":1,"replication_factor":1,"virtual_nodes":40000000,"members":[]}"#, "virtual nodes"),
    ]
    for (text, expected) in cases {
      do {
        _ = try Ring(jsonBytes: Array(text.utf8))
        Issue.record("accepted \(text)")
      } catch {
        #expect(error.code == .protocolError)
        #expect(error.message.contains(expected), "\(text): \(error.message)")
      }
    }
  }

  @Test func ringRequestsCarryAnyNodeID() throws {
    let node = "n\"1\\x\u{1}"
    let drain = RingRequest(op: "drain", node: node)
    #expect(String(decoding: drain.bytes, as: UTF8.self) == #"{"node":"n\"1\\x\u0001","op":"drain"}"#)
    #expect(try RingRequest(decoding: drain.bytes) == drain)
    #expect(try RingRequest(decoding: RingRequest(op: "ring").bytes) == RingRequest(op: "ring"))
    let error = #expect(throws: StrataError.self) { try RingRequest(decoding: Array(#"{"node":"a"}"#.utf8)) }
    #expect(error?.code == .invalidArgument && error?.message.contains("op") == true)
  }
}
