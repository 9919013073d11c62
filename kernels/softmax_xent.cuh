// Softmax cross-entropy, forward and backward fused, with on-device loss / accuracy / confusion
// accumulation. Launchers: kernels/softmax_xent.cu; semantics: kernels/launchers.hpp.
#pragma once

#include "common.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// Per-row results handed from the row kernel to the fixed-order reduction (the workspace).
struct XentRow {
  float loss;   // logsumexp - logit[label] (NaN for a label out of range)
  int32_t hit;  // argmax == label
};

// One warp per row of logits [batch, classes] (grid-stride over rows; lanes over classes).
// 1. max and argmax (first max wins: ties go to the lower class index);
// 2. sum of exp(z - max), logsumexp;
// 3. dlogits = (exp(z - max) / sum - target) / grad_scale, predicted, confusion, the row's loss;
//    target = onehot, or (1 − ε)·onehot + ε/classes with label smoothing ε > 0 (then the loss
//    also needs Σ_k (z_k − max), a third fixed butterfly).
// All warp reductions are fixed butterflies: the same bits on every run.
__global__ void __launch_bounds__(256)
    softmax_xent_rows_kernel(int batch, int classes, const float* __restrict__ logits,
                             const int32_t* __restrict__ labels, float grad_scale,
                             float* __restrict__ dlogits, int32_t* __restrict__ predicted,
                             unsigned long long* __restrict__ confusion, XentRow* __restrict__ rows,
                             float label_smoothing) {
  const int lane = threadIdx.x % detail::kWarp;
  const int64_t warps = detail::grid_threads() / detail::kWarp;
  for (int64_t n = detail::global_thread_index() / detail::kWarp; n < batch; n += warps) {
    const float* z = logits + n * classes;
    float best = -INFINITY;
    int best_k = classes;  // "none yet": loses every tie-break
    for (int k = lane; k < classes; k += detail::kWarp) {
      const float v = __ldg(z + k);
      if (v > best || best_k == classes) {
        best = v;
        best_k = k;
      }
    }
    GT_UNROLL
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, best, offset);
      const int other_k = __shfl_xor_sync(0xffffffffu, best_k, offset);
      if (other_k < classes &&
          (best_k == classes || other > best || (other == best && other_k < best_k))) {
        best = other;
        best_k = other_k;
      }
    }
    float sum = 0.0f;
    for (int k = lane; k < classes; k += detail::kWarp) sum += expf(__ldg(z + k) - best);
    sum = detail::warp_sum(sum);
    const bool smoothing = label_smoothing > 0.0f;
    float shifted_sum = 0.0f;  // Σ_k (z_k − max), for the smoothed loss only
    if (smoothing) {
      for (int k = lane; k < classes; k += detail::kWarp) shifted_sum += __ldg(z + k) - best;
      shifted_sum = detail::warp_sum(shifted_sum);
    }
    const float on_target = 1.0f - label_smoothing, off_target = label_smoothing / float(classes);
    const int label = labels[n];
    const bool valid = label >= 0 && label < classes;
    if (dlogits) {
      float* d = dlogits + n * classes;
      for (int k = lane; k < classes; k += detail::kWarp) {
        const float p = expf(__ldg(z + k) - best) / sum;
        const float target =
            smoothing ? (k == label ? on_target : 0.0f) + off_target : (k == label ? 1.0f : 0.0f);
        d[k] = (p - target) / grad_scale;
      }
    }
    if (lane == 0) {
      float loss = NAN;
      if (valid) {
        const float nll = logf(sum) - (__ldg(z + label) - best);
        loss = smoothing
                   ? on_target * nll + label_smoothing * (logf(sum) - shifted_sum / float(classes))
                   : nll;
      }
      rows[n] = XentRow{loss, valid && best_k == label ? 1 : 0};
      if (predicted) predicted[n] = best_k;
      if (confusion && valid) atomicAdd(confusion + int64_t(label) * classes + best_k, 1ull);
    }
  }
}

// One block: *loss_sum += Σ rows[n].loss (in double), *correct += Σ rows[n].hit, in a fixed order
// (thread t takes rows t, t + blockDim, ...; then a fixed tree). One writer: no atomics needed.
__global__ void __launch_bounds__(256)
    softmax_xent_reduce_kernel(int batch, const XentRow* __restrict__ rows,
                               double* __restrict__ loss_sum,
                               unsigned long long* __restrict__ correct) {
  __shared__ double loss_scratch[32];
  __shared__ unsigned long long hit_scratch[32];
  double loss = 0.0;
  unsigned long long hits = 0;
  for (int n = threadIdx.x; n < batch; n += blockDim.x) {
    loss += double(rows[n].loss);
    hits += static_cast<unsigned long long>(rows[n].hit);
  }
  loss = detail::block_sum(loss, loss_scratch);
  hits = detail::block_sum(hits, hit_scratch);
  if (threadIdx.x == 0) {
    if (loss_sum) *loss_sum += loss;
    if (correct) *correct += hits;
  }
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
