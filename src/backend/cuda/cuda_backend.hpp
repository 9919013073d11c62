// The CUDA backend as the rest of the library sees it (implemented in src/backend/cuda/ when the
// build has GPUTRAIN_WITH_CUDA; src/backend/engine_factory.cpp calls these).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gputrain/engine.hpp"

namespace gputrain::cuda {

// The CUDA engine's own queries, beyond Engine (for the GPU tests and gputrain's --verbose output).
class CudaEngine : public Engine {
 public:
  // Full training steps that ran as a replay of the captured graph (the step that captures it
  // included). 0 with --no-graph, after a failed capture, and before the warm-up step.
  virtual int64_t graph_replays() const = 0;
  // Captures attempted (successful or not). 1 in a run where one graph served every full step.
  virtual int64_t graph_captures() const = 0;
  // Full steps run as graph replays from now on: graphs on, not given up after a failed capture.
  virtual bool graph_active() const = 0;
  // One line per conv layer and planned batch size: the cuDNN algorithm of each pass (forward,
  // weight gradient, input gradient), verified on the real buffers, with its math type,
  // determinism, workspace and rank among cuDNN's offers.
  virtual std::string algorithm_report() const = 0;
  // Test hook: the next graph capture makes a call a capture refuses (a stream synchronize), so
  // the real fallback path runs (the capture fails with a CUDA status, the step runs eagerly).
  virtual void break_next_capture_for_testing() = 0;
};

// Throws DeviceError when no usable device or not enough device memory (saying how much is needed).
std::unique_ptr<CudaEngine> make_cuda_engine(const ModelPlan& plan, const EngineOptions& options);

// Devices the driver reports; empty with *why_none set ("no CUDA driver", "no device", ...).
std::vector<DeviceInfo> list_devices(std::string* why_none);

// "CUDA 13.0, cuDNN 9.x.y, cuBLAS 13.x.y" — the versions this binary was built against.
std::string build_versions();

}  // namespace gputrain::cuda
