// The seed corpus of the wire fuzzer (Tests/Fixtures/wire-corpus) doubles as golden files: each is
// today's exact encoding of a sample frame, so an accidental format change fails here.
// Regenerate after a deliberate change with STRATA_WRITE_WIRE_CORPUS=1 swift test --filter WireCorpus.

import Foundation
import StrataWire
import Testing

@Suite(.serialized) struct WireCorpusTests {
  /// File name → bytes: every sample frame alone, and one pipelined stream per direction.
  static var expectedFiles: [(String, [UInt8])] {
    let requests = Samples.requests
    let responses = Samples.responses
    var files = (requests + responses).map { ("\($0.name).bin", $0.bytes) }
    files.append(("stream-requests.bin", requests.flatMap(\.bytes)))
    files.append(("stream-responses.bin", responses.flatMap(\.bytes)))
    return files
  }

  @Test func corpusFilesAreTodaysEncoding() throws {
    let directory = WireTestPaths.corpus
    if ProcessInfo.processInfo.environment["STRATA_WRITE_WIRE_CORPUS"] == "1" {
      try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
      for (name, bytes) in Self.expectedFiles {
        try Data(bytes).write(to: directory.appendingPathComponent(name))
      }
    }
    for (name, bytes) in Self.expectedFiles {
      let url = directory.appendingPathComponent(name)
      let stored = try #require(
        FileManager.default.contents(atPath: url.path), "\(name) is missing: regenerate the corpus (see this file)")
      #expect([UInt8](stored) == bytes, "\(name) differs from today's encoding")
    }
  }

  @Test func streamFilesDecodeToTheSamples() throws {
    let stream = try #require(
      FileManager.default.contents(atPath: WireTestPaths.corpus.appendingPathComponent("stream-responses.bin").path))
    let received = try receiveAll([UInt8](stream), receiving: .response, style: .chunks(seed: 9, maxBytes: 33))
    #expect(received.map(\.message) == Samples.responses.map(\.message))
  }
}
