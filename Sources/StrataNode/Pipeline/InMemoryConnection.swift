// A connection to the node's request pipeline with no socket: a test or the fuzzer hands it the
// bytes a client would send and gets back the bytes the node answers, through the same HELLO
// decision, limits, leases, reservations and accounting as TCP and RDMA. Payloads move through
// `InMemoryPayloadTransport`, the third implementation of the transport seam.

public import StrataCore
public import StrataWire

public final class InMemoryConnection {
  private let server: NodeServer
  private let source: String
  private var assembler = FrameAssembler(limits: HandshakeGate.limits, receiving: .request)
  private var session: RequestSession?
  /// Bytes received and not yet consumed (a frame's payload waits here until it is whole).
  private var input: [UInt8] = []
  /// A frame whose payload has not fully arrived yet.
  private var waiting: (FrameHeader, WireMessage)?
  private var transport = InMemoryPayloadTransport()
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
    input += bytes
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
        guard input.count >= Int(header.payloadBytes) else { return }
        waiting = nil
        try serve(header, message)
        continue
      }
      guard let (header, message) = try nextFrame() else { return }
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

  /// The next whole frame (header and body) from `input`, or nil until more arrives.
  private func nextFrame() throws(StrataError) -> (FrameHeader, WireMessage)? {
    while !input.isEmpty {
      let missing: Int
      switch assembler.phase {
      case .header(let bytes): missing = bytes
      case .body(let bytes): missing = bytes
      case .payload, .failed: preconditionFailure("InMemoryConnection: frame reception in \(assembler.phase)")
      }
      let take = min(missing, input.count)
      let chunk = Array(input[0..<take])
      var assembler = self.assembler
      let outcome = chunk.withUnsafeBytes { raw -> Result<FrameAssembler.Step, StrataError> in
        do throws(StrataError) { return .success(try assembler.feed(raw)) } catch { return .failure(error) }
      }
      self.assembler = assembler
      let step: FrameAssembler.Step
      switch outcome {
      case .success(let next): step = next
      case .failure(let error): throw StrataError(.protocolError, error.message)
      }
      input.removeFirst(step.consumedBytes)
      if case .frame(let header, let message)? = step.event { return (header, message) }
    }
    return nil
  }

  private func hello(_ header: FrameHeader, _ message: WireMessage) throws(StrataError) {
    guard case .helloRequest(let hello) = message else {
      throw StrataError(.protocolError, "the first frame must be HELLO, got \(header.opcode)")
    }
    do throws(StrataError) {
      let (grant, response) = try server.authenticate(hello, source: source, transport: transport.name)
      session = RequestSession(server: server, grant: grant, source: source, label: "memory")
      transport.output += WireMessage.helloResponse(response).frameBytes(
        requestID: header.requestID, ringEpoch: server.epoch)
      // After HELLO, the node's own frame limits apply.
      assembler = FrameAssembler(limits: server.configuration.limits, receiving: .request)
    } catch {
      transport.output += WireMessage.error(.hello, ErrorBody(error)).frameBytes(
        requestID: header.requestID, ringEpoch: 0)
      throw error
    }
  }

  private func serve(_ header: FrameHeader, _ message: WireMessage) throws(StrataError) {
    let payload = Int(header.payloadBytes)
    transport.payload = Array(input[0..<payload])
    input.removeFirst(payload)
    try session!.serve(message, header: header, over: &transport)
    if payload > 0 { assembler.consumePayload(UInt64(payload)) }
  }
}

/// Payloads in memory: PUT payloads come from the bytes received, GET payloads are appended to
/// the bytes answered.
struct InMemoryPayloadTransport: PayloadTransport {
  var output: [UInt8] = []
  /// The payload of the request being served.
  var payload: [UInt8] = []
  var name: String { "memory" }

  mutating func respond(_ frame: [UInt8], deadline: Deadline) throws(StrataError) { output += frame }

  mutating func deliverGet(
    items: [GetResponse.Item], ranges: [UnsafeRawBufferPointer?], response: ResponseFrame, deadline: Deadline
  ) throws(StrataError) -> [GetResponse.Item] {
    output += response.bytes(.getResponse(GetResponse(items: items)))
    for range in ranges { if let range { output += range } }
    return items
  }

  mutating func receivePut(_ slots: [PayloadSlot], deadline: Deadline) throws(StrataError) {
    var offset = 0
    for slot in slots {
      switch slot {
      case .into(let buffer):
        guard offset + buffer.count <= payload.count else {
          throw StrataError(.protocolError, "PUT payload shorter than its items")
        }
        payload.withUnsafeBytes {
          buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + buffer.count]))
        }
        offset += buffer.count
      case .skip(let bytes):
        offset += bytes
      }
    }
  }
}
