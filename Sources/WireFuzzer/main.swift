// Entry points of the wire fuzzer. Normally built, it replays corpus files (or the directories named
// on the command line) through the fuzz body; built with -D FUZZING (and -sanitize=fuzzer
// -parse-as-library, see scripts/fuzz-wire.sh), libFuzzer drives the same body.

#if FUZZING
  @_cdecl("LLVMFuzzerTestOneInput")
  public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    WireFuzz.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
  }
#else
  import Foundation

  let paths = CommandLine.arguments.count > 1 ? Array(CommandLine.arguments.dropFirst()) : ["Tests/Fixtures/wire-corpus"]
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
#endif
