// The HTTP request parser, fed whole, drip-fed one byte at a time and split at random
// points: good requests come out the same every way; malformed ones (query, path, header,
// request line, lengths, encodings) are refused with a 4xx, never a trap; seeded random
// mutations of good requests only ever give a request, "need more" or a 4xx.

import Testing

@testable import StrataHTTP

/// A seeded xorshift generator (the test target has no test kit dependency).
private struct Xorshift {
  var state: UInt64
  init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
  mutating func next() -> UInt64 {
    state ^= state << 13
    state ^= state >> 7
    state ^= state << 17
    return state
  }
}

/// Every way of feeding `bytes`: whole, one byte at a time, and `splits` random cuts (seeded).
private func feedings(_ bytes: [UInt8], seed: UInt64, splits: Int = 8) -> [[[UInt8]]] {
  var ways: [[[UInt8]]] = [[bytes], bytes.map { [$0] }]
  var random = Xorshift(seed: seed)
  for _ in 0..<splits {
    var pieces: [[UInt8]] = []
    var start = 0
    while start < bytes.count {
      let length = 1 + Int(random.next() % UInt64(max(1, bytes.count / 3)))
      pieces.append(Array(bytes[start..<min(bytes.count, start + length)]))
      start += length
    }
    ways.append(pieces)
  }
  return ways
}

/// Feeds `pieces` and collects every step other than `needMore` (stopping at a failure).
private func parse(_ pieces: [[UInt8]]) -> (requests: [HTTPRequest], failure: HTTPReadFailure?) {
  var parser = HTTPRequestParser()
  var requests: [HTTPRequest] = []
  for piece in pieces {
    parser.append(piece)
    while true {
      switch parser.next() {
      case .needMore: break
      case .request(let request):
        requests.append(request)
        continue
      case .failure(let failure): return (requests, failure)
      }
      break
    }
  }
  return (requests, nil)
}

@Suite struct HTTPParserTests {
  @Test func goodRequestsParseTheSameHoweverTheyArrive() throws {
    let text =
      "POST /v1/evict?namespace=ops&prefix=%41b&flag HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
      + "X-Request-Id: abc-1\r\n\r\nhello" + "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"
    for (index, pieces) in feedings(Array(text.utf8), seed: 1).enumerated() {
      let (requests, failure) = parse(pieces)
      #expect(failure == nil, "feeding \(index)")
      try #require(requests.count == 2, "feeding \(index)")
      #expect(requests[0].method == "POST" && requests[0].path == "/v1/evict")
      #expect(requests[0].query == ["namespace": "ops", "prefix": "Ab", "flag": ""])
      #expect(requests[0].headers["x-request-id"] == "abc-1" && requests[0].body == Array("hello".utf8))
      #expect(!requests[0].closes)
      #expect(requests[1].path == "/health" && requests[1].closes && requests[1].body.isEmpty)
    }
  }

