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
                    const float* g, OptimizerBuffers& state, const uint8_t* decay) {
  switch (spec.kind) {
    case OptimizerKind::Sgd: {
      const SgdParams p{hyper.lr, spec.momentum, spec.weight_decay, spec.nesterov};
      sgd_update(n, w, g, state.find("momentum")->data(), p, decay);
      return;
    }
    case OptimizerKind::AdamW: {
      AdamWParams p;
      p.lr = hyper.lr;
      p.beta1 = float(spec.beta1);
      p.beta2 = float(spec.beta2);
      p.one_minus_beta1 = float(1.0 - spec.beta1);
      p.one_minus_beta2 = float(1.0 - spec.beta2);
      p.eps = float(spec.eps);
      p.weight_decay = spec.weight_decay;
      p.bias_correction1 = hyper.bias_correction1;
      p.bias_correction2_sqrt = hyper.bias_correction2_sqrt;
      adamw_update(n, w, g, state.find("exp_avg")->data(), state.find("exp_avg_sq")->data(), p,
                   decay);
      return;
    }
  }
}

}  // namespace gputrain::cpu
