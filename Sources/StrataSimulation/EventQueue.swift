// The simulator's scheduler: events ordered by (time, sequence number), so two events at the same
// millisecond always run in the order they were scheduled. One thread runs them, one at a time.

import StrataCore
import StrataTestKit

/// A min-heap of timed events; ties are broken by insertion order, never by memory layout.
struct EventQueue<Event> {
  private var heap: [(time: UInt64, sequence: UInt64, event: Event)] = []
  private var nextSequence: UInt64 = 0

  var isEmpty: Bool { heap.isEmpty }
  var count: Int { heap.count }

  mutating func schedule(_ event: Event, at time: UInt64) {
    heap.append((time, nextSequence, event))
    nextSequence += 1
    var child = heap.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      guard Self.less(heap[child], heap[parent]) else { break }
      heap.swapAt(child, parent)
      child = parent
    }
  }

  /// The earliest event and its time.
  mutating func next() -> (time: UInt64, event: Event)? {
    guard let first = heap.first else { return nil }
    let last = heap.removeLast()
    if !heap.isEmpty {
      heap[0] = last
      var parent = 0
      while true {
        let left = 2 * parent + 1
        let right = left + 1
        var smallest = parent
        if left < heap.count && Self.less(heap[left], heap[smallest]) { smallest = left }
        if right < heap.count && Self.less(heap[right], heap[smallest]) { smallest = right }
        guard smallest != parent else { break }
        heap.swapAt(parent, smallest)
        parent = smallest
      }
    }
    return (first.time, first.event)
  }

  private static func less(
    _ a: (time: UInt64, sequence: UInt64, event: Event), _ b: (time: UInt64, sequence: UInt64, event: Event)
  ) -> Bool {
    a.time != b.time ? a.time < b.time : a.sequence < b.sequence
  }
}

/// The seeded source of every choice the simulator makes (SplitMix64 underneath).
struct SimulationRandom {
  private var generator: SplitMix64

  init(seed: UInt64) { generator = SplitMix64(seed: seed) }

  mutating func next() -> UInt64 { generator.next() }

  /// A number in `range`.
  mutating func int(_ range: ClosedRange<Int>) -> Int {
    range.lowerBound + Int(next() % UInt64(range.upperBound - range.lowerBound + 1))
  }

  mutating func milliseconds(_ range: ClosedRange<UInt64>) -> UInt64 {
    range.lowerBound + next() % (range.upperBound - range.lowerBound + 1)
  }

  /// True with probability `percent`/100.
  mutating func chance(_ percent: Int) -> Bool { next() % 100 < UInt64(percent) }

  mutating func pick<T>(_ items: [T]) -> T? { items.isEmpty ? nil : items[int(0...(items.count - 1))] }
}

/// FNV-1a 64 over the trace lines: equal traces, equal hashes (and unequal ones almost surely not).
struct TraceHash {
  private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

  mutating func add(_ line: String) {
    for byte in line.utf8 {
      value ^= UInt64(byte)
      value = value &* 0x0000_0100_0000_01B3
    }
    value ^= 0x0A
    value = value &* 0x0000_0100_0000_01B3
  }
}

/// A fixed order of keys (by their first 8 bytes, then all of them), for walking sets and
/// inventories the same way in every run.
func keyOrder(_ a: BlockKey, _ b: BlockKey) -> Bool {
  a.prefix64 != b.prefix64 ? a.prefix64 < b.prefix64 : a.hex < b.hex
}
