// Bodies that set up, describe and end a connection: HELLO, STAT, GOODBYE, and the error body that
// replaces any response body when a well-formed request fails.

public import StrataCore

/// Optional features a peer offers in HELLO; the session uses the intersection. Unknown bits are kept
/// and ignored, so a newer peer can offer more without a version change.
public struct Capabilities: OptionSet, Hashable, Sendable {
  public let rawValue: UInt64
  public init(rawValue: UInt64) { self.rawValue = rawValue }

  public static let tcp = Capabilities(rawValue: 1 << 0)
  public static let rdma = Capabilities(rawValue: 1 << 1)
  public static let lz4 = Capabilities(rawValue: 1 << 2)
  public static let leases = Capabilities(rawValue: 1 << 3)
  /// The client is a peer node (replication, read-through, drain handoff): the node neither
  /// checks ownership nor copies or reads through on its behalf.
  public static let peer = Capabilities(rawValue: 1 << 4)
  /// The same-host path: offered over TCP by a client on the node's machine (the node answers
  /// with its Unix-domain socket's path) and over that socket (granted only there): GET and PUT
  /// payloads then move through the client's shared-memory region (docs/protocol.md).
  public static let sharedMemory = Capabilities(rawValue: 1 << 5)
  /// VERIFY: the client reports blocks whose bytes failed their checksum when it received them;
  /// the node checks its copies and removes those that fail. A client sends VERIFY only to a node
  /// that granted this (an older node rejects the opcode).
  public static let verify = Capabilities(rawValue: 1 << 6)
}

/// The first frame on every connection: the versions and features the client speaks and its
/// credentials, from which the server derives the connection's namespace.
public struct HelloRequest: MessageBody {
  public static let messageName: StaticString = "HelloRequest"
  public static let opcode = Opcode.hello
  public static let direction = FrameDirection.request
  public var wireMessage: WireMessage { .helloRequest(self) }
  public static let tokenBytesMax = 4096
  public static let clientNameBytesMax = 256

  public var versionMin: UInt16
  public var versionMax: UInt16
  public var capabilities: Capabilities
  /// The largest frame (header + body + payload) the client is willing to receive.
  public var frameBytesMax: UInt64
  /// Opaque credentials; never logged.
  public var token: [UInt8]
  /// For the server's logs and metrics ("vllm-worker-3").
  public var clientName: String
  /// A peer node (token = the cluster token, `.peer` offered) names the namespace it acts in,
  /// since tenant tokens never travel between nodes. Empty for every other client; an optional
  /// trailing field, absent from the encoding when empty.
  public var peerNamespace: String

  /// The largest body a HELLO can have: what a node reads from a connection before it is
  /// authenticated.
  public static let encodedBytesMax =
    2 * WireSize.u16 + 2 * WireSize.u64 + WireSize.lengthPrefixed(tokenBytesMax)
    + WireSize.lengthPrefixed(clientNameBytesMax) + WireSize.lengthPrefixed(Namespace.nameBytesMax)

  public init(
    versionMin: UInt16 = WireProtocol.version, versionMax: UInt16 = WireProtocol.version,
    capabilities: Capabilities, frameBytesMax: UInt64, token: [UInt8], clientName: String, peerNamespace: String = ""
  ) {
    self.versionMin = versionMin
    self.versionMax = versionMax
    self.capabilities = capabilities
    self.frameBytesMax = frameBytesMax
    self.token = token
    self.clientName = clientName
    self.peerNamespace = peerNamespace
  }

  public var encodedByteCount: Int {
    2 * WireSize.u16 + 2 * WireSize.u64 + WireSize.lengthPrefixed(token.count)
      + WireSize.lengthPrefixed(clientName.utf8.count)
      + (peerNamespace.isEmpty ? 0 : WireSize.lengthPrefixed(peerNamespace.utf8.count))
  }

