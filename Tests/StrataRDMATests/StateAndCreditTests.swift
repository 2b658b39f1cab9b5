// The pure parts of the RDMA transport: the connection state machine, credit accounting, work
// request batching, the message codec and the transport decision. No device needed.

import StrataCore
import StrataRDMA
import StrataTestKit
import StrataWire
import Testing

@Suite struct ConnectionStateMachineTests {
  @Test func clientComesUpThroughResolveAndConnect() {
    var machine = RDMAConnectionStateMachine(role: .client)
    #expect(machine.handle(.start) == .resolveAddress)
    #expect(machine.handle(.addressResolved) == .resolveRoute)
    #expect(machine.handle(.routeResolved) == .createQueuePairAndConnect)
    #expect(!machine.canPost)
    #expect(machine.handle(.established) == .ready)
    #expect(machine.canPost)
    #expect(machine.handle(.close) == .disconnect)
    #expect(!machine.canPost)
    // Requests flushed by our own disconnect are not a failure.
    #expect(machine.handle(.completionError("WR flushed")) == .none)
    #expect(machine.handle(.disconnected) == .tearDown(failOverToTCP: false))
    #expect(machine.state == .closed)
  }

  @Test func serverAcceptsAConnectRequest() {
    var machine = RDMAConnectionStateMachine(role: .server)
    #expect(machine.handle(.start) == .tearDown(failOverToTCP: true), "a server never starts a connect")
    var server = RDMAConnectionStateMachine(role: .server)
    #expect(server.handle(.connectRequest) == .createQueuePairAndAccept)
    #expect(server.handle(.established) == .ready)
  }

  @Test func everySetupFailureFallsBackToTCPWithItsReason() {
    let paths: [[RDMAConnectionEvent]] = [
      [.start], [.start, .addressResolved], [.start, .addressResolved, .routeResolved],
    ]
    for path in paths {
      var machine = RDMAConnectionStateMachine(role: .client)
      for event in path { _ = machine.handle(event) }
      #expect(machine.handle(.setupError("no route to host")) == .tearDown(failOverToTCP: true))
      #expect(machine.state == .failed(RDMAFailure("no route to host")))
      #expect(machine.handle(.established) == .none, "a failed connection stays failed")
    }
    var rejected = RDMAConnectionStateMachine(role: .client)
    for event in [RDMAConnectionEvent.start, .addressResolved, .routeResolved] { _ = rejected.handle(event) }
    #expect(rejected.handle(.rejected(status: 28)) == .tearDown(failOverToTCP: true))
    guard case .failed(let failure) = rejected.state else {
      Issue.record("rejected connection is \(rejected.state)")
      return
    }
    #expect(failure.reason.contains("rejected") && failure.reason.contains("28"))
  }

  @Test func aQueuePairErrorMidStreamFailsOver() {
    var machine = RDMAConnectionStateMachine(role: .client)
    for event in [RDMAConnectionEvent.start, .addressResolved, .routeResolved, .established] {
      _ = machine.handle(event)
    }
    #expect(machine.handle(.completionError("remote access error")) == .tearDown(failOverToTCP: true))
    guard case .failed(let failure) = machine.state else {
      Issue.record("state \(machine.state)")
      return
    }
    #expect(failure.reason.contains("remote access error"))
  }

  @Test func impossibleEventsFailLoudlyNamingBoth() {
    var machine = RDMAConnectionStateMachine(role: .client)
    _ = machine.handle(.start)
    #expect(machine.handle(.established) == .tearDown(failOverToTCP: true))
    guard case .failed(let failure) = machine.state else {
      Issue.record("state \(machine.state)")
      return
    }
    #expect(failure.reason.contains("established") && failure.reason.contains("resolvingAddress"))
  }
}

@Suite struct CreditWindowTests {
  @Test func sendingStopsOneShortOfTheDepthAndCreditsComeBack() throws {
    var window = CreditWindow(receiveDepth: 4)
    for _ in 0..<3 { _ = try window.spend() }
    #expect(!window.canSendMessage)
    #expect(throws: StrataError.self) { try window.spend() }
    // The reserved credit still carries a credit-only message.
    _ = try window.spend(creditOnly: true)
    #expect(window.sendCredits == 0)
    try window.received(returning: 4)
    #expect(window.sendCredits == 4)
    #expect(window.creditsToReturn == 1)
  }

