// Measurement helpers shared by the microbenchmarks: a monotonic clock, timed loops, medians,
// and fixed-width table output.

#if canImport(Glibc)
  import Glibc
#endif

func now() -> Double {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// Runs `body` over and over for about `seconds`; returns bytes per second.
func throughput(bytes: Int, seconds: Double, _ body: () -> Void) -> Double {
  body()  // warm up: fault pages, fill caches
  var iterations = 0
  let start = now()
  var elapsed = 0.0
  repeat {
    body()
    iterations += 1
    elapsed = now() - start
  } while elapsed < seconds
  return Double(bytes) * Double(iterations) / elapsed
}

func median(_ values: [Double]) -> Double {
  let sorted = values.sorted()
  return sorted[sorted.count / 2]
}

func gb(_ bytesPerSecond: Double) -> String { formatted(bytesPerSecond / 1e9, 2) }

func formatted(_ value: Double, _ decimals: Int) -> String {
  if decimals == 0 { return "\(Int(value.rounded()))" }
  var scale = 1.0
  for _ in 0..<decimals { scale *= 10 }
  let rounded = (value * scale).rounded() / scale
  var text = "\(rounded)"
  if let dot = text.firstIndex(of: ".") {
    let have = text.distance(from: dot, to: text.endIndex) - 1
    if have < decimals { text += String(repeating: "0", count: decimals - have) }
  }
  return text
}

func pad(_ text: String, _ width: Int) -> String {
  text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}