  /// Each malformed request and the status it must get.
  static let malformed: [(String, Int)] = [
    ("GET /health?= HTTP/1.1\r\n\r\n", 400),
    ("GET /health?=x HTTP/1.1\r\n\r\n", 400),
    ("GET /health?&& HTTP/1.1\r\n\r\n", 400),
    ("GET /health?a==b HTTP/1.1\r\n\r\n", 400),
    ("GET /health?a=%zz HTTP/1.1\r\n\r\n", 400),
    ("GET /health?a=%4 HTTP/1.1\r\n\r\n", 400),
    ("GET /health?a=%FF HTTP/1.1\r\n\r\n", 400),
    ("GET /he%zzalth HTTP/1.1\r\n\r\n", 400),
    ("GET health HTTP/1.1\r\n\r\n", 400),
    ("GET http://x/health HTTP/1.1\r\n\r\n", 400),
    ("GET /health HTTP/2.0\r\n\r\n", 400),
    ("GET /health\r\n\r\n", 400),
    ("GET  /health HTTP/1.1\r\n\r\n", 400),
    ("\r\n\r\n", 400),
    ("GET /health HTTP/1.1\nHost: x\n\n", 400),
    ("GET /health HTTP/1.1\r\nHost: x\n\r\n", 400),
    ("GET /health HTTP/1.1\r\nHost: x\rY\r\n\r\n", 400),
    ("GET /health HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
    ("GET /health HTTP/1.1\r\n: empty name\r\n\r\n", 400),
    ("GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
    ("GET /health HTTP/1.1\r\nX-Request-Id: caf\u{E9}\r\n\r\n", 400),
    ("GET /h\u{E9}alth HTTP/1.1\r\n\r\n", 400),
    ("GET /health HTTP/1.1\r\nX: \u{1}\r\n\r\n", 400),
    ("GET /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    ("GET /health HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400),
    ("GET /health HTTP/1.1\r\nContent-Length: \r\n\r\n", 400),
    ("GET /health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    ("GET /health HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 413),
    ("GET /health HTTP/1.1\r\nContent-Length: 9223372036854775807\r\n\r\n", 413),
    ("POST /v1/evict HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", 413),
    ("POST /v1/evict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
    ("GET /health HTTP/1.1\r\nX: " + String(repeating: "a", count: 20_000) + "\r\n\r\n", 431),
    ("GET /health HTTP/1.1\r\n" + String(repeating: "X: y\r\n", count: 100) + "\r\n", 431),
    ("GET /health?" + Array(repeating: "a=b", count: 40).joined(separator: "&") + " HTTP/1.1\r\n\r\n", 400),
    ("THISMETHODISFARTOOLONG /health HTTP/1.1\r\n\r\n", 400),
  ]

  @Test func malformedRequestsAreRefusedWithA4xx() {
    for (index, (text, status)) in Self.malformed.enumerated() {
      for (way, pieces) in feedings(Array(text.utf8), seed: UInt64(index), splits: 2).enumerated() {
        let (requests, failure) = parse(pieces)
        #expect(requests.isEmpty, "case \(index) way \(way): \(text.prefix(60))")
        #expect(failure?.status == status, "case \(index) way \(way): \(failure.map { "\($0)" } ?? "none")")
      }
    }
  }

  @Test func headerGarbageIsRefusedBeforeTheHeaderEnds() {
    // A bare LF, a control byte or non-ASCII is refused as it arrives, without waiting for the
    // (maybe never coming) end of the header.
    for garbage in ["GET / HTTP/1.1\nX", "GET / HTTP/1.1\r\nX: \u{0}", "GET /\u{FF}"] {
      var parser = HTTPRequestParser()
      parser.append(Array(garbage.utf8))
      guard case .failure(let failure) = parser.next() else {
        Issue.record("\(garbage.debugDescription) was not refused at once")
        continue
      }
      #expect(failure.status == 400)
    }
  }

  @Test func randomMutationsGiveARequestOrA4xxNeverATrap() {
    let seeds = [
      "GET /health?a=b&c=%20d HTTP/1.1\r\nHost: x\r\nX-Request-Id: r1\r\n\r\n",
      "POST /v1/evict HTTP/1.1\r\nContent-Length: 4\r\n\r\n{\"a\"",
    ].map { Array($0.utf8) }
    let alphabet: [UInt8] = Array("?=&%:/ \r\n\t0123456789aF-".utf8) + [0, 0x7F, 0x80, 0xFF]
    var random = Xorshift(seed: 42)
    for round in 0..<3000 {
      var bytes = seeds[round % seeds.count]
      for _ in 0..<(1 + Int(random.next() % 4)) {
        let position = Int(random.next() % UInt64(bytes.count))
        let byte = alphabet[Int(random.next() % UInt64(alphabet.count))]
        switch random.next() % 3 {
        case 0: bytes[position] = byte
        case 1: bytes.insert(byte, at: position)
        default: bytes.remove(at: position)
        }
      }
      if round % 10 == 0 { bytes = (0..<(random.next() % 200)).map { _ in UInt8(truncatingIfNeeded: random.next()) } }
      for pieces in feedings(bytes, seed: UInt64(round), splits: 1) {
        let (_, failure) = parse(pieces)
        if let failure { #expect((400..<500).contains(failure.status), "round \(round): \(failure)") }
      }
    }
  }

  @Test func responseHeadersCannotBeInjected() {
    #expect(isSafeHeaderValue("abc-123_x.y"))
    #expect(!isSafeHeaderValue("abc\nInjected: yes"))
    #expect(!isSafeHeaderValue("abc\r\nInjected: yes"))
    #expect(!isSafeHeaderValue(String(repeating: "a", count: 65), bytesMax: 64))
    #expect(!isSafeHeaderValue(""))
    let response = HTTPResponse(
      status: 200, contentType: "text/plain", headers: [("X-Request-Id", "a\nInjected: yes"), ("X-Ok", "fine")],
      body: [])
    let text = String(decoding: response.bytes(closing: true), as: UTF8.self)
    #expect(!text.contains("Injected") && text.contains("X-Ok: fine\r\n"))
  }
}
