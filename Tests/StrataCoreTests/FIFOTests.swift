// FIFO against an array model under random operations, and the release of removed elements.

import StrataCore
import Testing

@Suite struct FIFOTests {
  /// Random appends and removals (one, several, all) agree with an array at every step, across the
  /// front's reclaims and the emptied queue's reset.
  @Test func agreesWithAnArrayUnderRandomOperations() {
    var generator = SystemRandomNumberGenerator()
    var queue = FIFO<Int>()
    var model: [Int] = []
    var next = 0
    for _ in 0..<20_000 {
      switch Int.random(in: 0..<10, using: &generator) {
      case 0..<5:
        queue.append(next)
        model.append(next)
        next += 1
      case 5..<8:
        #expect(queue.removeFirst() == (model.isEmpty ? nil : model.removeFirst()))
      case 8:
        let count = Int.random(in: 0..<70, using: &generator)
        let taken = Array(model.prefix(count))
        model.removeFirst(taken.count)
        #expect(queue.removeFirst(upTo: count) == taken)
      default:
        if Int.random(in: 0..<50, using: &generator) == 0 {
          queue.removeAll()
          model.removeAll()
        }
      }
      #expect(queue.count == model.count && queue.first == model.first && queue.isEmpty == model.isEmpty)
    }
    #expect(Array(queue) == model)
    #expect(Array(FIFO(model)) == model)
  }

  /// A removed element is released at once, not when its slot is reclaimed later.
  @Test func aRemovedElementIsReleasedAtOnce() {
    final class Payload {}
    var queue = FIFO<Payload>()
    weak var removed: Payload?
    do {
      let payload = Payload()
      removed = payload
      queue.append(payload)
      queue.append(Payload())
      queue.append(Payload())
    }
    #expect(removed != nil)
    queue.removeFirst()
    #expect(removed == nil, "the queue still holds a removed element")
    #expect(queue.count == 2)
  }
}
