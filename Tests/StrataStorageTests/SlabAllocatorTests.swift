// SlabAllocator: size classes and their waste bound, filling and emptying, pages moving between
// classes, a seeded random workload checked for disjoint slots, and the programmer-error traps.

import StrataStorage
import StrataTestKit
import Testing

private let kibibyte = 1 << 10
private let mebibyte = 1 << 20

@Suite struct SlabAllocatorTests {
  @Test func sizeClassesKeepTheDocumentedWasteBounds() {
    let allocator = SlabAllocator(capacityBytes: 256 * mebibyte, blockBytesMax: 32 * mebibyte)
    let classes = allocator.classBytes
    #expect(allocator.pageBytes == 32 * mebibyte)
    #expect(Array(classes.prefix(5)) == [4, 8, 12, 16, 24].map { $0 * kibibyte })
    #expect(classes.last == 32 * mebibyte)
    #expect(classes.contains(6 * mebibyte))
    // These would leave a quarter of every page unused.
    #expect(!classes.contains(12 * mebibyte))
    #expect(!classes.contains(24 * mebibyte))
    for (index, slotBytes) in classes.enumerated() {
      #expect(slotBytes % 4096 == 0)
      #expect((allocator.pageBytes % slotBytes) * 16 <= allocator.pageBytes, "page tail of \(slotBytes)")
      if index > 0 {
        let ratio = Double(slotBytes) / Double(classes[index - 1])
        let fineStep = slotBytes > 8 * kibibyte && slotBytes <= allocator.pageBytes / 4
        #expect(ratio <= (fineStep ? 1.5 : 2.0), "step to \(slotBytes)")
      }
    }
    var random = SplitMix64(seed: 7)
    for _ in 0..<2_000 {
      let bytes = Int.random(in: 4096...(32 * mebibyte), using: &random)
      let slotBytes = allocator.slotBytes(for: bytes) ?? 0
      #expect(slotBytes >= bytes && slotBytes < 2 * bytes)
      if bytes > 8 * kibibyte && slotBytes <= allocator.pageBytes / 4 {
        #expect(2 * slotBytes < 3 * bytes, "\(bytes) -> \(slotBytes)")
      }
    }
    #expect(allocator.slotBytes(for: 1) == 4096)
    #expect(allocator.slotBytes(for: 4097) == 8192)
    #expect(allocator.slotBytes(for: 8193) == 12_288)
    #expect(allocator.slotBytes(for: 32 * mebibyte) == 32 * mebibyte)
    #expect(allocator.slotBytes(for: 32 * mebibyte + 1) == nil)
    #expect(allocator.slotBytes(for: 0) == nil)
  }

  @Test func pageSizeFollowsTheLargestBlock() {
    let small = SlabAllocator(capacityBytes: 64 * mebibyte, blockBytesMax: 5_000)
    #expect(small.pageBytes == 2 * mebibyte)
    #expect(small.classBytes == [4096, 8192])
    let odd = SlabAllocator(capacityBytes: 64 * mebibyte, blockBytesMax: 20 * mebibyte)
    #expect(odd.pageBytes == 32 * mebibyte)
    #expect(odd.slotBytes(for: 20 * mebibyte) == 32 * mebibyte)
  }

  /// The trap the advice warns of: 64 MiB of 32 MiB pages takes blocks of two sizes, then refuses
  /// a third size with the arena nearly empty; 16 pages or more draw no advice.
  @Test func anArenaOfFewPagesIsAdvisedAgainst() throws {
    var allocator = SlabAllocator(capacityBytes: 64 * mebibyte, blockBytesMax: 32 * mebibyte)
    let small = allocator.allocate(bytes: 5_000)
    let medium = allocator.allocate(bytes: 64 << 10)
    #expect(small != nil && medium != nil)
    let large = allocator.allocate(bytes: 2 * mebibyte)
    #expect(large == nil)
    let advice = try #require(SlabAllocator.fewPagesAdvice(capacityBytes: 64 * mebibyte, blockBytesMax: 32 * mebibyte))
    #expect(advice.contains("holds 2 page(s) of 32MiB") && advice.contains("512MiB"), "\(advice)")
    #expect(SlabAllocator.fewPagesAdvice(capacityBytes: 512 * mebibyte, blockBytesMax: 32 * mebibyte) == nil)
    #expect(SlabAllocator.fewPagesAdvice(capacityBytes: 64 * mebibyte, blockBytesMax: 4 * mebibyte) == nil)
  }

  @Test func fillsTheArenaThenSaysNoAndEmptiesBack() throws {
    var allocator = SlabAllocator(capacityBytes: 8 * mebibyte, blockBytesMax: mebibyte)
    #expect(allocator.pageCount == 4)
    var slots: [ArenaSlot] = []
    while let slot = allocator.allocate(bytes: 3_000) { slots.append(slot) }
    #expect(slots.count == 8 * mebibyte / 4096)
    #expect(Set(slots.map(\.offset)).count == slots.count)
    #expect(slots.allSatisfy { $0.offset % 4096 == 0 && $0.capacityBytes == 4096 })
    #expect(allocator.usedBytes == allocator.capacityBytes)
    #expect(allocator.freePageCount == 0)
    let tooLarge = allocator.allocate(bytes: mebibyte)
    #expect(tooLarge == nil)
    for slot in slots { allocator.free(slot) }
    #expect(allocator.usedBytes == 0)
    #expect(allocator.freePageCount == 4)
    let large = try #require(allocator.allocate(bytes: mebibyte) as ArenaSlot?)
    #expect(large.capacityBytes == mebibyte)
  }

