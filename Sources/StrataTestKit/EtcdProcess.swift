// Shared by the test targets: a real single-member etcd on loopback with ports and a data
// directory of its own, ready when it has logged that it serves clients.

import Foundation
import Synchronization

/// An etcd server process for a test. Stopped (and its data directory removed) by `stop()` or
/// when the object goes away.
public final class EtcdProcess: Sendable {
  /// The etcd executable: /usr/bin/etcd, else the first `etcd` on PATH.
  public static var executable: String? {
    var candidates = ["/usr/bin/etcd"]
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    candidates += path.split(separator: ":").map { "\($0)/etcd" }
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
  }

  /// Whether etcd is installed.
  public static var isAvailable: Bool { executable != nil }

  /// How long `init` and `restart` wait for the "ready to serve client requests" line.
  public static let readySeconds: Double = 20

  /// "http://127.0.0.1:PORT" ("https://" with TLS).
  public let clientURL: String
  /// With TLS: etcd's certificate and key, and the CA its clients' certificates must chain to
  /// (`--client-cert-auth`).
  public let tls: (certificate: String, key: String, ca: String)?
  public let clientPort: UInt16
  public let peerPort: UInt16
  public let dataDirectory: String
  /// Where etcd runs: this network namespace (on 127.0.0.1), or another one (on its address).
  public let namespace: NetworkNamespace?

  private let process = Mutex<Process?>(nil)
  private let log = LogTail()

  /// Starts etcd on 127.0.0.1 (or inside `namespace`, on its address) with free client and peer
  /// ports and a temporary data directory, and waits until it is ready to serve clients.
  public init(tls: (certificate: String, key: String, ca: String)? = nil, namespace: NetworkNamespace? = nil) throws {
    guard Self.isAvailable else { throw EtcdProcessError(message: "etcd is not installed") }
    self.tls = tls
    self.namespace = namespace
    let ports = try freeLoopbackPorts(2)
    clientPort = ports[0]
    let peer = ports[1]
    peerPort = peer
    clientURL = "\(tls == nil ? "http" : "https")://\(namespace?.address ?? "127.0.0.1"):\(clientPort)"
    dataDirectory =
      FileManager.default.temporaryDirectory
      .appendingPathComponent("strata-etcd-\(UUID().uuidString)").path
    try launch()
  }

  deinit { stop() }

  /// Everything etcd has logged lately (for failure messages).
  public var recentLog: String { log.text }

  /// SIGTERM, waits for the exit, removes the data directory.
  public func stop() {
    if let child = process.withLock({ $0.take() }), child.isRunning {
      child.terminate()
      child.waitUntilExit()
    }
    try? FileManager.default.removeItem(atPath: dataDirectory)
  }

  /// SIGKILL, as if etcd crashed; the data directory stays for `restart()`.
  public func kill() {
    guard let child = process.withLock({ $0.take() }), child.isRunning else { return }
    Foundation.kill(child.processIdentifier, SIGKILL)
    child.waitUntilExit()
  }

  /// Starts etcd again on the same ports and data directory (after `kill()` or `stop()`).
  public func restart() throws {
    kill()
    try launch()
  }

  private func launch() throws {
    guard let executable = Self.executable else { throw EtcdProcessError(message: "etcd is not installed") }
    let child = Process()
    let client = clientURL
    let peer = "http://\(namespace?.address ?? "127.0.0.1"):\(peerPort)"
    var arguments = [
      "--name", "strata-test", "--data-dir", dataDirectory,
      "--listen-client-urls", client, "--advertise-client-urls", client,
      "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
      "--initial-cluster", "strata-test=\(peer)",
    ]
    if let tls {
      arguments += [
        "--cert-file", tls.certificate, "--key-file", tls.key, "--trusted-ca-file", tls.ca, "--client-cert-auth",
      ]
    }
    // `ip netns exec` enters the namespace and then becomes etcd (same process).
    let (launched, launchArguments) = namespace?.command(executable, arguments) ?? (executable, arguments)
    child.executableURL = URL(fileURLWithPath: launched)
    child.arguments = launchArguments
    let output = Pipe()
    child.standardOutput = output
    child.standardError = output
    child.standardInput = FileHandle.nullDevice
    let ready = DispatchSemaphore(value: 0)
    try StrataTestKit.launch(child)
    process.withLock { $0 = child }
    // Drain the log for the process's whole life (a full pipe would stall etcd); signal on the
    // readiness line, or at end of output (etcd exited).
    let reader = output.fileHandleForReading
    let log = log
    let thread = Thread {
      var pending = Data()
      var signalled = false
      while true {
        let chunk = reader.availableData
        if chunk.isEmpty { break }
        pending.append(chunk)
        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
          let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
          pending.removeSubrange(pending.startIndex...newline)
          if log.append(line) && !signalled {
            signalled = true
            ready.signal()
          }
        }
      }
      if !signalled { ready.signal() }
    }
    thread.start()
    if ready.wait(timeout: .now() + Self.readySeconds) == .timedOut || !log.takeReady() {
      let log = recentLog
      kill()
      throw EtcdProcessError(message: "etcd did not become ready within \(Self.readySeconds) s; its log:\n\(log)")
    }
  }
}

/// Why an etcd test process could not be started.
public struct EtcdProcessError: Error, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}

/// The last lines etcd logged, and whether it has said it is ready since the last launch.
private final class LogTail: Sendable {
  static let linesMax = 60
  private let state = Mutex<(lines: [String], ready: Bool)>(([], false))

  /// Keeps `line`; true when it is the readiness line.
  func append(_ line: String) -> Bool {
    let ready = line.contains("ready to serve client requests")
    state.withLock { state in
      state.lines.append(line)
      if state.lines.count > Self.linesMax { state.lines.removeFirst(state.lines.count - Self.linesMax) }
      if ready { state.ready = true }
    }
    return ready
  }

  /// Whether the readiness line came, resetting it for the next launch.
  func takeReady() -> Bool {
    state.withLock { state in
      defer { state.ready = false }
      return state.ready
    }
  }

  var text: String { state.withLock { $0.lines.joined(separator: "\n") } }
}
