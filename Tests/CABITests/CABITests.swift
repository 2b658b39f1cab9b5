// The C ABI (libstrata_client.so) as a C program sees it: compiles Tests/CABI/c_abi_test.c with
// `cc` against the built library and header, starts a real `strata serve` process, runs the C
// program against it (hundreds of blocks written, read back and byte-compared, plus lookup,
// missing keys, short destinations, delete, stat, key vectors; registered memory, scattered and
// gathered blocks, ranges, leases, sizes, and tickets submitted from four threads and drained
// through the completion descriptor), then stops the node with SIGTERM.
// Builds nothing with SwiftPM itself: the library and `strata` are found beside this test binary.

import Foundation
import StrataCore
import StrataTestKit
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The folder of the built products: this test binary's own folder (override with STRATA_BUILD_DIR).
private let productsDirectory: URL = {
  if let path = ProcessInfo.processInfo.environment["STRATA_BUILD_DIR"] { return URL(fileURLWithPath: path) }
  let selfPath =
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
  return URL(fileURLWithPath: selfPath).deletingLastPathComponent()
}()

private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent()

#if os(macOS)
  private let libraryName = "libstrata_client.dylib"
#else
  private let libraryName = "libstrata_client.so"
#endif

private final class LockedData: Sendable {
  let data = Mutex(Data())
}

/// Collects what a process writes to a pipe while it runs.
private final class Collector: Sendable {
  private let buffer = LockedData()
  let pipe = Pipe()
  /// Signalled whenever output arrives (or ends), so a waiter re-reads `text` instead of polling.
  let arrived = DispatchSemaphore(value: 0)

  init() {
    pipe.fileHandleForReading.readabilityHandler = { [buffer, arrived] handle in
      let chunk = handle.availableData
      if chunk.isEmpty {
        handle.readabilityHandler = nil
      } else {
        buffer.data.withLock { $0.append(chunk) }
      }
      arrived.signal()
    }
  }

  var text: String { buffer.data.withLock { String(decoding: $0, as: UTF8.self) } }

  func finish() {
    pipe.fileHandleForReading.readabilityHandler = nil
    let rest = pipe.fileHandleForReading.readDataToEndOfFile()
    buffer.data.withLock { $0.append(rest) }
  }
}

private struct TimedOut: Error, CustomStringConvertible {
  var description: String
}

/// A `strata serve` process on loopback with a fresh data folder.
private final class Node {
  let directory: URL
  private(set) var address = ""
  private var process: Process?
  private var output: (out: Collector, err: Collector)?

  /// A node on `listen` (default: a port of its own choosing), in a static cluster with `peers`.
  init(listen: String? = nil, peers: String? = nil, extra: [String] = []) throws {
    directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-cabi-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    // Pages of the RAM arena are as large as the largest block: 2 MiB pages let a 256 MiB arena
    // hold every size class of the test at once (32 MiB pages would leave it 8).
    let config = directory.appendingPathComponent("node.yaml")
    // The admin API on a free port too, so nodes of parallel tests never contend for 7401.
    try "limits:\n  max_block_size: 2MiB\nadmin:\n  listen: 127.0.0.1:0\n".write(
      to: config, atomically: true, encoding: .utf8)
    // Port 0 lets the node pick; a build whose --listen refuses port 0 gets a free port instead.
    var listens = ["127.0.0.1:0"]
    if let port = try? freeLoopbackPort() { listens.append("127.0.0.1:\(port)") }
    if let listen { listens = [listen] }
    var failures: [String] = []
    for listen in listens {
      let process = Process()
      process.executableURL = productsDirectory.appendingPathComponent("strata")
      process.arguments =
        [
          "serve", "--config", config.path, "--data-dir", directory.appendingPathComponent("data").path,
          "--listen", listen, "--ram", "1GiB", "--nvme", "1GiB", "--ram-unlocked",
        ] + (peers.map { ["--peers", $0] } ?? []) + extra
      let out = Collector()
      let err = Collector()
      process.standardOutput = out.pipe
      process.standardError = err.pipe
      process.standardInput = FileHandle.nullDevice
      try launch(process)
      let deadline = DispatchTime.now() + 60
      while process.isRunning {
        // "strata node ID listening on HOST:PORT" once it accepts connections.
        if let line = out.text.split(separator: "\n").first(where: { $0.contains(" listening on ") }),
          let found = line.split(separator: " ").last
        {
          self.process = process
          output = (out, err)
          address = String(found)
          return
        }
        if out.arrived.wait(timeout: deadline) == .timedOut { break }
      }
      if process.isRunning { kill(process.processIdentifier, SIGKILL) }
      process.waitUntilExit()
      failures.append("--listen \(listen): \(out.text) \(err.text)")
    }
    try? FileManager.default.removeItem(at: directory)
    throw TimedOut(description: "the node did not start: \(failures.joined(separator: "; "))")
  }

