// What a GET item asks of a leased block, shared by the TCP and RDMA paths: the answer for the
// item (missing, out of range, or ok with its length and checksum) and the bytes to deliver.

import StrataCore
import StrataStorage
import StrataWire

/// The answer to `item` given the leased `block` (nil: absent), and the byte range to send.
func resolve(_ item: GetRequest.Item, in block: LeasedBlock?) -> (GetResponse.Item, UnsafeRawBufferPointer?) {
  guard let block else { return (GetResponse.Item(status: .missing), nil) }
  let size = UInt64(block.bytes.count)
  let end = item.length == 0 ? size : item.offset &+ item.length
  guard item.offset <= size, end <= size, end >= item.offset else {
    return (GetResponse.Item(status: .rangeOutOfBounds), nil)
  }
  let range = UnsafeRawBufferPointer(rebasing: block.bytes[Int(item.offset)..<Int(end)])
  // The stored checksum covers the whole block; a part is checksummed as it goes out.
  let checksum = range.count == block.bytes.count ? block.checksum : CRC32C.checksum(range)
  return (.ok(length: UInt64(range.count), checksum: checksum), range)
}
