// Bounded send/receive credits for the two-sided messages (SEND/RECV) of an RDMA connection. A
// SEND that finds no posted receive at the peer is a fatal receiver-not-ready error on a
// reliable connection, so nothing is sent without a credit; credits come back piggybacked.

public import StrataCore

/// One side's view of the credits of a connection. Both sides post `receiveDepth` receives before
/// the connection is established, so each starts with `receiveDepth` credits to spend.
///
/// The last credit is kept for a message that only returns credits: two peers that each spent all
/// but one can always tell each other that receives were reposted, so the window never deadlocks.
public struct CreditWindow: Sendable, Hashable {
  public let receiveDepth: Int
  /// Messages this side may still send before the peer returns credits.
  public private(set) var sendCredits: Int
  /// Receives this side has consumed and reposted but not yet told the peer about.
  public private(set) var creditsToReturn: Int = 0

  public init(receiveDepth: Int) {
    precondition(receiveDepth >= 2, "CreditWindow: a receive depth of \(receiveDepth) leaves no credit to return")
    precondition(receiveDepth <= Int(UInt16.max), "CreditWindow: receive depth \(receiveDepth) exceeds a u16")
    self.receiveDepth = receiveDepth
    sendCredits = receiveDepth
  }

  /// Whether a request or response may be sent now (one credit stays for a credit return).
  public var canSendMessage: Bool { sendCredits >= 2 }

  /// Whether this side should send a message carrying only credits: the peer is down to its last
  /// credit's worth of our receives, or half of them wait to be returned.
  public var shouldSendCreditUpdate: Bool { creditsToReturn >= receiveDepth / 2 && sendCredits >= 1 }

  /// Spends a credit for a message and takes the credits to piggyback on it.
  /// - Parameter creditOnly: a message that only returns credits may spend the reserved credit.
  public mutating func spend(creditOnly: Bool = false) throws(StrataError) -> UInt16 {
    guard creditOnly ? sendCredits >= 1 : sendCredits >= 2 else {
      throw StrataError(
        .resourceExhausted, "RDMA send credits exhausted (\(sendCredits) of \(receiveDepth) left); wait for the peer")
    }
    sendCredits -= 1
    defer { creditsToReturn = 0 }
    return UInt16(creditsToReturn)
  }

  /// A message arrived: its receive was consumed (and is reposted by the caller) and it returned
  /// `returned` of our credits. More credits than were ever spent is a protocol error.
  public mutating func received(returning returned: UInt16) throws(StrataError) {
    let outstanding = receiveDepth - sendCredits
    guard Int(returned) <= outstanding else {
      throw StrataError(
        .protocolError, "the peer returned \(returned) RDMA credits but only \(outstanding) were outstanding")
    }
    guard creditsToReturn < receiveDepth else {
      throw StrataError(
        .protocolError, "the peer sent more than \(receiveDepth) messages without a credit from this side")
    }
    sendCredits += Int(returned)
    creditsToReturn += 1
  }
}
