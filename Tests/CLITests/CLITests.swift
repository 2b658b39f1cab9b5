// Runs the built `strata` executable as a person or a script would, and checks what it prints.

import Foundation
import StrataTestKit
import Testing

/// The `strata` executable built beside this test bundle (override with STRATA_BIN).
let strataExecutable: String = {
  if let path = ProcessInfo.processInfo.environment["STRATA_BIN"] { return path }
  let selfPath =
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
  return URL(fileURLWithPath: selfPath).deletingLastPathComponent().appendingPathComponent("strata").path
}()

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent()

struct Run {
  var status: Int32
  var stdout: String
  var stderr: String
}

func strata(_ arguments: String..., input: String? = nil) async throws -> Run {
  try await strata(arguments, input: input)
}

func strata(_ arguments: [String], input: String? = nil) async throws -> Run {
  let result = try await runProcess(strataExecutable, arguments, input: input.map { Data($0.utf8) })
  return Run(status: result.status, stdout: result.stdoutText, stderr: result.stderrText)
}

/// This test process's folder of `temporaryFile`s, removed when the process exits.
private var temporaryFilesDirectory: URL {
  FileManager.default.temporaryDirectory.appendingPathComponent("strata-cli-tests-\(getpid())")
}

private let removeTemporaryFilesAtExit: Void = {
  atexit { try? FileManager.default.removeItem(at: temporaryFilesDirectory) }
}()

func temporaryFile(_ name: String, _ contents: String) throws -> String {
  _ = removeTemporaryFilesAtExit
  let directory = temporaryFilesDirectory
  try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
  let url = directory.appendingPathComponent(name)
  try contents.write(to: url, atomically: true, encoding: .utf8)
  return url.path
}

