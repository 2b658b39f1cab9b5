// FIFO: a first-in first-out queue over one array, for the queues that take from the front what
// they appended at the back (the I/O pool's waiting jobs, write-behind, RDMA work requests).

/// A first-in first-out queue: appends at the back and removes from the front, both in amortised
/// constant time. A removed element is released at once; the space of removed elements is
/// reclaimed once it is half the storage, and an emptied queue keeps its storage only while that
/// is small (4,096 elements), so a burst does not pin its peak memory.
public struct FIFO<Element>: Sequence {
  private var elements: [Element?] = []
  private var head = 0

  public init() {}

  public init(_ elements: some Sequence<Element>) { self.elements = elements.map { $0 } }

  public var isEmpty: Bool { head == elements.count }
  public var count: Int { elements.count - head }
  /// The oldest element, left in place.
  public var first: Element? { isEmpty ? nil : elements[head] }

  public mutating func append(_ element: Element) { elements.append(element) }

  /// Removes and returns the oldest element; nil when empty.
  @discardableResult
  public mutating func removeFirst() -> Element? {
    guard let element = first else { return nil }
    elements[head] = nil
    head += 1
    reclaimFront()
    return element
  }

  /// Removes and returns the oldest `count` elements (all of them when fewer are held), oldest first.
  public mutating func removeFirst(upTo count: Int) -> [Element] {
    let taken = elements[head..<head + Swift.min(Swift.max(0, count), self.count)].map { $0! }
    for index in head..<head + taken.count { elements[index] = nil }
    head += taken.count
    reclaimFront()
    return taken
  }

  public mutating func removeAll() {
    elements.removeAll(keepingCapacity: elements.capacity <= 4096)
    head = 0
  }

  /// The elements held, oldest first.
  public func makeIterator() -> LazyMapSequence<ArraySlice<Element?>, Element>.Iterator {
    elements[head...].lazy.map { $0! }.makeIterator()
  }

  private mutating func reclaimFront() {
    if isEmpty {
      removeAll()
    } else if head >= 64 && head * 2 >= elements.count {
      elements.removeFirst(head)
      head = 0
    }
  }
}

extension FIFO: Sendable where Element: Sendable {}
