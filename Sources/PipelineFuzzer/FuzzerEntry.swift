// Entry points of the request-pipeline fuzzer. Normally built, it replays corpus files (or the files and
// directories named on the command line) through the fuzz body; built with -D FUZZING (see
// scripts/fuzz.sh pipeline), libFuzzer drives the same body.
//
// No main.swift and no plain libFuzzer main: SwiftPM links every executable with
// `--defsym main=<module>_main`, so the fuzzing build keeps an @main that starts libFuzzer through
// LLVMFuzzerRunDriver (declared with @_extern(c), hence -enable-experimental-feature Extern there).

import Foundation

#if FUZZING
  @_cdecl("LLVMFuzzerTestOneInput")
  public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    PipelineFuzz.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
  }

  @_extern(c, "LLVMFuzzerRunDriver")
  func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
  ) -> CInt

  @main
  enum PipelineFuzzMain {
    static func main() {
      var argc = CommandLine.argc
      var argv = CommandLine.unsafeArgv
      exit(runFuzzerDriver(&argc, &argv, fuzzTestOneInput))
    }
  }
#else
  @main
  enum PipelineFuzzReplay {
    static func main() throws {
      let arguments = CommandLine.arguments.dropFirst()
      if arguments.first == "--write-seeds", let folder = arguments.dropFirst().first {
        for (name, bytes) in PipelineFuzz.seeds() {
          try Data(bytes).write(to: URL(fileURLWithPath: folder).appendingPathComponent("\(name).bin"))
        }
        return
      }
      let paths = arguments.isEmpty ? ["Tests/Fixtures/pipeline-corpus"] : Array(arguments)
      var inputs: [URL] = []
      for path in paths {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
          FileHandle.standardError.write(Data("strata-pipeline-fuzz: no such file or directory: \(path)\n".utf8))
          exit(2)
        }
        if isDirectory.boolValue {
          let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
          inputs += names.map { URL(fileURLWithPath: path).appendingPathComponent($0) }
        } else {
          inputs.append(URL(fileURLWithPath: path))
        }
      }
      var replayedBytes = 0
      for input in inputs {
        let bytes = try [UInt8](Data(contentsOf: input))
        bytes.withUnsafeBytes { PipelineFuzz.run($0) }
        replayedBytes += bytes.count
      }
      print("strata-pipeline-fuzz: replayed \(inputs.count) inputs (\(replayedBytes) bytes) without a crash")
    }
  }
#endif
