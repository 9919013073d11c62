// The CPU twin of torch.optim.AdamW's single-tensor update (and of kernels/adamw.cuh).
#include <cmath>

#include "gputrain/ops.hpp"

namespace gputrain::cpu {

void adamw_update(int64_t n, float* w, const float* g, float* m, float* v, const AdamWParams& p,
                  const uint8_t* decay_mask) {
  const float decay = 1.0f - p.lr * p.weight_decay;
  const float one_minus_beta1 = p.one_minus_beta1, one_minus_beta2 = p.one_minus_beta2;
  const float step_size = p.lr / p.bias_correction1;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    // An exempt element is scaled by 1 (torch: its group's weight_decay is 0, 1 − lr·0).
    const float wi = w[i] * (decay_mask && !decay_mask[i] ? 1.0f : decay);
    const float mi = m[i] * p.beta1 + one_minus_beta1 * gi;
    const float vi = v[i] * p.beta2 + one_minus_beta2 * (gi * gi);
    const float denom = std::sqrt(vi) / p.bias_correction2_sqrt + p.eps;
    m[i] = mi;
    v[i] = vi;
    w[i] = wi - step_size * (mi / denom);
  }
}

}  // namespace gputrain::cpu
