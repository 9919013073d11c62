// The CUDA backend as the rest of the library sees it (implemented in src/backend/cuda/ when the
// build has GPUTRAIN_WITH_CUDA; src/backend/engine_factory.cpp calls these).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gputrain/engine.hpp"

namespace gputrain::cuda {

// Throws DeviceError when no usable device or not enough device memory (saying how much is needed).
std::unique_ptr<Engine> make_cuda_engine(const ModelPlan& plan, const EngineOptions& options);

// Devices the driver reports; empty with *why_none set ("no CUDA driver", "no device", ...).
std::vector<DeviceInfo> list_devices(std::string* why_none);

// "CUDA 13.0, cuDNN 9.x.y, cuBLAS 13.x.y" — the versions this binary was built against.
std::string build_versions();

}  // namespace gputrain::cuda
