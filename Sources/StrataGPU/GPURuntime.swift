// What Strata needs of a GPU runtime, as a protocol: the CUDA runtime loaded at run time
// (CUDARuntime) implements it, and so does a host-memory stand-in that lets the staging path be
// tested on machines without a GPU.

public import StrataCore

/// A stream of asynchronous copies on one device.
public struct GPUStream: @unchecked Sendable, Hashable {
  // @unchecked: an opaque runtime handle, used only through the runtime that made it.
  public let handle: UnsafeMutableRawPointer?
  public init(handle: UnsafeMutableRawPointer?) { self.handle = handle }
}

/// A marker recorded on a stream: done when every copy queued before it is done.
public struct GPUEvent: @unchecked Sendable, Hashable {
  // @unchecked: an opaque runtime handle, used only through the runtime that made it.
  public let handle: UnsafeMutableRawPointer?
  public init(handle: UnsafeMutableRawPointer?) { self.handle = handle }
}

/// The calls the GPU path makes. Device addresses are integers: they are never dereferenced on the host.
public protocol GPURuntime: Sendable {
  /// For messages ("CUDA runtime 12040 (libcudart.so.12)").
  var name: String { get }
  func deviceCount() throws(StrataError) -> Int
  /// Checks that `byteCount` bytes at `address` are memory of `device` (not host memory).
  func checkDeviceMemory(address: UInt64, byteCount: Int, device: Int) throws(StrataError)
  func allocatePinnedHost(byteCount: Int) throws(StrataError) -> UnsafeMutableRawPointer
  func freePinnedHost(_ pointer: UnsafeMutableRawPointer)
  func makeStream(device: Int) throws(StrataError) -> GPUStream
  func destroyStream(_ stream: GPUStream)
  func copyToDeviceAsync(
    _ destination: UInt64, from source: UnsafeRawPointer, byteCount: Int, stream: GPUStream) throws(StrataError)
  func fillDeviceAsync(_ destination: UInt64, byte: UInt8, byteCount: Int, stream: GPUStream) throws(StrataError)
  /// A synchronous device → host copy (PUT from device memory).
  func copyToHost(_ destination: UnsafeMutableRawPointer, from source: UInt64, byteCount: Int, device: Int)
    throws(StrataError)
  func recordEvent(_ stream: GPUStream) throws(StrataError) -> GPUEvent
  func isComplete(_ event: GPUEvent) throws(StrataError) -> Bool
  func wait(_ event: GPUEvent) throws(StrataError)
  func destroyEvent(_ event: GPUEvent)
  func synchronize(_ stream: GPUStream) throws(StrataError)
  /// A dma-buf file descriptor and offset for `address`, where the driver supports exporting one
  /// (for `ibv_reg_dmabuf_mr`); nil where it does not.
  func dmaBuf(address: UInt64, byteCount: Int) -> (fd: Int32, offset: UInt64)?
}
