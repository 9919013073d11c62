// AdamW (torch.optim.AdamW, decoupled weight decay) over the flat parameter buffer, one launch.
// Launchers: kernels/adamw.cu; semantics: kernels/launchers.hpp (cpu::adamw_update).
#pragma once

#include "common.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// One element: cpu::adamw_update's expressions in its order (the bit-for-bit twin).
struct AdamWStep {
  float decay, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, bc2_sqrt, eps, gscale;
  // `decays`: false where the weight decay mask exempts the element (w left as it is).
  __device__ __forceinline__ void operator()(float& w, float g, float& m, float& v,
                                             bool decays) const {
    const float gi = g * gscale;
    const float wi = decays ? w * decay : w;
    const float mi = m * beta1 + one_minus_beta1 * gi;
    const float vi = v * beta2 + one_minus_beta2 * (gi * gi);
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    m = mi;
    v = vi;
    w = wi - step_size * (mi / denom);
  }
};

// lr and the bias corrections from the step table entry [state->step − 1] (clamped), the gradient
// scaled by clip->scale when clip is set (gradient clipping without a separate pass). All from
// device memory: one captured graph serves every step. decay_mask: null (every element decays) or
// the weight decay mask, 4-byte aligned when n4 > 0.
__global__ void __launch_bounds__(256)
    adamw_step_kernel(int64_t n, int64_t n4, float* __restrict__ w, const float* __restrict__ g,
                      float* __restrict__ m, float* __restrict__ v, AdamWConstants c,
                      const StepHyper* __restrict__ table, int64_t table_size,
                      const StepState* __restrict__ state, const GradClip* __restrict__ clip,
                      const uint8_t* __restrict__ decay_mask) {
  int64_t entry = state->step - 1;
  entry = entry < 0 ? 0 : (entry >= table_size ? table_size - 1 : entry);
  const StepHyper h = table[entry];
  const AdamWStep step{1.0f - h.lr * c.weight_decay,
                       c.beta1,
                       c.beta2,
                       c.one_minus_beta1,
                       c.one_minus_beta2,
                       h.lr / h.bias_correction1,
                       h.bias_correction2_sqrt,
                       c.eps,
                       clip ? clip->scale : 1.0f};
  const int64_t stride = detail::grid_threads();
  for (int64_t i = detail::global_thread_index(); i < n4; i += stride) {
    float4 wi = reinterpret_cast<float4*>(w)[i];
    const float4 gi = reinterpret_cast<const float4*>(g)[i];
    float4 mi = reinterpret_cast<float4*>(m)[i];
    float4 vi = reinterpret_cast<float4*>(v)[i];
    const uchar4 d =
        decay_mask ? reinterpret_cast<const uchar4*>(decay_mask)[i] : make_uchar4(1, 1, 1, 1);
    step(wi.x, gi.x, mi.x, vi.x, d.x != 0);
    step(wi.y, gi.y, mi.y, vi.y, d.y != 0);
    step(wi.z, gi.z, mi.z, vi.z, d.z != 0);
    step(wi.w, gi.w, mi.w, vi.w, d.w != 0);
    reinterpret_cast<float4*>(w)[i] = wi;
    reinterpret_cast<float4*>(m)[i] = mi;
    reinterpret_cast<float4*>(v)[i] = vi;
  }
  for (int64_t i = 4 * n4 + detail::global_thread_index(); i < n; i += stride)
    step(w[i], g[i], m[i], v[i], decay_mask ? decay_mask[i] != 0 : true);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
