// Launchers of kernels/batchnorm.cuh (declared and documented in kernels/launchers.hpp).
#include "batchnorm.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / detail::kWarp;

void check_shape(const char* kernel, int n, int channels, int64_t plane) {
  if (n < 0 || channels < 0 || plane < 0)
    detail::bad_argument(kernel, "negative size (batch " + std::to_string(n) + ", channels " +
                                     std::to_string(channels) + ", plane " + std::to_string(plane) +
                                     ")");
  if (channels > 65535) detail::bad_argument(kernel, "more than 65535 channels");
  if (plane >= (int64_t(1) << 31)) detail::bad_argument(kernel, "plane of 2^31 values or more");
}

// Workspace layout: partial sums [C][splits][2] (double), then per-channel coefficients [C][2]
// (float: the forward's α, β; the backward's Σdy/count and Σdy·(x − mean)·invstd²/count).
size_t partial_bytes(int n, int channels, int64_t plane) {
  return sizeof(double) * 2 * size_t(channels) * size_t(batchnorm_split(n, plane).splits);
}

void check_workspace(const char* kernel, int n, int channels, int64_t plane, size_t bytes) {
  const size_t needed = batchnorm_workspace_bytes(n, channels, plane);
  if (bytes < needed)
    detail::bad_argument(kernel, "workspace of " + std::to_string(bytes) + " bytes, needs " +
                                     std::to_string(needed));
}

template <int kMode>
void launch_elementwise(const char* name, int n, int channels, int64_t plane, const float* x,
                        const float* dy, const float* w, const float* b, const float* mean,
                        const float* stat, const float* coef, float eps, float* out,
                        cudaStream_t stream) {
  const int64_t total = int64_t(n) * channels * plane;
  if (total == 0) return;
  const dim3 grid(detail::grid_for(total, kThreads));
  if (total + detail::kMaxGridStrideBlocks * kThreads < (int64_t(1) << 32))
    detail::launch(name, batchnorm_elementwise_kernel<kMode, uint32_t>, grid, dim3(kThreads), 0,
                   stream, uint32_t(total), uint32_t(plane), uint32_t(channels), x, dy, w, b, mean,
                   stat, coef, eps, out);
  else
    detail::launch(name, batchnorm_elementwise_kernel<kMode, int64_t>, grid, dim3(kThreads), 0,
                   stream, total, plane, int64_t(channels), x, dy, w, b, mean, stat, coef, eps,
                   out);
}

// Stage 1 of either pass (see batchnorm.cuh); nothing to launch without values.
template <bool kBackward>
void launch_partials(const char* name, int n, int channels, int64_t plane, const float* x,
                     const float* dy, const float* mean, double* partial, cudaStream_t stream) {
  const BatchNormSplit split = batchnorm_split(n, plane);
  detail::launch(name, batchnorm_partials_kernel<kBackward>,
                 dim3(unsigned(split.splits), unsigned(channels)), dim3(kThreads), 0, stream, x, dy,
                 mean, partial, int64_t(n), channels, plane, split.rows_per_split);
}

dim3 channel_warps_grid(int channels) {
  return dim3(unsigned((channels + kWarpsPerBlock - 1) / kWarpsPerBlock));
}

}  // namespace

size_t batchnorm_workspace_bytes(int n, int channels, int64_t plane) {
  const size_t bytes = partial_bytes(n, channels, plane) + sizeof(float) * 2 * size_t(channels);
  return bytes > 0 ? bytes : 1;
}

void launch_batchnorm2d_forward_train(int n, int channels, int64_t plane, const float* x,
                                      const float* w, const float* b, float eps, float momentum,
                                      float* running_mean, float* running_var, float* y,
                                      float* save_mean, float* save_invstd, void* workspace,
                                      size_t workspace_bytes, cudaStream_t stream) {
  check_shape("batchnorm2d_forward_train", n, channels, plane);
  if (int64_t(n) * plane == 0 || channels == 0) return;  // no statistics to take
  check_workspace("batchnorm2d_forward_train", n, channels, plane, workspace_bytes);
  auto* partial = static_cast<double*>(workspace);
  auto* coef = reinterpret_cast<float*>(static_cast<unsigned char*>(workspace) +
                                        partial_bytes(n, channels, plane));
  launch_partials<false>("batchnorm2d_partials", n, channels, plane, x, nullptr, nullptr, partial,
                         stream);
  detail::launch("batchnorm2d_stats", batchnorm_stats_kernel, channel_warps_grid(channels),
                 dim3(kThreads), 0, stream, x, static_cast<const double*>(partial), channels, plane,
                 batchnorm_split(n, plane).splits, double(n) * double(plane), eps, momentum, w, b,
                 running_mean, running_var, save_mean, save_invstd, coef);
  launch_elementwise<0>("batchnorm2d_forward", n, channels, plane, x, nullptr, nullptr, nullptr,
                        nullptr, nullptr, coef, eps, y, stream);
}

void launch_batchnorm2d_forward_eval(int n, int channels, int64_t plane, const float* x,
                                     const float* w, const float* b, const float* running_mean,
                                     const float* running_var, float eps, float* y,
                                     cudaStream_t stream) {
  check_shape("batchnorm2d_forward_eval", n, channels, plane);
  launch_elementwise<1>("batchnorm2d_forward_eval", n, channels, plane, x, nullptr, w, b,
                        running_mean, running_var, nullptr, eps, y, stream);
}

void launch_batchnorm2d_backward(int n, int channels, int64_t plane, const float* x, const float* w,
                                 const float* save_mean, const float* save_invstd, const float* dy,
                                 float* dx, float* dw, float* db, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream) {
  check_shape("batchnorm2d_backward", n, channels, plane);
  if (channels == 0) return;
  check_workspace("batchnorm2d_backward", n, channels, plane, workspace_bytes);
  auto* partial = static_cast<double*>(workspace);
  auto* coef = reinterpret_cast<float*>(static_cast<unsigned char*>(workspace) +
                                        partial_bytes(n, channels, plane));
  const bool empty = int64_t(n) * plane == 0;
  if (!empty)
    launch_partials<true>("batchnorm2d_grad_partials", n, channels, plane, x, dy, save_mean,
                          partial, stream);
  // Without values stage 2 sums zero partials: dw = db = 0.
  detail::launch("batchnorm2d_grad_stats", batchnorm_grad_stats_kernel,
                 channel_warps_grid(channels), dim3(kThreads), 0, stream,
                 static_cast<const double*>(partial), channels,
                 empty ? int64_t(0) : batchnorm_split(n, plane).splits, double(n) * double(plane),
                 save_invstd, dw, db, coef);
  if (dx)
    launch_elementwise<2>("batchnorm2d_backward", n, channels, plane, x, dy, w, nullptr, save_mean,
                          save_invstd, coef, 0.0f, dx, stream);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
