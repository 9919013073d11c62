// Launchers of kernels/cast.cuh (declared and documented in kernels/launchers.hpp).
#include "cast.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {
namespace {
constexpr int kThreads = 256;
}  // namespace

void launch_round_to_bf16(int64_t n, const float* x, uint16_t* out, cudaStream_t stream) {
  if (n < 0) detail::bad_argument("round_to_bf16", "negative count");
  if (n == 0) return;
  detail::launch("round_to_bf16", round_to_bf16_kernel, dim3(detail::grid_for(n, kThreads)),
                 dim3(kThreads), 0, stream, x, out, n);
}

void launch_bf16_to_float(int64_t n, const uint16_t* x, float* out, cudaStream_t stream) {
  if (n < 0) detail::bad_argument("bf16_to_float", "negative count");
  if (n == 0) return;
  detail::launch("bf16_to_float", bf16_to_float_kernel, dim3(detail::grid_for(n, kThreads)),
                 dim3(kThreads), 0, stream, x, out, n);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
