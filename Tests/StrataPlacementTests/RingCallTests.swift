// The RING request body: what a client sends, what the node reads back, and what it refuses.

import StrataCore
import StrataPlacement
import Testing

@Suite struct RingCallTests {
  @Test func everyCallReadsBackAsSent() throws {
    for operation in RingCall.Operation.allCases {
      let call = RingCall(operation, node: operation == .drain ? "node-a" : nil)
      #expect(try RingCall(decoding: call.body) == call)
    }
    #expect(String(decoding: RingCall.members.body, as: UTF8.self) == #"{"op":"members"}"#)
    #expect(String(decoding: RingCall.drain(node: "b").body, as: UTF8.self) == #"{"node":"b","op":"drain"}"#)
  }

  @Test func nodeNamesAreEscaped() throws {
    let awkward = #"a"b\c/d"#
    let body = RingCall.drain(node: awkward).body
    #expect(String(decoding: body, as: UTF8.self) == #"{"node":"a\"b\\c/d","op":"drain"}"#)
    #expect(try RingCall(decoding: body).node == awkward)
  }

  @Test func drainDrainStatusAndSyncNeedTheOperatorScope() {
    let needing = RingCall.Operation.allCases.filter(\.needsOperator)
    #expect(needing == [.drain, .drainStatus, .sync])
  }

  @Test func malformedAndUnknownBodiesAreRefusedByName() {
    for bad in ["", "[]", #"{"node":"a"}"#, #"{"op":7}"#, "{"] {
      #expect(throws: StrataError.self) { try RingCall(decoding: Array(bad.utf8)) }
      do {
        _ = try RingCall(decoding: Array(bad.utf8))
      } catch {
        #expect(error.code == .invalidArgument && error.message.contains("\"op\" string"), "\(bad): \(error)")
      }
    }
    do {
      _ = try RingCall(decoding: Array(#"{"op":"explode"}"#.utf8))
      Issue.record("an unknown operation was accepted")
    } catch {
      #expect(
        error.code == .invalidArgument
          && error.message == "unknown RING operation 'explode' (known: ring, members, drain, drain_status, sync)")
    }
  }
}
