// StrataClientC: the C ABI of the client library, declared in include/strata_client.h.
// Every function validates its pointers and counts, turns the C arrays into a StrataClient call,
// runs that (async) call in a Task and waits for it on a semaphore (a C caller's thread is never
// a Swift concurrency thread), and turns a failure into its stable StrataError code number plus
// a message kept per thread for strata_last_error. No Swift error or trap crosses the boundary:
// every conversion that could trap is checked first.

import Dispatch
import StrataClient
import StrataCore
import StrataTCP
import StrataWire
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

// MARK: Handles

/// What a `strata_client *` points at: an `Unmanaged` box retaining the client, its registered
/// memory (Registration.swift) and its completion queue (Submission.swift).
final class ClientBox: Sendable {
  let client: StrataClient
  let registered = Mutex(RegisteredMemory())
  let completions: CompletionQueue

  init(_ client: StrataClient, completions: CompletionQueue) {
    self.client = client
    self.completions = completions
  }
}

func box(_ handle: OpaquePointer?) throws(StrataError) -> ClientBox {
  guard let handle else { throw StrataError(.invalidArgument, "client is NULL") }
  return Unmanaged<ClientBox>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

private func client(_ handle: OpaquePointer?) throws(StrataError) -> StrataClient { try box(handle).client }

// MARK: Last error (per thread)

/// The thread-specific slot holding this thread's last message (a malloc'ed C string, freed when
/// replaced or when the thread exits). nil only if the process ran out of thread-specific keys.
private let lastErrorKey: pthread_key_t? = {
  var key = pthread_key_t()
  guard pthread_key_create(&key, { free($0) }) == 0 else { return nil }
  return key
}()

nonisolated(unsafe) private let emptyMessage: UnsafePointer<CChar> = UnsafePointer(strdup("")!)
nonisolated(unsafe) private let noStorageMessage: UnsafePointer<CChar> = UnsafePointer(
  strdup("strata: no thread-specific storage for error messages")!)

func setLastError(_ message: String) {
  guard let key = lastErrorKey else { return }
  let old = pthread_getspecific(key)
  _ = pthread_setspecific(key, strdup(message))
  free(old)
}

/// Runs `body`; returns 0, or records the failure for strata_last_error and returns its code number.
func guarded(_ function: String, _ body: () throws(StrataError) -> Void) -> Int32 {
  do {
    try body()
    return 0
  } catch {
    setLastError("\(function): \(error)")
    return Int32(error.code.number)
  }
}

// MARK: Argument checks

func invalid(_ message: String) -> StrataError { StrataError(.invalidArgument, message) }

func required<Pointer>(_ pointer: Pointer?, _ name: String) throws(StrataError) -> Pointer {
  guard let pointer else { throw invalid("\(name) is NULL") }
  return pointer
}

/// An array argument: NULL is allowed only when `count` is 0.
func array<Pointer>(_ pointer: Pointer?, _ name: String, count: Int) throws(StrataError) -> Pointer? {
  guard count > 0 else { return pointer }
  return try required(pointer, name)
}

/// The most items one call takes: far above any batch, far below an overflowing byte count.
let itemsPerCallMax = 1 << 32

func checkCount(_ count: Int, _ name: String = "count") throws(StrataError) {
  guard (0...itemsPerCallMax).contains(count) else {
    throw invalid("\(name) \(UInt(bitPattern: count)) is not 0 to \(itemsPerCallMax)")
  }
}

func string(_ pointer: UnsafePointer<CChar>?, _ name: String) throws(StrataError) -> String {
  guard let text = String(validatingCString: try required(pointer, name)) else {
    throw invalid("\(name) is not valid UTF-8")
  }
  return text
}

func blockKeys(_ keys: UnsafePointer<UInt8>?, count: Int) throws(StrataError) -> [BlockKey] {
  try checkCount(count)
  guard let base = try array(keys, "keys", count: count) else { return [] }
  return (0..<count).map { BlockKey(copying: base + $0 * BlockKey.byteCount) }
}

/// Stands in for a NULL buffer of 0 bytes (a region needs an address).
nonisolated(unsafe) let emptyBuffer = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)

