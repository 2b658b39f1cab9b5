// The client library without a node: what registering GPU memory refuses, with the host-memory
// stand-in and on a machine without CUDA.

import StrataClient
import StrataCore
import StrataGPU
import Testing

@Suite struct GPURegistrationTests {
  static let cudaLoads = (try? CUDARuntime.load()) != nil

  @Test func registeringHostMemoryAsGPUMemoryIsRefused() throws {
    let gpu = HostMemoryGPURuntime()
    var configuration = StrataClient.Configuration(node: HostPort(host: "127.0.0.1", port: 1))
    configuration.gpuRuntime = gpu
    let client = StrataClient(configuration)
    let host = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { host.deallocate() }
    #expect { try client.registerGPU(device: 0, pointer: host.baseAddress!, count: host.count) } throws: {
      ($0 as? StrataError)?.code == .invalidArgument
    }
    gpu.addDeviceMemory(host, device: 0)
    #expect { try client.registerGPU(device: 3, pointer: host.baseAddress!, count: host.count) } throws: {
      ($0 as? StrataError)?.message.contains("GPU 3 does not exist") == true
    }
  }

  @Test(.enabled(if: !cudaLoads, "the CUDA runtime is installed here"))
  func theClientRefusesGPURegionsWhereCUDAIsAbsent() throws {
    let client = StrataClient(StrataClient.Configuration(node: HostPort(host: "127.0.0.1", port: 1)))
    let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { memory.deallocate() }
    #expect { try client.registerGPU(device: 0, pointer: memory.baseAddress!, count: 4096) } throws: { error in
      let error = error as? StrataError
      return error?.code == .unsupported && error?.message.contains("libcudart") == true
    }
  }
}
