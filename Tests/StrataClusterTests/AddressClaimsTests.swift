// Member records that claim one address: the one written last keeps it, the others take no share
// of the ring (a block's owners are never one node twice).

import StrataPlacement
import Testing

@testable import StrataCluster

@Suite struct AddressClaimsTests {
  private func member(_ id: String, _ address: String) -> Member { Member(id: id, address: address) }

  @Test func theRecordWrittenLastKeepsItsAddress() {
    let members = [
      member("a", "10.0.0.1:7000"), member("b", "10.0.0.2:7000"), member("b2", "10.0.0.2:7000"),
      member("c", "10.0.0.3:7000"),
    ]
    // b2 registered after b's process died (its record written later): b is left behind.
    let later = AddressClaims.resolve(members, written: ["a": 5, "b": 6, "b2": 9, "c": 7])
    #expect(later.kept.map(\.id) == ["a", "b2", "c"])
    #expect(later.superseded == ["b": "b2"])
    // The other way round (b written last, say a draining update of a live b): b keeps it.
    let earlier = AddressClaims.resolve(members, written: ["a": 5, "b": 10, "b2": 9, "c": 7])
    #expect(earlier.kept.map(\.id) == ["a", "b", "c"] && earlier.superseded == ["b2": "b"])
  }

  @Test func equalRevisionsGoToTheGreaterIDAndDistinctAddressesAreAllKept() {
    let three = [member("x", "h:1"), member("z", "h:1"), member("y", "h:1")]
    let tied = AddressClaims.resolve(three, written: [:])
    #expect(tied.kept.map(\.id) == ["z"] && tied.superseded == ["x": "z", "y": "z"])
    let apart = [member("a", "h:1"), member("b", "h:2"), member("c", "h:3")]
    let kept = AddressClaims.resolve(apart, written: ["a": 1])
    #expect(kept.kept == apart && kept.superseded.isEmpty)
  }
}
