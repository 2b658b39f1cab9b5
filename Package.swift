// swift-tools-version: 6.1
// Strata: a distributed storage cluster for LLM inference KV-cache blocks.
// Module map and the reasons behind it: docs/architecture.md.
import PackageDescription

let strictSwift: [SwiftSetting] = [
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
  name: "strata",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "strata", targets: ["strata"]),
    .library(name: "StrataCore", targets: ["StrataCore"]),
    .library(name: "StrataClient", targets: ["StrataClient"]),
    .library(name: "strata_client", type: .dynamic, targets: ["StrataClientC"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
  ],
  targets: [
    // MARK: C libraries (system libraries via pkg-config, each behind a shim header)
    .systemLibrary(
      name: "CIBVerbs", path: "Sources/CIBVerbs", pkgConfig: "libibverbs",
      providers: [.apt(["libibverbs-dev"])]),
    .systemLibrary(
      name: "CRDMACM", path: "Sources/CRDMACM", pkgConfig: "librdmacm",
      providers: [.apt(["librdmacm-dev"])]),
    .systemLibrary(
      name: "CLZ4", path: "Sources/CLZ4", pkgConfig: "liblz4",
      providers: [.apt(["liblz4-dev"])]),
    .systemLibrary(
      name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
      providers: [.apt(["libssl-dev"])]),
    // GNU-only libc names (O_DIRECT, fallocate, ...); _GNU_SOURCE is defined in the .c file only.
    .target(name: "CStrataLinux", path: "Sources/CStrataLinux"),
    // CRC32C with the SSE4.2 instruction (three interleaved streams), portable table fallback.
    .target(name: "CCRC32C", path: "Sources/CCRC32C"),

    // MARK: Swift modules (dependencies point downward only)
    .target(
      name: "StrataCore",
      dependencies: ["COpenSSL", "CCRC32C"],
      path: "Sources/StrataCore",
      swiftSettings: strictSwift),
    // The node's configuration and its YAML reader: node-side targets only, so clients never link Yams.
    .target(
      name: "StrataConfig",
      dependencies: ["StrataCore", .product(name: "Yams", package: "Yams")],
      path: "Sources/StrataConfig",
      swiftSettings: strictSwift),
    .target(
      name: "StrataStorage",
      dependencies: [
        "StrataCore", "StrataConfig", "CStrataLinux", "CLZ4", "CCRC32C",
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/StrataStorage",
      swiftSettings: strictSwift),
    .target(
      name: "StrataWire",
      dependencies: ["StrataCore"],
      path: "Sources/StrataWire",
      swiftSettings: strictSwift),
    .target(
      name: "StrataPlacement",
      dependencies: ["StrataCore"],
      path: "Sources/StrataPlacement",
      swiftSettings: strictSwift),
    .target(
      name: "StrataTCP",
      dependencies: ["StrataCore", "CStrataLinux", "COpenSSL"],
      path: "Sources/StrataTCP",
      swiftSettings: strictSwift),
    // HTTP/1.1: the request and response codec (pure, limits stated), the client connection and the
    // event-loop server on StrataTCP; used by the admin API, its client and the etcd gateway client.
    .target(
      name: "StrataHTTP",
      dependencies: ["StrataCore", "StrataTCP", .product(name: "Logging", package: "swift-log")],
      path: "Sources/StrataHTTP",
      swiftSettings: strictSwift),
    .testTarget(
      name: "StrataHTTPTests",
      dependencies: ["StrataHTTP", "StrataTCP", "StrataCore", .product(name: "Logging", package: "swift-log")],
      path: "Tests/StrataHTTPTests", swiftSettings: strictSwift),
    // RDMA verbs transport: rdma_cm connections, credits, one-sided batches (docs/rdma.md).
    .target(
      name: "StrataRDMA",
      dependencies: ["StrataCore", "StrataWire", "CIBVerbs", "CRDMACM", "CStrataLinux"],
      path: "Sources/StrataRDMA",
      swiftSettings: strictSwift),
    // GPU memory: the CUDA runtime loaded with dlopen, pinned staging ring (docs/rdma.md).
    .target(
      name: "StrataGPU",
      dependencies: ["StrataCore"],
      path: "Sources/StrataGPU",
      swiftSettings: strictSwift),
    .target(
      name: "StrataNode",
      dependencies: [
        "StrataCore", "StrataConfig", "StrataStorage", "StrataWire", "StrataTCP", "StrataRDMA", "CStrataLinux",
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/StrataNode",
      swiftSettings: strictSwift),
    // The admin HTTP API, Prometheus metrics and the node's operations (docs/admin.md, docs/metrics.md).
    .target(
      name: "StrataAdmin",
      dependencies: [
        "StrataCore", "StrataConfig", "StrataStorage", "StrataNode", "StrataTCP", "StrataHTTP",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus"),
      ],
      path: "Sources/StrataAdmin",
      swiftSettings: strictSwift),
    .target(
      name: "StrataClient",
      dependencies: ["StrataCore", "StrataPlacement", "StrataWire", "StrataTCP", "StrataRDMA", "StrataGPU"],
      path: "Sources/StrataClient",
      swiftSettings: strictSwift),
    .target(
      name: "StrataCluster",
      dependencies: [
        "StrataCore", "StrataConfig", "StrataPlacement", "StrataStorage", "StrataNode", "StrataClient", "StrataWire",
        "StrataEtcd", "StrataTCP",
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/StrataCluster",
      swiftSettings: strictSwift),
    .target(
      name: "StrataEtcd",
      dependencies: ["StrataCore", "StrataTCP", "StrataHTTP", .product(name: "Logging", package: "swift-log")],
      path: "Sources/StrataEtcd",
      swiftSettings: strictSwift),
    .target(
      name: "StrataClientC",
      dependencies: ["StrataClient", "StrataCore", "StrataWire", "StrataTCP", "CStrataLinux"],
      path: "Sources/StrataClientC",
      swiftSettings: strictSwift),
    .executableTarget(
      name: "strata",
      dependencies: [
        "StrataCore", "StrataConfig", "StrataStorage", "StrataNode", "StrataWire", "StrataClient", "StrataPlacement",
        "StrataCluster", "StrataAdmin", "StrataTCP",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/CLI",
      swiftSettings: strictSwift),

    .executableTarget(
      name: "strata-microbench",
      dependencies: ["StrataCore", "StrataStorage", "StrataPlacement"],
      path: "Sources/Microbenchmarks",
      swiftSettings: strictSwift),

    // What the fuzzers share: the libFuzzer driver (-D FUZZING) and corpus replay (normal builds).
    .target(name: "StrataFuzzSupport", path: "Sources/FuzzSupport", swiftSettings: strictSwift),
    // The wire fuzzer: replays corpus files in a normal build; a libFuzzer target with -D FUZZING.
    .executableTarget(
      name: "strata-wire-fuzz",
      dependencies: ["StrataWire", "StrataCore", "StrataFuzzSupport"],
      path: "Sources/WireFuzzer",
      swiftSettings: strictSwift),

    // The request-pipeline fuzzer: one connection's bytes through the node's pipeline over the
    // in-memory transport; replays Tests/Fixtures/pipeline-corpus normally, libFuzzer with -D FUZZING.
    .executableTarget(
      name: "strata-pipeline-fuzz",
      dependencies: [
        "StrataNode", "StrataStorage", "StrataWire", "StrataCore", "StrataConfig", "StrataFuzzSupport",
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/PipelineFuzzer",
      swiftSettings: strictSwift),

    // The hostile soak: legitimate clients with byte checks against a node under every attack of
    // docs/security.md at once (scripts/soak-hostile.sh starts the node and runs it).
    .executableTarget(
      name: "strata-soak-hostile",
      dependencies: [
        "StrataClient", "StrataWire", "StrataTCP", "StrataCore",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Sources/HostileSoak",
      swiftSettings: strictSwift),

    // The deterministic simulation: a whole cluster in one process from a seed, faults and
    // invariants included (docs/simulation.md); strata-sim runs seeds, scripts/simulate.sh many.
    .target(
      name: "StrataSimulation",
      dependencies: [
        "StrataCluster", "StrataConfig", "StrataNode", "StrataStorage", "StrataPlacement", "StrataWire", "StrataCore",
        "StrataTestKit",
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/StrataSimulation",
      swiftSettings: strictSwift),
    .executableTarget(
      name: "strata-sim", dependencies: ["StrataSimulation"], path: "Sources/SimulationRunner",
      swiftSettings: strictSwift),
    .testTarget(
      name: "StrataSimulationTests", dependencies: ["StrataSimulation", "StrataCore"],
      path: "Tests/StrataSimulationTests",
      swiftSettings: strictSwift),

    // MARK: Tests
    .target(
      name: "StrataTestKit",
      dependencies: [
        "StrataNode", "StrataClient", "StrataStorage", "StrataConfig", "StrataGPU", "StrataTCP", "StrataCore",
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Sources/StrataTestKit", swiftSettings: strictSwift),
    .testTarget(
      name: "StrataCoreTests", dependencies: ["StrataCore", "StrataTestKit"], path: "Tests/StrataCoreTests",
      swiftSettings: strictSwift),
    .testTarget(
      name: "StrataConfigTests", dependencies: ["StrataConfig", "StrataCore"], path: "Tests/StrataConfigTests",
      swiftSettings: strictSwift),
    .testTarget(
      name: "StrataStorageTests", dependencies: ["StrataStorage", "StrataConfig", "StrataCore", "StrataTestKit"],
      path: "Tests/StrataStorageTests", swiftSettings: strictSwift),
    .testTarget(
      name: "StrataWireTests", dependencies: ["StrataWire", "StrataCore", "StrataTestKit"],
      path: "Tests/StrataWireTests", swiftSettings: strictSwift),
    .testTarget(
      name: "StrataPlacementTests", dependencies: ["StrataPlacement", "StrataCore", "StrataTestKit"],
      path: "Tests/StrataPlacementTests", swiftSettings: strictSwift),
    .testTarget(
      name: "StrataNodeTests",
      dependencies: [
        "StrataNode", "StrataClient", "StrataWire", "StrataStorage", "StrataTCP", "StrataConfig", "StrataCore",
        "StrataTestKit",
      ],
      path: "Tests/StrataNodeTests", swiftSettings: strictSwift),
    .testTarget(
      name: "StrataEtcdTests", dependencies: ["StrataEtcd", "StrataTCP", "StrataCore", "StrataTestKit"],
      path: "Tests/StrataEtcdTests", swiftSettings: strictSwift),
    .testTarget(
      name: "StrataAdminTests",
      dependencies: [
        "StrataAdmin", "StrataNode", "StrataStorage", "StrataTCP", "StrataConfig", "StrataCore", "StrataWire",
        "StrataTestKit",
      ],
      path: "Tests/StrataAdminTests", swiftSettings: strictSwift),
    .testTarget(
      name: "StrataRDMATests",
      dependencies: [
        "StrataRDMA", "StrataGPU", "StrataNode", "StrataClient", "StrataStorage", "StrataWire", "StrataConfig",
        "StrataCore",
        "StrataTestKit", .product(name: "Logging", package: "swift-log"),
      ],
      path: "Tests/StrataRDMATests", swiftSettings: strictSwift),
    .testTarget(
      name: "StrataTCPTests", dependencies: ["StrataTCP", "StrataCore", "CStrataLinux"], path: "Tests/StrataTCPTests",
      swiftSettings: strictSwift),
    .testTarget(
      name: "StrataGPUTests", dependencies: ["StrataGPU", "StrataCore", "StrataTestKit"], path: "Tests/StrataGPUTests",
      swiftSettings: strictSwift),
    .testTarget(
      name: "StrataClientTests",
      dependencies: ["StrataClient", "StrataGPU", "StrataCore", "StrataTestKit", "StrataTCP", "StrataWire"],
      path: "Tests/StrataClientTests", swiftSettings: strictSwift),
    .testTarget(
      name: "StrataClusterTests",
      dependencies: [
        "StrataCluster", "StrataStorage", "StrataCore", "StrataConfig", "StrataPlacement", "StrataTestKit",
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Tests/StrataClusterTests", swiftSettings: strictSwift),
    .testTarget(
      name: "CABITests", dependencies: ["strata", "StrataCore", "StrataTestKit"], path: "Tests/CABITests",
      swiftSettings: strictSwift),
    .testTarget(
      name: "SystemLibraryTests",
      dependencies: ["CIBVerbs", "CRDMACM", "CLZ4", "COpenSSL", "CStrataLinux"],
      path: "Tests/SystemLibraryTests",
      swiftSettings: strictSwift),
    .testTarget(
      name: "CLITests",
      dependencies: [
        "StrataCore", "StrataConfig", "StrataClient", "StrataPlacement", "StrataWire", "StrataTCP", "StrataTestKit",
        "StrataAdmin", "StrataEtcd", "strata",
        "strata-pipeline-fuzz",
        .product(name: "Yams", package: "Yams"),
      ],
      path: "Tests/CLITests",
      swiftSettings: strictSwift),
  ],
  swiftLanguageModes: [.v6]
)