  @Test func receivedMessagesArePiggybackedOnTheNextSend() throws {
    var window = CreditWindow(receiveDepth: 8)
    for _ in 0..<3 { try window.received(returning: 0) }
    #expect(window.creditsToReturn == 3)
    #expect(try window.spend() == 3)
    #expect(window.creditsToReturn == 0)
    #expect(try window.spend() == 0)
  }

  @Test func aCreditUpdateIsDueAtHalfTheDepth() throws {
    var window = CreditWindow(receiveDepth: 8)
    for _ in 0..<3 { try window.received(returning: 0) }
    #expect(!window.shouldSendCreditUpdate)
    try window.received(returning: 0)
    #expect(window.shouldSendCreditUpdate)
  }

  @Test func peerViolationsAreProtocolErrors() throws {
    var window = CreditWindow(receiveDepth: 4)
    _ = try window.spend()
    #expect { try window.received(returning: 2) } throws: { ($0 as? StrataError)?.code == .protocolError }
    var flooded = CreditWindow(receiveDepth: 4)
    for _ in 0..<4 { try flooded.received(returning: 0) }
    #expect { try flooded.received(returning: 0) } throws: { ($0 as? StrataError)?.code == .protocolError }
  }

  /// Two windows exchanging messages at random never over-run a peer's receives.
  @Test func twoPeersNeverOverrunEachOther() throws {
    var random = SplitMix64(seed: 6)
    var sides = [CreditWindow(receiveDepth: 6), CreditWindow(receiveDepth: 6)]
    var inFlight: [[UInt16]] = [[], []]  // messages travelling to side i, with their credits
    for _ in 0..<10_000 {
      let side = Int(random.next() % 2)
      if random.next() % 2 == 0, sides[side].canSendMessage || sides[side].shouldSendCreditUpdate {
        let creditOnly = !sides[side].canSendMessage
        inFlight[1 - side].append(try sides[side].spend(creditOnly: creditOnly))
        #expect(inFlight[1 - side].count <= 6, "more messages in flight than the peer has receives")
      } else if !inFlight[side].isEmpty {
        try sides[side].received(returning: inFlight[side].removeFirst())
      }
    }
  }
}

@Suite struct WorkRequestBatcherTests {
  func transfer(_ item: Int, _ length: Int, remote: UInt64 = 0x10_0000) -> Transfer {
    Transfer(
      item: item, local: LocalSegment(address: 0x1000 * UInt64(item + 1), localKey: 7),
      remote: RemoteDescriptor(address: remote + UInt64(item) * 0x10_0000, key: 9, length: UInt32(length)),
      length: length)
  }

  @Test func largeTransfersSplitAtTheMessageSize() throws {
    var batcher = WorkRequestBatcher(
      operation: .write, limits: BatchLimits(sendQueueDepth: 64, requestsPerPost: 64, messageBytesMax: 1000))
    try batcher.enqueue([transfer(0, 2500), transfer(1, 1000)])
    let chain = batcher.nextPost()
    #expect(chain.map(\.length) == [1000, 1000, 500, 1000])
    #expect(chain.map(\.remoteAddress) == [0x10_0000, 0x10_0000 + 1000, 0x10_0000 + 2000, 0x20_0000])
    #expect(chain.map(\.localAddress) == [0x1000, 0x1000 + 1000, 0x1000 + 2000, 0x2000])
    #expect(chain.map(\.signaled) == [false, false, false, true])
    #expect(chain.allSatisfy { $0.operation == .write && $0.remoteKey == 9 && $0.localKey == 7 })
  }