  public func encode(into out: inout [UInt8]) {
    out.append(littleEndian: versionMin)
    out.append(littleEndian: versionMax)
    out.append(littleEndian: capabilities.rawValue)
    out.append(littleEndian: frameBytesMax)
    out.append(lengthPrefixed: token)
    out.append(string: clientName)
    if !peerNamespace.isEmpty { out.append(string: peerNamespace) }
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    versionMin = try reader.read(UInt16.self, "versionMin")
    guard versionMin >= 1 else { throw reader.error(.invalidValue, "versionMin", "0 is not a protocol version") }
    versionMax = try reader.read(UInt16.self, "versionMax")
    guard versionMax >= versionMin else {
      throw reader.error(.invalidValue, "versionMax", "\(versionMax) is below versionMin \(versionMin)")
    }
    capabilities = Capabilities(rawValue: try reader.read(UInt64.self, "capabilities"))
    frameBytesMax = try reader.read(UInt64.self, "frameBytesMax")
    guard frameBytesMax >= UInt64(FrameHeader.byteCount) else {
      throw reader.error(.invalidValue, "frameBytesMax", "\(frameBytesMax) cannot hold a 64-byte header")
    }
    token = try reader.byteArray("token", max: Self.tokenBytesMax)
    clientName = try reader.string("clientName", max: Self.clientNameBytesMax)
    let present = reader.remaining > 0
    peerNamespace = present ? try reader.string("peerNamespace", max: Namespace.nameBytesMax) : ""
    try reader.finish()
    // An empty peerNamespace is encoded by leaving the field out: one encoding per value.
    guard !present || !peerNamespace.isEmpty else {
      throw reader.error(.invalidValue, "peerNamespace", "present but empty (an empty one is left out)")
    }
  }
}

/// The server's answer to HELLO: the version chosen, the features granted, who it is, the namespace
/// the credentials map to, and the bounds the client must respect.
public struct HelloResponse: MessageBody {
  public static let messageName: StaticString = "HelloResponse"
  public static let opcode = Opcode.hello
  public static let direction = FrameDirection.response
  public var wireMessage: WireMessage { .helloResponse(self) }
  public static let nodeIDBytesMax = 256

  public var version: UInt16
  public var capabilities: Capabilities
  public var nodeID: String
  public var namespace: Namespace
  /// The largest frame (header + body + payload) the server is willing to receive.
  public var frameBytesMax: UInt64
  /// The most payload bytes the client's namespace may have in flight on the node, all its
  /// connections together (the node's budget, or the namespace's smaller quota).
  public var inflightBytesMax: UInt64
  public var ringEpoch: UInt64
  /// The path of the node's Unix-domain socket (the same-host path), answered over TCP to a
  /// client that offered `sharedMemory`; empty otherwise. An optional trailing field, absent
  /// from the encoding when empty.
  public var sameHostSocket: String
  public static let sameHostSocketBytesMax = 256

  public init(
    version: UInt16 = WireProtocol.version, capabilities: Capabilities, nodeID: String, namespace: Namespace,
    frameBytesMax: UInt64, inflightBytesMax: UInt64, ringEpoch: UInt64, sameHostSocket: String = ""
  ) {
    self.version = version
    self.capabilities = capabilities
    self.nodeID = nodeID
    self.namespace = namespace
    self.frameBytesMax = frameBytesMax
    self.inflightBytesMax = inflightBytesMax
    self.ringEpoch = ringEpoch
    self.sameHostSocket = sameHostSocket
  }

  public var encodedByteCount: Int {
    WireSize.u16 + 4 * WireSize.u64 + WireSize.lengthPrefixed(nodeID.utf8.count)
      + WireSize.lengthPrefixed(namespace.name.utf8.count)
      + (sameHostSocket.isEmpty ? 0 : WireSize.lengthPrefixed(sameHostSocket.utf8.count))
  }

  public func encode(into out: inout [UInt8]) {
    out.append(littleEndian: version)
    out.append(littleEndian: capabilities.rawValue)
    out.append(string: nodeID)
    out.append(string: namespace.name)
    out.append(littleEndian: frameBytesMax)
    out.append(littleEndian: inflightBytesMax)
    out.append(littleEndian: ringEpoch)
    if !sameHostSocket.isEmpty { out.append(string: sameHostSocket) }
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    version = try reader.read(UInt16.self, "version")
    guard version >= 1 else { throw reader.error(.invalidValue, "version", "0 is not a protocol version") }
    capabilities = Capabilities(rawValue: try reader.read(UInt64.self, "capabilities"))
    nodeID = try reader.string("nodeID", max: Self.nodeIDBytesMax)
    let namespaceName = try reader.string("namespace", max: Namespace.nameBytesMax)
    do {
      namespace = try Namespace(namespaceName)
    } catch {
      throw reader.error(.invalidValue, "namespace", error.message)
    }
    frameBytesMax = try reader.read(UInt64.self, "frameBytesMax")
    guard frameBytesMax >= UInt64(FrameHeader.byteCount) else {
      throw reader.error(.invalidValue, "frameBytesMax", "\(frameBytesMax) cannot hold a 64-byte header")
    }
    inflightBytesMax = try reader.read(UInt64.self, "inflightBytesMax")
    ringEpoch = try reader.read(UInt64.self, "ringEpoch")
    sameHostSocket = ""
    if reader.remaining > 0 {
      sameHostSocket = try reader.string("sameHostSocket", max: Self.sameHostSocketBytesMax)
      guard !sameHostSocket.isEmpty else {
        throw reader.error(.invalidValue, "sameHostSocket", "an empty path is sent by leaving the field out")
      }
    }
    try reader.finish()
  }
}

