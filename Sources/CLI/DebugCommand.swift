// `strata debug`: storage drills for operators and for the crash tests. `write-blocks` writes
// deterministic blocks through the tier manager and prints "ack N" once block N is on disk;
// `check-blocks` restarts over the same folder and reports what came back.

import ArgumentParser
import Logging
import StrataConfig
import StrataCore
import StrataStorage

#if canImport(Glibc)
  import Glibc
#endif

struct Debug: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Storage drills: write deterministic blocks, then check what a restart recovers.",
    subcommands: [WriteBlocks.self, CheckBlocks.self])

  struct Drill: ParsableArguments {
    @Option(help: "Data folder (the NVMe tier goes to DIR/nvme).")
    var dataDir: String

    @Option(help: "Number of blocks.")
    var count: Int = 1000

    @Option(help: "Bytes per block, like 64KiB.")
    var size: String = "64KiB"

    @Option(help: "Seed of the block contents and keys.")
    var seed: UInt64 = 1

    @Option(help: "RAM tier size.")
    var ram: String = "64MiB"

    @Option(help: "NVMe tier size.")
    var nvme: String = "256MiB"

    @Option(help: "NVMe region size.")
    var regionSize: String = "4MiB"

    func blockBytes() throws(StrataError) -> Int {
      let bytes = Int(try ByteSize(parsing: size).bytes)
      guard bytes > 0 else { throw StrataError(.invalidArgument, "--size must be greater than zero") }
      return bytes
    }

    func nodeConfiguration() throws(StrataError) -> NodeConfiguration {
      var node = NodeConfiguration()
      node.dataDirectory = dataDir
      node.ram.capacity = try ByteSize(parsing: ram)
      node.ram.lock = false
      node.ram.hugePages = false
      node.nvme.defaultCapacity = try ByteSize(parsing: nvme)
      node.nvme.regionSize = try ByteSize(parsing: regionSize)
      node.nvme.admission = .always
      let bytes = UInt64(try blockBytes())
      node.limits.blockBytesMax = ByteSize(bytes: (bytes + 4095) / 4096 * 4096)
      try node.validate(on: thisMachine())
      return node
    }

    /// Block n of the drill: its id and its bytes, both derived from (seed, n).
    func block(_ n: Int, bytes: Int) -> (BlockID, [UInt8]) {
      var header: [UInt8] = []
      withUnsafeBytes(of: seed.littleEndian) { header += $0 }
      withUnsafeBytes(of: UInt64(n).littleEndian) { header += $0 }
      let key = SHA256.digest(header)
      var state = key.prefix64 | 1
      let payload = [UInt8](unsafeUninitializedCapacity: bytes) { buffer, count in
        for index in 0..<bytes {
          state ^= state << 13
          state ^= state >> 7
          state ^= state << 17
          buffer[index] = UInt8(truncatingIfNeeded: state)
        }
        count = bytes
      }
      return (BlockID(namespace: .embeddedDefault, key: key), payload)
    }
  }

  struct WriteBlocks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Write blocks 0..<count; print 'ack N' when block N is on disk.")

    @OptionGroup var drill: Drill

    func run() async throws {
      do throws(StrataError) {
        let bytes = try drill.blockBytes()
        let (tiers, _) = try TierManager.open(try drill.nodeConfiguration(), logger: Logger(label: "strata"))
        for n in 0..<drill.count {
          let (id, payload) = drill.block(n, bytes: bytes)
          try await tiers.put(id, bytes: payload)
          guard try await tiers.persist(id) else {
            throw StrataError(.internalError, "block \(n) was not written to NVMe")
          }
          print("ack \(n)")
          fflush(nil)  // the test reading this reacts to each ack at once
        }
      } catch {
        throw report(error)
      }
    }
  }

  struct CheckBlocks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Restart over the data folder and check blocks 0..<count; print one JSON line.",
      discussion: "Exit 0 when no block came back with wrong bytes; 1 otherwise.")

    @OptionGroup var drill: Drill

    func run() async throws {
      var wrongCount = 0
      do throws(StrataError) {
        let bytes = try drill.blockBytes()
        let (tiers, recovery) = try TierManager.open(try drill.nodeConfiguration(), logger: Logger(label: "strata"))
        var intact: [Int] = []
        var wrong: [Int] = []
        for n in 0..<drill.count {
          let (id, payload) = drill.block(n, bytes: bytes)
          guard let found = try await tiers.read(id) else { continue }
          if found == payload { intact.append(n) } else { wrong.append(n) }
        }
        let ranges = compress(intact)
        print(
          "{\"recovered\":\(recovery?.blocksRecovered ?? 0),\"corrupt_dropped\":\(recovery?.corruptDropped ?? 0),"
            + "\"intact\":\(intact.count),\"intact_ranges\":\"\(ranges)\",\"wrong\":\(wrong),"
            + "\"startup_seconds\":\(recovery?.durationSeconds ?? 0)}")
        wrongCount = wrong.count
      } catch {
        throw report(error)
      }
      if wrongCount > 0 { throw ExitCodes.failure }
    }

    /// "0-99,101-120": runs of consecutive numbers.
    private func compress(_ numbers: [Int]) -> String {
      var parts: [String] = []
      var index = 0
      while index < numbers.count {
        var end = index
        while end + 1 < numbers.count && numbers[end + 1] == numbers[end] + 1 { end += 1 }
        parts.append(index == end ? "\(numbers[index])" : "\(numbers[index])-\(numbers[end])")
        index = end + 1
      }
      return parts.joined(separator: ",")
    }
  }
}
