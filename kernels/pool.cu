// Launchers of kernels/pool.cuh (declared and documented in kernels/launchers.hpp).
#include "pool.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {
namespace {

constexpr int kPoolThreads = 256;

}  // namespace

void launch_maxpool2d_forward(const PoolGeometry& g, const float* x, float* y, int32_t* argmax,
                              cudaStream_t stream) {
  const PoolShape s = checked_pool_shape("maxpool2d_forward", g);
  const int64_t total = s.planes * s.out_height * s.out_width;
  if (total == 0) return;
  detail::launch("maxpool2d_forward",
                 pool_indices_fit32(total, kPoolThreads) ? maxpool2d_forward_kernel<uint32_t>
                                                         : maxpool2d_forward_kernel<int64_t>,
                 dim3(detail::grid_for(total, kPoolThreads)), dim3(kPoolThreads), 0, stream, s, x,
                 y, argmax);
}

void launch_maxpool2d_backward(const PoolGeometry& g, const float* dy, const int32_t* argmax,
                               float* dx, cudaStream_t stream) {
  const PoolShape s = checked_pool_shape("maxpool2d_backward", g);
  const int64_t total = s.planes * s.height * s.width;
  if (total == 0) return;
  detail::launch("maxpool2d_backward",
                 pool_indices_fit32(total, kPoolThreads) ? maxpool2d_backward_kernel<uint32_t>
                                                         : maxpool2d_backward_kernel<int64_t>,
                 dim3(detail::grid_for(total, kPoolThreads)), dim3(kPoolThreads), 0, stream, s, dy,
                 argmax, dx);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
