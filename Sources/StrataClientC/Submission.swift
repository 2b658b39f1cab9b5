// Asynchronous submission: strata_submit_{lookup,get,put,delete} check their arguments, start the
// call in a task and return a ticket at once; the finished call is posted to the client's
// completion queue and its event descriptor becomes readable; strata_poll_completions drains the
// queue. The descriptor is an eventfd on Linux (a pipe elsewhere) that is readable exactly while
// completions wait: the queue's lock covers both the queue and the descriptor's state.

import CStrataLinux
import Dispatch
import StrataClient
import StrataCore
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// A finished submission, as strata_completion carries it.
struct Completion: Sendable {
  var ticket: UInt64
  var status: Int32
  var operation: Operation
  var summary: CallSummary
  var message: String
}

final class CompletionQueue: Sendable {
  /// Submissions in flight plus completions not yet polled, per client.
  static let ticketsMax = 65_536

  private struct State {
    var ready: [Completion] = []
    var inFlight = 0
    var nextTicket: UInt64 = 1
  }

  private let state = Mutex(State())
  /// Entered by every submission, left when its completion is queued: close waits on it.
  private let running = DispatchGroup()
  let readDescriptor: Int32
  private let writeDescriptor: Int32

  init() throws(StrataError) {
    var ends: [Int32] = [0, 0]
    guard strata_event_create(&ends) == 0 else {
      throw StrataError(.resourceExhausted, "eventfd failed: \(String(cString: strerror(errno)))")
    }
    readDescriptor = ends[0]
    writeDescriptor = ends[1]
  }

  /// Closes the descriptor (after `waitUntilIdle`).
  func close() {
    _ = systemClose(readDescriptor)
    if writeDescriptor != readDescriptor { _ = systemClose(writeDescriptor) }
  }

  /// A ticket for a new submission, or resource exhausted when too many are outstanding.
  func begin() throws(StrataError) -> UInt64 {
    let ticket = state.withLock { state -> UInt64? in
      guard state.inFlight + state.ready.count < Self.ticketsMax else { return nil }
      state.inFlight += 1
      defer { state.nextTicket += 1 }
      return state.nextTicket
    }
    guard let ticket else {
      throw StrataError(
        .resourceExhausted, "\(Self.ticketsMax) submissions are in flight or unpolled: poll completions first")
    }
    running.enter()
    return ticket
  }

  func complete(_ completion: Completion) {
    state.withLock { state in
      state.inFlight -= 1
      state.ready.append(completion)
      if state.ready.count == 1 { signal() }
    }
    running.leave()
  }

  /// Up to `limit` completions, oldest first.
  func drain(_ limit: Int) -> [Completion] {
    state.withLock { state in
      let taken = Array(state.ready.prefix(limit))
      state.ready.removeFirst(taken.count)
      if !taken.isEmpty && state.ready.isEmpty { reset() }
      return taken
    }
  }

  func waitUntilIdle() { running.wait() }

  private func signal() { strata_event_signal(writeDescriptor) }

  private func reset() { strata_event_reset(readDescriptor) }
}

private func systemClose(_ descriptor: Int32) -> Int32 {
  #if canImport(Glibc)
    Glibc.close(descriptor)
  #elseif canImport(Musl)
    Musl.close(descriptor)
  #else
    Darwin.close(descriptor)
  #endif
}

/// Starts `call` as submission `operation` of `box`'s client and returns its ticket.
private func submit(_ box: ClientBox, _ operation: Operation, _ call: @escaping PreparedCall) throws(StrataError)
  -> UInt64
{
  let queue = box.completions
  let ticket = try queue.begin()
  Task {
    var completion = Completion(ticket: ticket, status: 0, operation: operation, summary: CallSummary(), message: "")
    do throws(StrataError) {
      completion.summary = try await call()
    } catch {
      completion.status = Int32(error.code.number)
      completion.message = "\(error)"
    }
    queue.complete(completion)
  }
  return ticket
}

private func submitted(
  _ function: String, _ ticketOut: UnsafeMutablePointer<UInt64>?, _ operation: Operation,
  _ handle: OpaquePointer?, _ prepare: (ClientBox) throws(StrataError) -> PreparedCall
) -> Int32 {
  guarded(function) { () throws(StrataError) in
    let ticketOut = try required(ticketOut, "ticket_out")
    ticketOut.pointee = 0
    let box = try box(handle)
    ticketOut.pointee = try submit(box, operation, try prepare(box))
  }
}

