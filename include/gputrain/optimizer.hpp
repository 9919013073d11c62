// The optimizer's home. What is fixed for a run (OptimizerSpec) is separate from what changes every
// step (StepHyper): the schedule computes the per-step values once per run, in double, into a table
// that the engine keeps (on the device for CUDA) and indexes by global step — so a learning rate
// that changes every step costs no host → device copy inside a step, and one captured CUDA graph
// serves every step. Each optimizer names its per-parameter state buffers (flat, in the parameter
// layout of ModelPlan); the engine owns them and the checkpoint writes them by name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gputrain {

struct OptimizerConfig;  // config.hpp

enum class OptimizerKind { Sgd };

// Constants of the update rule, fixed when the engine is built.
struct OptimizerSpec {
  OptimizerKind kind = OptimizerKind::Sgd;
  // SGD (torch.optim.SGD): g' = g + wd·w; v = μ·v + g'; w -= lr · (nesterov ? g' + μ·v : v).
  float momentum = 0.0f, weight_decay = 0.0f;
  bool nesterov = false;
};

// The values of one step, entry [global step] of the run's table. lr as float: the CPU op and the
// kernel compute in float, as torch.optim does for float32 parameters.
struct StepHyper {
  float lr = 0.0f;
  // Room for optimizers whose update depends on the step count (AdamW: 1 − β^t); 1 for SGD.
  float bias_correction1 = 1.0f, bias_correction2 = 1.0f;
};

// One per-parameter state buffer of an optimizer: `name` is the engine's name for it, and each
// parameter p's slice is stored in checkpoints as tensor `checkpoint_prefix + p`.
struct OptimizerStateInfo {
  std::string name;               // "momentum"
  std::string checkpoint_prefix;  // "momentum."
};

// The optimizer spec of a config's `optimizer` section.
OptimizerSpec optimizer_spec(const OptimizerConfig& config);

// The state buffers an optimizer keeps (SGD: "momentum", always, so that checkpoints have one
// layout whatever the momentum; its values stay zero when momentum is 0).
std::vector<OptimizerStateInfo> optimizer_state(const OptimizerSpec& spec);

// How the learning rate evolves over a run. Constant for now (lr every step); the table is built
// for the whole run so that schedules only change this function.
struct ScheduleSpec {
  double base_lr = 0.01;
};

// The learning rate of global step `step` (0-based) of a run of `total_steps` steps, in double.
double scheduled_lr(const ScheduleSpec& schedule, int64_t step, int64_t total_steps);

// The table of a run of `total_steps` steps (entry s = global step s, 0-based). An engine clamps
// the index to the last entry, so a table of 1 entry serves a constant schedule of any length.
std::vector<StepHyper> step_table(const OptimizerSpec& optimizer, const ScheduleSpec& schedule,
                                  int64_t total_steps);

}  // namespace gputrain
