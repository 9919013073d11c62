// Gradient clipping as torch.nn.utils.clip_grad_norm_: the global L2 norm of the flat gradient
// buffer, reduced in a fixed order into device memory, and the clipping coefficient beside it.
// Launchers: kernels/grad_norm.cu; semantics: kernels/launchers.hpp (cpu::clip_grad_norm).
#pragma once

#include "common.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// Stage 1: a fixed number of blocks (kGradNormBlocks, whatever the device), block b summing g[i]²
// in double over i = b·256 + t, stepping by the grid; partials[b] = the block's sum. The order of
// every addition depends on n only: the same bits on every run and every GPU.
__global__ void __launch_bounds__(256)
    grad_norm_partials_kernel(int64_t n, const float* __restrict__ g,
                              double* __restrict__ partials) {
  __shared__ double scratch[32];
  double sum = 0.0;
  for (int64_t i = detail::global_thread_index(); i < n; i += detail::grid_threads()) {
    const double x = double(g[i]);
    sum += x * x;
  }
  sum = detail::block_sum(sum, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// Stage 2, one block: norm = sqrt(Σ partials) (fixed tree), then clip->norm, clip->scale =
// min(1, max_norm / (norm + 1e-6)) in float as torch computes it, and *norm_sum += norm (double;
// may be null) for the epoch's mean.
__global__ void __launch_bounds__(256)
    grad_norm_finish_kernel(int blocks, const double* __restrict__ partials, float max_norm,
                            GradClip* __restrict__ clip, double* __restrict__ norm_sum) {
  __shared__ double scratch[32];
  double sum = 0.0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) sum += partials[b];
  sum = detail::block_sum(sum, scratch);
  if (threadIdx.x == 0) {
    const double norm = sqrt(sum);
    const float coef = max_norm / (float(norm) + 1e-6f);
    clip->norm = float(norm);
    clip->scale = coef < 1.0f ? coef : 1.0f;
    if (norm_sum) *norm_sum += norm;
  }
}

// g[i] *= clip->scale (float4 where aligned).
__global__ void __launch_bounds__(256)
    scale_gradients_kernel(int64_t n, int64_t n4, float* __restrict__ g,
                           const GradClip* __restrict__ clip) {
  const float s = clip->scale;
  const int64_t stride = detail::grid_threads();
  for (int64_t i = detail::global_thread_index(); i < n4; i += stride) {
    float4 v = reinterpret_cast<float4*>(g)[i];
    v.x *= s;
    v.y *= s;
    v.z *= s;
    v.w *= s;
    reinterpret_cast<float4*>(g)[i] = v;
  }
  for (int64_t i = 4 * n4 + detail::global_thread_index(); i < n; i += stride) g[i] *= s;
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