func byteCount(_ value: UInt64, _ name: String) throws(StrataError) -> Int {
  guard let count = Int(exactly: value) else { throw invalid("\(name) \(value) is too large") }
  return count
}

// MARK: Waiting for async calls

/// Runs `body` in a task and blocks this (non-Swift-concurrency) thread until it finishes.
func wait<Value: Sendable>(
  _ body: @escaping @Sendable () async throws(StrataError) -> Value
) throws(StrataError) -> Value {
  try waitForTask(body)
}

/// Lookup and delete take one batch message per call: longer key lists go in several.
func batches(_ keys: [BlockKey], _ client: StrataClient) -> [[BlockKey]] {
  let size = max(1, client.configuration.limits.itemsPerBatchMax)
  return stride(from: 0, to: keys.count, by: size).map { Array(keys[$0..<min($0 + size, keys.count)]) }
}

func mismatch(_ what: String, _ got: Int, _ expected: Int) -> StrataError {
  StrataError(.protocolError, "the node answered \(got) \(what) for \(expected) key(s)")
}

// MARK: Client

@_cdecl("strata_client_open")
public func strataClientOpen(
  _ hostPort: UnsafePointer<CChar>?, _ token: UnsafePointer<CChar>?, _ connections: Int32,
  _ timeoutMilliseconds: UInt32,
  _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
  guarded("strata_client_open") { () throws(StrataError) in
    try open(hostPort, token, connections, timeoutMilliseconds, sameHost: true, sharedMemoryBytes: 0, tls: nil, out)
  }
}

@_cdecl("strata_client_open_tls")
public func strataClientOpenTLS(
  _ hostPort: UnsafePointer<CChar>?, _ token: UnsafePointer<CChar>?, _ connections: Int32,
  _ timeoutMilliseconds: UInt32, _ caFile: UnsafePointer<CChar>?, _ certificateFile: UnsafePointer<CChar>?,
  _ keyFile: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
  guarded("strata_client_open_tls") { () throws(StrataError) in
    let files = try tlsFiles(caFile, certificateFile, keyFile, caRequired: true)
    try open(hostPort, token, connections, timeoutMilliseconds, sameHost: true, sharedMemoryBytes: 0, tls: files, out)
  }
}

@_cdecl("strata_client_open_options")
public func strataClientOpenOptions(
  _ hostPort: UnsafePointer<CChar>?, _ token: UnsafePointer<CChar>?, _ connections: Int32,
  _ timeoutMilliseconds: UInt32, _ sameHost: Int32, _ sharedMemoryBytes: UInt64,
  _ caFile: UnsafePointer<CChar>?, _ certificateFile: UnsafePointer<CChar>?, _ keyFile: UnsafePointer<CChar>?,
  _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
  guarded("strata_client_open_options") { () throws(StrataError) in
    guard sameHost == 0 || sameHost == 1 else { throw invalid("same_host \(sameHost) is not 0 or 1") }
    let files = try tlsFiles(caFile, certificateFile, keyFile, caRequired: false)
    try open(
      hostPort, token, connections, timeoutMilliseconds, sameHost: sameHost == 1,
      sharedMemoryBytes: try byteCount(sharedMemoryBytes, "shared_memory_bytes"), tls: files, out)
  }
}

/// The TLS files of strata_client_open_tls and strata_client_open_options: nil for plaintext (no
/// `ca_file`, where it is optional); a certificate goes with its key.
private func tlsFiles(
  _ caFile: UnsafePointer<CChar>?, _ certificateFile: UnsafePointer<CChar>?, _ keyFile: UnsafePointer<CChar>?,
  caRequired: Bool
) throws(StrataError) -> TLSFiles? {
  guard caFile != nil || caRequired else {
    guard certificateFile == nil, keyFile == nil else { throw invalid("cert_file and key_file need ca_file") }
    return nil
  }
  let ca = try string(caFile, "ca_file")
  let certificate = certificateFile == nil ? "" : try string(certificateFile, "cert_file")
  let key = keyFile == nil ? "" : try string(keyFile, "key_file")
  guard certificate.isEmpty == key.isEmpty else { throw invalid("cert_file and key_file go together") }
  return TLSFiles(certificate: certificate, key: key, trusted: ca)
}

