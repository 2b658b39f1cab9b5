// LayoutTag: what makes two blocks of KV data interchangeable (model, dtype, block size, TP, layers).

/// The layout of a block's KV data. Keys are rooted in it, so blocks of incompatible layouts never
/// share a key. The canonical byte encoding is specified in docs/keys.md.
public struct LayoutTag: Hashable, Sendable, CustomStringConvertible {
  public static let encodingVersion: UInt8 = 1
  public static let tokensPerBlockMax: UInt32 = 1 << 20

  public var modelId: String
  public var dtype: String
  public var tokensPerBlock: UInt32
  public var tensorParallelRank: UInt16
  public var tensorParallelSize: UInt16
  /// The first layer held, inclusive.
  public var layerStart: UInt16
  /// One past the last layer held.
  public var layerEnd: UInt16

  /// A validated layout; throws `invalidArgument` naming the offending field.
  public init(
    modelId: String, dtype: String, tokensPerBlock: UInt32, tensorParallelRank: UInt16 = 0,
    tensorParallelSize: UInt16 = 1, layerStart: UInt16, layerEnd: UInt16
  ) throws(StrataError) {
    self.modelId = modelId
    self.dtype = dtype
    self.tokensPerBlock = tokensPerBlock
    self.tensorParallelRank = tensorParallelRank
    self.tensorParallelSize = tensorParallelSize
    self.layerStart = layerStart
    self.layerEnd = layerEnd
    try validate()
  }

  private func validate() throws(StrataError) {
    func fail(_ field: String, _ reason: String) -> StrataError {
      StrataError(.invalidArgument, "layout.\(field): \(reason)")
    }
    let modelBytes = modelId.utf8.count
    guard (1...255).contains(modelBytes) else {
      throw fail("model", "must be 1 to 255 bytes of UTF-8, got \(modelBytes)")
    }
    guard (1...32).contains(dtype.utf8.count),
      dtype.utf8.allSatisfy({ byte in
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
          || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "_")
      })
    else {
      throw fail("dtype", "must be 1 to 32 characters of a-z, 0-9 and '_' (like bf16), got '\(dtype)'")
    }
    guard (1...LayoutTag.tokensPerBlockMax).contains(tokensPerBlock) else {
      throw fail("block", "tokens per block must be 1 to \(LayoutTag.tokensPerBlockMax), got \(tokensPerBlock)")
    }
    guard tensorParallelSize >= 1, tensorParallelRank < tensorParallelSize else {
      throw fail("tp", "rank must be below size (rank/size), got \(tensorParallelRank)/\(tensorParallelSize)")
    }
    guard layerStart < layerEnd else {
      throw fail("layers", "start must be below end (end is exclusive), got \(layerStart)-\(layerEnd)")
    }
  }

  /// The canonical encoding (docs/keys.md): the bytes the root key is hashed over.
  public var canonicalBytes: [UInt8] {
    var out: [UInt8] = [LayoutTag.encodingVersion]
    out.append(UInt8(modelId.utf8.count))
    out.append(contentsOf: modelId.utf8)
    out.append(UInt8(dtype.utf8.count))
    out.append(contentsOf: dtype.utf8)
    out.appendLittleEndian(tokensPerBlock)
    out.appendLittleEndian(tensorParallelRank)
    out.appendLittleEndian(tensorParallelSize)
    out.appendLittleEndian(layerStart)
    out.appendLittleEndian(layerEnd)
    return out
  }

  /// The command-line form, `model=NAME,dtype=bf16,block=16,tp=0/1,layers=0-32`.
  public var description: String {
    "model=\(modelId),dtype=\(dtype),block=\(tokensPerBlock),tp=\(tensorParallelRank)/\(tensorParallelSize),layers=\(layerStart)-\(layerEnd)"
  }

  /// Parses the command-line form. `tp` defaults to 0/1; every other field is required.
  /// A model id may not contain ',' in this form.
  public init(parsing text: String) throws(StrataError) {
    var fields: [String: String] = [:]
    for part in text.split(separator: ",", omittingEmptySubsequences: false) {
      guard let equals = part.firstIndex(of: "=") else {
        throw StrataError(.invalidArgument, "layout: '\(part)' is not NAME=VALUE (expected \(LayoutTag.example))")
      }
      let name = String(part[..<equals]).trimmingWhitespace()
      let value = String(part[part.index(after: equals)...]).trimmingWhitespace()
      guard ["model", "dtype", "block", "tp", "layers"].contains(name) else {
        throw StrataError(.invalidArgument, "layout.\(name): unknown field (known: model, dtype, block, tp, layers)")
      }
      guard fields[name] == nil else { throw StrataError(.invalidArgument, "layout.\(name): given twice") }
      fields[name] = value
    }
    func required(_ name: String) throws(StrataError) -> String {
      guard let value = fields[name] else {
        throw StrataError(.invalidArgument, "layout.\(name): missing (expected \(LayoutTag.example))")
      }
      return value
    }
    func pair(_ name: String, _ text: String, _ separator: Character) throws(StrataError) -> (UInt16, UInt16) {
      let parts = text.split(separator: separator, omittingEmptySubsequences: false)
      guard parts.count == 2, let first = UInt16(parts[0]), let second = UInt16(parts[1]) else {
        throw StrataError(
          .invalidArgument, "layout.\(name): expected two numbers 0-65535 as A\(separator)B, got '\(text)'")
      }
      return (first, second)
    }
    let blockText = try required("block")
    guard let tokensPerBlock = UInt32(blockText) else {
      throw StrataError(.invalidArgument, "layout.block: expected a number of tokens, got '\(blockText)'")
    }
    let (rank, size) = try fields["tp"].map { text throws(StrataError) in try pair("tp", text, "/") } ?? (0, 1)
    let (start, end) = try pair("layers", try required("layers"), "-")
    try self.init(
      modelId: try required("model"), dtype: try required("dtype"), tokensPerBlock: tokensPerBlock,
      tensorParallelRank: rank, tensorParallelSize: size, layerStart: start, layerEnd: end)
  }

  public static let example = "model=NAME,dtype=bf16,block=16,tp=0/1,layers=0-32"
}

extension [UInt8] {
  mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
    Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
  }
}

extension String {
  func trimmingWhitespace() -> String {
    let scalars = unicodeScalars
    guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
      let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
    else { return "" }
    return String(scalars[first...last])
  }
}
