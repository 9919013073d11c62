// SGD with momentum / weight decay / Nesterov (torch.optim.SGD) over the flat parameter buffer.
// Launchers: kernels/sgd.cu; semantics: kernels/launchers.hpp (cpu::sgd_update).
#pragma once

#include "common.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// One element, the CPU's expressions in the CPU's order. `decays`: weight decay applies to the
// element (false where cpu::sgd_update's decay mask exempts it: g' = g exactly).
struct SgdStep {
  float lr, mu, wd;
  bool momentum, nesterov;
  __device__ __forceinline__ void operator()(float& w, float g, float& v, bool decays) const {
    const float gi = decays ? g + wd * w : g;
    if (!momentum) {
      w -= lr * gi;
    } else if (nesterov) {
      const float vi = mu * v + gi;
      v = vi;
      w -= lr * (gi + mu * vi);
    } else {
      const float vi = mu * v + gi;
      v = vi;
      w -= lr * vi;
    }
  }
};

// Mask bytes of elements 4i..4i+3 (all decayed without a mask).
__device__ __forceinline__ uchar4 decay_flags4(const uint8_t* decay, int64_t i) {
  return decay ? reinterpret_cast<const uchar4*>(decay)[i] : make_uchar4(1, 1, 1, 1);
}

// The step table entry of the step whose update runs now: state->step counts the forward_backward
// passes (the global step + 1 once the step's forward_backward has run), clamped to the table.
__device__ __forceinline__ float table_lr(const StepHyper* table, int64_t table_size,
                                          const StepState* state) {
  int64_t entry = state->step - 1;
  entry = entry < 0 ? 0 : (entry >= table_size ? table_size - 1 : entry);
  return table[entry].lr;
}

// w, g, v [n]: the first 4·n4 elements as float4 (n4 = 0 unless all three are 16-byte aligned), the
// rest one by one. Hyper-parameters from device memory (`hyper`, so a captured graph picks up a
// new lr), or `by_value` with its lr replaced by the step table's when `table` is set (one graph
// serves every step of a schedule), or `by_value` alone. v is not touched when momentum == 0.
// decay: the weight decay mask (null: every element decays; else 4-byte aligned when n4 > 0).
__global__ void __launch_bounds__(256)
    sgd_update_kernel(int64_t n, int64_t n4, float* __restrict__ w, const float* __restrict__ g,
                      float* __restrict__ v, const SgdHyper* __restrict__ hyper, SgdHyper by_value,
                      const StepHyper* __restrict__ table, int64_t table_size,
                      const StepState* __restrict__ state, const uint8_t* __restrict__ decay) {
  SgdHyper h = hyper ? *hyper : by_value;
  if (table) h.lr = table_lr(table, table_size, state);
  const SgdStep step{h.lr, h.momentum, h.weight_decay, h.momentum != 0.0f, h.nesterov != 0};
  const int64_t stride = detail::grid_threads();
  float dummy_v = 0.0f;
  for (int64_t i = detail::global_thread_index(); i < n4; i += stride) {
    float4 wi = reinterpret_cast<float4*>(w)[i];
    const float4 gi = reinterpret_cast<const float4*>(g)[i];
    float4 vi = step.momentum ? reinterpret_cast<float4*>(v)[i] : make_float4(0, 0, 0, 0);
    const uchar4 d = decay_flags4(decay, i);
    step(wi.x, gi.x, vi.x, d.x != 0);
    step(wi.y, gi.y, vi.y, d.y != 0);
    step(wi.z, gi.z, vi.z, d.z != 0);
    step(wi.w, gi.w, vi.w, d.w != 0);
    reinterpret_cast<float4*>(w)[i] = wi;
    if (step.momentum) reinterpret_cast<float4*>(v)[i] = vi;
  }
  for (int64_t i = 4 * n4 + detail::global_thread_index(); i < n; i += stride)
    step(w[i], g[i], step.momentum ? v[i] : dummy_v, decay ? decay[i] != 0 : true);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
