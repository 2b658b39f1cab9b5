// The one place a GET block's payload is received over TCP: straight into host memory, or through
// the pinned staging ring into GPU memory. Either way the bytes are checksummed on the host as
// they arrive, before the block is reported as data.

import StrataCore
import StrataGPU

/// Receives the blocks of one GET response; `finish()` before reporting the batch's results.
struct BlockReceiver {
  let connection: ClientConnection
  let transports: ClientTransports
  let verify: Bool
  private var rings: [Int: StagingRing] = [:]
  private var staged: [Int: Int] = [:]

  init(connection: ClientConnection, transports: ClientTransports, verify: Bool) {
    self.connection = connection
    self.transports = transports
    self.verify = verify
  }

  /// Receives `length` payload bytes (which fit) into `segments`, filling each before the next.
  /// Several segments must be host memory; the checksum covers all of them together.
  mutating func receive(into segments: [RegionSlice], length: Int, checksum: UInt32) throws(StrataError)
    -> StrataClient.GetResult
  {
    guard segments.count > 1 else { return try receive(into: segments[0], length: length, checksum: checksum) }
    guard segments.allSatisfy({ $0.region.kind == .host }) else {
      throw StrataError(.unsupported, "a GET scattered over several buffers takes host memory only")
    }
    var crc: UInt32 = 0
    var left = length
    var filled: [UnsafeMutableRawBufferPointer] = []
    for segment in segments where left > 0 {
      let buffer = UnsafeMutableRawBufferPointer(rebasing: segment.buffer[0..<min(left, segment.length)])
      crc = try receiveChecksumming(into: buffer, continuing: crc)
      filled.append(buffer)
      left -= buffer.count
    }
    guard !verify || crc == checksum else {
      for buffer in filled { buffer.initializeMemory(as: UInt8.self, repeating: 0) }
      return .corrupt
    }
    return .ok(length: length)
  }

  /// Receives `length` payload bytes (which fit) into `destination`.
  mutating func receive(into destination: RegionSlice, length: Int, checksum: UInt32) throws(StrataError)
    -> StrataClient.GetResult
  {
    switch destination.region.kind {
    case .host:
      let buffer = UnsafeMutableRawBufferPointer(rebasing: destination.buffer[0..<length])
      let received = try receiveChecksumming(into: buffer, continuing: 0)
      guard !verify || received == checksum else {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        return .corrupt
      }
      return .ok(length: length)
    case .cuda(let device):
      let ring: StagingRing
      if let taken = rings[device] {
        ring = taken
      } else {
        ring = try transports.takeRing(device: device)
        rings[device] = ring
      }
      let address = destination.region.address + UInt64(destination.offset)
      let before = ring.stagedBytes
      let received = try ring.stage(length: length, to: address) { (chunk) throws(StrataError) in
        try connection.receive(into: chunk)
      }
      staged[device, default: 0] += ring.stagedBytes - before
      // The ring always computes the checksum (it has the bytes in host memory anyway).
      guard !verify || received == checksum else {
        try ring.zero(address, length: length)
        return .corrupt
      }
      return .ok(length: length)
    }
  }

  /// Bytes received before they are checksummed: few enough to be checksummed from the cache right
  /// after the kernel copied them in, while the next ones keep arriving into the socket buffer, so
  /// verification overlaps the transfer instead of reading the whole block again after it.
  static let checksumChunkBytes = 256 << 10

  /// Receives `buffer` in chunks, checksumming each as it lands (when verifying); returns the
  /// CRC-32C of `buffer` continuing `crc` (or `crc` unchanged when not verifying).
  private func receiveChecksumming(into buffer: UnsafeMutableRawBufferPointer, continuing crc: UInt32)
    throws(StrataError) -> UInt32
  {
    guard verify else {
      try connection.receive(into: buffer)
      return crc
    }
    var crc = crc
    var offset = 0
    while offset < buffer.count {
      let chunk = UnsafeMutableRawBufferPointer(
        rebasing: buffer[offset..<min(buffer.count, offset + Self.checksumChunkBytes)])
      try connection.receive(into: chunk)
      crc = CRC32C.checksum(UnsafeRawBufferPointer(chunk), continuing: crc)
      offset += chunk.count
    }
    return crc
  }

  /// Waits until every staged copy has landed in GPU memory and gives the rings back.
  mutating func finish() throws(StrataError) {
    defer {
      for (device, ring) in rings { transports.returnRing(ring, staged: staged[device] ?? 0) }
      rings.removeAll()
    }
    for ring in rings.values { try ring.finish() }
  }
}
