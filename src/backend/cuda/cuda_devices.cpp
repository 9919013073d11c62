// Device discovery and version strings (`gputrain info`, `gputrain --version`, device "auto").
// Neither throws: a machine without a driver or GPU is a normal answer here, not an error.
#include <cublas_api.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.hpp"

namespace gputrain::cuda {

namespace {
std::string version_string(int v) {  // CUDA's 1000*major + 10*minor
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}
}  // namespace

std::vector<DeviceInfo> list_devices(std::string* why_none) {
  std::vector<DeviceInfo> devices;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // the failure is an answer, not a state to carry into later calls
    if (why_none) {
      if (e == cudaErrorNoDevice) {
        *why_none = "the CUDA driver reports no device";
      } else if (e == cudaErrorInsufficientDriver) {
        int driver = 0;
        cudaDriverGetVersion(&driver);
        *why_none = driver == 0 ? std::string("no CUDA driver (libcuda.so) on this machine")
                                : "the CUDA driver (" + version_string(driver) +
                                      ") is older than this build's CUDA runtime (" +
                                      version_string(CUDART_VERSION) + ")";
      } else {
        *why_none = std::string("CUDA: ") + cudaGetErrorString(e);
      }
    }
    return devices;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    DeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.memory_bytes = prop.totalGlobalMem;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    devices.push_back(d);
  }
  if (devices.empty() && why_none) *why_none = "no CUDA device could be queried";
  return devices;
}

std::string build_versions() {
  std::string s = "CUDA " + version_string(CUDART_VERSION);
  s += ", cuDNN " + std::to_string(CUDNN_MAJOR) + "." + std::to_string(CUDNN_MINOR) + "." +
       std::to_string(CUDNN_PATCHLEVEL);
  // The cuDNN found at run time can be a newer 9.x than the headers (cuDNN keeps ABI within a
  // major version); say so when it differs. cudnnGetVersion needs no device.
  const size_t runtime = cudnnGetVersion();  // 9.x.y → 90000 + 100*x + y
  const size_t built = size_t(CUDNN_VERSION);
  if (runtime != built)
    s += " (run time " + std::to_string(runtime / 10000) + "." +
         std::to_string((runtime % 10000) / 100) + "." + std::to_string(runtime % 100) + ")";
  s += ", cuBLAS " + std::to_string(CUBLAS_VER_MAJOR) + "." + std::to_string(CUBLAS_VER_MINOR) +
       "." + std::to_string(CUBLAS_VER_PATCH);
  return s;
}

}  // namespace gputrain::cuda
