// Average pooling (no padding, floor mode; nn.AvgPool2d's arithmetic) and global average pooling
// (nn.AdaptiveAvgPool2d(1)), forward and backward. Launchers: kernels/avgpool.cu; semantics:
// kernels/launchers.hpp (cpu::avgpool2d_*, cpu::global_avgpool_*).
//
// Every output is one thread's sum in the order and precision in which the CPU twin adds the same
// terms, and the divisor is applied by the same expression, so the results are bitwise the CPU's
// (no reduction across threads, no atomics, no multiply-add to fuse).
#pragma once

#include "pool.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// One thread per output element [planes, Ho, Wo] (ow fastest): the window's sum in row-major
// order, divided by kernel².
template <typename Index>
__global__ void __launch_bounds__(256)
    avgpool2d_forward_kernel(PoolShape s, const float* __restrict__ x, float* __restrict__ y) {
  const Index total = Index(s.planes * s.out_height * s.out_width);
  const Index ow_n = Index(s.out_width), oh_n = Index(s.out_height);
  const float divisor = float(s.kernel * s.kernel);
  for (Index o = Index(detail::global_thread_index()); o < total;
       o += Index(detail::grid_threads())) {
    const int ow = int(o % ow_n);
    const int oh = int(o / ow_n % oh_n);
    const int64_t plane = int64_t(o / (ow_n * oh_n));
    const float* in = x + plane * s.height * s.width + (oh * s.stride) * s.width + ow * s.stride;
    float sum = 0.0f;
    for (int ki = 0; ki < s.kernel; ++ki)
      for (int kj = 0; kj < s.kernel; ++kj) sum += __ldg(in + ki * s.width + kj);
    y[o] = sum / divisor;
  }
}

// One thread per input element [planes, H, W]: dx = Σ dy/kernel² over the windows that contain
// it, in row-major window order (the order in which cpu::avgpool2d_backward adds them). Every dx
// element is written, 0 outside every window: no separate zeroing.
template <typename Index>
__global__ void __launch_bounds__(256)
    avgpool2d_backward_kernel(PoolShape s, const float* __restrict__ dy, float* __restrict__ dx) {
  const Index total = Index(s.planes * s.height * s.width);
  const Index w_n = Index(s.width), h_n = Index(s.height);
  const float divisor = float(s.kernel * s.kernel);
  for (Index i = Index(detail::global_thread_index()); i < total;
       i += Index(detail::grid_threads())) {
    const int w = int(i % w_n);
    const int h = int(i / w_n % h_n);
    const int64_t plane = int64_t(i / (w_n * h_n));
    const WindowRange r = windows_containing(s, h, w);
    const int64_t base = plane * s.out_height * s.out_width;
    float sum = 0.0f;
    for (int oh = r.oh_lo; oh <= r.oh_hi; ++oh)
      for (int ow = r.ow_lo; ow <= r.ow_hi; ++ow)
        sum += __ldg(dy + base + int64_t(oh) * s.out_width + ow) / divisor;
    dx[i] = sum;
  }
}

// One thread per (sample, channel): y = float(Σ_p x[p] / plane) with the sum in double as the
// CPU's: four interleaved partial sums (p mod 4 for the first plane − plane mod 4 values, the rest
// into the first), added as (s0 + s1) + (s2 + s3).
__global__ void __launch_bounds__(256)
    global_avgpool_forward_kernel(int64_t planes, int64_t plane, const float* __restrict__ x,
                                  float* __restrict__ y) {
  for (int64_t o = detail::global_thread_index(); o < planes; o += detail::grid_threads()) {
    const float* in = x + o * plane;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t p = 0;
    for (; p + 4 <= plane; p += 4) {
      s0 += __ldg(in + p);
      s1 += __ldg(in + p + 1);
      s2 += __ldg(in + p + 2);
      s3 += __ldg(in + p + 3);
    }
    for (; p < plane; ++p) s0 += __ldg(in + p);
    y[o] = float(((s0 + s1) + (s2 + s3)) / double(plane));
  }
}

// One thread per input element: dx[n, c, p] = dy[n, c] / plane.
template <typename Index>
__global__ void __launch_bounds__(256)
    global_avgpool_backward_kernel(Index total, Index plane, const float* __restrict__ dy,
                                   float* __restrict__ dx) {
  const float divisor = float(plane);
  for (Index i = Index(detail::global_thread_index()); i < total;
       i += Index(detail::grid_threads()))
    dx[i] = __ldg(dy + i / plane) / divisor;
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