  var log: String { output?.err.text ?? "" }

  /// SIGTERM, then waits (up to a minute) for the exit; nil if it had to be killed.
  func stop() -> (status: Int32, exited: Bool)? {
    defer { try? FileManager.default.removeItem(at: directory) }
    guard let process else { return nil }
    let ended = DispatchSemaphore(value: 0)
    let waiter = Thread {
      process.waitUntilExit()
      ended.signal()
    }
    waiter.start()
    kill(process.processIdentifier, SIGTERM)
    if ended.wait(timeout: .now() + 60) == .timedOut {
      kill(process.processIdentifier, SIGKILL)
      process.waitUntilExit()
      return nil
    }
    process.waitUntilExit()
    return (process.terminationStatus, process.terminationReason == .exit)
  }
}

/// Compiles the C test program against the built library; `defines` are extra `-D` flags.
private func compileCProgram(_ name: String, defines: [String] = []) async throws -> String {
  let library = productsDirectory.appendingPathComponent(libraryName)
  try #require(
    FileManager.default.fileExists(atPath: library.path),
    "\(library.path) is missing: build the dynamic library product with `swift build --build-tests`")
  let output = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)").path
  let compiler = ProcessInfo.processInfo.environment["CC"] ?? "cc"
  let directory = productsDirectory.path
  let compile = try await runProcess(
    "/usr/bin/env",
    [
      compiler, "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-pthread",
      "-I", packageRoot.appendingPathComponent("Sources/StrataClientC/include").path,
    ] + defines.map { "-D\($0)" } + [
      packageRoot.appendingPathComponent("Tests/CABI/c_abi_test.c").path,
      "-L", directory, "-lstrata_client", "-Wl,-rpath,\(directory)", "-o", output,
    ], timeout: .seconds(120))
  try #require(compile.status == 0, "cc failed: \(compile.stderrText)")
  return output
}

@Suite struct CABITests {
  /// Every StrataError code has its STRATA_E_ define in the header, with its number, and the
  /// header defines no other: a C caller can name every code a call returns.
  @Test func theHeaderDefinesEveryErrorCode() throws {
    let header = try String(
      contentsOf: packageRoot.appendingPathComponent("Sources/StrataClientC/include/strata_client.h"), encoding: .utf8)
    let defined = header.matches(of: /#define STRATA_E_[A-Z_]+ (\d+)/).compactMap { Int($0.output.1) }
    #expect(defined.sorted() == StrataError.Code.all.map { Int($0.number) })
  }

  /// The C program writes, reads back and byte-compares 2,000 blocks of 1 KiB to 2 MiB and checks
  /// every other call; the node then stops cleanly on SIGTERM.
  @Test func cProgramAgainstARealNode() async throws {
    let program = try await compileCProgram("c_abi_test")
    defer { try? FileManager.default.removeItem(atPath: program) }
    let node = try Node()
    let result: ProcessResult
    do {
      result = try await runProcess(program, [node.address, "2000"], timeout: .seconds(300))
    } catch {
      _ = node.stop()
      throw error
    }
    #expect(result.exited && result.status == 0, "the C program failed:\n\(result.stdoutText)\n\(result.stderrText)")
    let summary = result.stdoutText.split(separator: "\n").first { $0.hasPrefix("c-abi: ") } ?? ""
    #expect(
      summary.contains(" passed, 0 failed"), "no clean summary line in:\n\(result.stdoutText)\n\(result.stderrText)")
    let passed = summary.dropFirst("c-abi: ".count).split(separator: " ").first.flatMap { Int($0) } ?? 0
    #expect(passed >= 75, "only \(passed) checks ran: \(summary)")
    let stopped = node.stop()
    #expect(stopped?.exited == true && stopped?.status == 0, "the node did not exit 0 on SIGTERM:\n\(node.log)")
  }