@_cdecl("strata_shared_memory")
public func strataSharedMemory(
  _ handle: OpaquePointer?, _ baseOut: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
  _ lengthOut: UnsafeMutablePointer<UInt64>?
) -> Int32 {
  guarded("strata_shared_memory") { () throws(StrataError) in
    let baseOut = try required(baseOut, "base_out")
    let lengthOut = try required(lengthOut, "length_out")
    let shared = try box(handle).client.sharedMemory
    baseOut.pointee = shared?.base
    lengthOut.pointee = UInt64(shared?.count ?? 0)
  }
}

private func open(
  _ hostPort: UnsafePointer<CChar>?, _ token: UnsafePointer<CChar>?, _ connections: Int32,
  _ timeoutMilliseconds: UInt32, sameHost: Bool, sharedMemoryBytes: Int, tls: TLSFiles?,
  _ out: UnsafeMutablePointer<OpaquePointer?>?
) throws(StrataError) {
  let out = try required(out, "out")
  out.pointee = nil
  let text = try string(hostPort, "host_port")
  guard (0...1024).contains(connections) else { throw invalid("connections \(connections) is not 0 to 1024") }
  // One address: that node. Several, comma-separated: a cluster, routed through its ring.
  let addresses = try text.split(separator: ",", omittingEmptySubsequences: false).map {
    part throws(StrataError) in try HostPort(parsing: String(part))
  }
  var configuration =
    addresses.count > 1
    ? StrataClient.Configuration(seeds: addresses) : StrataClient.Configuration(node: addresses[0])
  if token != nil { configuration.token = try string(token, "token") }
  if connections > 0 { configuration.connections = Int(connections) }
  if timeoutMilliseconds > 0 { configuration.timeoutMilliseconds = UInt64(timeoutMilliseconds) }
  configuration.sameHost = sameHost
  configuration.sharedMemoryBytes = sharedMemoryBytes
  configuration.clientName = "strata-client-c"
  // TLS covers TCP connections; the same-host path (a local Unix socket) stays plaintext.
  if let tls { configuration.tls = try TLSContext.client(tls) }
  let completions = try CompletionQueue()
  let client = StrataClient(configuration)
  do throws(StrataError) {
    _ = try wait { () async throws(StrataError) in try await client.connect() }
  } catch {
    client.close()
    completions.close()
    throw error
  }
  out.pointee = OpaquePointer(Unmanaged.passRetained(ClientBox(client, completions: completions)).toOpaque())
}

@_cdecl("strata_client_close")
public func strataClientClose(_ handle: OpaquePointer?) {
  guard let handle else { return }
  let box = Unmanaged<ClientBox>.fromOpaque(UnsafeRawPointer(handle)).takeRetainedValue()
  // Submitted calls still write into the caller's memory and use the client: let them finish.
  box.completions.waitUntilIdle()
  box.completions.close()
  box.client.close()
}

@_cdecl("strata_last_error")
public func strataLastError() -> UnsafePointer<CChar> {
  guard let key = lastErrorKey else { return noStorageMessage }
  guard let message = pthread_getspecific(key) else { return emptyMessage }
  return UnsafePointer(message.assumingMemoryBound(to: CChar.self))
}

// MARK: Calls

@_cdecl("strata_lookup")
public func strataLookup(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ tiersOut: UnsafeMutablePointer<UInt8>?,
  _ leadingRunOut: UnsafeMutablePointer<Int>?
) -> Int32 {
  guarded("strata_lookup") { () throws(StrataError) in
    let call = try prepareLookup(try box(handle), keys, count, leaseMilliseconds: 0, tiersOut, nil)
    _ = try array(tiersOut, "tiers_out", count: count)
    leadingRunOut?.pointee = Int(try wait(call).leadingRun)
  }
}

