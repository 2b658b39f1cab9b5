// Byte sizes ("512MiB") and durations ("30s") as people write them in configuration and flags.

/// A number of bytes, parsed from `123`, `4KiB`, `512MiB`, `4GiB`, `1TiB` (binary) or `4KB`,
/// `4MB`, `4GB`, `1TB` (decimal). Units are case-sensitive: `b` and `Mb` (bits) are rejected.
public struct ByteSize: Hashable, Comparable, Sendable, CustomStringConvertible {
  public var bytes: UInt64

  public init(bytes: UInt64) { self.bytes = bytes }

  public static func kibibytes(_ n: UInt64) -> ByteSize { ByteSize(bytes: n << 10) }
  public static func mebibytes(_ n: UInt64) -> ByteSize { ByteSize(bytes: n << 20) }
  public static func gibibytes(_ n: UInt64) -> ByteSize { ByteSize(bytes: n << 30) }

  static let units: [(String, UInt64)] = [
    ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000), ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000), ("B", 1),
  ]

  /// Parses `text`; the error message says what was wrong but names no field (callers add it).
  public init(parsing text: String) throws(StrataError) {
    let trimmed = text.trimmingWhitespace()
    let digits = trimmed.prefix(while: { $0.isASCII && $0.isNumber })
    let unit = String(trimmed.dropFirst(digits.count)).trimmingWhitespace()
    guard !digits.isEmpty, let number = UInt64(digits) else {
      throw StrataError(
        .invalidArgument, "'\(text)' is not a size (expected a whole number and a unit, like 512MiB or 4GiB)")
    }
    let multiplier: UInt64
    if unit.isEmpty {
      multiplier = 1
    } else if let known = ByteSize.units.first(where: { $0.0 == unit }) {
      multiplier = known.1
    } else {
      throw StrataError(
        .invalidArgument, "'\(text)' has unknown unit '\(unit)' (known: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")
    }
    let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
    guard !overflow else { throw StrataError(.invalidArgument, "'\(text)' is too large") }
    bytes = product
  }

  /// The largest binary unit that divides exactly, e.g. `512MiB`, `1536KiB`, `100B`.
  public var description: String {
    for (unit, multiplier) in ByteSize.units.prefix(4) where bytes >= multiplier && bytes % multiplier == 0 {
      return "\(bytes / multiplier)\(unit)"
    }
    return "\(bytes)B"
  }

  public static func < (lhs: ByteSize, rhs: ByteSize) -> Bool { lhs.bytes < rhs.bytes }
}

/// A span of time parsed from `250ms`, `30s`, `5m`, `1h`; stored in milliseconds.
public struct DurationSetting: Hashable, Comparable, Sendable, CustomStringConvertible {
  public var milliseconds: UInt64

  public init(milliseconds: UInt64) { self.milliseconds = milliseconds }

  public init(parsing text: String) throws(StrataError) {
    let trimmed = text.trimmingWhitespace()
    let digits = trimmed.prefix(while: { $0.isASCII && $0.isNumber })
    let unit = String(trimmed.dropFirst(digits.count)).trimmingWhitespace()
    let multipliers: [String: UInt64] = ["ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000]
    guard !digits.isEmpty, let number = UInt64(digits) else {
      throw StrataError(
        .invalidArgument, "'\(text)' is not a duration (expected a whole number and a unit, like 30s or 250ms)")
    }
    guard let multiplier = multipliers[unit] else {
      throw StrataError(.invalidArgument, "'\(text)' has unknown or missing unit '\(unit)' (known: ms, s, m, h)")
    }
    let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
    guard !overflow else { throw StrataError(.invalidArgument, "'\(text)' is too long") }
    milliseconds = product
  }

  public var description: String {
    for (unit, multiplier) in [("h", UInt64(3_600_000)), ("m", 60_000), ("s", 1000)]
    where milliseconds >= multiplier && milliseconds % multiplier == 0 {
      return "\(milliseconds / multiplier)\(unit)"
    }
    return "\(milliseconds)ms"
  }

  public static func < (lhs: DurationSetting, rhs: DurationSetting) -> Bool { lhs.milliseconds < rhs.milliseconds }
}

extension Duration {
  /// The duration in seconds, for logs, reports and metrics.
  public var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }

  /// The duration in whole nanoseconds, truncated toward zero and held at `Int64`'s ends beyond them
  /// (about 292 years either way), for the APIs that count time in nanoseconds.
  public var inNanoseconds: Int64 {
    let (seconds, attoseconds) = components
    let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    guard !overflow else { return seconds < 0 ? .min : .max }
    let (sum, sumOverflow) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
    return sumOverflow ? (seconds < 0 ? .min : .max) : sum
  }
}
