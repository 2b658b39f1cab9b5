// One decoded frame body of any kind, chosen by the header's opcode and flags, plus the frame
// encoder: header and body in one buffer, ready to be followed by the payload.

public import StrataCore

public enum WireMessage: Hashable, Sendable {
  case helloRequest(HelloRequest)
  case helloResponse(HelloResponse)
  case lookupRequest(LookupRequest)
  case lookupResponse(LookupResponse)
  case getRequest(GetRequest)
  case getResponse(GetResponse)
  case putRequest(PutRequest)
  case putResponse(PutResponse)
  case deleteRequest(DeleteRequest)
  case deleteResponse(DeleteResponse)
  case statRequest(StatRequest)
  case statResponse(StatResponse)
  /// RING bodies belong to the cluster module, which decodes them itself.
  case ringRequest(body: [UInt8])
  case ringResponse(body: [UInt8])
  case goodbyeRequest(GoodbyeRequest)
  case goodbyeResponse(GoodbyeResponse)
  case verifyRequest(VerifyRequest)
  case verifyResponse(VerifyResponse)
  /// An error response to a request of `Opcode`.
  case error(Opcode, ErrorBody)

  /// Decodes `body` as the kind of body `header` announces and checks that the header's payload
  /// length matches what the body lists. `header` must come from `FrameHeader(decoding:limits:)` and
  /// `body` must already have passed `header.verifyBody`.
  public init(header: FrameHeader, body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    if header.isError {
      let errorBody = try ErrorBody(decoding: body, limits: limits)
      guard errorBody.code == header.status else {
        throw .wire(
          .invalidValue, "ErrorBody.code: \(errorBody.code) disagrees with the header's status \(header.status)")
      }
      self = .error(header.opcode, errorBody)
    } else {
      switch (header.opcode, header.direction) {
      case (.hello, .request): self = .helloRequest(try HelloRequest(decoding: body, limits: limits))
      case (.hello, .response): self = .helloResponse(try HelloResponse(decoding: body, limits: limits))
      case (.lookup, .request): self = .lookupRequest(try LookupRequest(decoding: body, limits: limits))
      case (.lookup, .response): self = .lookupResponse(try LookupResponse(decoding: body, limits: limits))
      case (.get, .request): self = .getRequest(try GetRequest(decoding: body, limits: limits))
      case (.get, .response): self = .getResponse(try GetResponse(decoding: body, limits: limits))
      case (.put, .request): self = .putRequest(try PutRequest(decoding: body, limits: limits))
      case (.put, .response): self = .putResponse(try PutResponse(decoding: body, limits: limits))
      case (.delete, .request): self = .deleteRequest(try DeleteRequest(decoding: body, limits: limits))
      case (.delete, .response): self = .deleteResponse(try DeleteResponse(decoding: body, limits: limits))
      case (.stat, .request): self = .statRequest(try StatRequest(decoding: body, limits: limits))
      case (.stat, .response): self = .statResponse(try StatResponse(decoding: body, limits: limits))
      case (.ring, .request): self = .ringRequest(body: [UInt8](body))
      case (.ring, .response): self = .ringResponse(body: [UInt8](body))
      case (.goodbye, .request): self = .goodbyeRequest(try GoodbyeRequest(decoding: body, limits: limits))
      case (.goodbye, .response): self = .goodbyeResponse(try GoodbyeResponse(decoding: body, limits: limits))
      case (.verify, .request): self = .verifyRequest(try VerifyRequest(decoding: body, limits: limits))
      case (.verify, .response): self = .verifyResponse(try VerifyResponse(decoding: body, limits: limits))
      }
    }
    guard payloadBytes == header.payloadBytes else {
      throw .wire(
        .payloadMismatch,
        "\(header.context): header announces \(header.payloadBytes) payload bytes, the body's items add up to \(payloadBytes)"
      )
    }
  }

