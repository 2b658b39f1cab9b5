// The files under deploy/, checked as far as this machine allows: every YAML file parses, the
// files refer to each other consistently, every node configuration they carry passes
// `strata config check`, the node starts with each example configuration, and the systemd
// unit passes `systemd-analyze verify`. (No container engine or Kubernetes API runs here.)

import Foundation
import StrataCore
import StrataTestKit
import Testing
import Yams

/// The node configurations carried by deploy/: name → YAML text.
private func nodeConfigurations() throws -> [(name: String, text: String)] {
  var found: [(String, String)] = []
  let folders = ["examples", "compose/config"].map { DeployFixtures.deployFolder.appendingPathComponent($0) }
  for path in folders.flatMap({ DeployFixtures.files(under: $0, extensions: ["yaml"]) }) {
    found.append(
      (String(path.dropFirst(packageRoot.path.count + 1)), try String(contentsOfFile: path, encoding: .utf8)))
  }
  let configMap = try yamlDocuments(DeployFixtures.deployFolder.appendingPathComponent("k8s/configmap.yaml").path)
  let data = try #require(configMap.first?["data"] as? [String: Any], "k8s/configmap.yaml has no data")
  found.append(("deploy/k8s/configmap.yaml data.strata.yaml", try #require(data["strata.yaml"] as? String)))
  return found
}

/// The documents of a YAML file, each as a mapping.
private func yamlDocuments(_ path: String) throws -> [[String: Any]] {
  let text = try String(contentsOfFile: path, encoding: .utf8)
  return try Yams.load_all(yaml: text).map { document in
    try #require(document as? [String: Any], "\(path): a document is not a mapping")
  }
}

@Suite(.serialized) struct DeployFilesTests {
  /// Every .yaml/.yml under deploy/ parses; Kubernetes documents name their kind and object.
  @Test func everyYAMLFileUnderDeployParses() throws {
    let paths = DeployFixtures.files(extensions: ["yaml", "yml"])
    #expect(paths.count >= 15, "\(paths)")
    for path in paths {
      let documents = try yamlDocuments(path)
      #expect(!documents.isEmpty, "\(path) is empty")
      guard path.contains("/deploy/k8s/") else { continue }
      for document in documents {
        #expect(document["apiVersion"] is String, "\(path): a document has no apiVersion")
        #expect(document["kind"] is String, "\(path): a document has no kind")
        if document["kind"] as? String != "Kustomization" {
          #expect((document["metadata"] as? [String: Any])?["name"] is String, "\(path): a document has no name")
        }
      }
    }
  }

  /// What one file names in another exists: compose mounts, Prometheus targets on the admin
  /// port and its alerting rules, the Grafana dashboard, the Kubernetes files kustomize lists, and probes on the
  /// admin port's /health and /ready.
  @Test func deployFilesReferToEachOther() throws {
    let compose = DeployFixtures.deployFolder.appendingPathComponent("compose")
    let stack = try #require(try yamlDocuments(compose.appendingPathComponent("compose.yaml").path).first)
    let services = try #require(stack["services"] as? [String: Any])
    let nodes = services.keys.filter { $0.hasPrefix("strata-") }.sorted()
    #expect(nodes == ["strata-1", "strata-2", "strata-3"])
    for name in ["etcd", "prometheus", "grafana"] { #expect(services[name] != nil, "compose has no \(name)") }
    for (name, service) in services {
      for volume in (service as? [String: Any])?["volumes"] as? [String] ?? [] where volume.hasPrefix(".") {
        let source = String(volume.split(separator: ":")[0])
        #expect(
          FileManager.default.fileExists(atPath: compose.appendingPathComponent(source).path),
          "compose service \(name) mounts \(source), which does not exist")
      }
    }
    let prometheus = try #require(try yamlDocuments(compose.appendingPathComponent("prometheus.yml").path).first)
    let jobs = try #require(prometheus["scrape_configs"] as? [[String: Any]])
    let targets = jobs.flatMap { job in
      (job["static_configs"] as? [[String: Any]] ?? []).flatMap { $0["targets"] as? [String] ?? [] }
    }
    #expect(targets.sorted() == nodes.map { "\($0):7401" })
    // The alerting rules Prometheus loads are the ones deploy/prometheus holds, mounted where it reads them.
    let ruleFiles = prometheus["rule_files"] as? [String] ?? []
    #expect(ruleFiles == ["/etc/prometheus/strata-alerts.yml"])
    let mounts = (services["prometheus"] as? [String: Any])?["volumes"] as? [String] ?? []
    for file in ruleFiles {
      #expect(mounts.contains("../prometheus/strata-alerts.yml:\(file):ro"), "\(mounts)")
    }
    for node in 1...3 {
      let config = try #require(
        try yamlDocuments(compose.appendingPathComponent("config/node-\(node).yaml").path).first)
      #expect((config["admin"] as? [String: Any])?["listen"] as? String == "0.0.0.0:7401")
      #expect((config["node"] as? [String: Any])?["id"] as? String == "strata-\(node)")
    }

    let k8s = DeployFixtures.deployFolder.appendingPathComponent("k8s")
    let kustomization = try #require(try yamlDocuments(k8s.appendingPathComponent("kustomization.yaml").path).first)
    let listed = Set(kustomization["resources"] as? [String] ?? [])
    let present = Set(
      DeployFixtures.files(under: k8s, extensions: ["yaml"]).map { URL(fileURLWithPath: $0).lastPathComponent })
    #expect(listed == present.subtracting(["kustomization.yaml"]))
    let statefulSets = try DeployFixtures.files(under: k8s, extensions: ["yaml"]).flatMap(yamlDocuments)
      .filter { $0["kind"] as? String == "StatefulSet" }
    let strata = try #require(statefulSets.first { ($0["metadata"] as? [String: Any])?["name"] as? String == "strata" })
    let spec = try #require(strata["spec"] as? [String: Any])
    #expect((spec["volumeClaimTemplates"] as? [Any])?.isEmpty == false)
    let pod = try #require((spec["template"] as? [String: Any])?["spec"] as? [String: Any])
    let container = try #require((pod["containers"] as? [[String: Any]])?.first)
    let ports = (container["ports"] as? [[String: Any]] ?? []).map {
      "\($0["name"] ?? ""):\($0["containerPort"] ?? "")"
    }
    #expect(Set(ports) == ["data:7400", "admin:7401"])
    func probe(_ name: String) -> String? {
      guard let get = (container[name] as? [String: Any])?["httpGet"] as? [String: Any] else { return nil }
      return "\(get["path"] ?? ""):\(get["port"] ?? "")"
    }
    #expect(probe("readinessProbe") == "/ready:admin")
    #expect(probe("livenessProbe") == "/health:admin")
    let capabilities = (container["securityContext"] as? [String: Any])?["capabilities"] as? [String: Any]
    #expect(capabilities?["add"] as? [String] == ["IPC_LOCK"])
  }

  /// Every node configuration in deploy/ (examples, compose nodes, the Kubernetes ConfigMap)
  /// passes `strata config check` on this machine.
  @Test func everyNodeConfigurationPassesConfigCheck() async throws {
    let configurations = try nodeConfigurations()
    #expect(configurations.count >= 7)
    for (name, text) in configurations {
      let run = try await strata(["config", "check", "-"], input: text)
      #expect(run.status == 0, "\(name): \(run.stderr)")
      #expect(run.stdout.contains("valid"), "\(name): \(run.stdout)")
    }
  }

  /// `strata serve` starts with each example configuration and stops cleanly on SIGTERM. Only
  /// what cannot be used on a test machine is replaced: folders (temporary ones), addresses
  /// (free loopback ports; peers that do not answer; a local etcd), sizes (64 MiB RAM, 256 MiB
  /// per NVMe path) and the memory lock.
  @Test func theNodeStartsWithEachExampleConfiguration() async throws {
    let examples = DeployFixtures.files(
      under: DeployFixtures.deployFolder.appendingPathComponent("examples"), extensions: ["yaml"])
    #expect(examples.count >= 3)
    var etcd: DeployFixtures.Etcd?
    defer { etcd?.stop() }
    for example in examples {
      var config = try #require(try yamlDocuments(example).first)
      let folder = try DeployFixtures.temporaryFolder("strata-example")
      defer { try? FileManager.default.removeItem(atPath: folder) }
      config["data_dir"] = folder + "/data"
      config["listen"] = "127.0.0.1:0"
      var ram = config["ram"] as? [String: Any] ?? [:]
      ram["capacity"] = "64MiB"
      ram["lock"] = false
      config["ram"] = ram
      var nvme = config["nvme"] as? [String: Any] ?? [:]
      if let paths = nvme["paths"] as? [Any] {
        nvme["paths"] = paths.indices.map { ["path": "\(folder)/nvme\($0)", "capacity": "256MiB"] }
      }
      nvme["capacity"] = "256MiB"
      config["nvme"] = nvme
      if var admin = config["admin"] as? [String: Any] {
        admin["listen"] = "127.0.0.1:\(try freeLoopbackPort())"
        config["admin"] = admin
      }
      if var cluster = config["cluster"] as? [String: Any] {
        if let peers = cluster["peers"] as? [Any] {
          cluster["peers"] = try peers.map { _ in "127.0.0.1:\(try freeLoopbackPort())" }
        }
        if cluster["etcd"] != nil {
          if etcd == nil { etcd = try DeployFixtures.Etcd() }
          cluster["etcd"] = etcd?.clientURL
          // The local etcd is plain http without auth.
          for field in ["etcd_ca", "etcd_cert", "etcd_key", "etcd_user", "etcd_password"] {
            cluster.removeValue(forKey: field)
          }
        }
        config["cluster"] = cluster
      }
      if var tls = config["tls"] as? [String: Any] {
        // Certificates from a development CA made for this node (scripts/dev-ca.sh).
        let nodeID = (config["node"] as? [String: Any])?["id"] as? String ?? "strata-1"
        let made = try await runProcess(
          "/bin/bash", [packageRoot.appendingPathComponent("scripts/dev-ca.sh").path, folder + "/tls", nodeID])
        try #require(made.status == 0, "dev-ca.sh: \(made.stderrText)")
        tls["cert"] = "\(folder)/tls/\(nodeID).pem"
        tls["key"] = "\(folder)/tls/\(nodeID).key"
        tls["ca"] = "\(folder)/tls/ca.pem"
        config["tls"] = tls
      }
      let path = folder + "/node.yaml"
      try Yams.dump(object: config).write(toFile: path, atomically: true, encoding: .utf8)
      let (node, _) = try DeployFixtures.startNode(config: path)
      #expect(node.stop() == 0, "\(example): the node did not stop cleanly:\n\(node.output)")
    }
  }

  /// `systemd-analyze verify` accepts the unit without a warning (ExecStart pointed at the
  /// built executable, which verify requires to exist).
  @Test(
    .enabled(if: DeployFixtures.onPath("systemd-analyze") != nil, "systemd-analyze is not installed (package systemd)"))
  func systemdUnitVerifies() async throws {
    let unit = try String(
      contentsOf: DeployFixtures.deployFolder.appendingPathComponent("systemd/strata.service"), encoding: .utf8)
    #expect(unit.contains("ExecStart=/usr/local/bin/strata serve --config"))
    for line in [
      "AmbientCapabilities=CAP_IPC_LOCK", "LimitMEMLOCK=infinity", "KillSignal=SIGTERM", "Restart=on-failure",
      "Type=notify", "NotifyAccess=main",
    ] {
      #expect(unit.contains("\n\(line)\n"), "the unit lacks \(line)")
    }
    let folder = try DeployFixtures.temporaryFolder("strata-unit")
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let copy = folder + "/strata.service"
    try unit.replacingOccurrences(of: "/usr/local/bin/strata", with: strataExecutable)
      .write(toFile: copy, atomically: true, encoding: .utf8)
    let verify = try #require(DeployFixtures.onPath("systemd-analyze"))
    let run = try await runProcess(verify, ["verify", copy])
    #expect(run.status == 0, "\(run.stdoutText)\(run.stderrText)")
    let warnings = (run.stdoutText + run.stderrText).split(separator: "\n").filter { $0.contains("strata.service") }
    #expect(warnings.isEmpty, "\(warnings.joined(separator: "\n"))")
  }
}
