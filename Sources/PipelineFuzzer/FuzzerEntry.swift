// Entry points of the request-pipeline fuzzer: replays Tests/Fixtures/pipeline-corpus (or the
// paths given) in a normal build, `--write-seeds DIR` writes the seed inputs; libFuzzer drives the
// same body in a -D FUZZING build (scripts/fuzz.sh pipeline).

import Foundation
import StrataFuzzSupport

#if FUZZING
  @_cdecl("LLVMFuzzerTestOneInput")
  public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    PipelineFuzz.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
  }

  @main enum PipelineFuzzMain { static func main() { runLibFuzzer(fuzzTestOneInput) } }
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
      try replayCorpus(
        name: "strata-pipeline-fuzz", defaultCorpus: "Tests/Fixtures/pipeline-corpus", PipelineFuzz.run)
    }
  }
#endif
