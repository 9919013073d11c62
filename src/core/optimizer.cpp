#include "gputrain/optimizer.hpp"

#include "gputrain/config.hpp"
#include "gputrain/errors.hpp"

namespace gputrain {

OptimizerSpec optimizer_spec(const OptimizerConfig& config) {
  if (config.type != "sgd")
    throw ConfigError("optimizer.type: unknown optimizer '" + config.type + "'");
  OptimizerSpec spec;
  spec.kind = OptimizerKind::Sgd;
  spec.momentum = float(config.momentum);
  spec.weight_decay = float(config.weight_decay);
  spec.nesterov = config.nesterov;
  return spec;
}

std::vector<OptimizerStateInfo> optimizer_state(const OptimizerSpec& spec) {
  switch (spec.kind) {
    case OptimizerKind::Sgd:
      return {{"momentum", "momentum."}};
  }
  return {};
}

double scheduled_lr(const ScheduleSpec& schedule, int64_t /*step*/, int64_t /*total_steps*/) {
  return schedule.base_lr;
}

std::vector<StepHyper> step_table(const OptimizerSpec& /*optimizer*/, const ScheduleSpec& schedule,
                                  int64_t total_steps) {
  if (total_steps < 1) total_steps = 1;
  std::vector<StepHyper> table(static_cast<size_t>(total_steps));
  for (int64_t s = 0; s < total_steps; ++s)
    table[size_t(s)].lr = float(scheduled_lr(schedule, s, total_steps));
  return table;
}

}  // namespace gputrain