  @Test func chainsRespectTheSendQueueAndOneSignalRetiresItsChain() throws {
    var batcher = WorkRequestBatcher(
      operation: .read, limits: BatchLimits(sendQueueDepth: 5, requestsPerPost: 3, messageBytesMax: 1 << 20))
    try batcher.enqueue((0..<8).map { transfer($0, 4096) })
    let first = batcher.nextPost()
    let second = batcher.nextPost()
    #expect(first.count == 3 && second.count == 2, "3 per post, 5 in the queue")
    #expect(batcher.nextPost().isEmpty, "the send queue is full")
    #expect(try batcher.completed(id: first[2].id) == [0, 1, 2])
    let third = batcher.nextPost()
    #expect(third.count == 3)
    #expect(try batcher.completed(id: third[2].id) == [3, 4, 5, 6, 7])
    #expect(batcher.isIdle)
  }

  @Test func anItemCompletesOnlyWhenAllItsPiecesDo() throws {
    var batcher = WorkRequestBatcher(
      operation: .write, limits: BatchLimits(sendQueueDepth: 2, requestsPerPost: 2, messageBytesMax: 100))
    try batcher.enqueue([transfer(0, 300)])
    let first = batcher.nextPost()
    #expect(try batcher.completed(id: first[1].id) == [])
    let second = batcher.nextPost()
    #expect(second.count == 1)
    #expect(try batcher.completed(id: second[0].id) == [0])
  }

  @Test func badCompletionsAndOversizedTransfersAreRejected() throws {
    var batcher = WorkRequestBatcher(
      operation: .write, limits: BatchLimits(sendQueueDepth: 8, requestsPerPost: 8, messageBytesMax: 1 << 20))
    var tooBig = transfer(0, 100)
    tooBig.remote.length = 50
    #expect(throws: StrataError.self) { try batcher.enqueue([tooBig]) }
    try batcher.enqueue([transfer(0, 10), transfer(1, 10)])
    let chain = batcher.nextPost()
    #expect(throws: StrataError.self) { try batcher.completed(id: chain[0].id) }  // unsignaled
    #expect(throws: StrataError.self) { try batcher.completed(id: 999) }
  }

  @Test func aFailedQueuePairHandsBackEveryUnfinishedItem() throws {
    var batcher = WorkRequestBatcher(
      operation: .write, limits: BatchLimits(sendQueueDepth: 3, requestsPerPost: 3, messageBytesMax: 1 << 20))
    try batcher.enqueue((0..<6).map { transfer($0, 64) })
    let chain = batcher.nextPost()
    _ = try batcher.completed(id: chain[2].id)
    _ = batcher.nextPost()
    #expect(batcher.abandonAll() == [3, 4, 5])
    #expect(batcher.isIdle)
  }

  /// Random transfers and limits: every byte of every item is covered exactly once, in order.
  @Test func randomBatchesCoverEveryByteOnce() throws {
    var random = SplitMix64(seed: 66)
    for _ in 0..<200 {
      let limits = BatchLimits(
        sendQueueDepth: Int(random.next() % 16) + 1, requestsPerPost: Int(random.next() % 8) + 1,
        messageBytesMax: Int(random.next() % 5000) + 1)
      var batcher = WorkRequestBatcher(operation: .write, limits: limits)
      let lengths = (0..<Int(random.next() % 20) + 1).map { _ in Int(random.next() % 20_000) + 1 }
      try batcher.enqueue(lengths.enumerated().map { transfer($0.offset, $0.element) })
      var covered = [Int](repeating: 0, count: lengths.count)
      var completed: [Int] = []
      while !batcher.isIdle {
        let chain = batcher.nextPost()
        #expect(
          !chain.isEmpty && chain.count <= limits.requestsPerPost && batcher.outstandingCount <= limits.sendQueueDepth)
        for request in chain {
          #expect(request.length <= limits.messageBytesMax)
          #expect(request.localAddress == 0x1000 * UInt64(request.item + 1) + UInt64(covered[request.item]))
          covered[request.item] += request.length
        }
        completed += try batcher.completed(id: chain.last!.id)
      }
      #expect(covered == lengths)
      #expect(completed == Array(lengths.indices))
    }
  }
}

