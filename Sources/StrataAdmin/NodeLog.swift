// The node's log on standard error: swift-log's text lines, or one JSON object a line for log
// collectors, at a level a config reload can change while the node runs. swift-log ships no JSON
// handler and the mirrored packages hold none, so this one is written here: a pure line
// formatter (tested field by field) and a handler around it.

public import Logging
public import StrataConfig
import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// The level every node logger follows; `set` moves them all at once (config reload).
public final class NodeLogLevel: Sendable {
  private let index: Atomic<Int>

  public init(_ level: LogLevel) { index = Atomic(Self.position(level)) }

  public var current: Logger.Level { Logger.Level.allCases[index.load(ordering: .relaxed)] }

  public func set(_ level: LogLevel) { index.store(Self.position(level), ordering: .relaxed) }

  private static func position(_ level: LogLevel) -> Int {
    // The configuration's levels are swift-log's, by name.
    Logger.Level.allCases.firstIndex { $0.rawValue == level.rawValue } ?? 2
  }
}

/// A node's log handler: every logger made after `LoggingSystem.bootstrap(NodeLogHandler.factory(...))`
/// writes in `format` at the shared level (a logger whose level is set explicitly keeps its own).
public struct NodeLogHandler: LogHandler {
  private let label: String
  private let level: NodeLogLevel
  private var ownLevel: Logger.Level?
  /// Text: swift-log's own handler writes the line, as before this handler existed.
  private var text: StreamLogHandler?
  public var metadataProvider: Logger.MetadataProvider?
  public var metadata = Logger.Metadata() {
    didSet { text?.metadata = metadata }
  }

  public init(label: String, format: LogFormat, level: NodeLogLevel) {
    self.label = label
    self.level = level
    metadataProvider = LoggingSystem.metadataProvider
    if format == .text { text = StreamLogHandler.standardError(label: label) }
  }

  /// The factory to bootstrap the logging system with.
  public static func factory(format: LogFormat, level: NodeLogLevel) -> @Sendable (String) -> any LogHandler {
    { label in NodeLogHandler(label: label, format: format, level: level) }
  }

  public var logLevel: Logger.Level {
    get { ownLevel ?? level.current }
    set { ownLevel = newValue }
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    if let text { return text.log(event: event) }
    var merged = metadata
    if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
    if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var line = NodeLogLine.json(
      seconds: Int(now.tv_sec), nanoseconds: Int(now.tv_nsec), level: event.level, label: label,
      message: "\(event.message)", metadata: merged, source: event.source, error: event.error.map { "\($0)" })
    line += "\n"
    NodeLogLine.write(line)
  }
}

/// The JSON form of one log line.
public enum NodeLogLine {
  /// Fields every line has; metadata keys that would take their place are written as
  /// `metadata.KEY`.
  public static let reservedKeys: Set<String> = ["time", "level", "logger", "message", "source", "error"]

  /// One JSON object (no newline): `time` (UTC, RFC 3339 with milliseconds), `level`, `logger`
  /// (the label), `message`, `source` (the module), `error` when the call gave one, and every
  /// metadata item as a field of its own (strings, lists and objects as they are).
  public static func json(
    seconds: Int, nanoseconds: Int, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata,
    source: String, error: String? = nil
  ) -> String {
    var fields: [String: JSONValue] = [:]
    for (key, value) in metadata { fields[reservedKeys.contains(key) ? "metadata.\(key)" : key] = json(value) }
    fields["time"] = .string(timestamp(seconds: seconds, nanoseconds: nanoseconds))
    fields["level"] = .string(level.rawValue)
    fields["logger"] = .string(label)
    fields["message"] = .string(message)
    fields["source"] = .string(source)
    if let error { fields["error"] = .string(error) }
    // Strings, lists and objects always encode.
    return (try? JSONCoding.text(JSONValue.object(fields))) ?? #"{"message":"unencodable log line"}"#
  }

  /// `2026-12-07T01:50:00.123Z`.
  public static func timestamp(seconds: Int, nanoseconds: Int) -> String {
    var time = time_t(seconds)
    var parts = tm()
    gmtime_r(&time, &parts)
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    let milliseconds = nanoseconds / 1_000_000
    let fraction = String(repeating: "0", count: 3 - "\(milliseconds)".count) + "\(milliseconds)"
    return
      "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(fraction)Z"
  }

  private static func json(_ value: Logger.Metadata.Value) -> JSONValue {
    switch value {
    case .string(let text): .string(text)
    case .stringConvertible(let convertible): .string(convertible.description)
    case .array(let items): .array(items.map(json))
    case .dictionary(let items): .object(items.mapValues(json))
    }
  }

  private static let writing = Mutex(())

  /// Writes `line` to standard error whole: lines of concurrent loggers never interleave.
  static func write(_ line: String) {
    writing.withLock { _ in
      var bytes = Array(line.utf8)
      var offset = 0
      while offset < bytes.count {
        let written = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + offset, $0.count - offset) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return }
        offset += written
      }
    }
  }
}
