// Which bytes of the RAM arena hold which block: size-classed slots carved from fixed pages.
// Pure bookkeeping on offsets; it never touches the memory (RAMArena owns that).

import StrataCore

/// A run of arena bytes handed to one block; `capacityBytes` is the slot's size class, at least the
/// block's size.
public struct ArenaSlot: Hashable, Sendable, CustomStringConvertible {
  public let offset: Int
  public let capacityBytes: Int

  public init(offset: Int, capacityBytes: Int) {
    self.offset = offset
    self.capacityBytes = capacityBytes
  }

  public var description: String { "slot(offset: \(offset), capacityBytes: \(capacityBytes))" }
}

/// Size-class allocator over `capacityBytes` of arena.
///
/// **Pages.** The arena is cut into pages of `pageBytes`, the smallest power of two that holds one
/// block of `blockBytesMax` and is at least 2 MiB. A page is given to one size class when that class
/// needs room and goes back to the pool as soon as its last slot is freed, so a workload that moves
/// from small blocks to large ones (or back) gets the memory back page by page. Pages are as small as
/// one largest block allows, which keeps that reuse fine-grained; the 2 MiB floor makes every page
/// whole x86-64 huge pages. When `capacityBytes` is not a multiple of `pageBytes` the remainder is a
/// shorter last page, used (for the classes that fit in it) once the full pages are taken.
///
/// **Size classes and waste.** Classes are 4 KiB, 8 KiB, 12 KiB, 16 KiB, 24 KiB, ... (each power of
/// two and the 1.5x step after it) up to the first class of at least `blockBytesMax`. Every class is
/// a multiple of 4 KiB, so every slot is 4 KiB aligned (O_DIRECT and RDMA registration want that),
/// which is why there is no 6 KiB class. A 1.5x class is kept only if the slots it cuts from a page
/// leave at most 1/16 of the page unused. So: a block of more than 8 KiB and at most a quarter page
/// gets a slot less than 1.5x its size; any other block of at least 4 KiB, less than 2x (between
/// 4 KiB and 8 KiB, and above a quarter page, where 3/8 and 3/4 of a page would waste a quarter of
/// it); smaller blocks take a 4 KiB slot; and a page loses at most 1/16 of itself to its tail.
///
/// **Allocation up front.** Slots are numbered within their page; a page hands out never-used slot
/// numbers from a counter and reuses freed ones from a per-page stack whose storage is kept when the
/// page changes class. Pages with free slots are on an index-linked list per class. In steady state
/// `allocate` and `free` are O(1) and allocate no memory.
public struct SlabAllocator: Sendable {
  /// Below this many pages an arena is advised against (`fewPagesAdvice`).
  public static let pagesAdvisedMin = 16

  /// The page of an allocator for blocks of at most `blockBytesMax`: the smallest power of two that
  /// holds one, and `pageBytesMin` at least.
  public static func pageBytes(blockBytesMax: Int) -> Int {
    var pageBytes = pageBytesMin
    while pageBytes < blockBytesMax { pageBytes <<= 1 }
    return pageBytes
  }

  /// A warning for an arena of fewer than `pagesAdvisedMin` pages, nil otherwise. Each size class in
  /// use holds at least one page, so in such an arena blocks of a few different sizes can take every
  /// page while it is nearly empty, and a block of yet another size finds no room (`no_space`).
  public static func fewPagesAdvice(capacityBytes: Int, blockBytesMax: Int) -> String? {
    let pageSize = Self.pageBytes(blockBytesMax: blockBytesMax)
    let pages = capacityBytes / pageSize
    guard pages < pagesAdvisedMin else { return nil }
    let page = ByteSize(bytes: UInt64(pageSize))
    return "ram.capacity (\(ByteSize(bytes: UInt64(capacityBytes)))) holds \(pages) page(s) of \(page) "
      + "(limits.max_block_size, \(ByteSize(bytes: UInt64(blockBytesMax))), rounded up to a power of two): every block size "
      + "in use takes pages of its own, so blocks of more than \(pages) sizes can be refused (no_space) while RAM is "
      + "nearly empty. Give ram.capacity \(pagesAdvisedMin) pages (\(ByteSize(bytes: UInt64(pagesAdvisedMin * pageSize)))) "
      + "or more, or lower limits.max_block_size to the largest block the engines write"
  }

  /// The smallest slot, and the alignment of every slot.
  public static let slotBytesMin = 4096
  /// Pages are never smaller than one x86-64 huge page.
  public static let pageBytesMin = 2 << 20

