// Element-wise kernels of the conv/linear layers: bias + optional ReLU (forward, in place), ReLU
// forward and backward, and the bias gradient (optionally fused with the ReLU backward).
// Launchers: kernels/bias_act.cu; semantics: kernels/launchers.hpp.
#pragma once

#include "common.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// cpu::relu_forward's exact expression (NaN -> 0, -0 -> 0).
__device__ __forceinline__ float relu(float v) {
  return v > 0.0f ? v : 0.0f;
}
__device__ __forceinline__ float relu_mask(float y, float dy) {
  return y > 0.0f ? dy : 0.0f;
}

// y [total] = [rows, plane] with row r = n·channels + c, in place y = act(y + bias[c]).
// kVec4: plane % 4 == 0 and y 16-byte aligned, so each float4 lies within one row; `Index` is
// uint32_t when every index fits (the row division is then a cheap 32-bit one).
template <bool kRelu, bool kVec4, typename Index>
__global__ void __launch_bounds__(256)
    bias_act_kernel(float* __restrict__ y, const float* __restrict__ bias, Index total, Index plane,
                    Index channels) {
  constexpr Index kWidth = kVec4 ? 4 : 1;
  const Index items = total / kWidth, plane_items = plane / kWidth;
  for (Index i = Index(detail::global_thread_index()); i < items;
       i += Index(detail::grid_threads())) {
    const float b = __ldg(bias + (i / plane_items) % channels);
    if constexpr (kVec4) {
      float4 v = reinterpret_cast<float4*>(y)[i];
      v.x += b;
      v.y += b;
      v.z += b;
      v.w += b;
      if constexpr (kRelu) {
        v.x = relu(v.x);
        v.y = relu(v.y);
        v.z = relu(v.z);
        v.w = relu(v.w);
      }
      reinterpret_cast<float4*>(y)[i] = v;
    } else {
      const float v = y[i] + b;
      y[i] = kRelu ? relu(v) : v;
    }
  }
}

// Element-wise over [0, n): the first 4·n4 elements as float4 (n4 = 0 when a pointer is not
// 16-byte aligned), the rest one by one. kBackward: out = relu_mask(a, b) (a = y, b = dy); else
// out = relu(a).
template <bool kBackward>
__global__ void __launch_bounds__(256)
    relu_kernel(const float* a, const float* b, float* out, int64_t n, int64_t n4) {
  const int64_t stride = detail::grid_threads();
  for (int64_t i = detail::global_thread_index(); i < n4; i += stride) {
    const float4 x = reinterpret_cast<const float4*>(a)[i];
    float4 r;
    if constexpr (kBackward) {
      const float4 d = reinterpret_cast<const float4*>(b)[i];
      r = make_float4(relu_mask(x.x, d.x), relu_mask(x.y, d.y), relu_mask(x.z, d.z),
                      relu_mask(x.w, d.w));
    } else {
      r = make_float4(relu(x.x), relu(x.y), relu(x.z), relu(x.w));
    }
    reinterpret_cast<float4*>(out)[i] = r;
  }
  for (int64_t i = 4 * n4 + detail::global_thread_index(); i < n; i += stride)
    out[i] = kBackward ? relu_mask(a[i], b[i]) : relu(a[i]);
}

// ---- bias gradient ----
//
// Stage 1 writes per-block partial sums, stage 2 adds each channel's partials in a fixed order:
// deterministic, and enough blocks to fill the GPU even for a handful of channels.
//
// Planes path (plane >= kPlanesPathMinPlane, e.g. conv outputs): block (s, c) sums channel c over
// the samples [s·rows, (s+1)·rows), all of each plane; partial [channels][splits].
// Columns path (small planes, linear layers with plane == 1): each sample is one contiguous row of
// channels·plane values; block (x, s) sums columns [x·256, x·256 + 256) over the samples of split
// s; partial [splits][channels·plane]. Loads are coalesced either way.
struct BiasGradPlan {
  bool planes_path = false;
  int64_t rows_per_split = 1;  // samples per stage-1 block
  int64_t splits = 1;          // blocks per channel (planes path) / per column chunk
  int64_t partials = 0;        // floats of workspace
};

constexpr int64_t kPlanesPathMinPlane = 64;
constexpr int64_t kPlanesPathBlockFloats = 8192;  // per stage-1 block, roughly
constexpr int64_t kColumnsPathRows = 32;