  /// The body inside, as the shared codec protocol; nil for RING, whose body is opaque here.
  private var body: (any FrameBody)? {
    switch self {
    case .helloRequest(let body): return body
    case .helloResponse(let body): return body
    case .lookupRequest(let body): return body
    case .lookupResponse(let body): return body
    case .getRequest(let body): return body
    case .getResponse(let body): return body
    case .putRequest(let body): return body
    case .putResponse(let body): return body
    case .deleteRequest(let body): return body
    case .deleteResponse(let body): return body
    case .statRequest(let body): return body
    case .statResponse(let body): return body
    case .goodbyeRequest(let body): return body
    case .goodbyeResponse(let body): return body
    case .verifyRequest(let body): return body
    case .verifyResponse(let body): return body
    case .error(_, let body): return body
    case .ringRequest, .ringResponse: return nil
    }
  }

  public var opcode: Opcode {
    switch self {
    case .helloRequest, .helloResponse: return .hello
    case .lookupRequest, .lookupResponse: return .lookup
    case .getRequest, .getResponse: return .get
    case .putRequest, .putResponse: return .put
    case .deleteRequest, .deleteResponse: return .delete
    case .statRequest, .statResponse: return .stat
    case .ringRequest, .ringResponse: return .ring
    case .goodbyeRequest, .goodbyeResponse: return .goodbye
    case .verifyRequest, .verifyResponse: return .verify
    case .error(let opcode, _): return opcode
    }
  }

  public var direction: FrameDirection {
    switch self {
    case .helloRequest, .lookupRequest, .getRequest, .putRequest, .deleteRequest, .statRequest, .ringRequest,
      .goodbyeRequest, .verifyRequest:
      return .request
    case .helloResponse, .lookupResponse, .getResponse, .putResponse, .deleteResponse, .statResponse,
      .ringResponse, .goodbyeResponse, .verifyResponse, .error:
      return .response
    }
  }

  /// The payload bytes that follow this body on the wire.
  public var payloadBytes: UInt64 {
    switch self {
    case .getResponse(let body): return body.payloadBytes
    case .putRequest(let body): return body.payloadBytes
    default: return 0
    }
  }

  public var encodedBodyByteCount: Int {
    switch self {
    case .ringRequest(let body), .ringResponse(let body): return body.count
    default: return body!.encodedByteCount
    }
  }

  public func encodeBody(into out: inout [UInt8]) {
    switch self {
    case .ringRequest(let body), .ringResponse(let body): out.append(contentsOf: body)
    default: body!.encode(into: &out)
    }
  }

  /// Header and body of this message's frame in one buffer. The payload (`payloadBytes` of it) is
  /// not included: the sender writes it from the blocks' own memory right after these bytes.
  public func frameBytes(requestID: UInt64, ringEpoch: UInt64, version: UInt16 = WireProtocol.version) -> [UInt8] {
    let bodyBytes = encodedBodyByteCount
    precondition(bodyBytes <= Int(UInt32.max), "frameBytes: a body of \(bodyBytes) bytes does not fit the header")
    var out: [UInt8] = []
    out.reserveCapacity(FrameHeader.byteCount + bodyBytes)
    out.append(contentsOf: repeatElement(0, count: FrameHeader.byteCount))
    encodeBody(into: &out)
    assert(out.count == FrameHeader.byteCount + bodyBytes, "encodedByteCount disagrees with encode(into:)")
    var flags: FrameFlags = direction == .response ? .response : []
    var status: UInt16 = 0
    if case .error(_, let body) = self {
      flags.insert(.error)
      status = body.code
    }
    out.withUnsafeMutableBytes { raw in
      let header = FrameHeader(
        opcode: opcode, flags: flags, requestID: requestID, ringEpoch: ringEpoch, bodyBytes: UInt32(bodyBytes),
        bodyChecksum: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[FrameHeader.byteCount...])),
        payloadBytes: payloadBytes, status: status, version: version)
      header.encode(into: raw)
    }
    return out
  }
}

extension MessageBody {
  /// Header and body of a frame carrying this message; see `WireMessage.frameBytes`.
  public func frameBytes(requestID: UInt64, ringEpoch: UInt64, version: UInt16 = WireProtocol.version) -> [UInt8] {
    wireMessage.frameBytes(requestID: requestID, ringEpoch: ringEpoch, version: version)
  }
}
