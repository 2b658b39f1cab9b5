// Membership sessions against a real etcd: members see each other, a member that stops without
// deregistering lapses with its lease, and a session rides out etcd being killed and restarted.

import Foundation
import Logging
import StrataCore
import StrataEtcd
import StrataTestKit
import Testing

/// A session and what its callbacks reported.
final class RecordedSession: Sendable {
  let session: EtcdSession
  let maps = Recorder<[String: [UInt8]]>()
  let states = Recorder<EtcdSession.State>()

  init(
    _ client: EtcdClient, prefix: String, id: String, value: String, ttlSeconds: Int64 = 2,
    relistIntervalMilliseconds: UInt64 = 60_000
  ) {
    let logger = Logger.quiet("etcd-session-test")
    let maps = maps
    let states = states
    session = EtcdSession(
      client: client, prefix: prefix, memberID: id, value: Array(value.utf8), ttlSeconds: ttlSeconds,
      logger: logger, relistIntervalMilliseconds: relistIntervalMilliseconds,
      onMembers: { members, _, _ in maps.append(members) }, onState: { states.append($0) })
  }

  /// Waits until the last reported map has exactly `expected` (member -> value as text).
  func waitForMembers(_ expected: [String: String], seconds: Double = 10) -> Bool {
    maps.wait(seconds: seconds) { $0.last?.mapValues { String(decoding: $0, as: UTF8.self) } == expected }
  }
}

@Suite(.enabled(if: EtcdProcess.isAvailable, Comment(rawValue: etcdMissing)))
struct EtcdSessionTests {
  @Test func twoSessionsSeeEachOtherUpdatesAndDeregistration() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let etcdClient = try client(for: etcd)
    let prefix = uniquePrefix("members")
    let a = RecordedSession(etcdClient, prefix: prefix, id: "a", value: "alpha")
    let b = RecordedSession(etcdClient, prefix: prefix, id: "b", value: "beta")
    a.session.start()
    b.session.start()
    defer {
      a.session.stop(deregister: true)
      b.session.stop(deregister: true)
    }
    #expect(a.waitForMembers(["a": "alpha", "b": "beta"]))
    #expect(b.waitForMembers(["a": "alpha", "b": "beta"]))
    #expect(a.states.wait(seconds: 10) { $0.last == .connected })
    #expect(a.states.all == [.connecting, .connected])

    b.session.update(value: Array("draining".utf8))
    #expect(a.waitForMembers(["a": "alpha", "b": "draining"]))
    #expect(a.session.lastRevision == (try etcdClient.get(prefix + "b"))?.modRevision)

