// What the fuzz executables share: starting libFuzzer (a -D FUZZING build) and, in a normal
// build, replaying corpus files or folders through the same body.
//
// No main.swift and no plain libFuzzer main: SwiftPM links every executable with
// `--defsym main=<module>_main`, so the fuzzing build keeps an @main that starts libFuzzer through
// LLVMFuzzerRunDriver (declared with @_extern(c), hence -enable-experimental-feature Extern there).

import Foundation

#if FUZZING
  @_extern(c, "LLVMFuzzerRunDriver")
  func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
  ) -> CInt

  /// Hands the process to libFuzzer, which calls `testOneInput` with each input.
  public func runLibFuzzer(_ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(runFuzzerDriver(&argc, &argv, testOneInput))
  }
#endif

/// Replays the files (and the files of the folders) named on the command line, or of
/// `defaultCorpus`, through `body`; prints a summary line or exits 2 for a missing path.
public func replayCorpus(name: String, defaultCorpus: String, _ body: (UnsafeRawBufferPointer) -> Void) throws {
  let arguments = CommandLine.arguments.dropFirst()
  let paths = arguments.isEmpty ? [defaultCorpus] : Array(arguments)
  var inputs: [URL] = []
  for path in paths {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      FileHandle.standardError.write(Data("\(name): no such file or directory: \(path)\n".utf8))
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
    bytes.withUnsafeBytes { body($0) }
    replayedBytes += bytes.count
  }
  print("\(name): replayed \(inputs.count) inputs (\(replayedBytes) bytes) without a crash")
}
