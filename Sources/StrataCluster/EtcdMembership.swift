// PLACEHOLDER until the etcd module lands.
import StrataCore

final class EtcdMembership: MembershipSource {
  init(node: ClusterNode) throws(StrataError) {
    throw StrataError(.unsupported, "etcd membership is not built yet")
  }
  func start() {}
  func announceDraining() {}
  func stop(deregister: Bool) {}
}