@_cdecl("strata_get")
public func strataGet(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int,
  _ destinations: UnsafePointer<UnsafeMutableRawPointer?>?, _ capacities: UnsafePointer<UInt64>?,
  _ lengthsOut: UnsafeMutablePointer<Int64>?
) -> Int32 {
  get(handle, keys, count, destinations, capacities, lengthsOut, gpuDevice: nil)
}

@_cdecl("strata_get_gpu")
public func strataGetGPU(
  _ handle: OpaquePointer?, _ device: Int32, _ keys: UnsafePointer<UInt8>?, _ count: Int,
  _ destinations: UnsafePointer<UnsafeMutableRawPointer?>?, _ capacities: UnsafePointer<UInt64>?,
  _ lengthsOut: UnsafeMutablePointer<Int64>?
) -> Int32 {
  get(handle, keys, count, destinations, capacities, lengthsOut, gpuDevice: Int(device))
}

/// strata_get and strata_get_gpu: destinations in host memory, or in GPU `gpuDevice`'s memory.
private func get(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int,
  _ destinations: UnsafePointer<UnsafeMutableRawPointer?>?, _ capacities: UnsafePointer<UInt64>?,
  _ lengthsOut: UnsafeMutablePointer<Int64>?, gpuDevice: Int?
) -> Int32 {
  guarded(gpuDevice == nil ? "strata_get" : "strata_get_gpu") { () throws(StrataError) in
    let box = try box(handle)
    let client = box.client
    let keys = try blockKeys(keys, count: count)
    let destinations = try array(destinations, "destinations", count: count)
    let capacities = try array(capacities, "capacities", count: count)
    let lengthsOut = try array(lengthsOut, "lengths_out", count: count)
    guard count > 0, let destinations, let capacities, let lengthsOut else { return }
    var items: [StrataClient.GetItem] = []
    items.reserveCapacity(count)
    for index in 0..<count {
      let capacity = try byteCount(capacities[index], "capacities[\(index)]")
      guard let base = destinations[index] ?? (capacity == 0 ? emptyBuffer : nil) else {
        throw invalid("destinations[\(index)] is NULL with a capacity of \(capacity) bytes")
      }
      let destination: RegionSlice
      if let gpuDevice {
        destination = try client.registerGPU(device: gpuDevice, pointer: base, count: capacity).slice(length: capacity)
      } else {
        destination = try box.hostSlice(base, count: capacity, name: "destinations[\(index)]")
      }
      items.append(StrataClient.GetItem(key: keys[index], destination: destination))
    }
    let results = try wait { [items] () async throws(StrataError) in try await client.get(items) }
    guard results.count == count else { throw mismatch("results", results.count, count) }
    for (index, result) in results.enumerated() {
      switch result {
      case .ok(let length): lengthsOut[index] = Int64(length)
      case .missing: lengthsOut[index] = -1
      case .corrupt: lengthsOut[index] = -2
      case .destinationTooSmall: lengthsOut[index] = -3
      case .outOfRange: lengthsOut[index] = -4
      }
    }
  }
}

@_cdecl("strata_put")
public func strataPut(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ sources: UnsafePointer<UnsafeRawPointer?>?,
  _ lengths: UnsafePointer<UInt64>?, _ outcomesOut: UnsafeMutablePointer<UInt8>?
) -> Int32 {
  guarded("strata_put") { () throws(StrataError) in
    let box = try box(handle)
    try checkCount(count)
    let sources = try array(sources, "sources", count: count)
    let lengths = try array(lengths, "lengths", count: count)
    // One segment per key: strata_putv's layout, then the same call.
    let segments = UnsafeMutableBufferPointer<UInt>.allocate(capacity: 2 * count)
    let perKey = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
    defer {
      segments.deallocate()
      perKey.deallocate()
    }
    perKey.initialize(repeating: 1)
    segments.initialize(repeating: 0)
    if let sources, let lengths {
      for index in 0..<count {
        segments[2 * index] = UInt(bitPattern: sources[index])
        segments[2 * index + 1] = UInt(lengths[index])
      }
    }
    let call = try preparePut(
      box, keys, count, UnsafeRawPointer(segments.baseAddress), UnsafePointer(perKey.baseAddress), outcomesOut)
    _ = try wait(call)
  }
}