    b.session.stop(deregister: true)
    #expect(b.session.state == .stopped)
    #expect(try etcdClient.get(prefix + "b") == nil, "a deregistered member's key is deleted at once")
    #expect(a.waitForMembers(["a": "alpha"]))
  }

  /// A watch stream that stays open but stops delivering (here a relay swallows what etcd sends
  /// on it) is caught by the periodic relist: a member that joins afterwards is seen within a
  /// relist interval, and the resync is counted. Without the relist the map never changes.
  @Test func aWatchThatFallsSilentIsCaughtByTheRelist() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let direct = try client(for: etcd)
    let relay = try TCPRelay(to: try HostPort(parsing: String(etcd.clientURL.dropFirst("http://".count))))
    defer { relay.stop() }
    let relayed = EtcdClient(endpoints: [try EtcdEndpoint(parsing: "http://\(relay.address)")])
    let prefix = uniquePrefix("silent")
    let a = RecordedSession(
      relayed, prefix: prefix, id: "a", value: "alpha", ttlSeconds: 10, relistIntervalMilliseconds: 1_000)
    a.session.start()
    defer { a.session.stop(deregister: true) }
    #expect(a.waitForMembers(["a": "alpha"]))
    #expect(a.states.wait(seconds: 10) { $0.last == .connected })
    #expect(relay.silence(connectionsThatSent: "POST /v3/watch ") == 1)
    _ = try direct.put(prefix + "b", value: Array("beta".utf8))
    #expect(
      a.waitForMembers(["a": "alpha", "b": "beta"]), "the silent watch's map: \(String(describing: a.maps.all.last))")
    #expect(a.session.watchResyncs == 1 && a.states.all == [.connecting, .connected], "\(a.states.all)")
    // The new watch delivers: the next change comes through it (a relist finding it first would
    // count a second resync).
    _ = try direct.put(prefix + "c", value: Array("gamma".utf8))
    #expect(a.waitForMembers(["a": "alpha", "b": "beta", "c": "gamma"]))
    #expect(a.session.watchResyncs == 1)
  }

  @Test func memberStoppedWithoutDeregisteringLapsesWithinTTL() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let etcdClient = try client(for: etcd)
    let prefix = uniquePrefix("lapse")
    let a = RecordedSession(etcdClient, prefix: prefix, id: "a", value: "alpha")
    let b = RecordedSession(etcdClient, prefix: prefix, id: "b", value: "beta", ttlSeconds: 2)
    a.session.start()
    b.session.start()
    defer { a.session.stop(deregister: true) }
    #expect(a.waitForMembers(["a": "alpha", "b": "beta"]))

    b.session.stop(deregister: false)
    let stopped = Date()
    #expect(try etcdClient.get(prefix + "b") != nil, "stopping without deregistering leaves the key to its lease")
    #expect(a.waitForMembers(["a": "alpha"], seconds: 10))
    let gone = Date().timeIntervalSince(stopped)
    // The lease was last refreshed up to ttl/3 before the stop; etcd checks expiry every 500 ms.
    #expect(gone >= 1.0 && gone < 3.5, "member lapsed after \(gone) s with a 2 s TTL")
  }

  @Test func revokedLeaseIsReplacedAndKeyReRegistered() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let etcdClient = try client(for: etcd)
    let prefix = uniquePrefix("revoked")
    let a = RecordedSession(etcdClient, prefix: prefix, id: "a", value: "alpha", ttlSeconds: 5)
    a.session.start()
    defer { a.session.stop(deregister: true) }
    #expect(a.waitForMembers(["a": "alpha"]))
    let firstLease = try #require(try etcdClient.get(prefix + "a")).lease
    try etcdClient.revoke(lease: firstLease)
    // The watch sees the delete; the session finds its lease gone and registers with a new one.
    #expect(a.maps.wait(seconds: 10) { $0.contains { $0.isEmpty } })
    #expect(a.waitForMembers(["a": "alpha"]))
    let secondLease = try #require(try etcdClient.get(prefix + "a")).lease
    #expect(secondLease != firstLease && secondLease != 0)
  }

  @Test func ridesOutEtcdKilledAndRestarted() throws {
    let etcd = try EtcdProcess()
    defer { etcd.stop() }
    let etcdClient = try client(for: etcd, timeoutMilliseconds: 500)
    let prefix = uniquePrefix("outage")
    let a = RecordedSession(etcdClient, prefix: prefix, id: "a", value: "alpha", ttlSeconds: 3)
    let b = RecordedSession(etcdClient, prefix: prefix, id: "b", value: "beta", ttlSeconds: 3)
    a.session.start()
    b.session.start()
    defer {
      a.session.stop(deregister: false)
      b.session.stop(deregister: false)
    }
    #expect(a.waitForMembers(["a": "alpha", "b": "beta"]))
    let mapsBefore = a.maps.all.count

    etcd.kill()
    let down = a.states.wait(seconds: 10) {
      if case .disconnected = $0.last { return true } else { return false }
    }
    #expect(down, "states: \(a.states.all)")
    #expect(a.session.members.keys.sorted() == ["a", "b"], "the last map is kept while etcd is down")
    #expect(a.maps.all.count == mapsBefore, "no map is reported while etcd is down")

    b.session.update(value: Array("beta-2".utf8))  // made while etcd is down: put on return
    try etcd.restart()
    #expect(a.states.wait(seconds: 10) { $0.last == .connected })
    #expect(a.waitForMembers(["a": "alpha", "b": "beta-2"]))
    let key = try #require(try etcdClient.get(prefix + "a"))
    #expect(key.lease != 0)
    #expect(try etcdClient.keepAlive(lease: key.lease) > 0)
  }
}
