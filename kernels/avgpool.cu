// Launchers of kernels/avgpool.cuh (declared and documented in kernels/launchers.hpp).
#include "avgpool.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {
namespace {

constexpr int kThreads = 256;

void check_global(const char* kernel, int n, int channels, int64_t plane) {
  if (n < 0 || channels < 0 || plane < 1)
    detail::bad_argument(kernel, "bad shape (batch " + std::to_string(n) + ", channels " +
                                     std::to_string(channels) + ", plane " + std::to_string(plane) +
                                     ")");
}

}  // namespace

void launch_avgpool2d_forward(const PoolGeometry& g, const float* x, float* y,
                              cudaStream_t stream) {
  const PoolShape s = checked_pool_shape("avgpool2d_forward", g);
  const int64_t total = s.planes * s.out_height * s.out_width;
  if (total == 0) return;
  detail::launch("avgpool2d_forward",
                 pool_indices_fit32(total, kThreads) ? avgpool2d_forward_kernel<uint32_t>
                                                     : avgpool2d_forward_kernel<int64_t>,
                 dim3(detail::grid_for(total, kThreads)), dim3(kThreads), 0, stream, s, x, y);
}

void launch_avgpool2d_backward(const PoolGeometry& g, const float* dy, float* dx,
                               cudaStream_t stream) {
  const PoolShape s = checked_pool_shape("avgpool2d_backward", g);
  const int64_t total = s.planes * s.height * s.width;
  if (total == 0) return;
  detail::launch("avgpool2d_backward",
                 pool_indices_fit32(total, kThreads) ? avgpool2d_backward_kernel<uint32_t>
                                                     : avgpool2d_backward_kernel<int64_t>,
                 dim3(detail::grid_for(total, kThreads)), dim3(kThreads), 0, stream, s, dy, dx);
}

void launch_global_avgpool_forward(int n, int channels, int64_t plane, const float* x, float* y,
                                   cudaStream_t stream) {
  check_global("global_avgpool_forward", n, channels, plane);
  const int64_t planes = int64_t(n) * channels;
  if (planes == 0) return;
  detail::launch("global_avgpool_forward", global_avgpool_forward_kernel,
                 dim3(detail::grid_for(planes, kThreads)), dim3(kThreads), 0, stream, planes, plane,
                 x, y);
}

void launch_global_avgpool_backward(int n, int channels, int64_t plane, const float* dy, float* dx,
                                    cudaStream_t stream) {
  check_global("global_avgpool_backward", n, channels, plane);
  const int64_t total = int64_t(n) * channels * plane;
  if (total == 0) return;
  const dim3 grid(detail::grid_for(total, kThreads));
  if (pool_indices_fit32(total, kThreads))
    detail::launch("global_avgpool_backward", global_avgpool_backward_kernel<uint32_t>, grid,
                   dim3(kThreads), 0, stream, uint32_t(total), uint32_t(plane), dy, dx);
  else
    detail::launch("global_avgpool_backward", global_avgpool_backward_kernel<int64_t>, grid,
                   dim3(kThreads), 0, stream, total, plane, dy, dx);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