  public let capacityBytes: Int
  public let blockBytesMax: Int
  public let pageBytes: Int
  /// Slot sizes, ascending; the last one holds a block of `blockBytesMax`.
  public let classBytes: [Int]
  /// Bytes of the slots handed out (not of the blocks in them).
  public private(set) var usedBytes = 0

  private struct Page {
    /// Index into `classBytes`, or `unassigned`.
    var classIndex: Int
    var lengthBytes: Int
    var slotCount = 0
    var usedCount = 0
    /// Slot numbers below this have been handed out at least once since the page got its class.
    var touchedCount = 0
    /// Neighbours on the class's list of pages with a free slot.
    var previous = SlabAllocator.noPage
    var next = SlabAllocator.noPage
  }

  private static let noPage = -1
  private static let unassigned = -1

  private var pages: [Page]
  /// Freed slot numbers per page, reused before untouched ones.
  private var freedSlots: [[UInt32]]
  /// One bit per possible slot of every page, set while the slot is handed out: catches double frees.
  private var handedOutBits: [UInt64]
  private let bitWordsPerPage: Int
  /// Unassigned full-size pages, used last-in first-out.
  private var freePages: [Int]
  /// The shorter last page, if the capacity leaves one of at least one slot.
  private let shortPage: Int?
  /// Per class, the first page with a free slot.
  private var partialPageHeads: [Int]

  public init(capacityBytes: Int, blockBytesMax: Int) {
    precondition(capacityBytes > 0, "SlabAllocator: capacityBytes must be positive, got \(capacityBytes)")
    precondition(
      blockBytesMax > 0 && blockBytesMax <= 1 << 30,
      "SlabAllocator: blockBytesMax must be in 1...1GiB, got \(blockBytesMax)")
    self.capacityBytes = capacityBytes
    self.blockBytesMax = blockBytesMax
    let pageBytes = Self.pageBytes(blockBytesMax: blockBytesMax)
    self.pageBytes = pageBytes
    classBytes = Self.sizeClasses(blockBytesMax: blockBytesMax, pageBytes: pageBytes)

    let fullPageCount = capacityBytes / pageBytes
    let remainderBytes = capacityBytes % pageBytes
    pages = (0..<fullPageCount).map { _ in Page(classIndex: Self.unassigned, lengthBytes: pageBytes) }
    if remainderBytes >= Self.slotBytesMin {
      pages.append(Page(classIndex: Self.unassigned, lengthBytes: remainderBytes))
      shortPage = fullPageCount
    } else {
      shortPage = nil
    }
    freedSlots = Array(repeating: [], count: pages.count)
    bitWordsPerPage = (pageBytes / Self.slotBytesMin + 63) / 64
    handedOutBits = Array(repeating: 0, count: pages.count * bitWordsPerPage)
    freePages = Array((0..<fullPageCount).reversed())
    partialPageHeads = Array(repeating: Self.noPage, count: classBytes.count)
  }

  /// The classes for these limits; see the type's documentation for the rule.
  static func sizeClasses(blockBytesMax: Int, pageBytes: Int) -> [Int] {
    var classes: [Int] = []
    var powerOfTwo = slotBytesMin
    while true {
      classes.append(powerOfTwo)
      if powerOfTwo >= blockBytesMax { return classes }
      let step = powerOfTwo + powerOfTwo / 2
      if step % slotBytesMin == 0, (pageBytes % step) * 16 <= pageBytes {
        classes.append(step)
        if step >= blockBytesMax { return classes }
      }
      powerOfTwo <<= 1
    }
  }

  /// Pages (including a shorter last one) in the arena.
  public var pageCount: Int { pages.count }

  /// Pages that belong to no size class now.
  public var freePageCount: Int {
    freePages.count + (shortPage.map { pages[$0].classIndex == Self.unassigned ? 1 : 0 } ?? 0)
  }

  /// The slot size a block of `bytes` gets, or nil for a size this allocator never serves.
  public func slotBytes(for bytes: Int) -> Int? {
    classIndex(for: bytes).map { classBytes[$0] }
  }

  private func classIndex(for bytes: Int) -> Int? {
    guard bytes > 0, bytes <= blockBytesMax else { return nil }
    var low = 0
    var high = classBytes.count - 1
    while low < high {
      let middle = (low + high) / 2
      if classBytes[middle] < bytes { low = middle + 1 } else { high = middle }
    }
    return low
  }