  /// The same program over TLS (strata_client_open_tls with the CA of scripts/dev-ca.sh), plus
  /// the refusals: an unreadable CA file, a CA that did not sign the node, plaintext to the TLS port;
  /// and strata_client_open_options with TLS files (a certificate without a CA refused, another CA
  /// refused before any same-host move, TLS over TCP with same_host 0).
  @Test func cProgramOverTLS() async throws {
    let program = try await compileCProgram("c_abi_test")
    defer { try? FileManager.default.removeItem(atPath: program) }
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("strata-cabi-ca-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: folder) }
    let script = packageRoot.appendingPathComponent("scripts/dev-ca.sh").path
    for (name, nodeID) in [("ca", "node-1"), ("other", "node-1")] {
      let made = try await runProcess("/bin/bash", [script, folder.appendingPathComponent(name).path, nodeID])
      try #require(made.status == 0, "dev-ca.sh: \(made.stderrText)")
    }
    let ca = folder.appendingPathComponent("ca").path
    let node = try Node(extra: ["--tls-cert", "\(ca)/node-1.pem", "--tls-key", "\(ca)/node-1.key"])
    let result: ProcessResult
    do {
      result = try await runProcess(
        program, [node.address, "300", "7", "\(ca)/ca.pem", folder.path + "/other/ca.pem"], timeout: .seconds(300))
    } catch {
      _ = node.stop()
      throw error
    }
    #expect(result.exited && result.status == 0, "the C program failed:\n\(result.stdoutText)\n\(result.stderrText)")
    let summary = result.stdoutText.split(separator: "\n").first { $0.hasPrefix("c-abi: ") } ?? ""
    #expect(
      summary.contains(" passed, 0 failed"), "no clean summary line in:\n\(result.stdoutText)\n\(result.stderrText)")
    #expect(node.log.contains("refused a plaintext connection on the TLS port"), "\(node.log)")
    _ = node.stop()
  }

  /// The same program against a static cluster of three nodes, named by all three addresses: the
  /// library routes every key to its owners (R = 2) and reads it back from them.
  @Test func cProgramAgainstAStaticCluster() async throws {
    let program = try await compileCProgram("c_abi_test")
    defer { try? FileManager.default.removeItem(atPath: program) }
    let ports = (try? freeLoopbackPorts(3)) ?? []
    try #require(Set(ports).count == 3, "no three free ports")
    let addresses = ports.map { "127.0.0.1:\($0)" }
    let peers = addresses.joined(separator: ",")
    var nodes: [Node] = []
    defer { for node in nodes { _ = node.stop() } }
    for address in addresses { nodes.append(try Node(listen: address, peers: peers)) }
    let result = try await runProcess(program, [peers, "600"], timeout: .seconds(300))
    #expect(result.exited && result.status == 0, "the C program failed:\n\(result.stdoutText)\n\(result.stderrText)")
    let summary = result.stdoutText.split(separator: "\n").first { $0.hasPrefix("c-abi: ") } ?? ""
    #expect(
      summary.contains(" passed, 0 failed"), "no clean summary line in:\n\(result.stdoutText)\n\(result.stderrText)")
    // Every node took part: each stored blocks (those it owns first, and copies).
    for node in nodes {
      let stat = try await runProcess(
        productsDirectory.appendingPathComponent("strata").path, ["stat", "--node", node.address, "--json"])
      let stored =
        stat.stdoutText.split(separator: ",").first { $0.hasPrefix("\"put_blocks\":") }
        .flatMap { Int($0.dropFirst("\"put_blocks\":".count)) } ?? 0
      #expect(stored > 100, "node \(node.address) stored \(stored) blocks: \(stat.stdoutText)")
    }
  }

  /// The harness fails when the data is wrong: the same program, built to flip one byte of what it
  /// read before comparing, reports the mismatch and exits 1.
  @Test func cProgramReportsACorruptedRead() async throws {
    let program = try await compileCProgram("c_abi_test_flip", defines: ["C_ABI_TEST_FLIP_A_BYTE"])
    defer { try? FileManager.default.removeItem(atPath: program) }
    let node = try Node()
    let result: ProcessResult
    do {
      result = try await runProcess(program, [node.address, "40"], timeout: .seconds(300))
    } catch {
      _ = node.stop()
      throw error
    }
    _ = node.stop()
    #expect(result.exited && result.status == 1)
    #expect(
      result.stdoutText.contains("c-abi: ") && result.stdoutText.contains(" passed, 1 failed"), "\(result.stdoutText)")
    #expect(result.stderrText.contains("FAIL: get: every byte of every block matches"), "\(result.stderrText)")
  }
}
