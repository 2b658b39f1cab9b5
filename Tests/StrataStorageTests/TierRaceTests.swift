// Removals, leases and re-PUTs racing demotions to NVMe: concurrent callers on a small RAM tier
// that is always demoting. Each worker owns its keys, so what it wrote and did not remove must
// always be found (in RAM or on NVMe) and byte-exact; a slot freed twice would trap.

import StrataCore
import StrataStorage
import Testing

@Suite struct TierRaceTests {
  @Test func removalsLeasesAndRePutsRacingDemotionsLoseNothingAndFreeNothingTwice() async throws {
    // NVMe large enough that its log never reclaims a region (which may drop cold blocks).
    let fixture = try TierFixture(ramBytes: 1 << 20, nvmeBytes: 256 << 20, admission: .always)
    let tiers = fixture.tiers
    let blockBytes = 64 << 10
    let failures = await withTaskGroup(of: [String].self) { group in
      for worker in 0..<6 {
        group.addTask {
          var failures: [String] = []
          var random = UInt64(worker + 1) &* 0x9E37_79B9_7F4A_7C15
          func next(_ below: Int) -> Int {
            random ^= random << 13
            random ^= random >> 7
            random ^= random << 17
            return Int(random % UInt64(below))
          }
          var present = Set<Int>()
          for _ in 0..<300 {
            let n = worker * 1000 + next(12)
            let id = testBlockID(n)
            do {
              switch next(3) {
              case 0:
                let outcome = try await tiers.put(id, bytes: testPayload(n, bytes: blockBytes))
                if outcome == .stored || outcome == .alreadyPresent { present.insert(n) }
              case 1:
                let lease = try await tiers.lease([id])
                defer { tiers.release(lease) }
                if let block = lease.blocks[0] {
                  if Array(block.bytes) != testPayload(n, bytes: blockBytes) {
                    failures.append("block \(n): wrong bytes")
                  }
                } else if present.contains(n) && tiers.lookup([id]) == [.absent] {
                  // (A miss of a block still on NVMe is a promotion refused while RAM was full of
                  // pins: a refusal, not a loss; the final reads check nothing was lost.)
                  failures.append("block \(n): stored, never removed, in neither tier")
                }
              default:
                tiers.remove(id)
                present.remove(n)
              }
            } catch let error as StrataError where error.code == .resourceExhausted {
              // RAM full of pinned blocks for a moment: a refusal, not a loss.
            } catch {
              failures.append("block \(n): \(error)")
            }
          }
          // Removed blocks stay removed; present ones read back.
          for n in (worker * 1000)..<(worker * 1000 + 12) {
            let bytes = try? await tiers.read(testBlockID(n))
            if present.contains(n) {
              if bytes != testPayload(n, bytes: blockBytes) { failures.append("block \(n): lost") }
            } else if bytes != nil {
              failures.append("block \(n): removed, came back")
            }
          }
          return failures
        }
      }
      return await group.reduce(into: [String]()) { $0 += $1 }
    }
    #expect(failures == [])
    #expect(tiers.stats.demotedBlocks > 20, "the RAM tier should have been demoting throughout")
    #expect(tiers.stats.leasesActive == 0 && tiers.stats.transferPins == 0)
  }
}
