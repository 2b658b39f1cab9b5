// Shared by the etcd tests: a recorder that callbacks append to and tests wait on with a deadline,
// a client for a test etcd, and unique key prefixes.

import Foundation
import StrataCore
import StrataEtcd
import StrataTestKit
import Synchronization

/// Values appended from callback threads; `wait` blocks until a predicate over them holds.
final class Recorder<Value: Sendable>: Sendable {
  private let values = Mutex<[Value]>([])
  private let changed = DispatchSemaphore(value: 0)

  func append(_ value: Value) {
    values.withLock { $0.append(value) }
    changed.signal()
  }

  var all: [Value] { values.withLock { $0 } }
  var last: Value? { values.withLock { $0.last } }

  /// Waits (woken by each append) until `predicate` holds over the values, or `seconds` pass.
  @discardableResult
  func wait(seconds: Double, until predicate: ([Value]) -> Bool) -> Bool {
    let deadline = DispatchTime.now() + seconds
    while true {
      if predicate(all) { return true }
      if changed.wait(timeout: deadline) == .timedOut { return predicate(all) }
    }
  }
}

/// A prefix no other test uses.
func uniquePrefix(_ name: String) -> String {
  "/strata-test/\(name)/\(UUID().uuidString.prefix(8))/"
}

func client(for etcd: EtcdProcess, timeoutMilliseconds: UInt64 = 2000) throws -> EtcdClient {
  EtcdClient(endpoints: [try EtcdEndpoint(parsing: etcd.clientURL)], timeoutMilliseconds: timeoutMilliseconds)
}

let etcdMissing = "etcd is not installed (scripts/bootstrap.sh installs etcd-server)"
