// Launchers of kernels/grad_norm.cuh (declared and documented in kernels/launchers.hpp).
#include "grad_norm.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {
namespace {
constexpr int kThreads = 256;
}  // namespace

size_t grad_norm_workspace_bytes() {
  return sizeof(double) * size_t(kGradNormBlocks);
}

void launch_grad_norm(int64_t n, const float* g, float max_norm, GradClip* clip, double* norm_sum,
                      void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (n < 0) detail::bad_argument("grad_norm", "negative size");
  if (!clip) detail::bad_argument("grad_norm", "no clip state");
  if (!(max_norm > 0.0f)) detail::bad_argument("grad_norm", "max_norm must be > 0");
  if (workspace_bytes < grad_norm_workspace_bytes())
    detail::bad_argument("grad_norm", "workspace of " + std::to_string(workspace_bytes) +
                                          " bytes, needs " +
                                          std::to_string(grad_norm_workspace_bytes()));
  auto* partials = static_cast<double*>(workspace);
  // A fixed grid (not sized by the device): the reduction order depends on n alone. n = 0 still
  // runs, so the norm (0) and scale (1) are written.
  detail::launch("grad_norm_partials", grad_norm_partials_kernel, dim3(kGradNormBlocks),
                 dim3(kThreads), 0, stream, n, g, partials);
  detail::launch("grad_norm_finish", grad_norm_finish_kernel, dim3(1), dim3(kThreads), 0, stream,
                 int(kGradNormBlocks), static_cast<const double*>(partials), max_norm, clip,
                 norm_sum);
}

void launch_scale_gradients(int64_t n, float* g, const GradClip* clip, cudaStream_t stream) {
  if (n < 0) detail::bad_argument("scale_gradients", "negative size");
  if (!clip) detail::bad_argument("scale_gradients", "no clip state");
  if (n == 0) return;
  const int64_t n4 = detail::aligned16(g) ? n / 4 : 0;
  detail::launch("scale_gradients", scale_gradients_kernel,
                 dim3(detail::grid_for(n4 ? n4 + n % 4 : n, kThreads)), dim3(kThreads), 0, stream,
                 n, n4, g, clip);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
