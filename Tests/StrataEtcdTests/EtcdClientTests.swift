// The etcd client against a real etcd: key-value round trips, leases that lapse, watches in order,
// and failing over from a dead endpoint.

import Foundation
import StrataCore
import StrataTestKit
import Testing

@testable import StrataEtcd

@Suite(.enabled(if: EtcdProcess.isAvailable, Comment(rawValue: etcdMissing)))
struct EtcdClientTests {
  @Test func putRangeGetDeleteRoundTrip() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let etcdClient = try client(for: etcd)
    let prefix = uniquePrefix("kv")
    let binary = (0...255).map { UInt8($0) }
    let first = try etcdClient.put(prefix + "b", value: Array("two".utf8))
    let second = try etcdClient.put(prefix + "a", value: binary)
    let third = try etcdClient.put(prefix + "c", value: [])
    try etcdClient.put(String(prefix.dropLast()) + "x", value: Array("outside".utf8))
    #expect(first < second && second < third)

    let (kvs, revision) = try etcdClient.range(prefix: prefix)
    #expect(kvs.map(\.key) == [prefix + "a", prefix + "b", prefix + "c"])
    #expect(kvs.map(\.value) == [binary, Array("two".utf8), []])
    #expect(kvs.map(\.modRevision) == [second, first, third])
    #expect(kvs.allSatisfy { $0.lease == 0 })
    #expect(revision > third)