  /// A slot of at least `bytes`, or nil when neither a page of that class nor a free page has room
  /// (the caller then evicts). Free slots of other classes do not help until a whole page is free.
  public mutating func allocate(bytes: Int) -> ArenaSlot? {
    guard let sizeClass = classIndex(for: bytes) else {
      preconditionFailure("SlabAllocator.allocate: \(bytes) bytes is outside 1...\(blockBytesMax) (blockBytesMax)")
    }
    var page = partialPageHeads[sizeClass]
    if page == Self.noPage {
      guard let fresh = takeFreePage(for: sizeClass) else { return nil }
      page = fresh
    }
    let slotNumber: Int
    if let freed = freedSlots[page].popLast() {
      slotNumber = Int(freed)
    } else {
      slotNumber = pages[page].touchedCount
      pages[page].touchedCount += 1
    }
    pages[page].usedCount += 1
    if pages[page].usedCount == pages[page].slotCount { unlinkPartial(page, sizeClass: sizeClass) }
    handedOutBits[page * bitWordsPerPage + slotNumber / 64] |= 1 << UInt64(slotNumber % 64)
    let slotBytes = classBytes[sizeClass]
    usedBytes += slotBytes
    return ArenaSlot(offset: page * pageBytes + slotNumber * slotBytes, capacityBytes: slotBytes)
  }

  /// Returns `slot` for reuse. A slot this allocator did not hand out, or one freed twice, is a bug.
  public mutating func free(_ slot: ArenaSlot) {
    precondition(
      slot.offset >= 0 && slot.offset < pages.count * pageBytes,
      "SlabAllocator.free: \(slot) is outside this allocator's \(capacityBytes) bytes (foreign slot)")
    let page = slot.offset / pageBytes
    let sizeClass = pages[page].classIndex
    precondition(
      sizeClass != Self.unassigned,
      "SlabAllocator.free: \(slot) is in page \(page), which holds no slots (double free or foreign slot)")
    let slotBytes = classBytes[sizeClass]
    let offsetInPage = slot.offset - page * pageBytes
    precondition(
      slot.capacityBytes == slotBytes && offsetInPage % slotBytes == 0,
      "SlabAllocator.free: \(slot) does not match page \(page)'s \(slotBytes)-byte slots (foreign slot)")
    let slotNumber = offsetInPage / slotBytes
    let word = page * bitWordsPerPage + slotNumber / 64
    let bit: UInt64 = 1 << UInt64(slotNumber % 64)
    precondition(
      slotNumber < pages[page].slotCount && handedOutBits[word] & bit != 0,
      "SlabAllocator.free: \(slot) is not handed out (double free)")
    handedOutBits[word] &= ~bit
    usedBytes -= slotBytes

    let wasFull = pages[page].usedCount == pages[page].slotCount
    pages[page].usedCount -= 1
    if pages[page].usedCount == 0 {
      if !wasFull { unlinkPartial(page, sizeClass: sizeClass) }
      releasePage(page)
    } else {
      freedSlots[page].append(UInt32(slotNumber))
      if wasFull { pushPartial(page, sizeClass: sizeClass) }
    }
  }

  private mutating func takeFreePage(for sizeClass: Int) -> Int? {
    let slotBytes = classBytes[sizeClass]
    let page: Int
    if let full = freePages.popLast() {
      page = full
    } else if let short = shortPage, pages[short].classIndex == Self.unassigned,
      pages[short].lengthBytes >= slotBytes
    {
      page = short
    } else {
      return nil
    }
    pages[page].classIndex = sizeClass
    pages[page].slotCount = pages[page].lengthBytes / slotBytes
    pages[page].usedCount = 0
    pages[page].touchedCount = 0
    // Grows only the first time a page serves a class this small; later assignments reuse it.
    freedSlots[page].reserveCapacity(pages[page].slotCount)
    pushPartial(page, sizeClass: sizeClass)
    return page
  }

  private mutating func releasePage(_ page: Int) {
    pages[page].classIndex = Self.unassigned
    pages[page].slotCount = 0
    pages[page].touchedCount = 0
    freedSlots[page].removeAll(keepingCapacity: true)
    if page != shortPage { freePages.append(page) }
  }

  private mutating func pushPartial(_ page: Int, sizeClass: Int) {
    let head = partialPageHeads[sizeClass]
    pages[page].previous = Self.noPage
    pages[page].next = head
    if head != Self.noPage { pages[head].previous = page }
    partialPageHeads[sizeClass] = page
  }

  private mutating func unlinkPartial(_ page: Int, sizeClass: Int) {
    let previous = pages[page].previous
    let next = pages[page].next
    if previous != Self.noPage { pages[previous].next = next } else { partialPageHeads[sizeClass] = next }
    if next != Self.noPage { pages[next].previous = previous }
    pages[page].previous = Self.noPage
    pages[page].next = Self.noPage
  }
}