  /// The workload moves from 256 KiB blocks to 32 MiB blocks and back; pages follow it.
  @Test func pagesMoveBetweenClassesAsTheWorkloadShifts() throws {
    var allocator = SlabAllocator(capacityBytes: 256 * mebibyte, blockBytesMax: 32 * mebibyte)
    #expect(allocator.pageCount == 8)
    var small: [ArenaSlot] = []
    while let slot = allocator.allocate(bytes: 256 * kibibyte) { small.append(slot) }
    #expect(small.count == 1_024)
    let largeWhenFull = allocator.allocate(bytes: 32 * mebibyte)
    #expect(largeWhenFull == nil)

    // Half of every page free is not a free page: large blocks still do not fit.
    for slot in small where (slot.offset / (256 * kibibyte)) % 2 == 0 { allocator.free(slot) }
    small.removeAll { (($0.offset / (256 * kibibyte)) % 2) == 0 }
    #expect(allocator.freePageCount == 0)
    let largeWhenHalfFree = allocator.allocate(bytes: 32 * mebibyte)
    #expect(largeWhenHalfFree == nil)
    // ...but the freed slots serve small blocks again.
    let refill = try #require(allocator.allocate(bytes: 200 * kibibyte) as ArenaSlot?)
    allocator.free(refill)

    // Emptying one page gives it back at once.
    let firstPage = small.filter { $0.offset < 32 * mebibyte }
    for slot in firstPage { allocator.free(slot) }
    small.removeAll { $0.offset < 32 * mebibyte }
    #expect(allocator.freePageCount == 1)
    var large: [ArenaSlot] = [try #require(allocator.allocate(bytes: 32 * mebibyte) as ArenaSlot?)]
    #expect(large[0].offset == 0)

    for slot in small { allocator.free(slot) }
    while let slot = allocator.allocate(bytes: 30 * mebibyte) { large.append(slot) }
    #expect(large.count == 8)
    #expect(allocator.usedBytes == 256 * mebibyte)

    for slot in large { allocator.free(slot) }
    #expect(allocator.freePageCount == 8)
    var count = 0
    while allocator.allocate(bytes: 256 * kibibyte) != nil { count += 1 }
    #expect(count == 1_024)
  }

  /// 5,000 random allocations and frees of sizes from 1 byte to 4 MiB, in an arena whose last page is
  /// short; every live slot must be aligned, inside the arena and disjoint from every other.
  @Test func randomWorkloadKeepsSlotsDisjoint() throws {
    let capacityBytes = 16 * 4 * mebibyte + mebibyte + 12 * kibibyte
    var allocator = SlabAllocator(capacityBytes: capacityBytes, blockBytesMax: 4 * mebibyte)
    #expect(allocator.pageBytes == 4 * mebibyte)
    #expect(allocator.pageCount == 17)
    var owner = [Int](repeating: -1, count: capacityBytes / 4096 + 1)  // offset of the live slot holding each 4 KiB
    var live: [ArenaSlot] = []
    var usedShortPage = false
    var failedAllocations = 0
    var random = SplitMix64(seed: 2024)
    for step in 0..<5_000 {
      if live.isEmpty || Int.random(in: 0..<100, using: &random) < 55 {
        // Sizes spread evenly over orders of magnitude: [2^k, 2^(k+1)) for k in 0...21.
        let magnitude = Int.random(in: 0...21, using: &random)
        let bytes = (1 << magnitude) + Int.random(in: 0..<(1 << magnitude), using: &random)
        guard let slot = allocator.allocate(bytes: bytes) else {
          failedAllocations += 1
          continue
        }
        try #require(slot.capacityBytes == allocator.slotBytes(for: bytes), "step \(step)")
        try #require(slot.offset % 4096 == 0 && slot.offset + slot.capacityBytes <= capacityBytes, "step \(step)")
        for unit in slot.offset / 4096..<(slot.offset + slot.capacityBytes) / 4096 {
          try #require(owner[unit] == -1, "step \(step): \(slot) overlaps the slot at \(owner[unit])")
          owner[unit] = slot.offset
        }
        usedShortPage = usedShortPage || slot.offset >= 16 * 4 * mebibyte
        live.append(slot)
      } else {
        let index = Int.random(in: 0..<live.count, using: &random)
        live.swapAt(index, live.count - 1)
        let slot = live.removeLast()
        allocator.free(slot)
        for unit in slot.offset / 4096..<(slot.offset + slot.capacityBytes) / 4096 { owner[unit] = -1 }
      }
      try #require(allocator.usedBytes == live.reduce(0) { $0 + $1.capacityBytes }, "step \(step)")
    }
    #expect(usedShortPage)
    #expect(failedAllocations > 0)
    for slot in live { allocator.free(slot) }
    #expect(allocator.usedBytes == 0)
    #expect(allocator.freePageCount == allocator.pageCount)
  }

  @Test func doubleFreeTraps() async {
    await #expect(processExitsWith: .failure) {
      var allocator = SlabAllocator(capacityBytes: 4 * mebibyte, blockBytesMax: mebibyte)
      let slot = allocator.allocate(bytes: 4096)!
      _ = allocator.allocate(bytes: 4096)!  // keeps the page assigned, so the slot check itself fires
      allocator.free(slot)
      allocator.free(slot)
    }
  }

  @Test func foreignSlotTraps() async {
    await #expect(processExitsWith: .failure) {
      var allocator = SlabAllocator(capacityBytes: 4 * mebibyte, blockBytesMax: mebibyte)
      _ = allocator.allocate(bytes: 4096)!
      allocator.free(ArenaSlot(offset: 4096, capacityBytes: 8192))
    }
  }
}
