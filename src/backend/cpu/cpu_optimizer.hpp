// The CPU backend's optimizer step: one OptimizerSpec + StepHyper applied to the flat buffers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gputrain/optimizer.hpp"

namespace gputrain::cpu {

// The optimizer's state buffers, in optimizer_state(spec) order, each n floats.
struct OptimizerBuffers {
  std::vector<std::string> names;
  std::vector<std::vector<float>> values;
  std::vector<float>* find(const std::string& name);
};
OptimizerBuffers make_optimizer_buffers(const OptimizerSpec& spec, size_t n);

// w[n] updated from g[n] with the step's hyper-parameters; the state buffers updated in place.
// `decay`: weight_decay_mask's bytes, or null when every element decays.
void optimizer_step(const OptimizerSpec& spec, const StepHyper& hyper, int64_t n, float* w,
                    const float* g, OptimizerBuffers& state, const uint8_t* decay = nullptr);

}  // namespace gputrain::cpu
