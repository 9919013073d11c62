// Launchers of kernels/data.cuh (declared and documented in kernels/launchers.hpp).
#include "data.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

void launch_gather_batch(const uint8_t* pixels, const int32_t* labels, const int32_t* order,
                         const StepState* state, int64_t first, int count, int channels,
                         int64_t plane, const float* mean, const float* std, float* out,
                         int32_t* batch_labels, cudaStream_t stream) {
  if (count < 0 || channels < 0 || plane < 0 || first < 0)
    detail::bad_argument("gather_batch", "negative size");
  const int64_t total = int64_t(count) * channels * plane;
  if (count == 0) return;
  constexpr int kThreads = 256;
  const bool vec4 =
      plane % 4 == 0 && (reinterpret_cast<uintptr_t>(pixels) & 3u) == 0 && detail::aligned16(out);
  // Enough threads for the labels too (count may exceed the pixel work when images are empty).
  const int64_t items = std::max<int64_t>(vec4 ? total / 4 : total, count);
  const bool fits32 = items + detail::kMaxGridStrideBlocks * kThreads < (int64_t(1) << 32);
  auto* kernel =
      vec4 ? (fits32 ? gather_batch_kernel<4, uint32_t> : gather_batch_kernel<4, int64_t>)
           : (fits32 ? gather_batch_kernel<1, uint32_t> : gather_batch_kernel<1, int64_t>);
  detail::launch("gather_batch", kernel, dim3(detail::grid_for(items, kThreads)), dim3(kThreads), 0,
                 stream, pixels, labels, order, state, first, count, channels, plane, mean, std,
                 out, batch_labels);
}

void launch_gather_batch_augmented(const uint8_t* pixels, const int32_t* labels,
                                   const int32_t* order, const StepState* state, int64_t first,
                                   int count, int channels, int height, int width,
                                   const AugmentSpec& augment, const float* mean, const float* std,
                                   float* out, int32_t* batch_labels, cudaStream_t stream) {
  if (count < 0 || channels < 0 || height < 0 || width < 0 || first < 0 || augment.crop_padding < 0)
    detail::bad_argument("gather_batch_augmented", "negative size");
  if (!state) detail::bad_argument("gather_batch_augmented", "null state (the epoch lives there)");
  if (count == 0) return;
  constexpr int kThreads = 256;
  const int64_t items = std::max<int64_t>(int64_t(count) * height * width, count);
  const bool fits32 = items + detail::kMaxGridStrideBlocks * kThreads < (int64_t(1) << 32);
  auto* kernel = fits32 ? gather_augment_kernel<uint32_t> : gather_augment_kernel<int64_t>;
  detail::launch("gather_batch_augmented", kernel, dim3(detail::grid_for(items, kThreads)),
                 dim3(kThreads), 0, stream, pixels, labels, order, state, first, count, channels,
                 height, width, augment, mean, std, out, batch_labels);
}

void launch_advance_step(StepState* state, int64_t count, cudaStream_t stream) {
  if (!state) detail::bad_argument("advance_step", "null state");
  detail::launch("advance_step", advance_step_kernel, dim3(1), dim3(1), 0, stream, state, count);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
