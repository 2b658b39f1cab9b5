// Client commands for people and scripts: put, get, lookup and stat against a running node,
// with human output or --json.

import ArgumentParser
import StrataClient
import StrataConfig
import StrataCore
import StrataTCP
import StrataWire

#if canImport(Glibc)
  import Glibc
#endif

struct NodeOptions: ParsableArguments {
  @Option(help: "The node, HOST:PORT.")
  var node: String = "127.0.0.1:\(NodeConfiguration.defaultPort)"

  @Option(
    help: ArgumentHelp(
      "Nodes of a cluster, HOST:PORT,HOST:PORT…: the ring is fetched from them and every key goes to its owners.",
      valueName: "seeds"))
  var seeds: String?

  @Option(help: "Credentials the node maps to a namespace.")
  var token: String = ""

  @OptionGroup var tls: TLSOptions

  @Option(help: "Timeout of each request, in milliseconds.")
  var timeoutMs: UInt64 = 30_000

  @Flag(help: "Print JSON instead of text.")
  var json = false

  @Option(help: "PUT: owners that must hold each block before the node answers (0: the node's cluster.write_quorum).")
  var writeQuorum: Int = 0

  func client(
    connections: Int = 1, adjust: (inout StrataClient.Configuration) -> Void = { _ in }
  ) throws(StrataError) -> StrataClient {
    var configuration: StrataClient.Configuration
    if let seeds {
      configuration = StrataClient.Configuration(seeds: try parseSeeds(seeds))
    } else {
      let address: HostPort
      do {
        address = try HostPort(parsing: node)
      } catch {
        throw StrataError(.invalidArgument, "--node: \(error.message)")
      }
      configuration = StrataClient.Configuration(node: address)
    }
    guard let quorum = UInt8(exactly: writeQuorum) else {
      throw StrataError(.invalidArgument, "--write-quorum: 0 to 255, got \(writeQuorum)")
    }
    configuration.writeQuorum = quorum
    configuration.token = token
    configuration.timeoutMilliseconds = timeoutMs
    configuration.connections = connections
    configuration.clientName = "strata-cli"
    configuration.tls = try tls.context()
    adjust(&configuration)
    return StrataClient(configuration)
  }
}

/// TLS to the node: the CA that signed its certificate, and an optional client certificate.
struct TLSOptions: ParsableArguments {
  @Option(help: ArgumentHelp("Speak TLS, trusting the CA certificates (PEM) in this file.", valueName: "file"))
  var tlsCa: String?

  @Option(help: ArgumentHelp("With --tls-ca: the client certificate (PEM) to present.", valueName: "file"))
  var tlsCert: String?

  @Option(help: ArgumentHelp("With --tls-cert: its private key (PEM).", valueName: "file"))
  var tlsKey: String?

  /// The client context the options describe; nil without --tls-ca.
  func context() throws(StrataError) -> TLSContext? {
    guard let tlsCa else {
      guard tlsCert == nil && tlsKey == nil else {
        throw StrataError(.invalidArgument, "--tls-cert and --tls-key need --tls-ca (the CA of the node's certificate)")
      }
      return nil
    }
    guard (tlsCert == nil) == (tlsKey == nil) else {
      throw StrataError(.invalidArgument, "--tls-cert and --tls-key go together")
    }
    return try TLSContext.client(TLSFiles(certificate: tlsCert ?? "", key: tlsKey ?? "", trusted: tlsCa))
  }
}

/// A comma-separated list of HOST:PORT (at least one).
func parseSeeds(_ text: String, flag: String = "--seeds") throws(StrataError) -> [HostPort] {
  var seeds: [HostPort] = []
  for part in text.split(separator: ",") where !part.isEmpty {
    do {
      seeds.append(try HostPort(parsing: String(part)))
    } catch {
      throw StrataError(.invalidArgument, "\(flag): \(error.message)")
    }
  }
  guard !seeds.isEmpty else { throw StrataError(.invalidArgument, "\(flag): give at least one HOST:PORT") }
  return seeds
}

func parseKeys(_ texts: [String]) throws(StrataError) -> [BlockKey] {
  var keys: [BlockKey] = []
  for text in texts {
    guard let key = BlockKey(hex: text) else {
      throw StrataError(.invalidArgument, "'\(text)' is not a block key (64 hex digits)")
    }
    keys.append(key)
  }
  return keys
}

