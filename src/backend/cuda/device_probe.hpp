// See device_probe.cu.
#pragma once

#include <cuda_runtime.h>

#include <string>

namespace gputrain::cuda {

// cudaSuccess when the current device can run this binary's kernels.
cudaError_t probe_kernel_image();

// Opens device `index` for an engine: checks it exists, creates its context and probes the kernel
// image. Returns its description "cuda:0 NVIDIA H100 ... (sm_90, 79.1 GiB)"; throws DeviceError
// when the device cannot be used (missing, busy, no code for its architecture). Defined in
// cuda_devices.cpp.
std::string open_device(int index);

}  // namespace gputrain::cuda
