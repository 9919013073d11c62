// Max pooling (no padding, floor mode) forward with argmax, and its deterministic backward.
// Launchers: kernels/pool.cu; semantics: kernels/launchers.hpp (cpu::maxpool2d_*).
#pragma once

#include "common.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// Geometry as plain ints for the device. planes = N·C.
struct PoolShape {
  int64_t planes;
  int height, width, out_height, out_width, kernel, stride;
};

// The launchers' shape for a geometry they accept (max and average pooling alike); a bad one is
// an error naming `kernel`.
inline PoolShape checked_pool_shape(const char* kernel, const PoolGeometry& g) {
  if (g.batch < 0 || g.channels < 0 || g.kernel < 1 || g.stride < 1 || g.in_height < g.kernel ||
      g.in_width < g.kernel)
    detail::bad_argument(
        kernel, "bad geometry (batch " + std::to_string(g.batch) + ", channels " +
                    std::to_string(g.channels) + ", input " + std::to_string(g.in_height) + "x" +
                    std::to_string(g.in_width) + ", kernel " + std::to_string(g.kernel) +
                    ", stride " + std::to_string(g.stride) + ")");
  return PoolShape{int64_t(g.batch) * g.channels,
                   g.in_height,
                   g.in_width,
                   g.out_height(),
                   g.out_width(),
                   g.kernel,
                   g.stride};
}

// uint32_t indices when they cannot overflow for `total` elements, including i + grid stride.
inline bool pool_indices_fit32(int64_t total, int threads) {
  return total + detail::kMaxGridStrideBlocks * threads < (int64_t(1) << 32);
}

// The output windows that contain input element (h, w): rows oh_lo..oh_hi and columns
// ow_lo..ow_hi (inclusive; empty when lo > hi), those with oh·stride <= h < oh·stride + kernel,
// clipped to [0, Ho) (and likewise for w). The backward kernels of max and average pooling gather
// over them.
struct WindowRange {
  int oh_lo, oh_hi, ow_lo, ow_hi;
};

__device__ __forceinline__ WindowRange windows_containing(const PoolShape& s, int h, int w) {
  return WindowRange{
      h >= s.kernel ? (h - s.kernel) / s.stride + 1 : 0, min(h / s.stride, s.out_height - 1),
      w >= s.kernel ? (w - s.kernel) / s.stride + 1 : 0, min(w / s.stride, s.out_width - 1)};
}

// One thread per output element [planes, Ho, Wo] (ow fastest: coalesced stores).
// The window is scanned in row-major order and a value replaces the best only when it is larger or
// NaN, and never once the best is NaN: the first maximum wins and the first NaN propagates, exactly
// cpu::maxpool2d_forward (and PyTorch).
// `Index`: uint32_t when every index fits (32-bit divisions are several times cheaper), else
// int64_t.
template <typename Index>
__global__ void __launch_bounds__(256)
    maxpool2d_forward_kernel(PoolShape s, const float* __restrict__ x, float* __restrict__ y,
                             int32_t* __restrict__ argmax) {
  const Index total = Index(s.planes * s.out_height * s.out_width);
  const Index ow_n = Index(s.out_width), oh_n = Index(s.out_height);
  for (Index o = Index(detail::global_thread_index()); o < total;
       o += Index(detail::grid_threads())) {
    const int ow = int(o % ow_n);
    const int oh = int(o / ow_n % oh_n);
    const int64_t plane = int64_t(o / (ow_n * oh_n));
    const float* in = x + plane * s.height * s.width;
    const int h0 = oh * s.stride, w0 = ow * s.stride;
    int best = h0 * s.width + w0;
    float best_value = __ldg(in + best);
    for (int ki = 0; ki < s.kernel; ++ki) {
      const int row = (h0 + ki) * s.width;
      for (int kj = 0; kj < s.kernel; ++kj) {
        const int idx = row + w0 + kj;
        const float v = __ldg(in + idx);
        // (v != v): v is NaN, spelled so for nvcc and the host alike.
        if (!(best_value != best_value) && (v > best_value || v != v)) {
          best_value = v;
          best = idx;
        }
      }
    }
    y[o] = best_value;
    argmax[o] = best;
  }
}

// One thread per input element [planes, H, W]: dx = Σ dy over the windows that contain it and whose
// argmax is it, in row-major window order (the order in which cpu::maxpool2d_backward adds them, so
// even overlapping windows give the same bits). Every dx element is written: no separate zeroing.
template <typename Index>
__global__ void __launch_bounds__(256)
    maxpool2d_backward_kernel(PoolShape s, const float* __restrict__ dy,
                              const int32_t* __restrict__ argmax, float* __restrict__ dx) {
  const Index total = Index(s.planes * s.height * s.width);
  const Index w_n = Index(s.width), h_n = Index(s.height);
  for (Index i = Index(detail::global_thread_index()); i < total;
       i += Index(detail::grid_threads())) {
    const int w = int(i % w_n);
    const int h = int(i / w_n % h_n);
    const int64_t plane = int64_t(i / (w_n * h_n));
    const WindowRange r = windows_containing(s, h, w);
    const int self = h * s.width + w;
    const int64_t base = plane * s.out_height * s.out_width;
    float sum = 0.0f;
    for (int oh = r.oh_lo; oh <= r.oh_hi; ++oh)
      for (int ow = r.ow_lo; ow <= r.ow_hi; ++ow) {
        const int64_t o = base + int64_t(oh) * s.out_width + ow;
        if (__ldg(argmax + o) == self) sum += __ldg(dy + o);
      }
    dx[i] = sum;
  }
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
