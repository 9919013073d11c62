// The backend chosen for a run, with what the user should hear about the choice: an info line
// (no GPU on this machine, so the CPU), or a warning (a GPU is present but cannot be used, so a run
// may be ~100x slower than expected; shown even with --quiet).
#pragma once

#include <memory>
#include <string>

#include "gputrain/engine.hpp"

namespace gputrain {

struct EngineChoice {
  std::unique_ptr<Engine> engine;
  std::string info;
  std::string warning;
};

// `device`: auto, cpu, cuda or cuda:N (the N-th GPU that CUDA_VISIBLE_DEVICES leaves visible).
// Throws DeviceError when a GPU was asked for and cannot be used, ConfigError for another name.
EngineChoice choose_engine(const std::string& device, const ModelPlan& plan,
                           const EngineOptions& options);

}  // namespace gputrain
