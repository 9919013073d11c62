// See device_probe.cu.
#pragma once

#include <cuda_runtime.h>

namespace gputrain::cuda {

// cudaSuccess when the current device can run this binary's kernels.
cudaError_t probe_kernel_image();

}  // namespace gputrain::cuda
