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

std::vector<StepHyper> step_table(const OptimizerSpec& /*optimizer*/, const ScheduleSpec& schedule,
                                  int64_t total_steps) {
  if (total_steps < 1) total_steps = 1;
  StepHyper h;
  h.lr = float(schedule.base_lr);
  return std::vector<StepHyper>(size_t(total_steps), h);
}

}  // namespace gputrain
