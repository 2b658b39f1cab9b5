// What a GET item asks of a leased block, shared by the TCP and RDMA paths: the answer for the
// item (missing, out of range, or ok with its length and checksum) and the bytes to deliver.

import StrataCore
import StrataStorage
import StrataWire

/// The answer to `item` given the leased `block` (nil: absent), and the byte range to send; nil
/// when the block is corrupt (a part of a block no longer matching its stored checksum: the
/// caller quarantines it and answers `missing`).
func resolve(_ item: GetRequest.Item, in block: LeasedBlock?) -> (GetResponse.Item, UnsafeRawBufferPointer?)? {
  guard let block else { return (GetResponse.Item(status: .missing), nil) }
  let size = UInt64(block.bytes.count)
  let end = item.length == 0 ? size : item.offset &+ item.length
  guard item.offset <= size, end <= size, end >= item.offset else {
    return (GetResponse.Item(status: .rangeOutOfBounds), nil)
  }
  let range = UnsafeRawBufferPointer(rebasing: block.bytes[Int(item.offset)..<Int(end)])
  // A whole block goes out with its stored checksum, which the client verifies. A part needs a
  // checksum of its own, and a fresh one would vouch for bytes that may have changed in memory:
  // the whole block is checked against its stored checksum first.
  guard range.count != block.bytes.count else { return (.ok(length: size, checksum: block.checksum), range) }
  guard CRC32C.checksum(block.bytes) == block.checksum else { return nil }
  return (.ok(length: UInt64(range.count), checksum: CRC32C.checksum(range)), range)
}
