// Plans the one-sided work requests of a batch: splits transfers at the port's message size,
// posts them in chains bounded by the send queue, signals only the last of each chain, and maps
// completions back to the batch's items. Pure, so the accounting is tested without a device.

public import StrataCore

/// The one-sided operations the node posts: WRITE for GET (arena → client), READ for PUT
/// (client → arena).
public enum RDMAOperation: Sendable, Hashable {
  case write
  case read
}

/// Memory this side registered: an address and its local key.
public struct LocalSegment: Sendable, Hashable {
  public var address: UInt64
  public var localKey: UInt32
  public init(address: UInt64, localKey: UInt32) {
    self.address = address
    self.localKey = localKey
  }
}

/// One item's transfer: `length` bytes between local memory and the peer's descriptor.
public struct Transfer: Sendable, Hashable {
  public var item: Int
  public var local: LocalSegment
  public var remote: RemoteDescriptor
  public var length: Int
  public init(item: Int, local: LocalSegment, remote: RemoteDescriptor, length: Int) {
    self.item = item
    self.local = local
    self.remote = remote
    self.length = length
  }
}

/// A work request ready to post: `id` is its wr_id, unique and increasing on the connection.
public struct PlannedWorkRequest: Sendable, Hashable {
  public var id: UInt64
  public var operation: RDMAOperation
  public var item: Int
  public var localAddress: UInt64
  public var localKey: UInt32
  public var remoteAddress: UInt64
  public var remoteKey: UInt32
  public var length: Int
  /// Only signaled requests produce a completion; one retires every request posted before it.
  public var signaled: Bool
}

/// The limits a batch is planned under, from the device and the queue pair.
public struct BatchLimits: Sendable, Hashable {
  /// The send queue depth (max_send_wr): requests posted and not yet retired.
  public var sendQueueDepth: Int
  /// Requests linked into one ibv_post_send call.
  public var requestsPerPost: Int
  /// The port's largest message (max_msg_sz); longer transfers are split.
  public var messageBytesMax: Int

  public init(sendQueueDepth: Int, requestsPerPost: Int, messageBytesMax: Int) {
    precondition(
      sendQueueDepth >= 1 && requestsPerPost >= 1 && messageBytesMax >= 1,
      "BatchLimits: \(sendQueueDepth), \(requestsPerPost), \(messageBytesMax)")
    self.sendQueueDepth = sendQueueDepth
    self.requestsPerPost = requestsPerPost
    self.messageBytesMax = messageBytesMax
  }
}

/// The work requests of one connection's batches in flight.
public struct WorkRequestBatcher: Sendable {
  public let limits: BatchLimits
  public let operation: RDMAOperation
  private var queued = FIFO<PlannedWorkRequest>()
  /// Posted and not yet retired, in posting order.
  private var outstanding: [PlannedWorkRequest] = []
  /// Requests not yet retired per item (queued or posted).
  private var remainingPerItem: [Int: Int] = [:]
  private var nextID: UInt64

  public init(operation: RDMAOperation, limits: BatchLimits, firstID: UInt64 = 1) {
    self.operation = operation
    self.limits = limits
    nextID = firstID
  }

  /// Nothing is queued or in flight.
  public var isIdle: Bool { queued.isEmpty && outstanding.isEmpty }
  public var outstandingCount: Int { outstanding.count }
  public var queuedCount: Int { queued.count }

  /// Adds transfers; each becomes one or more work requests of at most `messageBytesMax`.
  public mutating func enqueue(_ transfers: [Transfer]) throws(StrataError) {
    for transfer in transfers {
      guard transfer.length > 0 else { continue }
      guard transfer.length <= Int(transfer.remote.length) else {
        throw StrataError(
          .invalidArgument,
          "item \(transfer.item): \(transfer.length) bytes do not fit the peer's \(transfer.remote.length)-byte region")
      }
      var offset = 0
      while offset < transfer.length {
        let length = min(limits.messageBytesMax, transfer.length - offset)
        queued.append(
          PlannedWorkRequest(
            id: nextID, operation: operation, item: transfer.item,
            localAddress: transfer.local.address + UInt64(offset),
            localKey: transfer.local.localKey, remoteAddress: transfer.remote.address + UInt64(offset),
            remoteKey: transfer.remote.key, length: length, signaled: false))
        remainingPerItem[transfer.item, default: 0] += 1
        nextID += 1
        offset += length
      }
    }
  }

  /// The next chain to post: as many queued requests as the send queue and one post allow, the
  /// last one signaled. Empty when the queue is full or nothing is queued.
  public mutating func nextPost() -> [PlannedWorkRequest] {
    let room = min(limits.sendQueueDepth - outstanding.count, limits.requestsPerPost, queued.count)
    guard room > 0 else { return [] }
    var chain = queued.removeFirst(upTo: room)
    chain[chain.count - 1].signaled = true
    outstanding += chain
    return chain
  }

  /// A signaled request completed successfully: it and every request posted before it are done.
  /// Returns the items whose every request is now done, in order.
  public mutating func completed(id: UInt64) throws(StrataError) -> [Int] {
    guard let index = outstanding.firstIndex(where: { $0.id == id }) else {
      throw StrataError(.protocolError, "completion for work request \(id), which is not outstanding")
    }
    guard outstanding[index].signaled else {
      throw StrataError(.protocolError, "completion for unsignaled work request \(id)")
    }
    var done: [Int] = []
    for request in outstanding[...index] {
      let left = remainingPerItem[request.item, default: 0] - 1
      if left == 0 {
        remainingPerItem[request.item] = nil
        done.append(request.item)
      } else {
        remainingPerItem[request.item] = left
      }
    }
    outstanding.removeFirst(index + 1)
    return done
  }

  /// Records that the device is done with request `id` and, a queue pair completing in order,
  /// with every request posted before it — signaled or not. Used while draining a stopped queue
  /// pair, whose requests all complete flushed. Returns false for an id that is not outstanding.
  @discardableResult
  public mutating func flushed(id: UInt64) -> Bool {
    guard let index = outstanding.firstIndex(where: { $0.id == id }) else { return false }
    for request in outstanding[...index] {
      let left = remainingPerItem[request.item, default: 0] - 1
      remainingPerItem[request.item] = left <= 0 ? nil : left
    }
    outstanding.removeFirst(index + 1)
    return true
  }

  /// The queue pair failed: every request in flight or queued is abandoned. Returns the items they
  /// belonged to (sorted, once each), which the caller moves to TCP.
  public mutating func abandonAll() -> [Int] {
    let items = Set(outstanding.map(\.item)).union(queued.map(\.item))
    outstanding.removeAll()
    queued.removeAll()
    remainingPerItem.removeAll()
    return items.sorted()
  }
}
