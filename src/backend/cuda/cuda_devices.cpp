// Device discovery and version strings (`gputrain info`, `gputrain --version`, device "auto"):
// neither throws, a machine without a driver or GPU is a normal answer here, not an error. And
// opening a device for an engine, with the memory check the engine makes before it allocates.
#include <cublas_api.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdio>
#include <string>
#include <vector>

#include "backend/cuda/allocation_plan.hpp"
#include "backend/cuda/cuda_backend.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/cuda_resources.hpp"
#include "backend/cuda/device_probe.hpp"
#include "gputrain/errors.hpp"

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

std::string open_device(int index) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError(std::string("no usable CUDA device: ") + cudaGetErrorString(e));
  }
  if (index < 0 || index >= count)
    throw DeviceError("CUDA device " + std::to_string(index) + " asked for, but " +
                      std::to_string(count) + " device" + (count == 1 ? "" : "s") + " present");
  cudaDeviceProp prop{};
  GT_CHECK(cudaGetDeviceProperties(&prop, index));
  char cc[32];
  std::snprintf(cc, sizeof(cc), "sm_%d%d", prop.major, prop.minor);
  char mem[32];
  std::snprintf(mem, sizeof(mem), "%.1f GiB", double(prop.totalGlobalMem) / double(1ull << 30));
  const std::string description =
      "cuda:" + std::to_string(index) + " " + prop.name + " (" + cc + ", " + mem + ")";

  DeviceScope scope(index);
  // Creates the context now, so that "device busy / unavailable" (exclusive-process mode, a
  // failed GPU) is reported as an unusable device rather than a failure of some later call.
  const cudaError_t ctx = cudaFree(nullptr);
  if (ctx != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError(description + " cannot be used: " + cudaGetErrorString(ctx));
  }
  const cudaError_t image = probe_kernel_image();
  if (image != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError(description + ": this gputrain has no code for " + cc + " (" +
                      cudaGetErrorString(image) +
                      "); rebuild with -DCMAKE_CUDA_ARCHITECTURES=native on this machine");
  }
  return description;
}

void ensure_fits(size_t needed, const std::string& what, const std::string& device) {
  const auto mib = [](size_t bytes) {
    return std::to_string((bytes + (size_t(1) << 20) - 1) >> 20);
  };
  size_t free_bytes = 0, total = 0;
  GT_CHECK(cudaMemGetInfo(&free_bytes, &total));
  if (needed > free_bytes)
    throw DeviceError(what + " needs " + mib(needed) + " MiB on " + device + ", " +
                      mib(free_bytes) + " MiB free");
}

}  // namespace gputrain::cuda
