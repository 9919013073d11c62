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
struct ScheduleConfig;   // config.hpp
struct ModelPlan;        // model.hpp

enum class OptimizerKind { Sgd, AdamW };

// Constants of the update rule, fixed when the engine is built.
struct OptimizerSpec {
  OptimizerKind kind = OptimizerKind::Sgd;
  // SGD (torch.optim.SGD): g' = g + wd·w; v = μ·v + g'; w -= lr · (nesterov ? g' + μ·v : v).
  float momentum = 0.0f, weight_decay = 0.0f;
  bool nesterov = false;
  // AdamW (torch.optim.AdamW; weight_decay above, decoupled): see cpu::adamw_update. In double as
  // the config gives them: the bias corrections use them so (as Python floats in torch); the update
  // itself uses float casts.
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  // torch.nn.utils.clip_grad_norm_(max_norm = grad_clip) before the update; 0 = off. The scale
  // min(1, max_norm / (‖g‖₂ + 1e-6)) is computed where the gradients live (no host sync).
  float grad_clip = 0.0f;
  // optimizer.decay_norm_and_bias: false exempts biases and normalization parameters from
  // weight_decay (see weight_decay_mask).
  bool decay_norm_and_bias = true;
};

// Which elements of the flat parameter buffer weight decay applies to, one byte per element (plan
// layout, ModelPlan::parameter_count): 0 for every parameter with ParameterInfo::norm_or_bias when
// spec.decay_norm_and_bias is false, 1 elsewhere (alignment gaps: 0). Empty when every element
// decays alike (decay_norm_and_bias true, or weight_decay 0): an engine then passes no mask and
// pays nothing. Computed once when an engine is built; the update ops take it as `decay`
// (cpu::sgd_update, cpu::adamw_update): decayed where decay[i] != 0.
std::vector<uint8_t> weight_decay_mask(const ModelPlan& plan, const OptimizerSpec& spec);

// The values of one step, entry [global step] of the run's table, computed in double and stored as
// float: the CPU op and the kernel compute in float, as torch.optim does for float32 parameters.
struct StepHyper {
  float lr = 0.0f;
  // AdamW's bias corrections of step t = global step + 1: 1 − β1^t and sqrt(1 − β2^t) (torch
  // computes both in double); 1 for SGD.
  float bias_correction1 = 1.0f, bias_correction2_sqrt = 1.0f;
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
// layout whatever the momentum; its values stay zero when momentum is 0. AdamW: "exp_avg" and
// "exp_avg_sq", stored as "adam.m.<name>" and "adam.v.<name>").
std::vector<OptimizerStateInfo> optimizer_state(const OptimizerSpec& spec);

enum class ScheduleKind { Constant, Step, MultiStep, Cosine };

// How the learning rate evolves over a run, set every step. With S = total steps, W = round(
// warmup_epochs × steps_per_epoch), s the 0-based global step and e = ⌊s / steps_per_epoch⌋:
//   lr(s) = base · warm(s) · decay(s),  warm(s) = f + (1 − f)·min(s, W)/W (1 when W = 0)
//   decay: constant 1; step γ^⌊e/step_size⌋; multistep γ^(#milestones ≤ e); cosine 1 for s < W,
//          m + (1 − m)(1 + cos(π(s − W)/(S − W)))/2 with m = eta_min/base for s ≥ W.
// (PyTorch: LinearLR then CosineAnnealingLR in a SequentialLR stepped per iteration; StepLR and
// MultiStepLR stepped per epoch.)
struct ScheduleSpec {
  ScheduleKind kind = ScheduleKind::Constant;
  double base_lr = 0.01;
  int64_t steps_per_epoch = 1;
  int step_size = 1;            // epochs (step)
  double gamma = 0.1;           // step, multistep
  std::vector<int> milestones;  // epochs, increasing (multistep)
  double eta_min = 0.0;         // cosine
  double warmup_epochs = 0.0;   // may be fractional
  double warmup_start_factor = 0.1;
};

// The schedule of a config's `schedule` section for a run of `steps_per_epoch` steps per epoch.
ScheduleSpec schedule_spec(const ScheduleConfig& config, double base_lr, int64_t steps_per_epoch);

// W of the formula above.
int64_t warmup_steps(const ScheduleSpec& schedule);

// The learning rate of global step `step` (0-based) of a run of `total_steps` steps, in double.
double scheduled_lr(const ScheduleSpec& schedule, int64_t step, int64_t total_steps);

// The table of a run of `total_steps` steps (entry s = global step s, 0-based). An engine clamps
// the index to the last entry, so a table of 1 entry serves a constant schedule of any length.
std::vector<StepHyper> step_table(const OptimizerSpec& optimizer, const ScheduleSpec& schedule,
                                  int64_t total_steps);

}  // namespace gputrain
