// A running etcd watch: one gateway stream on a connection and a thread of its own that decodes
// its messages and hands each batch of events to the caller.

import StrataCore
import StrataHTTP
import Synchronization

/// One change seen by a watch.
public struct WatchEvent: Sendable, Hashable {
  public enum Kind: Sendable, Hashable { case put, delete }

  public var kind: Kind
  public var key: String
  /// The new value of a put; empty for a delete.
  public var value: [UInt8]
  /// The revision of this change.
  public var modRevision: Int64

  public init(kind: Kind, key: String, value: [UInt8], modRevision: Int64) {
    self.kind = kind
    self.key = key
    self.value = value
    self.modRevision = modRevision
  }
}

/// A watch started by `EtcdClient.watch`. `cancel()` closes its stream; `onEnd` is then called
/// once with nil. A batch already being delivered when `cancel()` is called still completes.
public final class EtcdWatch: Sendable {
  /// TCP keepalive on the watch's connection: a stream that died without a word (etcd's host gone,
  /// a load balancer that dropped an idle flow) fails after at most 10 + 3 × 5 = 25 s of silence.
  public static let idleProbing: (idleSeconds: Int32, intervalSeconds: Int32, probes: Int32) = (10, 5, 3)

  let connection: HTTPClientConnection
  private let prefix: String
  private let cancelled = Atomic<Bool>(false)

  init(connection: HTTPClientConnection, prefix: String) {
    self.connection = connection
    self.prefix = prefix
  }

  /// Stops the watch: its socket is shut down and its thread ends with `onEnd(nil)`.
  public func cancel() {
    cancelled.store(true, ordering: .sequentiallyConsistent)
    connection.socket.shutdown()
  }

  /// Whether `cancel()` was called.
  public var isCancelled: Bool { cancelled.load(ordering: .sequentiallyConsistent) }

  /// Reads the stream's first message, which must confirm the watch.
  func awaitCreated() throws(StrataError) {
    guard let message = try connection.nextStreamMessage() else {
      throw StrataError(.unavailable, "etcd ended the watch on '\(prefix)' before confirming it")
    }
    let response = try decode(message)
    if response.canceled == true { throw cancelFailure(response) }
    guard response.created == true else {
      throw StrataError(
        .protocolError, "etcd watch on '\(prefix)': expected a created message, got '\(GatewayJSON.printable(message))'"
      )
    }
  }

  func run(
    onEvents: @Sendable ([WatchEvent], Int64) -> Void, onEnd: @Sendable (StrataError?) -> Void
  ) {
    var ending: StrataError?
    do throws(StrataError) {
      while true {
        guard let message = try connection.nextStreamMessage() else {
          throw StrataError(.unavailable, "etcd ended the watch stream on '\(prefix)'")
        }
        let response = try decode(message)
        if response.canceled == true { throw cancelFailure(response) }
        guard let events = response.events, !events.isEmpty else { continue }  // progress notices
        let batch = try events.map { event throws(StrataError) in try Self.event(event) }
        let revision = response.header?.revision?.value ?? batch.last?.modRevision ?? 0
        if isCancelled { break }
        onEvents(batch, revision)
      }
    } catch {
      ending = error
    }
    connection.socket.shutdown()
    onEnd(isCancelled ? nil : ending)
  }

  private func decode(_ message: [UInt8]) throws(StrataError) -> WatchResponse {
    let envelope = try GatewayJSON.decode(StreamEnvelope<WatchResponse>.self, from: message, what: "watch")
    if let error = envelope.error {
      throw StrataError(error.strataCode, "etcd watch on '\(prefix)': \(error.message)")
    }
    guard let result = envelope.result else {
      throw StrataError(
        .protocolError, "etcd watch on '\(prefix)': a message without result: '\(GatewayJSON.printable(message))'")
    }
    return result
  }

  private func cancelFailure(_ response: WatchResponse) -> StrataError {
    if let compacted = response.compactRevision?.value, compacted > 0 {
      return StrataError(
        .notFound,
        "etcd watch on '\(prefix)': the start revision was compacted (oldest available \(compacted)); resync from a range"
      )
    }
    return StrataError(
      .unavailable, "etcd cancelled the watch on '\(prefix)': \(response.cancelReason ?? "no reason given")")
  }

  private static func event(_ event: WatchResponse.Event) throws(StrataError) -> WatchEvent {
    guard let kv = event.kv else { throw StrataError(.protocolError, "etcd watch: an event without kv") }
    let keyValue = try EtcdClient.keyValue(kv, "watch")
    let kind: WatchEvent.Kind
    switch event.type ?? "PUT" {
    case "PUT": kind = .put
    case "DELETE": kind = .delete
    case let other: throw StrataError(.protocolError, "etcd watch: unknown event type '\(other)'")
    }
    return WatchEvent(kind: kind, key: keyValue.key, value: keyValue.value, modRevision: keyValue.modRevision)
  }
}
