// Entry points of the wire fuzzer. Normally built, it replays corpus files (or the files and
// directories named on the command line) through the fuzz body; built with -D FUZZING (see
// scripts/fuzz.sh wire), libFuzzer drives the same body.
//
// No main.swift and no plain libFuzzer main: SwiftPM links every executable with
// `--defsym main=<module>_main`, so the fuzzing build keeps an @main that starts libFuzzer through
// LLVMFuzzerRunDriver (declared with @_extern(c), hence -enable-experimental-feature Extern there).

import Foundation

#if FUZZING
  @_cdecl("LLVMFuzzerTestOneInput")
  public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    WireFuzz.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
  }

  @_extern(c, "LLVMFuzzerRunDriver")
  func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
  ) -> CInt

  @main
  enum WireFuzzMain {
    static func main() {
      var argc = CommandLine.argc
      var argv = CommandLine.unsafeArgv
      exit(runFuzzerDriver(&argc, &argv, fuzzTestOneInput))
    }
  }
#else
  @main
  enum WireFuzzReplay {
    static func main() throws {
      let arguments = CommandLine.arguments.dropFirst()
      let paths = arguments.isEmpty ? ["Tests/Fixtures/wire-corpus"] : Array(arguments)
      var inputs: [URL] = []
      for path in paths {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
          FileHandle.standardError.write(Data("strata-wire-fuzz: no such file or directory: \(path)\n".utf8))
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
        bytes.withUnsafeBytes { WireFuzz.run($0) }
        replayedBytes += bytes.count
      }
      print("strata-wire-fuzz: replayed \(inputs.count) inputs (\(replayedBytes) bytes) without a crash")
    }
  }
#endif