@_cdecl("strata_submit_lookup")
public func strataSubmitLookup(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ leaseMilliseconds: UInt32,
  _ tiersOut: UnsafeMutablePointer<UInt8>?, _ sizesOut: UnsafeMutablePointer<UInt64>?,
  _ ticketOut: UnsafeMutablePointer<UInt64>?
) -> Int32 {
  submitted("strata_submit_lookup", ticketOut, .lookup, handle) { box throws(StrataError) in
    try prepareLookup(box, keys, count, leaseMilliseconds: leaseMilliseconds, tiersOut, sizesOut)
  }
}

@_cdecl("strata_submit_get")
public func strataSubmitGet(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ lease: UInt64,
  _ segments: UnsafeRawPointer?, _ segmentCounts: UnsafePointer<Int>?, _ offsets: UnsafePointer<UInt64>?,
  _ lengthsOut: UnsafeMutablePointer<Int64>?, _ ticketOut: UnsafeMutablePointer<UInt64>?
) -> Int32 {
  submitted("strata_submit_get", ticketOut, .get, handle) { box throws(StrataError) in
    try prepareGet(box, keys, count, lease: lease, segments, segmentCounts, offsets, lengthsOut)
  }
}

@_cdecl("strata_submit_put")
public func strataSubmitPut(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ segments: UnsafeRawPointer?,
  _ segmentCounts: UnsafePointer<Int>?, _ outcomesOut: UnsafeMutablePointer<UInt8>?,
  _ ticketOut: UnsafeMutablePointer<UInt64>?
) -> Int32 {
  submitted("strata_submit_put", ticketOut, .put, handle) { box throws(StrataError) in
    try preparePut(box, keys, count, segments, segmentCounts, outcomesOut)
  }
}

@_cdecl("strata_submit_delete")
public func strataSubmitDelete(
  _ handle: OpaquePointer?, _ keys: UnsafePointer<UInt8>?, _ count: Int, _ removedOut: UnsafeMutablePointer<UInt8>?,
  _ ticketOut: UnsafeMutablePointer<UInt64>?
) -> Int32 {
  submitted("strata_submit_delete", ticketOut, .delete, handle) { box throws(StrataError) in
    try prepareDelete(box, keys, count, removedOut)
  }
}

@_cdecl("strata_completion_fd")
public func strataCompletionFD(_ handle: OpaquePointer?, _ fdOut: UnsafeMutablePointer<Int32>?) -> Int32 {
  guarded("strata_completion_fd") { () throws(StrataError) in
    let fdOut = try required(fdOut, "fd_out")
    fdOut.pointee = try box(handle).completions.readDescriptor
  }
}

/// Bytes of one strata_completion, and of its message field (NUL-terminated, truncated to fit).
let completionBytes = 256
let completionMessageOffset = 32

@_cdecl("strata_poll_completions")
public func strataPollCompletions(
  _ handle: OpaquePointer?, _ completionsOut: UnsafeMutableRawPointer?, _ capacity: Int,
  _ countOut: UnsafeMutablePointer<Int>?
) -> Int32 {
  guarded("strata_poll_completions") { () throws(StrataError) in
    let countOut = try required(countOut, "count_out")
    countOut.pointee = 0
    let box = try box(handle)
    try checkCount(capacity, "capacity")
    guard let out = try array(completionsOut, "completions_out", count: capacity), capacity > 0 else { return }
    let taken = box.completions.drain(capacity)
    for (index, completion) in taken.enumerated() {
      let entry = out + index * completionBytes
      entry.initializeMemory(as: UInt8.self, repeating: 0, count: completionBytes)
      entry.storeBytes(of: completion.ticket, as: UInt64.self)
      entry.storeBytes(of: completion.status, toByteOffset: 8, as: Int32.self)
      entry.storeBytes(of: completion.operation.rawValue, toByteOffset: 12, as: UInt32.self)
      entry.storeBytes(of: completion.summary.leadingRun, toByteOffset: 16, as: UInt64.self)
      entry.storeBytes(of: completion.summary.lease, toByteOffset: 24, as: UInt64.self)
      let message = Array(completion.message.utf8.prefix(completionBytes - completionMessageOffset - 1))
      for (offset, byte) in message.enumerated() {
        entry.storeBytes(of: byte, toByteOffset: completionMessageOffset + offset, as: UInt8.self)
      }
    }
    countOut.pointee = taken.count
  }
}
