// Starting the tests' child processes (nodes, etcd, the CLI) without handing each one every
// descriptor the test process has open.

public import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Starts `process` (`Process.run()`) so that it inherits no descriptor of this process beyond
/// the ones `process` names for its standard input, output and error, and the one Foundation gives
/// it to learn of its exit.
///
/// Why: Foundation's `Process` closes in a child only the descriptors that were open when the start
/// began (up to the highest then), and it learns that a child exited when the child's end of a
/// socket pair closes. Tests start processes in parallel, so a node started by one test while
/// another test's start made its socket pair kept that pair's child end open: the other test's
/// node, killed, was never seen to exit, `waitUntilExit()` waited for as long as the first node
/// lived, and two tests waiting so on each other's nodes hung the suite. So starts take turns (a
/// socket pair is made only inside a start), and each first marks every descriptor above 2
/// close-on-exec, which leaves only what another thread opens during the start itself to pass on.
public func launch(_ process: Process) throws {
  try launching.withLock { _ in
    markEveryDescriptorCloseOnExec()
    try process.run()
  }
}

/// One start at a time (the marking must not race another start's descriptors).
private let launching = Mutex(())

/// Marks every open descriptor above standard error close-on-exec.
private func markEveryDescriptorCloseOnExec() {
  guard let directory = opendir("/proc/self/fd") else { return }
  defer { closedir(directory) }
  let own = dirfd(directory)
  while let entry = readdir(directory) {
    let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    guard let descriptor = Int32(name), descriptor > 2, descriptor != own else { continue }
    let flags = fcntl(descriptor, F_GETFD)
    if flags >= 0 && flags & FD_CLOEXEC == 0 { _ = fcntl(descriptor, F_SETFD, flags | FD_CLOEXEC) }
  }
}
