// Opening a node's storage from its configuration (TierManager.open): the data folder is created whatever the tiers,
// because it holds more than the NVMe tier (the same-host socket by default).

import Foundation
import Logging
import StrataConfig
import StrataCore
import Testing

@testable import StrataStorage

@Suite struct NodeStorageTests {
  @Test(arguments: [true, false])
  func theDataFolderIsCreatedWithOrWithoutAnNVMeTier(withNVMe: Bool) throws {
    let scratch = try NVMeScratchDirectory()
    var node = NodeConfiguration.small(in: scratch.path + "/a/b")
    node.limits.blockBytesMax = .mebibytes(1)
    node.nvme.regionSize = .mebibytes(64)
    node.nvme.defaultCapacity = .mebibytes(256)
    if !withNVMe { node.nvme.admission = .never }
    let logger = Logger.quiet("node-storage-test")
    let (tiers, report) = try TierManager.open(node, logger: logger)
    #expect((report != nil) == withNVMe)
    #expect(tiers.configuration.ramBytes == 16 << 20)
    var isDirectory: ObjCBool = false
    #expect(
      FileManager.default.fileExists(atPath: node.dataDirectory, isDirectory: &isDirectory) && isDirectory.boolValue)
  }
}
