// Does this binary hold code the device can run? A kernel compiled with the same
// CMAKE_CUDA_ARCHITECTURES as kernels/*.cu: if the driver finds no SASS for the device's compute
// capability and no PTX it can JIT, cudaFuncGetAttributes fails with
// cudaErrorNoKernelImageForDevice (or cudaErrorInvalidDeviceFunction). Asking at plan time turns a
// confusing failure at the first step into a DeviceError that says to rebuild for this GPU.
#include <cuda_runtime.h>

#include "backend/cuda/device_probe.hpp"

namespace gputrain::cuda {
namespace {
__global__ void probe_kernel() {}
}  // namespace

cudaError_t probe_kernel_image() {
  cudaFuncAttributes attributes{};
  return cudaFuncGetAttributes(&attributes, probe_kernel);
}

}  // namespace gputrain::cuda
