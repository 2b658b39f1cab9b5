// Reading Prometheus expositions in tests.

/// The value of the first sample of `name` in a Prometheus exposition whose labels contain
/// `label` (any sample of the name, when nil); nil when there is none. `name` may carry its
/// labels as the node prints them (`strata_evictions_total{tier="ram",reason="clean"}`).
public func sample(_ exposition: String, _ name: String, _ label: String? = nil) -> Double? {
  for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
    guard line.hasPrefix(name + " ") || line.hasPrefix(name + "{") else { continue }
    if let label, !line.contains(label) { continue }
    return line.split(separator: " ").last.flatMap { Double($0) }
  }
  return nil
}
