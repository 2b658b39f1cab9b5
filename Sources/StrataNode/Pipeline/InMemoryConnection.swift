// A connection to the node's request pipeline with no socket: a test or the fuzzer hands it the
// bytes a client would send and gets back the bytes the node answers, through the same HELLO
// decision, limits, leases, reservations and accounting as TCP and RDMA. Payloads move through
// `InMemoryPayloadTransport`, the third implementation of the transport seam.

public import StrataCore
import StrataWire

public final class InMemoryConnection {
  private let server: NodeServer
  private let source: String
  private var session: RequestSession?
  /// A frame whose payload has not fully arrived yet.
  private var waiting: (FrameHeader, WireMessage)?
  /// Holds the bytes received and not yet consumed, and the frame reader that consumes them.
  private var transport = InMemoryPayloadTransport(
    reader: FrameReader(limits: HandshakeGate.limits, receiving: .request))
  public private(set) var isClosed = false
  /// Why the node closed the connection, once it has.
  public private(set) var closeReason: StrataError?

  /// A connection "from" `source` (the address limits count by).
  public init(server: NodeServer, source: String = "memory") {
    self.server = server
    self.source = source
  }

  deinit { session?.end() }

  /// Feeds what the client sent; returns what the node answered to it. Once the node closes the
  /// connection (`isClosed`), further bytes are ignored.
  public func receive(_ bytes: [UInt8]) -> [UInt8] {
    guard !isClosed else { return [] }
    transport.input.append(bytes)
    do throws(StrataError) {
      try process()
    } catch {
      close(error)
    }
    defer { transport.output.removeAll(keepingCapacity: true) }
    return transport.output
  }

  /// Ends the connection as a client hanging up would.
  public func close() { close(StrataError(.unavailable, "the client closed the connection")) }

  private func close(_ reason: StrataError) {
    guard !isClosed else { return }
    isClosed = true
    closeReason = reason
    session?.end()
    session = nil
  }

  private func process() throws(StrataError) {
    while true {
      if let (header, message) = waiting {
        // The payload is served once it is all here, so the pipeline never waits on the client.
        guard transport.input.count >= Int(header.payloadBytes) else { return }
        waiting = nil
        try serve(header, message)
        continue
      }
      let frame: (FrameHeader, WireMessage)?
      do throws(StrataError) {
        frame = try transport.reader.nextFrame(from: &transport.input, deadline: .never) { _ in .never }
      } catch {
        throw StrataError(.protocolError, error.message, cause: error.cause)
      }
      guard let (header, message) = frame else { return }
      guard session != nil else {
        try hello(header, message)
        continue
      }
      if header.payloadBytes > 0 {
        waiting = (header, message)
      } else {
        try serve(header, message)
      }
    }
  }

  private func hello(_ header: FrameHeader, _ message: WireMessage) throws(StrataError) {
    guard case .helloRequest(let hello) = message else {
      throw StrataError(.protocolError, "the first frame must be HELLO, got \(header.opcode)")
    }
    do throws(StrataError) {
      let (grant, response) = try server.authenticate(hello, source: source, transport: transport.name)
      session = RequestSession(server: server, grant: grant, source: source)
      transport.output += WireMessage.helloResponse(response).frameBytes(
        requestID: header.requestID, ringEpoch: server.epoch)
      // After HELLO, the node's own frame limits apply.
      transport.reader.restart(limits: server.configuration.limits)
    } catch {
      transport.output += WireMessage.error(.hello, ErrorBody(error)).frameBytes(
        requestID: header.requestID, ringEpoch: 0)
      throw error
    }
  }

  private func serve(_ header: FrameHeader, _ message: WireMessage) throws(StrataError) {
    try session!.serve(message, header: header, over: &transport)
    transport.reader.endFrame()
  }
}

/// Payloads in memory: PUT payloads are received from the bytes the client sent, through the
/// connection's frame reader; GET payloads are appended to the bytes answered.
struct InMemoryPayloadTransport: PayloadTransport {
  let reader: FrameReader
  /// Received and not yet consumed.
  var input = ByteQueue()
  var output: [UInt8] = []
  var name: String { "memory" }

  mutating func respond(_ frame: [UInt8], deadline: Deadline) throws(StrataError) { output += frame }

  mutating func deliverGet(
    items: [GetResponse.Item], ranges: [UnsafeRawBufferPointer?], response: ResponseFrame, deadline: Deadline
  ) throws(StrataError) -> [GetResponse.Item] {
    output += response.bytes(.getResponse(GetResponse(items: items)))
    for range in ranges { if let range { output += range } }
    return items
  }

  mutating func receivePut(_ slots: [PayloadSlot], firstItem: Int, deadline: Deadline) throws(StrataError) -> [UInt32?]
  {
    try reader.receive(slots, from: &input, deadline: deadline)
  }
}
