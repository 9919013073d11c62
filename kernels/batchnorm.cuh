// Batch normalization over [N, C, plane] (nn.BatchNorm2d): training forward (batch statistics,
// running statistics updated), eval forward (running statistics), backward. Launchers:
// kernels/batchnorm.cu; semantics: kernels/launchers.hpp (cpu::batchnorm2d_*).
//
// The per-channel reductions run in two stages so that a channel's M = N·plane values are spread
// over many blocks and still summed in an order that depends on the shapes alone: stage 1, grid
// (splits, C), each block sums its rows (samples) of one channel in double into `workspace`;
// stage 2, one warp per channel, sums the partials round-robin and then by a fixed butterfly. No
// atomics, so the same inputs give the same bits on every run. The statistics are summed in double
// (the forward's about a per-channel shift, the channel's first value, so E[x²] − E[x]² does not
// cancel), which keeps them within a few float ulps of the CPU's whatever its summation order.
#pragma once

#include "common.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// How a channel's rows are split among stage-1 blocks: `rows_per_split` samples of one channel
// per block (about kBatchNormBlockFloats values), `splits` blocks per channel.
struct BatchNormSplit {
  int64_t rows_per_split = 1;
  int64_t splits = 1;
};

constexpr int64_t kBatchNormBlockFloats = 8192;

inline BatchNormSplit batchnorm_split(int64_t batch, int64_t plane) {
  BatchNormSplit s;
  s.rows_per_split = plane > 0 ? kBatchNormBlockFloats / plane : 1;
  if (s.rows_per_split < 1) s.rows_per_split = 1;
  s.splits = (batch + s.rows_per_split - 1) / s.rows_per_split;
  if (s.splits < 1) s.splits = 1;
  return s;
}

// Stage 1 of both passes. grid (splits, channels), 256 threads. Each block sums, over samples
// [s·rows, (s+1)·rows) of channel c and every p of the plane, in double:
//   forward  (kBackward false): a = x − shift, b = (x − shift)²  with shift = x[0, c, 0]
//   backward (kBackward true):  a = dy,        b = dy·(x − mean[c])
// into partial[(c·splits + s)·2 + {0, 1}].
template <bool kBackward>
__global__ void __launch_bounds__(256)
    batchnorm_partials_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                              const float* __restrict__ mean, double* __restrict__ partial,
                              int64_t batch, int channels, int64_t plane, int64_t rows_per_split) {
  __shared__ double scratch[32];
  const int64_t s = blockIdx.x, c = blockIdx.y;
  const int64_t n0 = s * rows_per_split;
  const int64_t n1 = n0 + rows_per_split < batch ? n0 + rows_per_split : batch;
  // At most max(rows_per_split·plane, plane) items: 32-bit (plane < 2^31, checked by the launcher).
  const uint32_t plane_items = uint32_t(plane);
  const uint32_t items = uint32_t(n1 - n0) * plane_items;
  const float center = kBackward ? __ldg(mean + c) : __ldg(x + c * plane);
  double sum_a = 0.0, sum_b = 0.0;
  for (uint32_t j = threadIdx.x; j < items; j += blockDim.x) {
    const int64_t n = n0 + j / plane_items;
    const int64_t offset = (n * channels + c) * plane + j % plane_items;
    const double centered = double(__ldg(x + offset)) - double(center);
    if constexpr (kBackward) {
      const double g = double(__ldg(dy + offset));
      sum_a += g;
      sum_b += g * centered;
    } else {
      sum_a += centered;
      sum_b += centered * centered;
    }
  }
  sum_a = detail::block_sum(sum_a, scratch);
  __syncthreads();  // scratch is reused
  sum_b = detail::block_sum(sum_b, scratch);
  if (threadIdx.x == 0) {
    partial[(c * gridDim.x + s) * 2] = sum_a;
    partial[(c * gridDim.x + s) * 2 + 1] = sum_b;
  }
}

// Stage 2 helper: the channel's two sums over its `splits` partials (every lane gets them).
__device__ __forceinline__ void batchnorm_channel_sums(const double* partial, int64_t c,
                                                       int64_t splits, int lane, double* sum_a,
                                                       double* sum_b) {
  double a = 0.0, b = 0.0;
  for (int64_t k = lane; k < splits; k += detail::kWarp) {
    a += partial[(c * splits + k) * 2];
    b += partial[(c * splits + k) * 2 + 1];
  }
  *sum_a = detail::warp_sum(a);
  *sum_b = detail::warp_sum(b);
}

