// Launchers of kernels/dropout.cuh (declared and documented in kernels/launchers.hpp).
#include "dropout.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {
namespace {

constexpr int kThreads = 256;

// uint32_t indices when they cannot overflow, including i + grid stride.
bool fits32(int64_t total) {
  return total + detail::kMaxGridStrideBlocks * kThreads < (int64_t(1) << 32);
}

}  // namespace

void launch_dropout_forward(int64_t count, int64_t per_sample, const int32_t* order,
                            const StepState* state, uint64_t seed, int layer, float p,
                            const float* x, float* y, uint8_t* mask, cudaStream_t stream) {
  if (count < 0 || per_sample < 1 || count % per_sample != 0)
    detail::bad_argument("dropout_forward", "bad size (count " + std::to_string(count) +
                                                ", per sample " + std::to_string(per_sample) + ")");
  if (!state) detail::bad_argument("dropout_forward", "null state (the epoch lives there)");
  if (!(p >= 0.0f && p < 1.0f)) detail::bad_argument("dropout_forward", "p outside [0, 1)");
  if (count == 0) return;
  const uint64_t threshold = dropout_drop_threshold(p);
  const float scale = dropout_scale(p);
  const dim3 grid(detail::grid_for(count, kThreads));
  if (fits32(count))
    detail::launch("dropout_forward", dropout_forward_kernel<uint32_t>, grid, dim3(kThreads), 0,
                   stream, uint32_t(count), uint32_t(per_sample), order, state, seed, layer,
                   threshold, scale, x, y, mask);
  else
    detail::launch("dropout_forward", dropout_forward_kernel<int64_t>, grid, dim3(kThreads), 0,
                   stream, count, per_sample, order, state, seed, layer, threshold, scale, x, y,
                   mask);
}

void launch_dropout_backward(int64_t count, float p, const uint8_t* mask, const float* dy,
                             float* dx, cudaStream_t stream) {
  if (count < 0) detail::bad_argument("dropout_backward", "negative count");
  if (!(p >= 0.0f && p < 1.0f)) detail::bad_argument("dropout_backward", "p outside [0, 1)");
  if (count == 0) return;
  const float scale = dropout_scale(p);
  const dim3 grid(detail::grid_for(count, kThreads));
  if (fits32(count))
    detail::launch("dropout_backward", dropout_backward_kernel<uint32_t>, grid, dim3(kThreads), 0,
                   stream, uint32_t(count), scale, mask, dy, dx);
  else
    detail::launch("dropout_backward", dropout_backward_kernel<int64_t>, grid, dim3(kThreads), 0,
                   stream, count, scale, mask, dy, dx);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