/// A file's bytes in page-aligned memory (so they can be registered and sent as they are).
func readFile(_ path: String) throws(StrataError) -> UnsafeMutableRawBufferPointer {
  let descriptor = open(path, O_RDONLY | O_CLOEXEC)
  guard descriptor >= 0 else {
    throw StrataError(.invalidArgument, "cannot open '\(path)': \(String(cString: strerror(errno)))")
  }
  defer { close(descriptor) }
  var status = stat()
  guard fstat(descriptor, &status) == 0 else {
    throw StrataError(.ioError, "cannot stat '\(path)': \(String(cString: strerror(errno)))")
  }
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, Int(status.st_size)), alignment: 4096)
  var done = 0
  while done < Int(status.st_size) {
    let count = read(descriptor, buffer.baseAddress! + done, Int(status.st_size) - done)
    if count < 0 && errno == EINTR { continue }
    guard count > 0 else {
      buffer.deallocate()
      throw StrataError(.ioError, "cannot read '\(path)': \(String(cString: strerror(errno)))")
    }
    done += count
  }
  return UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(status.st_size)])
}

struct Put: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Store files as blocks; print each file's key (its SHA-256 unless --key is given).")

  @OptionGroup var options: NodeOptions

  @Option(help: "The key to store a single file under, as 64 hex digits.")
  var key: String?

  @Argument(help: "Files to store.")
  var files: [String]

  func run() async throws {
    do throws(StrataError) {
      guard key == nil || files.count == 1 else {
        throw StrataError(.invalidArgument, "--key names the key of one file; \(files.count) files given")
      }
      let client = try options.client()
      defer { client.close() }
      var buffers: [UnsafeMutableRawBufferPointer] = []
      defer { for buffer in buffers { buffer.deallocate() } }
      var items: [StrataClient.PutItem] = []
      for file in files {
        let buffer = try readFile(file)
        buffers.append(buffer)
        guard buffer.count > 0 else {
          throw StrataError(.invalidArgument, "'\(file)' is empty: blocks hold at least 1 byte")
        }
        let blockKey =
          try key.map { text throws(StrataError) in try parseKeys([text])[0] }
          ?? SHA256.digest(UnsafeRawBufferPointer(buffer))
        let region = client.register(buffer)
        items.append(StrataClient.PutItem(key: blockKey, source: try region.slice(length: buffer.count)))
      }
      // In batches of 64, with a progress bar for bulk puts on a terminal.
      let bar = ProgressBar(
        "put", total: buffers.reduce(0) { $0 + $1.count }, unit: .bytes,
        enabled: items.count > 64 && !options.json && isatty(STDOUT_FILENO) == 1)
      var outcomes: [StrataWire.PutOutcome] = []
      for first in stride(from: 0, to: items.count, by: 64) {
        let batch = Array(items[first..<min(first + 64, items.count)])
        outcomes += try await client.put(batch)
        bar.advance(by: batch.reduce(0) { $0 + $1.source.length })
      }
      bar.finish()
      var failed = false
      for (index, outcome) in outcomes.enumerated() {
        let word = putWord(outcome)
        failed = failed || (outcome != .stored && outcome != .alreadyPresent)
        if options.json {
          print("{\"file\":\"\(files[index])\",\"key\":\"\(items[index].key.hex)\",\"outcome\":\"\(word)\"}")
        } else {
          print("\(items[index].key.hex)  \(files[index])  \(word)")
        }
      }
      if failed { throw StrataError(.resourceExhausted, "some blocks were not stored") }
    } catch {
      throw report(error)
    }
  }
}

func putWord(_ outcome: StrataWire.PutOutcome) -> String {
  switch outcome {
  case .stored: "stored"
  case .alreadyPresent: "already present"
  case .checksumMismatch: "checksum mismatch"
  case .tooLarge: "too large"
  case .noSpace: "no space"
  }
}