inline BiasGradPlan bias_grad_plan(int64_t batch, int64_t channels, int64_t plane) {
  BiasGradPlan p;
  p.planes_path = plane >= kPlanesPathMinPlane && channels <= 65535;
  if (p.planes_path) {
    p.rows_per_split = kPlanesPathBlockFloats / plane;
    if (p.rows_per_split < 1) p.rows_per_split = 1;
    p.splits = (batch + p.rows_per_split - 1) / p.rows_per_split;
    p.partials = channels * p.splits;
  } else {
    p.rows_per_split = kColumnsPathRows;
    p.splits = (batch + p.rows_per_split - 1) / p.rows_per_split;
    p.partials = p.splits * channels * plane;
  }
  return p;
}

// Planes path, stage 1. grid (splits, channels), 256 threads. g = dy or relu_mask(relu_y, dy) (then
// also stored to dx). kVec4: plane % 4 == 0 and every pointer 16-byte aligned.
template <bool kRelu, bool kVec4>
__global__ void __launch_bounds__(256)
    bias_grad_planes_kernel(const float* dy, const float* relu_y, float* dx, float* partial,
                            int64_t batch, int channels, int64_t plane, int64_t rows_per_split) {
  __shared__ float scratch[32];
  const int64_t s = blockIdx.x, c = blockIdx.y;
  const int64_t n0 = s * rows_per_split;
  const int64_t n1 = n0 + rows_per_split < batch ? n0 + rows_per_split : batch;
  constexpr int kWidth = kVec4 ? 4 : 1;
  // The block's items: (n, p) pairs, p in units of kWidth floats, fastest. 32-bit: at most
  // rows_per_split · plane < 2^31 items (rows_per_split is 1 when a plane alone is that large).
  const uint32_t plane_items = uint32_t(plane / kWidth);
  const uint32_t items = uint32_t(n1 - n0) * plane_items;
  float sum = 0.0f;
  for (uint32_t j = threadIdx.x; j < items; j += blockDim.x) {
    const int64_t n = n0 + j / plane_items;
    const int64_t offset = ((n * channels + c) * plane) / kWidth + j % plane_items;
    if constexpr (kVec4) {
      float4 g = reinterpret_cast<const float4*>(dy)[offset];
      if constexpr (kRelu) {
        const float4 y = reinterpret_cast<const float4*>(relu_y)[offset];
        g = make_float4(relu_mask(y.x, g.x), relu_mask(y.y, g.y), relu_mask(y.z, g.z),
                        relu_mask(y.w, g.w));
        reinterpret_cast<float4*>(dx)[offset] = g;
      }
      sum += (g.x + g.y) + (g.z + g.w);
    } else {
      float g = dy[offset];
      if constexpr (kRelu) {
        g = relu_mask(relu_y[offset], g);
        dx[offset] = g;
      }
      sum += g;
    }
  }
  sum = detail::block_sum(sum, scratch);
  if (threadIdx.x == 0) partial[c * gridDim.x + s] = sum;
}

// Columns path, stage 1. grid (ceil(row / 256), splits), 256 threads; row = channels · plane.
template <bool kRelu>
__global__ void __launch_bounds__(256)
    bias_grad_columns_kernel(const float* dy, const float* relu_y, float* dx, float* partial,
                             int64_t batch, int64_t row, int64_t rows_per_split) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t s = blockIdx.y;
  if (j >= row) return;
  const int64_t n0 = s * rows_per_split;
  const int64_t n1 = n0 + rows_per_split < batch ? n0 + rows_per_split : batch;
  float sum = 0.0f;
  for (int64_t n = n0; n < n1; ++n) {
    float g = dy[n * row + j];
    if constexpr (kRelu) {
      g = relu_mask(relu_y[n * row + j], g);
      dx[n * row + j] = g;
    }
    sum += g;
  }
  partial[s * row + j] = sum;
}

// Stage 2: one warp per channel; db[c] = Σ_{s, p} partial[s·stride_s + c·stride_c + p], p < plane
// (plane = 1 for the planes path). Lanes take the (s, p) pairs round-robin, then a fixed butterfly.
__global__ void __launch_bounds__(256)
    bias_grad_finish_kernel(const float* partial, float* db, int channels, int64_t splits,
                            int64_t plane, int64_t stride_s, int64_t stride_c) {
  const int lane = threadIdx.x % detail::kWarp;
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / detail::kWarp;
  if (c >= channels) return;  // whole warps leave together (blockDim.x is a multiple of 32)
  const int64_t count = splits * plane;
  float sum = 0.0f;
  for (int64_t k = lane; k < count; k += detail::kWarp)
    sum += partial[(k / plane) * stride_s + c * stride_c + k % plane];
  sum = detail::warp_sum(sum);
  if (lane == 0) db[c] = sum;
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
