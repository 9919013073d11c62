// Launchers of kernels/pool.cuh (declared and documented in kernels/launchers.hpp).
#include "pool.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {
namespace {

constexpr int kPoolThreads = 256;

PoolShape shape_of(const char* kernel, const PoolGeometry& g) {
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

// uint32_t indices when they cannot overflow, including i + grid stride.
bool fits32(int64_t total) {
  return total + detail::kMaxGridStrideBlocks * kPoolThreads < (int64_t(1) << 32);
}

}  // namespace

void launch_maxpool2d_forward(const PoolGeometry& g, const float* x, float* y, int32_t* argmax,
                              cudaStream_t stream) {
  const PoolShape s = shape_of("maxpool2d_forward", g);
  const int64_t total = s.planes * s.out_height * s.out_width;
  if (total == 0) return;
  detail::launch(
      "maxpool2d_forward",
      fits32(total) ? maxpool2d_forward_kernel<uint32_t> : maxpool2d_forward_kernel<int64_t>,
      dim3(detail::grid_for(total, kPoolThreads)), dim3(kPoolThreads), 0, stream, s, x, y, argmax);
}

void launch_maxpool2d_backward(const PoolGeometry& g, const float* dy, const int32_t* argmax,
                               float* dx, cudaStream_t stream) {
  const PoolShape s = shape_of("maxpool2d_backward", g);
  const int64_t total = s.planes * s.height * s.width;
  if (total == 0) return;
  detail::launch(
      "maxpool2d_backward",
      fits32(total) ? maxpool2d_backward_kernel<uint32_t> : maxpool2d_backward_kernel<int64_t>,
      dim3(detail::grid_for(total, kPoolThreads)), dim3(kPoolThreads), 0, stream, s, dy, argmax,
      dx);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