struct Get: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Read blocks into DIR/<key>; exit 1 if any is missing.")

  @OptionGroup var options: NodeOptions

  @Option(help: "Folder to write the blocks to.")
  var out: String

  @Option(help: "Largest block expected, like 64MiB.")
  var maxSize: String = "64MiB"

  @Argument(help: "Block keys, 64 hex digits each.")
  var keys: [String]

  func run() async throws {
    var missing = 0
    do throws(StrataError) {
      let blockKeys = try parseKeys(keys)
      let capacity = Int(try ByteSize(parsing: maxSize).bytes)
      let client = try options.client()
      defer { client.close() }
      mkdir(out, 0o755)
      // One buffer per key, touched only as far as each block reaches.
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity * blockKeys.count, alignment: 4096)
      defer { buffer.deallocate() }
      let region = client.register(buffer)
      var items: [StrataClient.GetItem] = []
      for (index, key) in blockKeys.enumerated() {
        items.append(
          StrataClient.GetItem(key: key, destination: try region.slice(offset: index * capacity, length: capacity)))
      }
      let results = try await client.get(items)
      for (index, result) in results.enumerated() {
        let key = blockKeys[index].hex
        let path = out + "/" + key
        switch result {
        case .ok(let length):
          try writeFile(
            path, UnsafeRawBufferPointer(rebasing: buffer[(index * capacity)..<(index * capacity + length)]))
          print(
            options.json
              ? "{\"key\":\"\(key)\",\"bytes\":\(length),\"path\":\"\(path)\"}" : "\(key)  \(length) bytes  \(path)")
        default:
          missing += 1
          let word = getWord(result)
          print(options.json ? "{\"key\":\"\(key)\",\"error\":\"\(word)\"}" : "\(key)  \(word)")
        }
      }
    } catch {
      throw report(error)
    }
    if missing > 0 { throw ExitCodes.failure }
  }
}

func getWord(_ result: StrataClient.GetResult) -> String {
  switch result {
  case .ok(let length): "\(length) bytes"
  case .missing: "missing"
  case .outOfRange: "out of range"
  case .corrupt: "corrupt (checksum mismatch)"
  case .destinationTooSmall(let length): "larger than --max-size (\(length) bytes)"
  }
}

func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) throws(StrataError) {
  let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
  guard descriptor >= 0 else {
    throw StrataError(.ioError, "cannot create '\(path)': \(String(cString: strerror(errno)))")
  }
  defer { close(descriptor) }
  var done = 0
  while done < bytes.count {
    let count = write(descriptor, bytes.baseAddress! + done, bytes.count - done)
    if count < 0 && errno == EINTR { continue }
    guard count > 0 else { throw StrataError(.ioError, "cannot write '\(path)': \(String(cString: strerror(errno)))") }
    done += count
  }
}

struct Lookup: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show which keys a node holds, in which tier, and the leading run of present keys.")

  @OptionGroup var options: NodeOptions

  @Argument(help: "Block keys, 64 hex digits each, in prefix order.")
  var keys: [String]

  func run() async throws {
    do throws(StrataError) {
      let blockKeys = try parseKeys(keys)
      let client = try options.client()
      defer { client.close() }
      let result = try await client.lookup(blockKeys)
      let names = result.tiers.map { tier -> String in
        switch tier {
        case .absent: "absent"
        case .ram: "ram"
        case .nvme: "nvme"
        }
      }
      if options.json {
        print("{\"leading_run\":\(result.leadingRun),\"tiers\":[\(names.map { "\"\($0)\"" }.joined(separator: ","))]}")
      } else {
        for (key, name) in zip(blockKeys, names) { print("\(key.hex)  \(name)") }
        print("leading run: \(result.leadingRun) of \(blockKeys.count)")
      }
    } catch {
      throw report(error)
    }
  }
}

struct Stat: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Show a node's counters.")

  @OptionGroup var options: NodeOptions

  func run() async throws {
    do throws(StrataError) {
      let client = try options.client()
      defer { client.close() }
      let json = try await client.stat()
      if options.json {
        print(json)
      } else {
        // One "name value" line per field of the flat JSON object.
        let inner = json.dropFirst().dropLast()
        for field in inner.split(separator: ",") {
          let parts = field.split(separator: ":", maxSplits: 1)
          guard parts.count == 2 else { continue }
          let name = parts[0].filter { $0 != "\"" }
          let value = parts[1].filter { $0 != "\"" }
          print("\(name.padding(30))\(value)")
        }
      }
    } catch {
      throw report(error)
    }
  }
}

extension String {
  func padding(_ width: Int) -> String {
    count >= width ? self + " " : self + String(repeating: " ", count: width - count)
  }
}