// Training forward, stage 2: one warp per channel. The batch mean and biased variance of the
// channel's count = N·plane values; save_mean, save_invstd = 1/sqrt(var + eps); the normalization
// as y = x·α + β with α = invstd·w, β = b − mean·α in float (the CPU's, torch's CPU order) into
// coef[c·2 + {0, 1}]; the running statistics, in double as the CPU: running = momentum·batch +
// (1 − momentum)·running, the variance unbiased (·count/(count − 1); biased when count is 1).
__global__ void __launch_bounds__(256)
    batchnorm_stats_kernel(const float* __restrict__ x, const double* __restrict__ partial,
                           int channels, int64_t plane, int64_t splits, double count, float eps,
                           float momentum, const float* __restrict__ w, const float* __restrict__ b,
                           float* __restrict__ running_mean, float* __restrict__ running_var,
                           float* __restrict__ save_mean, float* __restrict__ save_invstd,
                           float* __restrict__ coef) {
  const int lane = threadIdx.x % detail::kWarp;
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / detail::kWarp;
  if (c >= channels) return;  // whole warps leave together (blockDim.x is a multiple of 32)
  double sum, sum_squares;
  batchnorm_channel_sums(partial, c, splits, lane, &sum, &sum_squares);
  if (lane != 0) return;
  const double shifted_mean = sum / count;
  double var = sum_squares / count - shifted_mean * shifted_mean;
  if (var < 0.0) var = 0.0;
  const double mean = double(x[c * plane]) + shifted_mean;
  const double invstd = 1.0 / sqrt(var + double(eps));
  const float mean_f = float(mean), invstd_f = float(invstd);
  save_mean[c] = mean_f;
  save_invstd[c] = invstd_f;
  const float alpha = invstd_f * w[c];
  coef[c * 2] = alpha;
  coef[c * 2 + 1] = b[c] - mean_f * alpha;
  const double unbiased = count > 1.0 ? var * count / (count - 1.0) : var;
  const double m = momentum;
  running_mean[c] = float(m * mean + (1.0 - m) * double(running_mean[c]));
  running_var[c] = float(m * unbiased + (1.0 - m) * double(running_var[c]));
}

// Backward, stage 2: one warp per channel. db = Σ dy, dw = Σ dy·(x − mean)·invstd, and the two
// per-channel coefficients of dx into coef[c·2 + {0, 1}]: Σ dy / count and
// Σ dy·(x − mean)·invstd² / count.
__global__ void __launch_bounds__(256)
    batchnorm_grad_stats_kernel(const double* __restrict__ partial, int channels, int64_t splits,
                                double count, const float* __restrict__ save_invstd,
                                float* __restrict__ dw, float* __restrict__ db,
                                float* __restrict__ coef) {
  const int lane = threadIdx.x % detail::kWarp;
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / detail::kWarp;
  if (c >= channels) return;
  double sum, dot;
  batchnorm_channel_sums(partial, c, splits, lane, &sum, &dot);
  if (lane != 0) return;
  const double invstd = double(save_invstd[c]);
  db[c] = float(sum);
  dw[c] = float(dot * invstd);
  coef[c * 2] = float(count > 0 ? sum / count : 0.0);
  coef[c * 2 + 1] = float(count > 0 ? dot * invstd * invstd / count : 0.0);
}

// Stage 3 and the eval forward: one thread per element of [N, C, plane], in the CPU's float
// expressions (nvcc may fuse a multiply-add, so results can differ from the CPU's by an ulp).
//   kMode 0 (forward with batch statistics): y = x·coef0 + coef1 (α, β from stage 2)
//   kMode 1 (eval, stat = running_var, mean = running_mean): invstd = 1/sqrt(var + eps) (double),
//           α = invstd·w, y = x·α + (b − mean·α)
//   kMode 2 (backward, stat = save_invstd): dx = (dy − coef0 − (x − mean)·coef1)·(invstd·w)
template <int kMode, typename Index>
__global__ void __launch_bounds__(256)
    batchnorm_elementwise_kernel(Index total, Index plane, Index channels,
                                 const float* __restrict__ x, const float* __restrict__ dy,
                                 const float* __restrict__ w, const float* __restrict__ b,
                                 const float* __restrict__ mean, const float* __restrict__ stat,
                                 const float* __restrict__ coef, float eps,
                                 float* __restrict__ out) {
  for (Index i = Index(detail::global_thread_index()); i < total;
       i += Index(detail::grid_threads())) {
    const Index c = i / plane % channels;
    if constexpr (kMode == 0) {
      out[i] = x[i] * __ldg(coef + 2 * c) + __ldg(coef + 2 * c + 1);
    } else if constexpr (kMode == 1) {
      const float invstd = float(1.0 / sqrt(double(__ldg(stat + c)) + double(eps)));
      const float alpha = invstd * __ldg(w + c);
      out[i] = x[i] * alpha + (__ldg(b + c) - __ldg(mean + c) * alpha);
    } else {
      const float projection = (x[i] - __ldg(mean + c)) * __ldg(coef + 2 * c + 1);
      out[i] = (dy[i] - __ldg(coef + 2 * c) - projection) * (__ldg(stat + c) * __ldg(w + c));
    }
  }
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