@Suite struct RDMAMessageTests {
  @Test func roundTripsWithDescriptors() throws {
    let frame = GetRequest(items: [GetRequest.Item(key: BlockKey(bytes: [UInt8](repeating: 3, count: 32))!)])
      .wireMessage.frameBytes(requestID: 5, ringEpoch: 0)
    let message = RDMAMessage(
      credits: 3, frame: frame, descriptors: [RemoteDescriptor(address: 0xDEAD_BEEF_0000, key: 0x1234, length: 4096)])
    let bytes = try message.encoded()
    #expect(bytes.count == message.encodedByteCount)
    let decoded = try bytes.withUnsafeBytes { try RDMAMessage(decoding: $0) }
    #expect(decoded == message)
    let (header, wire) = try decoded.decodedFrame(limits: .standard, receiving: .request)
    #expect(header.requestID == 5)
    guard case .getRequest(let request) = wire else {
      Issue.record("decoded \(wire)")
      return
    }
    #expect(request.items.count == 1)
  }

  @Test func malformedMessagesAreRejected() throws {
    let frame = StatRequest().wireMessage.frameBytes(requestID: 1, ringEpoch: 0)
    let good = try RDMAMessage(frame: frame, descriptors: [RemoteDescriptor(address: 1, key: 2, length: 3)]).encoded()
    var cases: [[UInt8]] = [Array(good.prefix(10)), Array(good.dropLast()), good + [0]]
    var badMagic = good
    badMagic[0] ^= 1
    var reserved = good
    reserved[13] = 1
    cases += [badMagic, reserved]
    for bytes in cases {
      #expect { try bytes.withUnsafeBytes { try RDMAMessage(decoding: $0) } } throws: {
        ($0 as? StrataError)?.code == .protocolError
      }
    }
    let huge = RDMAMessage(frame: [UInt8](repeating: 0, count: RDMAMessage.bytesMax))
    #expect(throws: StrataError.self) { try huge.encoded() }
  }
}

@Suite struct TransportNegotiationTests {
  let device = RDMAAvailability.available(devices: ["mlx5_0"])
  let none = RDMAAvailability.unavailable(reason: "ibv_get_device_list: the kernel has no RDMA support (errno 38)")

  @Test func rdmaOnlyWhenBothSidesHaveIt() {
    #expect(TransportNegotiation.offered(local: device, rdmaEnabled: true).contains(.rdma))
    #expect(!TransportNegotiation.offered(local: device, rdmaEnabled: false).contains(.rdma))
    #expect(!TransportNegotiation.offered(local: none, rdmaEnabled: true).contains(.rdma))

    let (both, bothDecision) = TransportNegotiation.grant(offered: [.tcp, .rdma, .leases], node: device)
    #expect(both == [.tcp, .rdma, .leases] && bothDecision.transport == .rdma)
    let (nodeless, nodelessDecision) = TransportNegotiation.grant(offered: [.tcp, .rdma, .leases], node: none)
    #expect(!nodeless.contains(.rdma) && nodelessDecision.transport == .tcp)
    #expect(nodelessDecision.reason.contains("errno 38"))
    let (plain, plainDecision) = TransportNegotiation.grant(offered: [.tcp, .leases], node: device)
    #expect(!plain.contains(.rdma) && plainDecision.reason.contains("did not offer"))
  }

  @Test func theClientFallsBackWithTheReason() {
    let plan = TransportNegotiation.clientPlan(local: device, rdmaEnabled: true, granted: [.tcp, .rdma])
    #expect(plan.transport == .rdma)
    let failed = TransportNegotiation.afterConnect(plan, failure: RDMAFailure("rdma_resolve_route: timeout"))
    #expect(failed.transport == .tcp && failed.reason.contains("rdma_resolve_route"))
    #expect(TransportNegotiation.afterConnect(plan, failure: nil).transport == .rdma)
    #expect(
      TransportNegotiation.clientPlan(local: device, rdmaEnabled: true, granted: [.tcp]).reason.contains(
        "did not grant"))
    #expect(TransportNegotiation.clientPlan(local: none, rdmaEnabled: true, granted: [.tcp, .rdma]).transport == .tcp)
    #expect(
      TransportNegotiation.clientPlan(local: device, rdmaEnabled: false, granted: [.tcp, .rdma]).reason.contains(
        "disabled"))
  }
}
