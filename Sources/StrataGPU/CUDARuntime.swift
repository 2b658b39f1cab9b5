// The CUDA runtime (libcudart) loaded with dlopen when GPU memory is first registered, so Strata
// builds, links and runs its tests on machines without CUDA. Without it, registering GPU memory
// fails with an error that says what is missing and how to provide it.

public import StrataCore

#if canImport(Glibc)
  import Glibc
#endif

/// libcudart's entry points, resolved once.
public final class CUDARuntime: GPURuntime {
  private typealias GetDeviceCount = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
  private typealias SetDevice = @convention(c) (Int32) -> Int32
  private typealias HostAlloc = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int, UInt32) -> Int32
  private typealias FreeHost = @convention(c) (UnsafeMutableRawPointer?) -> Int32
  private typealias HostAlloc2 = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int) -> Int32
  private typealias StreamCreate = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, UInt32) -> Int32
  private typealias HandleCall = @convention(c) (UnsafeMutableRawPointer?) -> Int32
  private typealias MemcpyAsync =
    @convention(c) (
      UnsafeMutableRawPointer?, UnsafeRawPointer?, Int, Int32, UnsafeMutableRawPointer?
    ) -> Int32
  private typealias Memcpy = @convention(c) (UnsafeMutableRawPointer?, UnsafeRawPointer?, Int, Int32) -> Int32
  private typealias MemsetAsync =
    @convention(c) (UnsafeMutableRawPointer?, Int32, Int, UnsafeMutableRawPointer?) -> Int32
  private typealias EventCreate = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, UInt32) -> Int32
  private typealias EventRecord = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Int32
  private typealias ErrorString = @convention(c) (Int32) -> UnsafePointer<CChar>?
  private typealias PointerAttributes = @convention(c) (UnsafeMutableRawPointer, UnsafeRawPointer?) -> Int32
  private typealias RuntimeVersion = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
  private typealias RangeHandle = @convention(c) (UnsafeMutableRawPointer, UInt64, Int, Int32, UInt64) -> Int32

  /// Library names tried in order; `STRATA_CUDA_RUNTIME` (a path) is tried first when set.
  public static let defaultLibraries = ["libcudart.so", "libcudart.so.12", "libcudart.so.11.0"]

  public let name: String
  private let getDeviceCount: GetDeviceCount
  private let setDevice: SetDevice
  private let hostAlloc: HostAlloc
  private let freeHost: FreeHost
  private let streamCreate: StreamCreate
  private let streamDestroy: HandleCall
  private let streamSynchronize: HandleCall
  private let memcpyAsync: MemcpyAsync
  private let memcpy: Memcpy
  private let memsetAsync: MemsetAsync
  private let eventCreate: EventCreate
  private let eventRecord: EventRecord
  private let eventQuery: HandleCall
  private let eventSynchronize: HandleCall
  private let eventDestroy: HandleCall
  private let errorString: ErrorString
  private let pointerAttributes: PointerAttributes
  private let malloc: HostAlloc2
  private let free: FreeHost
  /// From the driver library (libcuda), where it has the call (CUDA 11.7 and later).
  private let rangeHandle: RangeHandle?

  private static let cudaSuccess: Int32 = 0
  private static let cudaErrorNotReady: Int32 = 600
  private static let hostToDevice: Int32 = 1
  private static let deviceToHost: Int32 = 2

  /// Loads the CUDA runtime from the first of `libraries` that opens.
  /// - Throws: `.unsupported` naming every library tried and the loader's reason.
  public static func load(libraries: [String]? = nil) throws(StrataError) -> CUDARuntime {
    var candidates = libraries ?? defaultLibraries
    if libraries == nil, let override = getenv("STRATA_CUDA_RUNTIME") {
      candidates.insert(String(cString: override), at: 0)
    }
    var reasons: [String] = []
    for library in candidates {
      guard let handle = dlopen(library, RTLD_NOW | RTLD_LOCAL) else {
        reasons.append(dlerror().map { String(cString: $0) } ?? "\(library): cannot be opened")
        continue
      }
      return try CUDARuntime(handle: handle, library: library)
    }
    throw StrataError(
      .unsupported,
      "GPU memory needs the CUDA runtime, which could not be loaded (tried \(candidates.joined(separator: ", ")): "
        + reasons.joined(separator: "; ")
        + "). Install the CUDA runtime (libcudart) where the loader finds it, or set STRATA_CUDA_RUNTIME to its path; "
        + "host memory works without it")
  }

  private init(handle: UnsafeMutableRawPointer, library: String) throws(StrataError) {
    func symbol<T>(_ symbolName: String, as: T.Type) throws(StrataError) -> T {
      guard let address = dlsym(handle, symbolName) else {
        throw StrataError(.unsupported, "\(library) has no \(symbolName): not a usable CUDA runtime")
      }
      return unsafeBitCast(address, to: T.self)
    }
    getDeviceCount = try symbol("cudaGetDeviceCount", as: GetDeviceCount.self)
    setDevice = try symbol("cudaSetDevice", as: SetDevice.self)
    hostAlloc = try symbol("cudaHostAlloc", as: HostAlloc.self)
    freeHost = try symbol("cudaFreeHost", as: FreeHost.self)
    streamCreate = try symbol("cudaStreamCreateWithFlags", as: StreamCreate.self)
    streamDestroy = try symbol("cudaStreamDestroy", as: HandleCall.self)
    streamSynchronize = try symbol("cudaStreamSynchronize", as: HandleCall.self)
    memcpyAsync = try symbol("cudaMemcpyAsync", as: MemcpyAsync.self)
    memcpy = try symbol("cudaMemcpy", as: Memcpy.self)
    memsetAsync = try symbol("cudaMemsetAsync", as: MemsetAsync.self)
    eventCreate = try symbol("cudaEventCreateWithFlags", as: EventCreate.self)
    eventRecord = try symbol("cudaEventRecord", as: EventRecord.self)
    eventQuery = try symbol("cudaEventQuery", as: HandleCall.self)
    eventSynchronize = try symbol("cudaEventSynchronize", as: HandleCall.self)
    eventDestroy = try symbol("cudaEventDestroy", as: HandleCall.self)
    errorString = try symbol("cudaGetErrorString", as: ErrorString.self)
    pointerAttributes = try symbol("cudaPointerGetAttributes", as: PointerAttributes.self)
    malloc = try symbol("cudaMalloc", as: HostAlloc2.self)
    free = try symbol("cudaFree", as: FreeHost.self)
    let version = try symbol("cudaRuntimeGetVersion", as: RuntimeVersion.self)
    var number: Int32 = 0
    _ = version(&number)
    name = "CUDA runtime \(number) (\(library))"
    rangeHandle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL).flatMap { driver in
      dlsym(driver, "cuMemGetHandleForAddressRange").map { unsafeBitCast($0, to: RangeHandle.self) }
    }
  }

  private func check(_ status: Int32, _ call: String) throws(StrataError) {
    guard status != Self.cudaSuccess else { return }
    let words = errorString(status).map { String(cString: $0) } ?? "error \(status)"
    throw StrataError(status == 2 ? .resourceExhausted : .ioError, "\(call): \(words) (cudaError \(status))")
  }

  private func pointer(_ address: UInt64) -> UnsafeMutableRawPointer? {
    UnsafeMutableRawPointer(bitPattern: UInt(address))
  }

  public func deviceCount() throws(StrataError) -> Int {
    var count: Int32 = 0
    try check(getDeviceCount(&count), "cudaGetDeviceCount")
    return Int(count)
  }

  public func checkDeviceMemory(address: UInt64, byteCount: Int, device: Int) throws(StrataError) {
    // struct cudaPointerAttributes (CUDA 11+): type (int), device (int), devicePointer, hostPointer.
    let attributes = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
    defer { attributes.deallocate() }
    attributes.initializeMemory(as: UInt8.self, repeating: 0, count: 64)
    try check(pointerAttributes(attributes, UnsafeRawPointer(pointer(address))), "cudaPointerGetAttributes")
    let type = attributes.load(as: Int32.self)
    let owner = attributes.load(fromByteOffset: 4, as: Int32.self)
    guard type == 2 || type == 3 else {
      throw StrataError(
        .invalidArgument, "0x\(String(address, radix: 16)) is not CUDA device memory (memory type \(type))")
    }
    guard Int(owner) == device else {
      throw StrataError(.invalidArgument, "0x\(String(address, radix: 16)) belongs to GPU \(owner), not GPU \(device)")
    }
  }

  public func allocatePinnedHost(byteCount: Int) throws(StrataError) -> UnsafeMutableRawPointer {
    var result: UnsafeMutableRawPointer?
    try check(hostAlloc(&result, byteCount, 0), "cudaHostAlloc of \(byteCount) bytes")
    guard let result else { throw StrataError(.resourceExhausted, "cudaHostAlloc returned no memory") }
    return result
  }

  public func freePinnedHost(_ pointer: UnsafeMutableRawPointer) { _ = freeHost(pointer) }

  /// Device memory of GPU `device` (cudaMalloc), for tests and tools; free it with `freeDeviceMemory`.
  public func allocateDeviceMemory(byteCount: Int, device: Int) throws(StrataError) -> UnsafeMutableRawPointer {
    try check(setDevice(Int32(device)), "cudaSetDevice(\(device))")
    var result: UnsafeMutableRawPointer?
    try check(malloc(&result, byteCount), "cudaMalloc of \(byteCount) bytes")
    guard let result else { throw StrataError(.resourceExhausted, "cudaMalloc returned no memory") }
    return result
  }

  public func freeDeviceMemory(_ pointer: UnsafeMutableRawPointer) { _ = free(pointer) }

  public func makeStream(device: Int) throws(StrataError) -> GPUStream {
    try check(setDevice(Int32(device)), "cudaSetDevice(\(device))")
    var stream: UnsafeMutableRawPointer?
    try check(streamCreate(&stream, 1), "cudaStreamCreateWithFlags")  // cudaStreamNonBlocking
    return GPUStream(handle: stream)
  }

  public func destroyStream(_ stream: GPUStream) { _ = streamDestroy(stream.handle) }

  public func copyToDeviceAsync(
    _ destination: UInt64, from source: UnsafeRawPointer, byteCount: Int, stream: GPUStream
  ) throws(StrataError) {
    try check(memcpyAsync(pointer(destination), source, byteCount, Self.hostToDevice, stream.handle), "cudaMemcpyAsync")
  }

  public func fillDeviceAsync(_ destination: UInt64, byte: UInt8, byteCount: Int, stream: GPUStream) throws(StrataError)
  {
    try check(memsetAsync(pointer(destination), Int32(byte), byteCount, stream.handle), "cudaMemsetAsync")
  }

  public func copyToHost(_ destination: UnsafeMutableRawPointer, from source: UInt64, byteCount: Int, device: Int)
    throws(StrataError)
  {
    try check(setDevice(Int32(device)), "cudaSetDevice(\(device))")
    try check(memcpy(destination, UnsafeRawPointer(pointer(source)), byteCount, Self.deviceToHost), "cudaMemcpy")
  }

  public func recordEvent(_ stream: GPUStream) throws(StrataError) -> GPUEvent {
    var event: UnsafeMutableRawPointer?
    try check(eventCreate(&event, 2), "cudaEventCreateWithFlags")  // cudaEventDisableTiming
    try check(eventRecord(event, stream.handle), "cudaEventRecord")
    return GPUEvent(handle: event)
  }

  public func isComplete(_ event: GPUEvent) throws(StrataError) -> Bool {
    let status = eventQuery(event.handle)
    if status == Self.cudaErrorNotReady { return false }
    try check(status, "cudaEventQuery")
    return true
  }

  public func wait(_ event: GPUEvent) throws(StrataError) {
    try check(eventSynchronize(event.handle), "cudaEventSynchronize")
  }
  public func destroyEvent(_ event: GPUEvent) { _ = eventDestroy(event.handle) }
  public func synchronize(_ stream: GPUStream) throws(StrataError) {
    try check(streamSynchronize(stream.handle), "cudaStreamSynchronize")
  }

  public func dmaBuf(address: UInt64, byteCount: Int) -> (fd: Int32, offset: UInt64)? {
    guard let rangeHandle else { return nil }
    // dma-buf exports cover whole pages: export the page-aligned range and offset into it.
    let page: UInt64 = 1 << 16
    let start = address & ~(page - 1)
    let length = Int((address - start) + UInt64(byteCount) + page - 1) / Int(page) * Int(page)
    var fd: Int32 = -1
    // 1 is CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD.
    guard rangeHandle(&fd, start, length, 1, 0) == 0, fd >= 0 else { return nil }
    return (fd, address - start)
  }
}
