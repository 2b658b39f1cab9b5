// The HTTP/1.1 response decoder fed whole, byte by byte and in odd pieces: the same events each way.

import StrataCore
import Testing

@testable import StrataHTTP

@Suite struct HTTPResponseDecoderTests {
  static let chunked =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    + "6\r\n{\"a\":1\r\n3;ext=1\r\n}\n\n\r\n0\r\nGrpc-Trailer: x\r\n\r\n"
  static let fixed = "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\nNot Found\n"

  /// Head, body and end of each response in `bytes`, fed in pieces of `step` bytes.
  private func decode(_ bytes: [UInt8], step: Int, responses: Int) throws -> [(HTTPResponseHead, [UInt8], Bool)] {
    var decoder = HTTPResponseDecoder()
    var results: [(HTTPResponseHead, [UInt8], Bool)] = []
    var head: HTTPResponseHead?
    var body: [UInt8] = []
    var offset = 0
    while results.count < responses {
      guard let event = try decoder.next() else {
        #expect(offset < bytes.count, "decoder wants more bytes than there are")
        if offset >= bytes.count { break }
        decoder.feed(bytes[offset..<min(offset + step, bytes.count)])
        offset += step
        continue
      }
      switch event {
      case .head(let value): head = value
      case .body(let piece): body += piece
      case .end(let reusable):
        results.append((try #require(head), body, reusable))
        head = nil
        body = []
        decoder.reset()
      }
    }
    return results
  }

  @Test(arguments: [1, 2, 3, 7, 1000])
  func pipelinedResponsesInPieces(step: Int) throws {
    let results = try decode(Array((Self.chunked + Self.fixed).utf8), step: step, responses: 2)
    try #require(results.count == 2)
    #expect(results[0].0.status == 200)
    #expect(results[0].0.header("transfer-encoding") == "chunked")
    #expect(results[0].1 == Array("{\"a\":1}\n\n".utf8))
    #expect(results[0].2)
    #expect(results[1].0.status == 404)
    #expect(results[1].0.reason == "Not Found")
    #expect(results[1].1 == Array("Not Found\n".utf8))
    #expect(results[1].2)
  }

  @Test func connectionCloseIsNotReusable() throws {
    let text = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    let results = try decode(Array(text.utf8), step: 5, responses: 1)
    #expect(results.first?.2 == false)
  }

  @Test func bodyUntilClose() throws {
    var decoder = HTTPResponseDecoder()
    decoder.feed(Array("HTTP/1.0 200 OK\r\n\r\nabc".utf8))
    #expect(try decoder.next() != nil)
    #expect(try decoder.next() == .body(Array("abc".utf8)))
    #expect(try decoder.next() == nil)
    #expect(try decoder.endOfInput() == .end(reusable: false))
  }

  @Test func oversizedHeadIsRefused() throws {
    var decoder = HTTPResponseDecoder()
    decoder.feed(Array("HTTP/1.1 200 OK\r\n".utf8))
    let line = Array("X-Filler: \(String(repeating: "y", count: 1000))\r\n".utf8)
    var error: StrataError?
    for _ in 0..<100 where error == nil {
      decoder.feed(line)
      do {
        _ = try decoder.next()
      } catch let thrown {
        error = thrown
      }
    }
    #expect(error?.code == .protocolError)
  }

  @Test func longStreamOfChunksIsNotAHeadOverflow() throws {
    var decoder = HTTPResponseDecoder()
    decoder.feed(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".utf8))
    _ = try decoder.next()
    var bytes = 0
    for _ in 0..<20_000 {
      decoder.feed(Array("2\r\n{}\r\n".utf8))
      while let event = try decoder.next() {
        if case .body(let piece) = event { bytes += piece.count }
      }
    }
    #expect(bytes == 40_000)
  }
}
