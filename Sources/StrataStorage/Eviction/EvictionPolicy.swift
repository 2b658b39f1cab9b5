// The replacement-policy contract a tier's index drives, and the index-linked lists the policies share.
// Policies are pure values (no I/O, no clock): the tier reports what happened and asks for victims.

/// A pure, byte-aware replacement policy for one tier. The tier tells it what happens; it answers victims.
public protocol EvictionPolicy<Key> {
  associatedtype Key: Hashable
  /// A new entry of `bytes` entered the tier (never called for a key already present).
  mutating func insert(_ key: Key, bytes: Int)
  /// The entry was read (a hit).
  mutating func access(_ key: Key)
  /// The entry left the tier for another reason (deleted, expired); unknown keys are ignored.
  mutating func remove(_ key: Key)
  /// Chooses one victim among entries for which `isEvictable` is true (pinned entries under a lease are not),
  /// removes it from the policy and returns it; nil when no entry is evictable. Must terminate even when
  /// every entry is pinned (bounded scan).
  mutating func evict(where isEvictable: (Key) -> Bool) -> Key?
  /// Whether the key was accessed again after its insert (used for "seen twice" admission to the next tier).
  func wasReused(_ key: Key) -> Bool
  var count: Int { get }
  var bytes: Int { get }
}

/// Head, tail and length of one list threaded through a `LinkedSlots` array.
struct SlotListEnds: Sendable {
  var head = LinkedSlots<Never>.none
  var tail = LinkedSlots<Never>.none
  var count = 0
}

/// Doubly linked lists threaded through one array of nodes and addressed by index, so linking,
/// unlinking and moving an entry are O(1) and allocate nothing once the array has grown to the
/// peak entry count: freed nodes go on a free chain and are reused before the array grows.
struct LinkedSlots<Element> {
  static var none: Int { -1 }

  fileprivate struct Node {
    // Optional so that a freed node drops its element (and whatever the key retains) at once.
    var element: Element?
    var previous: Int
    var next: Int
  }

  private var nodes: [Node] = []
  /// First freed node; freed nodes are chained through `next`.
  private var freeHead = none

  /// Stores `element` in a node that is on no list yet and returns the node's index.
  mutating func make(_ element: Element) -> Int {
    if freeHead != Self.none {
      let index = freeHead
      freeHead = nodes[index].next
      nodes[index] = Node(element: element, previous: Self.none, next: Self.none)
      return index
    }
    nodes.append(Node(element: element, previous: Self.none, next: Self.none))
    return nodes.count - 1
  }

  /// Frees a node that is on no list and returns its element.
  mutating func destroy(_ index: Int) -> Element {
    guard let element = nodes[index].element else { preconditionFailure("node \(index) is already free") }
    nodes[index] = Node(element: nil, previous: Self.none, next: freeHead)
    freeHead = index
    return element
  }

  subscript(index: Int) -> Element {
    guard let element = nodes[index].element else { preconditionFailure("node \(index) is free") }
    return element
  }

  /// Changes the element in place (no copy of the key, unlike a get/set pair).
  mutating func update<Result>(_ index: Int, _ body: (inout Element) -> Result) -> Result {
    precondition(nodes[index].element != nil, "node \(index) is free")
    return body(&nodes[index].element!)
  }

  /// The node nearer the head, or `none`.
  func previous(_ index: Int) -> Int { nodes[index].previous }

  mutating func pushHead(_ index: Int, onto list: inout SlotListEnds) {
    nodes[index].previous = Self.none
    nodes[index].next = list.head
    if list.head != Self.none { nodes[list.head].previous = index } else { list.tail = index }
    list.head = index
    list.count += 1
  }

  mutating func unlink(_ index: Int, from list: inout SlotListEnds) {
    let previous = nodes[index].previous
    let next = nodes[index].next
    if previous != Self.none { nodes[previous].next = next } else { list.head = next }
    if next != Self.none { nodes[next].previous = previous } else { list.tail = previous }
    nodes[index].previous = Self.none
    nodes[index].next = Self.none
    list.count -= 1
  }

  mutating func moveToHead(_ index: Int, in list: inout SlotListEnds) {
    guard list.head != index else { return }
    unlink(index, from: &list)
    pushHead(index, onto: &list)
  }
}

extension LinkedSlots.Node: Sendable where Element: Sendable {}
extension LinkedSlots: Sendable where Element: Sendable {}