/// Asks the node for its statistics; the body is empty.
public struct StatRequest: MessageBody {
  public static let messageName: StaticString = "StatRequest"
  public static let opcode = Opcode.stat
  public static let direction = FrameDirection.request
  public var wireMessage: WireMessage { .statRequest(self) }

  public init() {}
  public var encodedByteCount: Int { 0 }
  public func encode(into out: inout [UInt8]) {}
  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    try WireReader(body, message: Self.messageName).finish()
  }
}

/// The node's statistics as a JSON document; its schema belongs to the node, not to the wire.
public struct StatResponse: MessageBody {
  public static let messageName: StaticString = "StatResponse"
  public static let opcode = Opcode.stat
  public static let direction = FrameDirection.response
  public var wireMessage: WireMessage { .statResponse(self) }

  public var json: String

  public init(json: String) { self.json = json }
  public var encodedByteCount: Int { WireSize.lengthPrefixed(json.utf8.count) }
  public func encode(into out: inout [UInt8]) { out.append(string: json) }
  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    json = try reader.string("json", max: limits.bodyBytesMax)
    try reader.finish()
  }
}

/// The client is done: the server answers the requests already received, replies GOODBYE and closes.
public struct GoodbyeRequest: MessageBody {
  public static let messageName: StaticString = "GoodbyeRequest"
  public static let opcode = Opcode.goodbye
  public static let direction = FrameDirection.request
  public var wireMessage: WireMessage { .goodbyeRequest(self) }

  public init() {}
  public var encodedByteCount: Int { 0 }
  public func encode(into out: inout [UInt8]) {}
  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    try WireReader(body, message: Self.messageName).finish()
  }
}

/// The answer to GOODBYE, or with request id 0 the server's notice that it is draining: send no new
/// requests on this connection; those already sent are still answered.
public struct GoodbyeResponse: MessageBody {
  public static let messageName: StaticString = "GoodbyeResponse"
  public static let opcode = Opcode.goodbye
  public static let direction = FrameDirection.response
  public var wireMessage: WireMessage { .goodbyeResponse(self) }

  public init() {}
  public var encodedByteCount: Int { 0 }
  public func encode(into out: inout [UInt8]) {}
  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    try WireReader(body, message: Self.messageName).finish()
  }
}

/// The body of an error response: a well-formed request that failed. The header's status repeats the
/// code so a transport can route the failure without decoding the body.
public struct ErrorBody: FrameBody {
  public static let messageName: StaticString = "ErrorBody"
  /// Longer messages are cut (at a character boundary) when encoded.
  public static let messageBytesMax = 4096

  /// A `StrataError.Code` number; numbers this build does not know are kept (codes only grow).
  public var code: UInt16
  public var message: String

  public init(code: UInt16, message: String) {
    self.code = code
    self.message = message
  }

  public init(_ error: StrataError) {
    self.init(code: error.code.number, message: error.message)
  }

  /// The error as the receiver reports it; a code this build does not know becomes `.internalError`
  /// with the number in the message.
  public var strataError: StrataError {
    if let known = StrataError.Code(number: code) { return StrataError(known, message) }
    return StrataError(.internalError, "peer error code \(code): \(message)")
  }

  private var encodedMessage: Substring.UTF8View {
    let utf8 = message.utf8
    guard utf8.count > Self.messageBytesMax else { return utf8[...] }
    var end = utf8.index(utf8.startIndex, offsetBy: Self.messageBytesMax)
    // Back off continuation bytes (10xxxxxx) so the cut never splits a character.
    while end > utf8.startIndex, utf8[end] & 0xC0 == 0x80 { end = utf8.index(before: end) }
    return utf8[..<end]
  }

  public var encodedByteCount: Int { WireSize.u16 + WireSize.lengthPrefixed(encodedMessage.count) }

  public func encode(into out: inout [UInt8]) {
    out.append(littleEndian: code)
    out.append(lengthPrefixed: encodedMessage)
  }

  public init(decoding body: UnsafeRawBufferPointer, limits: WireLimits) throws(StrataError) {
    var reader = WireReader(body, message: Self.messageName)
    code = try reader.read(UInt16.self, "code")
    guard code != 0 else { throw reader.error(.invalidValue, "code", "0 means success, not an error") }
    message = try reader.string("message", max: Self.messageBytesMax)
    try reader.finish()
  }
}