    #expect(try etcdClient.get(prefix + "a")?.value == binary)
    #expect(try etcdClient.get(prefix + "zz") == nil)
    let deleted = try etcdClient.delete(prefix + "a")
    #expect(deleted > revision)
    #expect(try etcdClient.get(prefix + "a") == nil)
    #expect(try etcdClient.range(prefix: prefix).kvs.map(\.key) == [prefix + "b", prefix + "c"])
  }

  @Test func leaseKeepsKeyUntilItLapses() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let etcdClient = try client(for: etcd)
    let prefix = uniquePrefix("lease")
    let lease = try etcdClient.grantLease(ttlSeconds: 2)
    #expect(lease.ttlSeconds == 2)
    let putRevision = try etcdClient.put(prefix + "k", value: [1], lease: lease.id)
    #expect(try etcdClient.get(prefix + "k")?.lease == lease.id)
    let remaining = try etcdClient.keepAlive(lease: lease.id)
    #expect(remaining > 0 && remaining <= 2)

    let events = Recorder<WatchEvent>()
    let watch = try etcdClient.watch(
      prefix: prefix, startRevision: putRevision + 1, onEvents: { batch, _ in batch.forEach(events.append) },
      onEnd: { _ in })
    defer { watch.cancel() }
    let started = Date()
    let lapsed = events.wait(seconds: 10) { $0.contains { $0.kind == .delete && $0.key == prefix + "k" } }
    #expect(lapsed, "the key outlived its lease")
    #expect(Date().timeIntervalSince(started) >= 1.0, "the key went before its TTL")
    #expect(try etcdClient.get(prefix + "k") == nil)
    #expect(try etcdClient.keepAlive(lease: lease.id) == 0)
    try etcdClient.revoke(lease: lease.id)  // already gone: not an error
  }

  @Test func revokeDeletesAttachedKeys() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let etcdClient = try client(for: etcd)
    let prefix = uniquePrefix("revoke")
    let lease = try etcdClient.grantLease(ttlSeconds: 60)
    try etcdClient.put(prefix + "k", value: [1], lease: lease.id)
    try etcdClient.revoke(lease: lease.id)
    #expect(try etcdClient.get(prefix + "k") == nil)
    #expect(try etcdClient.keepAlive(lease: lease.id) == 0)
    let error = #expect(throws: StrataError.self) { try etcdClient.put(prefix + "k", value: [1], lease: lease.id) }
    #expect(error?.code == .notFound)
  }

  @Test func watchSeesPutsAndDeletesInOrder() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let etcdClient = try client(for: etcd)
    let prefix = uniquePrefix("watch")
    let start = try etcdClient.put("/elsewhere", value: [0])
    let events = Recorder<WatchEvent>()
    let headers = Recorder<Int64>()
    let ends = Recorder<String>()
    let watch = try etcdClient.watch(
      prefix: prefix, startRevision: start + 1,
      onEvents: { batch, revision in
        headers.append(revision)  // first: a test woken by the events finds the batch's header
        batch.forEach(events.append)
      },
      onEnd: { error in ends.append(error?.description ?? "nil") })
    var expected: [WatchEvent] = []
    var revision = try etcdClient.put(prefix + "a", value: [1])
    expected.append(WatchEvent(kind: .put, key: prefix + "a", value: [1], modRevision: revision))
    try etcdClient.put("/elsewhere", value: [2])
    revision = try etcdClient.put(prefix + "b", value: [2])
    expected.append(WatchEvent(kind: .put, key: prefix + "b", value: [2], modRevision: revision))
    revision = try etcdClient.delete(prefix + "a")
    expected.append(WatchEvent(kind: .delete, key: prefix + "a", value: [], modRevision: revision))
    revision = try etcdClient.put(prefix + "b", value: [3])
    expected.append(WatchEvent(kind: .put, key: prefix + "b", value: [3], modRevision: revision))

    #expect(events.wait(seconds: 10) { $0.count >= expected.count })
    #expect(events.all == expected)
    #expect(headers.last == revision)
    watch.cancel()
    #expect(ends.wait(seconds: 5) { !$0.isEmpty })
    try etcdClient.put(prefix + "c", value: [4])
    #expect(ends.all == ["nil"], "onEnd is called once, with nil after cancel")
  }

  /// A watch reads without a timeout (events may be minutes apart), so its connection has the
  /// kernel probe it while idle: a stream that died without a reset fails within seconds instead of
  /// leaving the node on its old member map. (That a dead peer then fails the read is the kernel's
  /// part; here the options are checked on the watch's socket.)
  @Test func aWatchConnectionIsProbedWhileIdle() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let watch = try client(for: etcd).watch(
      prefix: uniquePrefix("probe"), startRevision: 0, onEvents: { _, _ in }, onEnd: { _ in })
    defer { watch.cancel() }
    let descriptor = watch.connection.socket.descriptor
    func option(_ level: Int32, _ name: Int32) -> Int32 {
      var value: Int32 = -1
      var size = socklen_t(MemoryLayout<Int32>.size)
      return getsockopt(descriptor, level, name, &value, &size) == 0 ? value : -1
    }
    let expected = EtcdWatch.idleProbing
    #expect(option(SOL_SOCKET, SO_KEEPALIVE) == 1)
    #expect(option(Int32(IPPROTO_TCP), TCP_KEEPIDLE) == expected.idleSeconds)
    #expect(option(Int32(IPPROTO_TCP), TCP_KEEPINTVL) == expected.intervalSeconds)
    #expect(option(Int32(IPPROTO_TCP), TCP_KEEPCNT) == expected.probes)
  }

  /// The same, for real: etcd in a network namespace of its own, and after the watch is set up
  /// every packet toward it dropped, so the stream dies without a reset or an error. The watch
  /// ends with an error once the kernel's probes go unanswered (10 s idle, then 3 probes 5 s
  /// apart), where without them it would wait forever.
  @Test(.enabled(if: NetworkNamespace.isAvailable, "needs root and ip (iproute2) for a network namespace"))
  func aWatchWhoseStreamDiedSilentlyEnds() async throws {
    let namespace = try NetworkNamespace()
    defer { namespace.remove() }
    let etcd = try EtcdProcess(namespace: namespace)
    defer { etcd.stop() }
    let ends = Recorder<String>()
    let watch = try client(for: etcd).watch(
      prefix: uniquePrefix("silent"), startRevision: 0, onEvents: { _, _ in },
      onEnd: { error in ends.append(error?.description ?? "nil") })
    defer { watch.cancel() }
    try namespace.blackhole()
    let probing = EtcdWatch.idleProbing
    let bound = Double(probing.idleSeconds + probing.intervalSeconds * probing.probes) + 15
    let ended = await onNewThread { ends.wait(seconds: bound) { !$0.isEmpty } }
    #expect(ended, "the watch was still waiting \(bound) s after its stream went silent")
    #expect(ends.all.count == 1 && ends.all.first != "nil", "it ends with an error: \(ends.all)")
  }

  @Test func failsOverFromDeadEndpoint() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let dead = try EtcdEndpoint(parsing: "http://127.0.0.1:\(try closedPort())")
    let live = try EtcdEndpoint(parsing: etcd.clientURL)
    let etcdClient = EtcdClient(endpoints: [dead, live], timeoutMilliseconds: 1000)
    try etcdClient.put("/failover", value: [7])
    #expect(try etcdClient.get("/failover")?.value == [7])

    let alone = EtcdClient(endpoints: [dead], timeoutMilliseconds: 1000)
    let error = #expect(throws: StrataError.self) { try alone.get("/failover") }
    #expect(error?.code == .unavailable)
  }
}
