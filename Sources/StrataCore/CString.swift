// Text from the fixed-size C buffers that system calls fill (host names, numeric addresses).

extension String {
  /// The text of a C string that a system call wrote into a fixed buffer: the bytes before the
  /// first NUL (all of them when there is none), invalid UTF-8 repaired.
  public init(nulTerminated buffer: [CChar]) {
    self = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}
