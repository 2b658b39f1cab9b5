// A loopback TCP relay for tests that need a connection to stay open but fall silent: it
// forwards each connection it accepts to a target, both ways, and can stop passing the target's
// bytes back on the open connections whose client has sent a given request (an etcd watch stream
// held open by a stuck proxy, say), while the other connections, and later ones, flow on.

import Foundation
public import StrataCore
import StrataTCP
import Synchronization

/// Forwards connections from `address` (127.0.0.1, a port of its own) to `target`, on two threads
/// per connection. `silence(connectionsThatSent:)` makes the matching connections open now
/// swallow what the target sends. `stop()` closes everything.
public final class TCPRelay: Sendable {
  public let address: HostPort
  private let target: HostPort
  private let listener: TCPListener
  private let state = Mutex(State())

  private struct State {
    var silenced: Set<Int> = []
    /// Each connection's client side and target side, and the first 64 KiB its client sent.
    var connections: [(client: TCPSocket, target: TCPSocket, sent: [UInt8])] = []
    var stopped = false
  }

  public init(to target: HostPort) throws(StrataError) {
    self.target = target
    listener = try TCPListener(binding: HostPort(host: "127.0.0.1", port: 0), setting: "relay")
    address = listener.address
    Thread.detachNewThread { [self] in acceptLoop() }
  }

  /// From now on, what the target sends on the open connections whose client has sent `request`
  /// (within its first 64 KiB) is read and dropped: each client sees an open connection that says
  /// nothing. Returns how many connections that silenced.
  @discardableResult
  public func silence(connectionsThatSent request: String) -> Int {
    let pattern = Array(request.utf8)
    return state.withLock { state in
      let matching = state.connections.indices.filter { state.connections[$0].sent.firstRange(of: pattern) != nil }
      state.silenced.formUnion(matching)
      return matching.count
    }
  }

  public func stop() {
    let open = state.withLock { state in
      state.stopped = true
      return state.connections
    }
    listener.shutdown()
    for connection in open {
      connection.client.shutdown()
      connection.target.shutdown()
    }
  }

  private func acceptLoop() {
    while let client = listener.accept() {
      guard let upstream = try? TCPSocket.connect(to: target, timeoutMilliseconds: 2_000) else {
        client.shutdown()
        continue
      }
      upstream.setTimeout(milliseconds: 0)
      let index = state.withLock { state -> Int? in
        guard !state.stopped else { return nil }
        state.connections.append((client, upstream, []))
        return state.connections.count - 1
      }
      guard let index else {
        client.shutdown()
        upstream.shutdown()
        return
      }
      Thread.detachNewThread { [self] in pump(from: client, to: upstream, connection: index, towardTarget: true) }
      Thread.detachNewThread { [self] in pump(from: upstream, to: client, connection: index, towardTarget: false) }
    }
  }

  /// Moves bytes one way until either side closes. Toward the target, the first 64 KiB are kept to
  /// match `silence` requests against; toward the client, nothing passes once it is silenced.
  private func pump(from source: TCPSocket, to destination: TCPSocket, connection index: Int, towardTarget: Bool) {
    var buffer = [UInt8](repeating: 0, count: 64 << 10)
    while true {
      let count = buffer.withUnsafeMutableBytes { (try? source.readSome($0)) ?? 0 }
      guard count > 0 else { break }
      let passes = state.withLock { state -> Bool in
        guard towardTarget else { return !state.silenced.contains(index) }
        let kept = state.connections[index].sent.count
        if kept < 64 << 10 { state.connections[index].sent += buffer[0..<min(count, (64 << 10) - kept)] }
        return true
      }
      guard passes else { continue }
      guard
        (try? buffer.withUnsafeBytes { try destination.writeAll(UnsafeRawBufferPointer(rebasing: $0[0..<count])) })
          != nil
      else { break }
    }
    source.shutdown()
    destination.shutdown()
  }
}
