// A progress bar for long CLI work (verify, bench, bulk put): done/total, rate and ETA on one
// line redrawn in place. Silent when standard output is not a terminal, so scripts and pipes
// see only the results.

import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// One line of progress, redrawn at most 10 times a second. Thread-safe.
final class ProgressBar: Sendable {
  enum Unit {
    /// Rates in bytes per second (KB/s, MB/s, GB/s).
    case bytes
    /// Rates in items per second, named (blocks, files, s).
    case items(String)
  }

  private struct State {
    var done = 0
    var total = 0
    var lastDraw = 0.0
    var drawn = false
  }

  let label: String
  let enabled: Bool
  private let unitName: String?
  private let startedAt = now()
  private let state = Mutex(State())

  /// - Parameter enabled: draws only when true; by default when standard output is a terminal.
  init(_ label: String, total: Int, unit: Unit, enabled: Bool = isatty(STDOUT_FILENO) == 1) {
    self.label = label
    self.enabled = enabled
    if case .items(let name) = unit { unitName = name } else { unitName = nil }
    state.withLock { $0.total = total }
  }

  /// Sets the work done (and the total, when it became known); redraws if due.
  /// `rate` (in the bar's unit) and `secondsLeft` override what done/total over time would give,
  /// for work whose rate is measured in another unit than its progress (bench: bytes over time).
  func update(done: Int, total: Int? = nil, rate: Double? = nil, secondsLeft: Double? = nil) {
    let line = state.withLock { state -> String? in
      state.done = done
      if let total { state.total = total }
      let time = now()
      guard enabled, time - state.lastDraw >= 0.1 else { return nil }
      state.lastDraw = time
      state.drawn = true
      return render(
        done: state.done, total: state.total, elapsed: time - startedAt, rate: rate, secondsLeft: secondsLeft)
    }
    if let line { write("\r\u{1B}[K" + line) }
  }

  /// Adds to the work done.
  func advance(by count: Int) {
    let done = state.withLock { $0.done + count }
    update(done: done)
  }

  /// Clears the line (results are printed after it).
  func finish() {
    let drawn = state.withLock { $0.drawn }
    if enabled && drawn { write("\r\u{1B}[K") }
  }

  /// The line for `done` of `total` after `elapsed` seconds: a bar, the percentage, the rate and
  /// the time left. `rate` overrides done/elapsed (for a rate measured elsewhere).
  func render(done: Int, total: Int, elapsed: Double, rate: Double? = nil, secondsLeft: Double? = nil) -> String {
    let width = 30
    let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 0
    let filled = Int((fraction * Double(width)).rounded(.down))
    let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
    let perSecond = rate ?? (elapsed > 0 ? Double(done) / elapsed : 0)
    let left = secondsLeft ?? (perSecond > 0 && total > done ? Double(total - done) / perSecond : 0)
    let known = secondsLeft != nil || perSecond > 0
    let eta = total > 0 && done >= total ? "done" : (known ? "ETA \(clock(left))" : "ETA --")
    let percent = "\(Int((fraction * 100).rounded(.down)))%"
    return "\(label) [\(bar)] \(percent) \(formatRate(perSecond)) \(eta)"
  }

  private func formatRate(_ perSecond: Double) -> String {
    if let unitName { return "\(rounded(perSecond, perSecond < 10 ? 1 : 0)) \(unitName)/s" }
    return humanBytes(perSecond) + "/s"
  }

  private func write(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = Glibc.write(STDOUT_FILENO, bytes.baseAddress, bytes.count) }
  }
}

/// Seconds as 1h02m, 3m05s or 12s.
func clock(_ seconds: Double) -> String {
  let total = Int(seconds.rounded(.up))
  if total >= 3600 { return "\(total / 3600)h\(twoDigits((total % 3600) / 60))m" }
  if total >= 60 { return "\(total / 60)m\(twoDigits(total % 60))s" }
  return "\(total)s"
}

private func twoDigits(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }

/// Bytes in decimal units for rates and sizes shown to people: 1.2 GB, 350 MB, 12 KB.
func humanBytes(_ bytes: Double) -> String {
  let units: [(Double, String)] = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")]
  for (scale, name) in units where bytes >= scale {
    return "\(rounded(bytes / scale, bytes / scale < 10 ? 2 : 1)) \(name)"
  }
  return "\(Int(bytes)) B"
}

/// A count shared by concurrent workers (bytes moved so far, for a progress bar).
final class SharedCount: Sendable {
  private let count = Mutex(0)
  var value: Int { count.withLock { $0 } }
  func add(_ amount: Int) { count.withLock { $0 += amount } }
}
