// Entry points of the wire fuzzer: replays Tests/Fixtures/wire-corpus (or the paths given) in a
// normal build; libFuzzer drives the same body in a -D FUZZING build (scripts/fuzz.sh wire).

import Foundation
import StrataFuzzSupport

#if FUZZING
  @_cdecl("LLVMFuzzerTestOneInput")
  public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    WireFuzz.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
  }

  @main enum WireFuzzMain { static func main() { runLibFuzzer(fuzzTestOneInput) } }
#else
  @main
  enum WireFuzzReplay {
    static func main() throws {
      try replayCorpus(name: "strata-wire-fuzz", defaultCorpus: "Tests/Fixtures/wire-corpus", WireFuzz.run)
    }
  }
#endif
