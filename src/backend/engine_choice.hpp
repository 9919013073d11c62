// The backend chosen for a run, with what the user should hear about the choice: an info line
// (no GPU on this machine, so the CPU), or a warning (a GPU is present but cannot be used, so a run
// may be ~100x slower than expected; shown even with --quiet).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gputrain/engine.hpp"

namespace gputrain {

struct EngineChoice {
  std::unique_ptr<Engine> engine;
  std::string info;
  std::string warning;
};

// `device`: auto, cpu, cuda or cuda:N (the N-th GPU that CUDA_VISIBLE_DEVICES leaves visible).
// `local_rank`: this process's rank among the data-parallel ranks on its machine (0 alone): with
// cuda or auto it trains on GPU `local_rank` (gpu_index_for). Throws DeviceError when a GPU was
// asked for and cannot be used, ConfigError for another name.
EngineChoice choose_engine(const std::string& device, const ModelPlan& plan,
                           const EngineOptions& options, int local_rank = 0);

// The GPU a process takes for `device` (cuda, cuda:N or auto) among the `visible` ones: N when
// cuda:N pins one; otherwise its local rank, so that the ranks on one node take distinct GPUs
// 0, 1, … (a process alone takes GPU 0), or the only one visible when the launcher gave each rank
// its own through CUDA_VISIBLE_DEVICES. Throws DeviceError when that GPU is not visible.
int gpu_index_for(const std::string& device, int local_rank,
                  const std::vector<DeviceInfo>& visible);

}  // namespace gputrain
