#include "backend/cpu/cpu_optimizer.hpp"

#include "gputrain/ops.hpp"

namespace gputrain::cpu {

std::vector<float>* OptimizerBuffers::find(const std::string& name) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return &values[i];
  return nullptr;
}

OptimizerBuffers make_optimizer_buffers(const OptimizerSpec& spec, size_t n) {
  OptimizerBuffers b;
  for (const OptimizerStateInfo& s : optimizer_state(spec)) {
    b.names.push_back(s.name);
    b.values.emplace_back(n, 0.0f);
  }
  return b;
}

void optimizer_step(const OptimizerSpec& spec, const StepHyper& hyper, int64_t n, float* w,
                    const float* g, OptimizerBuffers& state) {
  switch (spec.kind) {
    case OptimizerKind::Sgd: {
      const SgdParams p{hyper.lr, spec.momentum, spec.weight_decay, spec.nesterov};
      sgd_update(n, w, g, state.find("momentum")->data(), p);
      return;
    }
  }
}

}  // namespace gputrain::cpu