@_cdecl("strata_delete")
public func strataDelete(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ removedOut: UnsafeMutablePointer<UInt8>?
) -> Int32 {
  guarded("strata_delete") { () throws(StrataError) in
    _ = try wait(try prepareDelete(try box(handle), keys, count, removedOut))
  }
}

@_cdecl("strata_stat")
public func strataStat(
  _ handle: OpaquePointer?, _ jsonOut: UnsafeMutablePointer<CChar>?, _ capacity: Int,
  _ lengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
  guarded("strata_stat") { () throws(StrataError) in
    let client = try client(handle)
    guard capacity >= 0 else { throw invalid("capacity \(UInt(bitPattern: capacity)) is too large") }
    let jsonOut = try array(jsonOut, "json_out", count: capacity)
    let json = try wait { () async throws(StrataError) in try await client.stat() }
    let bytes = Array(json.utf8)
    lengthOut?.pointee = bytes.count
    let copied = min(bytes.count, max(0, capacity - 1))
    if let jsonOut, capacity > 0 {
      for index in 0..<copied { jsonOut[index] = CChar(bitPattern: bytes[index]) }
      jsonOut[copied] = 0
    }
    guard copied == bytes.count else {
      throw invalid("json_out holds \(capacity) bytes; the JSON needs \(bytes.count + 1) with its NUL")
    }
  }
}

// MARK: Keys

@_cdecl("strata_hash_prefix")
public func strataHashPrefix(
  _ layout: UnsafePointer<CChar>?, _ salt: UnsafePointer<UInt8>?, _ saltLength: Int, _ tokens: UnsafePointer<UInt32>?,
  _ tokenCount: Int, _ keysOut: UnsafeMutablePointer<UInt8>?, _ keysCapacity: Int,
  _ keyCountOut: UnsafeMutablePointer<Int>?
) -> Int32 {
  guarded("strata_hash_prefix") { () throws(StrataError) in
    let keyCountOut = try required(keyCountOut, "key_count_out")
    let layout = try LayoutTag(parsing: try string(layout, "layout"))
    guard (0...PrefixHasher.saltBytesMax).contains(saltLength) else {
      throw invalid("salt_len \(UInt(bitPattern: saltLength)) is above \(PrefixHasher.saltBytesMax) bytes")
    }
    try checkCount(tokenCount, "token_count")
    try checkCount(keysCapacity, "keys_capacity")
    let salt = try array(salt, "salt", count: saltLength).map {
      Array(UnsafeBufferPointer(start: $0, count: saltLength))
    }
    let tokens = try array(tokens, "tokens", count: tokenCount)
    let keysOut = try array(keysOut, "keys_out", count: keysCapacity)
    let hasher = try PrefixHasher(layout: layout, salt: salt ?? [])
    let needed = hasher.fullBlocks(tokenCount: tokenCount)
    keyCountOut.pointee = needed
    guard needed <= keysCapacity else {
      throw invalid("keys_out holds \(keysCapacity) key(s); \(tokenCount) tokens make \(needed)")
    }
    guard let tokens, let keysOut, needed > 0 else { return }
    // Only the full blocks' tokens are hashed.
    let keyed = Array(UnsafeBufferPointer(start: tokens, count: needed * Int(layout.tokensPerBlock)))
    for (index, key) in try hasher.keys(tokens: keyed).enumerated() {
      key.store(to: keysOut + index * BlockKey.byteCount)
    }
  }
}
