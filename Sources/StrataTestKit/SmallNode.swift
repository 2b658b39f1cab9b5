// A node configuration small enough for a test that opens storage in a folder: unlocked RAM
// without huge pages (no CAP_IPC_LOCK, no reserved pages), small blocks and regions, and a logger
// that prints nothing below critical.

public import Logging
public import StrataConfig
public import StrataCore

extension NodeConfiguration {
  /// Data in `directory`, `ram` of unlocked RAM without huge pages, blocks up to 256 KiB, 1 MiB
  /// regions on a 16 MiB NVMe tier, loopback addresses on any free port.
  public static func small(in directory: String, ram: ByteSize = .mebibytes(16)) -> NodeConfiguration {
    var settings = NodeConfiguration()
    settings.dataDirectory = directory
    settings.listen = HostPort(host: "127.0.0.1", port: 0)
    settings.admin.listen = HostPort(host: "127.0.0.1", port: 0)
    settings.ram.capacity = ram
    settings.ram.lock = false
    settings.ram.hugePages = false
    settings.limits.blockBytesMax = .kibibytes(256)
    settings.nvme.regionSize = .mebibytes(1)
    settings.nvme.defaultCapacity = .mebibytes(16)
    return settings
  }
}

extension Logger {
  /// A logger that prints nothing below critical.
  public static func quiet(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = .critical
    return logger
  }
}
