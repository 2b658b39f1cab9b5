// SHA-256 through OpenSSL's EVP interface, which uses the CPU's SHA extensions where present.

import COpenSSL

/// The algorithm, fetched once: an implicit fetch on every digest costs more than hashing a block.
nonisolated(unsafe) private let sha256Algorithm: OpaquePointer = {
  guard let algorithm = EVP_MD_fetch(nil, "SHA256", nil) else {
    preconditionFailure("OpenSSL has no SHA256 implementation; the crypto library is broken")
  }
  return algorithm
}()

/// An incremental SHA-256. Not thread-safe: one per task; reusable after `finalize`.
public final class SHA256 {
  private let context: OpaquePointer

  public init() {
    guard let context = EVP_MD_CTX_new() else {
      preconditionFailure("EVP_MD_CTX_new failed: out of memory")
    }
    self.context = context
    reset()
  }

  deinit { EVP_MD_CTX_free(context) }

  /// Starts a new digest, discarding anything absorbed so far.
  public func reset() {
    guard EVP_DigestInit_ex(context, sha256Algorithm, nil) == 1 else {
      preconditionFailure("EVP_DigestInit_ex(SHA256) failed")
    }
  }

  public func update(_ bytes: UnsafeRawBufferPointer) {
    guard bytes.count > 0 else { return }
    guard EVP_DigestUpdate(context, bytes.baseAddress, bytes.count) == 1 else {
      preconditionFailure("EVP_DigestUpdate failed")
    }
  }

  public func update(_ bytes: [UInt8]) {
    bytes.withUnsafeBytes { update($0) }
  }

  public func update(_ key: BlockKey) {
    withUnsafeTemporaryAllocation(byteCount: BlockKey.byteCount, alignment: 8) { buffer in
      key.store(to: buffer.baseAddress!)
      update(UnsafeRawBufferPointer(buffer))
    }
  }

  /// The digest of everything absorbed since the last reset; the hasher is reset afterwards.
  public func finalize() -> BlockKey {
    withUnsafeTemporaryAllocation(byteCount: 64, alignment: 8) { buffer in
      var length: UInt32 = 0
      guard EVP_DigestFinal_ex(context, buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), &length) == 1,
        length == 32
      else { preconditionFailure("EVP_DigestFinal_ex failed") }
      let key = BlockKey(copying: buffer.baseAddress!)
      reset()
      return key
    }
  }

  /// SHA-256 of `bytes` in one call.
  public static func digest(_ bytes: UnsafeRawBufferPointer) -> BlockKey {
    let hasher = SHA256()
    hasher.update(bytes)
    return hasher.finalize()
  }

  public static func digest(_ bytes: [UInt8]) -> BlockKey {
    bytes.withUnsafeBytes { digest($0) }
  }
}
