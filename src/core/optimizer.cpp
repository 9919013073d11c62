#include "gputrain/optimizer.hpp"

#include <algorithm>
#include <cmath>

#include "gputrain/config.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"

namespace gputrain {

OptimizerSpec optimizer_spec(const OptimizerConfig& config) {
  if (config.type != "sgd" && config.type != "adamw")
    throw ConfigError("optimizer.type: unknown optimizer '" + config.type + "'");
  OptimizerSpec spec;
  spec.kind = config.type == "adamw" ? OptimizerKind::AdamW : OptimizerKind::Sgd;
  spec.momentum = float(config.momentum);
  spec.weight_decay = float(config.weight_decay);
  spec.nesterov = config.nesterov;
  spec.beta1 = config.beta1;
  spec.beta2 = config.beta2;
  spec.eps = config.eps;
  spec.grad_clip = float(config.grad_clip);
  spec.decay_norm_and_bias = config.decay_norm_and_bias;
  return spec;
}

std::vector<uint8_t> weight_decay_mask(const ModelPlan& plan, const OptimizerSpec& spec) {
  if (spec.decay_norm_and_bias || spec.weight_decay == 0.0f) return {};
  std::vector<uint8_t> mask(plan.parameter_count, 0);
  for (const ParameterInfo& p : plan.parameters)
    if (!p.norm_or_bias)
      std::fill(mask.begin() + long(p.offset), mask.begin() + long(p.offset + p.count), 1);
  return mask;
}

std::vector<OptimizerStateInfo> optimizer_state(const OptimizerSpec& spec) {
  switch (spec.kind) {
    case OptimizerKind::Sgd:
      return {{"momentum", "momentum."}};
    case OptimizerKind::AdamW:
      return {{"exp_avg", "adam.m."}, {"exp_avg_sq", "adam.v."}};
  }
  return {};
}

ScheduleSpec schedule_spec(const ScheduleConfig& config, double base_lr, int64_t steps_per_epoch) {
  ScheduleSpec spec;
  const std::string& t = config.type;
  spec.kind = t == "step"        ? ScheduleKind::Step
              : t == "multistep" ? ScheduleKind::MultiStep
              : t == "cosine"    ? ScheduleKind::Cosine
                                 : ScheduleKind::Constant;
  if (t != "constant" && t != "step" && t != "multistep" && t != "cosine")
    throw ConfigError("schedule.type: unknown schedule '" + t + "'");
  spec.base_lr = base_lr;
  spec.steps_per_epoch = steps_per_epoch;
  spec.step_size = config.step_size;
  spec.gamma = config.gamma;
  spec.milestones = config.milestones;
  spec.eta_min = config.eta_min;
  spec.warmup_epochs = config.warmup_epochs;
  spec.warmup_start_factor = config.warmup_start_factor;
  return spec;
}

int64_t warmup_steps(const ScheduleSpec& schedule) {
  return std::llround(schedule.warmup_epochs * double(schedule.steps_per_epoch));
}

double scheduled_lr(const ScheduleSpec& schedule, int64_t step, int64_t total_steps) {
  const int64_t W = warmup_steps(schedule);
  const double f = schedule.warmup_start_factor;
  const double warm = W > 0 ? f + (1.0 - f) * double(std::min(step, W)) / double(W) : 1.0;
  const int64_t epoch = step / std::max<int64_t>(schedule.steps_per_epoch, 1);
  double decay = 1.0;
  switch (schedule.kind) {
    case ScheduleKind::Constant:
      break;
    case ScheduleKind::Step:
      decay = std::pow(schedule.gamma, double(epoch / std::max(schedule.step_size, 1)));
      break;
    case ScheduleKind::MultiStep: {
      const auto passed = std::count_if(schedule.milestones.begin(), schedule.milestones.end(),
                                        [&](int m) { return m <= epoch; });
      decay = std::pow(schedule.gamma, double(passed));
      break;
    }
    case ScheduleKind::Cosine:
      if (step >= W && total_steps > W) {
        const double m = schedule.base_lr > 0 ? schedule.eta_min / schedule.base_lr : 0.0;
        const double progress = double(step - W) / double(total_steps - W);
        decay = m + (1.0 - m) * (1.0 + std::cos(M_PI * progress)) / 2.0;
      }
      break;
  }
  return schedule.base_lr * warm * decay;
}

std::vector<StepHyper> step_table(const OptimizerSpec& optimizer, const ScheduleSpec& schedule,
                                  int64_t total_steps) {
  if (total_steps < 1) total_steps = 1;
  std::vector<StepHyper> table(static_cast<size_t>(total_steps));
  for (int64_t s = 0; s < total_steps; ++s) {
    StepHyper& h = table[size_t(s)];
    h.lr = float(scheduled_lr(schedule, s, total_steps));
    if (optimizer.kind == OptimizerKind::AdamW) {
      // As torch.optim.AdamW: in Python floats (double), t = s + 1.
      const double t = double(s + 1);
      h.bias_correction1 = float(1.0 - std::pow(optimizer.beta1, t));
      h.bias_correction2_sqrt = float(std::sqrt(1.0 - std::pow(optimizer.beta2, t)));
    }
  }
  return table;
}

}  // namespace gputrain
