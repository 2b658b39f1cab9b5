// The data plane's seam for metrics: a NodeServer tells its observer about every request it
// answered (operation, duration, outcome, block sizes). The metrics module implements it.

public import StrataCore

/// One request answered by the data plane.
public struct RequestEvent: Sendable {
  /// The operation: hello, lookup, get, put, delete, stat, ring or goodbye.
  public var op: String
  /// tcp (rdma once that transport lands).
  public var transport: String
  /// From the frame header's arrival to the response written.
  public var seconds: Double
  /// The error the request was answered with; nil when it succeeded.
  public var error: StrataError.Code?
  /// Bytes of each block moved (GET payloads sent, PUT payloads stored); empty for other operations.
  public var blockBytes: [Int]
  /// The client's request id (from the frame header), for logs.
  public var requestID: UInt64

  public init(
    op: String, transport: String, seconds: Double, error: StrataError.Code?, blockBytes: [Int], requestID: UInt64
  ) {
    self.op = op
    self.transport = transport
    self.seconds = seconds
    self.error = error
    self.blockBytes = blockBytes
    self.requestID = requestID
  }
}

/// Told about every request a node answers, on the connection's thread: keep it quick.
public protocol NodeObserver: Sendable {
  func requestFinished(_ event: RequestEvent)
}