@Suite struct CLITests {
  @Test func versionAndHelp() async throws {
    let version = try await strata("version")
    #expect(version.status == 0)
    #expect(version.stdout.hasPrefix("strata 0."))
    let help = try await strata("--help")
    #expect(help.status == 0)
    for command in ["serve", "hash", "config", "version"] { #expect(help.stdout.contains(command)) }
    let unknown = try await strata("frobnicate")
    #expect(unknown.status == 64)
  }

  /// `strata hash` reproduces every checked-in vector, tokens given as JSON or as plain integers.
  @Test func hashReproducesTheVectors() async throws {
    let data = try Data(contentsOf: packageRoot.appendingPathComponent("Tests/Fixtures/key-vectors.json"))
    let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let cases = try #require(root["cases"] as? [[String: Any]])
    #expect(cases.count >= 20)
    for (index, vector) in cases.enumerated() {
      let name = try #require(vector["name"] as? String)
      let layout = try #require(vector["layout"] as? [String: Any])
      let tokens = try #require(vector["tokens"] as? [Int])
      let extras = try #require(vector["extras_hex"] as? [String])
      let expected = try #require(vector["keys_hex"] as? [String])
      let layoutText = [
        "model=\(layout["model_id"]!)", "dtype=\(layout["dtype"]!)", "block=\(layout["tokens_per_block"]!)",
        "tp=\(layout["tp_rank"]!)/\(layout["tp_size"]!)", "layers=\(layout["layer_start"]!)-\(layout["layer_end"]!)",
      ].joined(separator: ",")
      let tokenText =
        index % 2 == 0
        ? "[" + tokens.map(String.init).joined(separator: ", ") + "]"
        : tokens.map(String.init).joined(separator: index % 3 == 0 ? "\n" : " ")
      let file = try temporaryFile("tokens-\(index)", tokenText)
      var arguments = ["hash", "--layout", layoutText, "--tokens", file, "--salt", vector["salt_hex"] as! String]
      for extra in extras { arguments += ["--extra", extra] }
      let run = try await strata(arguments)
      #expect(run.status == 0, "\(name): \(run.stderr)")
      let printed = run.stdout.split(separator: "\n").map(String.init)
      #expect(printed == expected, "\(name)")
    }
  }

  @Test func hashJSONOutputAndStandardInput() async throws {
    let run = try await strata(
      "hash", "--layout", "model=m,dtype=bf16,block=2,layers=0-1", "--tokens", "-", "--json", input: "1 2 3 4 5")
    #expect(run.status == 0, "\(run.stderr)")
    let object = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
    #expect((object["keys"] as? [String])?.count == 2)
    #expect(object["tokens"] as? Int == 5)
    #expect((object["root"] as? String)?.count == 64)
  }

  @Test func hashRejectsBadInputWithExitCode2() async throws {
    let layout = "model=m,dtype=bf16,block=2,layers=0-1"
    let badToken = try await strata("hash", "--layout", layout, "--tokens", "-", input: "1 2 x 4")
    #expect(badToken.status == 2)
    #expect(badToken.stderr.contains("item 3 'x' is not a token id"))
    let tooBig = try await strata("hash", "--layout", layout, "--tokens", "-", input: "[1, 4294967296]")
    #expect(tooBig.status == 2)
    let badLayout = try await strata("hash", "--layout", "model=m,dtype=bf16,block=2", "--tokens", "-", input: "1 2")
    #expect(badLayout.status == 2)
    #expect(badLayout.stderr.contains("layout.layers: missing"))
    let missingFile = try await strata("hash", "--layout", layout, "--tokens", "/nonexistent/tokens")
    #expect(missingFile.status == 2)
    #expect(missingFile.stderr.contains("cannot open token file '/nonexistent/tokens'"))
  }

  @Test func configCheckAcceptsGoodFilesAndNamesBadFields() async throws {
    let good = try temporaryFile("good.yaml", "ram:\n  capacity: 256MiB\nnvme:\n  capacity: 1GiB\n")
    let ok = try await strata("config", "check", good)
    #expect(ok.status == 0, "\(ok.stderr)")
    #expect(ok.stdout.contains("valid"))

    let bad = try temporaryFile("bad.yaml", "ram:\n  capacity: 256MiB\nnvme:\n  region_size: 7KiB\n")
    let failed = try await strata("config", "check", bad)
    #expect(failed.status == 2)
    #expect(failed.stderr.contains("nvme.region_size: 7KiB is not a multiple of 4KiB"))

    let huge = try temporaryFile("huge.yaml", "ram: {capacity: 1000TiB}\n")
    let tooLarge = try await strata("config", "check", huge)
    #expect(tooLarge.status == 2)
    #expect(tooLarge.stderr.contains("ram.capacity: 1000TiB is more than this machine's memory"))
  }

  @Test func configPrintRoundTripsAndDefaultsAreValid() async throws {
    let defaults = try await strata("config", "defaults")
    #expect(defaults.status == 0)
    let file = try temporaryFile("defaults.yaml", defaults.stdout)
    let check = try await strata("config", "check", "--print", file)
    #expect(check.status == 0, "\(check.stderr)")
    #expect(check.stdout == defaults.stdout)
  }

  @Test func serveResolvesFlagsOverTheFile() async throws {
    let file = try temporaryFile("serve.yaml", "ram: {capacity: 256MiB}\nlisten: 127.0.0.1:9000\n")
    let run = try await strata(
      "serve", "--config", file, "--listen", "127.0.0.1:9100", "--data-dir", "/tmp/x", "--dry-run")
    #expect(run.status == 0, "\(run.stderr)")
    #expect(run.stdout.contains("listen: \"127.0.0.1:9100\""))
    #expect(run.stdout.contains("capacity: 256MiB"))
    #expect(run.stdout.contains("path: \"/tmp/x/nvme\""))
    let bad = try await strata("serve", "--ram", "lots")
    #expect(bad.status == 2)
    #expect(bad.stderr.contains("--ram: 'lots' is not a size"))
  }

  /// `serve` opens the tiers for real: blocks written by an earlier process are recovered.
  @Test func serveOpensStorageAndRecoversBlocks() async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-serve-\(getpid())").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let drill = ["--data-dir", directory, "--count", "20", "--size", "8KiB", "--nvme", "256MiB"]
    let written = try await strata(["debug", "write-blocks"] + drill)
    #expect(written.status == 0, "\(written.stderr)")
    let node = try await NodeProcess.launch(ram: "128MiB", nvme: "256MiB", directory: directory)
    #expect(node.banner.contains("storage ready: RAM 128MiB (not locked), NVMe 256MiB holding 20 block(s)"))
    #expect(node.stop() == 0)
  }

  @Test func serveExplainsAnUnusableDataFolder() async throws {
    let file = try temporaryFile("not-a-folder", "x")
    let run = try await strata("serve", "--data-dir", file, "--ram", "64MiB", "--nvme", "256MiB", "--ram-unlocked")
    #expect(run.status == 1)
    #expect(run.stderr.contains("cannot create data folder"), "\(run.stderr)")
  }

  /// A port another process holds: the node exits 3 (retrying may help) naming the setting to
  /// change, after what it had printed (one log, in order).
  @Test func serveNamesTheSettingWhosePortIsTaken() async throws {
    let holder = try await NodeProcess.launch(ram: "64MiB", nvme: "256MiB")
    defer { _ = holder.stop() }
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("strata-taken-\(getpid())").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let common = ["serve", "--data-dir", directory, "--ram", "64MiB", "--nvme", "256MiB", "--ram-unlocked"]
    let takenAdmin = try holder.admin
    let admin = try await strata(common + ["--listen", "127.0.0.1:0", "--admin", takenAdmin.description])
    #expect(admin.status == 3, "\(admin.stdout) \(admin.stderr)")
    #expect(admin.stderr.contains("admin.listen: cannot bind \(takenAdmin): Address already in use"), "\(admin.stderr)")
    let data = try await strata(common + ["--listen", holder.address.description, "--admin", "127.0.0.1:0"])
    #expect(data.status == 3, "\(data.stdout) \(data.stderr)")
    #expect(data.stderr.contains("listen: cannot bind \(holder.address): Address already in use"), "\(data.stderr)")
    #expect(!data.stderr.contains("admin.listen"), "\(data.stderr)")
  }
}
