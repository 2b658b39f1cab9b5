// What the deployment tests (DashboardTests, DeployFilesTests) share: a child process whose
// output is watched for a line, etcd on loopback, free ports, a plain HTTP GET, the deploy/ files.

import Foundation
import StrataCore
import StrataTCP
import StrataTestKit
import Testing

/// Namespace for the deployment tests' helpers (kept apart from other test files' names).
enum DeployFixtures {
  /// The `deploy/` folder of this checkout.
  static let deployFolder = packageRoot.appendingPathComponent("deploy")

  /// Every file under `deploy/` whose name ends with one of `extensions`, sorted, as paths.
  static func files(under folder: URL = deployFolder, extensions: Set<String>) -> [String] {
    guard let enumerator = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: nil) else {
      return []
    }
    var paths: [String] = []
    for case let url as URL in enumerator where extensions.contains(url.pathExtension) {
      paths.append(url.path)
    }
    return paths.sorted()
  }

  /// A fresh temporary folder.
  static func temporaryFolder(_ prefix: String) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
  }

  /// An executable found on PATH, or nil.
  static func onPath(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for folder in path.split(separator: ":") {
      let candidate = "\(folder)/\(name)"
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
  }

  /// A child process whose standard output and error are collected into one text; a test waits
  /// until that text shows a line it expects (signalled by the reader thread, no polling).
  final class WatchedProcess: @unchecked Sendable {
    // @unchecked: `text` and `exited` are only touched while holding `condition`.
    let process = Process()
    private let condition = NSCondition()
    private var text = ""
    private var exited = false
    let name: String

    init(name: String, executable: String, arguments: [String]) throws {
      self.name = name
      process.executableURL = URL(fileURLWithPath: executable)
      process.arguments = arguments
      let pipe = Pipe()
      process.standardOutput = pipe
      process.standardError = pipe
      process.standardInput = FileHandle.nullDevice
      try launch(process)
      let handle = pipe.fileHandleForReading
      Thread.detachNewThread { [self] in
        while true {
          let data = handle.availableData
          condition.lock()
          if data.isEmpty {
            exited = true
          } else {
            text += String(decoding: data, as: UTF8.self)
          }
          condition.broadcast()
          condition.unlock()
          if data.isEmpty { return }
        }
      }
    }

    /// Everything the process printed so far.
    var output: String {
      condition.lock()
      defer { condition.unlock() }
      return text
    }

    /// Waits until the output satisfies `found` (returning its value), the process closes its
    /// output, or `seconds` pass; throws with the output in the last two cases.
    func waitFor<T>(_ what: String, seconds: Double = 60, _ found: (String) -> T?) throws -> T {
      let deadline = Date(timeIntervalSinceNow: seconds)
      condition.lock()
      defer { condition.unlock() }
      while true {
        if let value = found(text) { return value }
        if exited {
          throw StrataError(.unavailable, "\(name) ended before \(what); it printed:\n\(text)")
        }
        if !condition.wait(until: deadline) {
          throw StrataError(.timeout, "\(name) did not show \(what) within \(Int(seconds)) s; it printed:\n\(text)")
        }
      }
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    @discardableResult func stop() -> Int32 {
      if process.isRunning { kill(process.processIdentifier, SIGTERM) }
      process.waitUntilExit()
      return process.terminationStatus
    }
  }

  /// A single-member etcd on free loopback ports in a temporary folder.
  final class Etcd {
    let process: WatchedProcess
    let clientURL: String
    let folder: String

    init() throws {
      let executable = try #require(
        DeployFixtures.onPath("etcd"), "etcd is not on PATH (scripts/bootstrap.sh installs etcd-server)")
      folder = try DeployFixtures.temporaryFolder("strata-etcd")
      clientURL = "http://127.0.0.1:\(try freeLoopbackPort())"
      let peerURL = "http://127.0.0.1:\(try freeLoopbackPort())"
      process = try WatchedProcess(
        name: "etcd", executable: executable,
        arguments: [
          "--name", "strata-test", "--data-dir", folder + "/data", "--listen-client-urls", clientURL,
          "--advertise-client-urls", clientURL, "--listen-peer-urls", peerURL,
          "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "strata-test=\(peerURL)",
        ])
      _ = try process.waitFor("'ready to serve client requests'", seconds: 60) {
        $0.contains("ready to serve client requests") ? true : nil
      }
    }

    func stop() {
      process.stop()
      try? FileManager.default.removeItem(atPath: folder)
    }
  }

  /// `strata serve --config FILE` (RAM unlocked), returned once it printed its data-plane address.
  static func startNode(config: String) throws -> (WatchedProcess, HostPort) {
    let node = try WatchedProcess(
      name: "strata serve", executable: strataExecutable, arguments: ["serve", "--config", config, "--ram-unlocked"])
    do {
      let address = try node.waitFor("its 'listening on' line") { text -> HostPort? in
        for line in text.split(separator: "\n") where line.contains(" listening on ") {
          if let last = line.split(separator: " ").last, let address = try? HostPort(parsing: String(last)) {
            return address
          }
        }
        return nil
      }
      return (node, address)
    } catch {
      node.stop()
      throw error
    }
  }

  /// A plain HTTP/1.0 GET; returns the status code and the body (chunked bodies are decoded).
  static func httpGet(_ address: HostPort, _ path: String) throws -> (status: Int, body: String) {
    let socket = try TCPSocket.connect(to: address, timeoutMilliseconds: 10_000)
    socket.setTimeout(milliseconds: 10_000)
    try socket.writeAll(Array("GET \(path) HTTP/1.0\r\nHost: \(address)\r\nConnection: close\r\n\r\n".utf8))
    var response: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
      let count = chunk.withUnsafeMutableBytes { read(socket.descriptor, $0.baseAddress, $0.count) }
      if count <= 0 { break }
      response += chunk[0..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else {
      throw StrataError(.protocolError, "GET \(path): no HTTP header in \(text.prefix(200))")
    }
    let head = text[..<split.lowerBound].split(separator: "\r\n")
    let statusWords = head.first?.split(separator: " ") ?? []
    guard statusWords.count >= 2, let status = Int(statusWords[1]) else {
      throw StrataError(.protocolError, "GET \(path): bad status line '\(head.first ?? "")'")
    }
    var body = String(text[split.upperBound...])
    if head.contains(where: { $0.lowercased().hasPrefix("transfer-encoding:") && $0.lowercased().contains("chunked") })
    {
      body = dechunked(body)
    }
    return (status, body)
  }

  /// The payload of an HTTP chunked body.
  static func dechunked(_ body: String) -> String {
    var rest = Substring(body)
    var result = ""
    while let lineEnd = rest.range(of: "\r\n"),
      let size = Int(rest[..<lineEnd.lowerBound].split(separator: ";").first ?? "", radix: 16), size > 0
    {
      let start = lineEnd.upperBound
      let end = rest.utf8.index(start, offsetBy: size, limitedBy: rest.endIndex) ?? rest.endIndex
      result += rest[start..<end]
      rest = rest[end...].dropFirst(2)
    }
    return result
  }
}
