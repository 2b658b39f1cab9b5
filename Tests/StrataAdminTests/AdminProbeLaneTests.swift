// Probes (/health, /ready) are answered on the admin server's event loop: while every worker is
// held by slow calls and more calls wait in line, a probe still answers at once; the calls over
// the server's bounds are told 503 (busy), never left hanging.

import Dispatch
import Foundation
import StrataAdmin
import StrataCore
import StrataTCP
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite struct AdminProbeLaneTests {
  @Test func probesAnswerWhileEveryWorkerIsBusy() throws {
    let release = DispatchSemaphore(value: 0)
    let entered = Atomic<Int>(0)
    let fixture = try AdminFixture(tokens: false) { administration in
      administration.admin.route("GET", "/v1/slow", requiresToken: false) { _ throws(StrataError) in
        entered.add(1, ordering: .relaxed)
        // Held until the test lets go (a stuck handler: a disk stall, a lock held elsewhere).
        await withCheckedContinuation { continuation in
          DispatchQueue.global().async {
            release.wait()
            continuation.resume()
          }
        }
        return .json(.object(["slow": .bool(true)]))
      }
    }
    let slowCalls = 40
    let answers = Mutex<[Int]>([])
    let finished = DispatchSemaphore(value: 0)
    let client = fixture.client()
    for _ in 0..<slowCalls {
      Thread {
        let status = (try? client.send("GET", "/v1/slow").status) ?? -1
        answers.withLock { $0.append(status) }
        finished.signal()
      }.start()
    }
    // Wait until the four workers hold a slow call each (the rest wait in line or were refused).
    let deadline = Date().addingTimeInterval(10)
    while entered.load(ordering: .relaxed) < 4 && Date() < deadline { usleep(1000) }
    #expect(entered.load(ordering: .relaxed) == 4, "every worker is busy")
    for path in ["/health", "/ready", "/health"] {
      let reply = try fixture.client().send("GET", path)
      #expect(reply.status == 200, "\(path) while every worker is busy: \(reply.status)")
    }
    for _ in 0..<slowCalls { release.signal() }
    for _ in 0..<slowCalls { finished.wait() }
    let statuses = answers.withLock { $0 }
    #expect(statuses.count == slowCalls && statuses.allSatisfy { $0 == 200 || $0 == 503 }, "\(statuses)")
    #expect(statuses.contains(200))
  }

  /// Hundreds of requests pipelined on one connection, probes and worker calls mixed, are all
  /// answered in order.
  @Test func pipelinedRequestsAreAnsweredInOrder() throws {
    let fixture = try AdminFixture(tokens: false)
    let socket = try TCPSocket.connect(to: fixture.administration.address, timeoutMilliseconds: 10_000)
    defer { socket.shutdown() }
    let paths = (0..<300).map { $0 % 3 == 2 ? "/v1/status" : ($0 % 3 == 1 ? "/ready" : "/health") }
    try socket.writeAll(Array(paths.map { "GET \($0) HTTP/1.1\r\n\r\n" }.joined().utf8))
    var received: [UInt8] = []
    let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 8)
    defer { chunk.deallocate() }
    func responses() -> Int {
      String(decoding: received, as: UTF8.self).components(separatedBy: "HTTP/1.1 200 OK").count - 1
    }
    while responses() < paths.count, let count = try? socket.readSome(chunk) { received += chunk[0..<count] }
    let text = String(decoding: received, as: UTF8.self)
    #expect(responses() == paths.count, "\(responses()) of \(paths.count) answered")
    // In order: every third answer is a status document.
    let bodies = text.components(separatedBy: "HTTP/1.1 ").dropFirst()
    #expect(bodies.enumerated().allSatisfy { index, body in (index % 3 == 2) == body.contains("\"node_id\"") })
  }
}
