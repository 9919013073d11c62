// Batch assembly from the device-resident data set (gather + normalize, labels) and the step
// counter. Launchers: kernels/data.cu; semantics: kernels/launchers.hpp (cpu::gather_normalize).
#pragma once

#include "common.cuh"
#include "gputrain/augment.hpp"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// cpu::gather_normalize's exact float expression: two correctly rounded divisions (nvcc's default
// -prec-div=true; not a multiplication by a reciprocal), so both give the same bits.
__device__ __forceinline__ float normalize_pixel(unsigned char v, float mean, float std) {
  return (float(v) / 255.0f - mean) / std;
}

// out [count, channels, plane], one thread per kWidth consecutive pixels of a plane (kWidth = 4:
// plane % 4 == 0, pixels 4-byte and out 16-byte aligned: one uchar4 load, one float4 store).
// Sample i comes from image order[s + i] (s + i without an order), s = first + state->first.
// Threads 0..count-1 also copy the labels.
// `Index`: uint32_t when every item index fits (cheap 32-bit divisions), else int64_t.
template <int kWidth, typename Index>
__global__ void __launch_bounds__(256)
    gather_batch_kernel(const uint8_t* __restrict__ pixels, const int32_t* __restrict__ labels,
                        const int32_t* __restrict__ order, const StepState* __restrict__ state,
                        int64_t first, int count, int channels, int64_t plane,
                        const float* __restrict__ mean, const float* __restrict__ std,
                        float* __restrict__ out, int32_t* __restrict__ batch_labels) {
  const int64_t s = first + (state ? state->first : 0);
  const int64_t image = int64_t(channels) * plane;
  const Index plane_items = Index(plane / kWidth), image_items = Index(image / kWidth);
  const Index total = Index(count) * image_items;
  const int64_t stride = detail::grid_threads();
  for (Index j = Index(detail::global_thread_index()); j < total; j += Index(stride)) {
    const Index i = j / image_items, rest = j - i * image_items;
    const int c = int(rest / plane_items);
    const int64_t src = order ? int64_t(__ldg(order + s + i)) : s + int64_t(i);
    const float m = __ldg(mean + c), sd = __ldg(std + c);
    if constexpr (kWidth == 4) {
      const uchar4 p = reinterpret_cast<const uchar4*>(pixels + src * image)[rest];
      reinterpret_cast<float4*>(out)[j] =
          make_float4(normalize_pixel(p.x, m, sd), normalize_pixel(p.y, m, sd),
                      normalize_pixel(p.z, m, sd), normalize_pixel(p.w, m, sd));
    } else {
      out[j] = normalize_pixel(pixels[src * image + int64_t(rest)], m, sd);
    }
  }
  if (labels && batch_labels)
    for (int64_t i = detail::global_thread_index(); i < count; i += stride)
      batch_labels[i] = __ldg(labels + (order ? int64_t(__ldg(order + s + i)) : s + i));
}

// The augmenting gather: one thread per output pixel position (y, x) of a sample, all channels
// (the draw and the source offset once per position). Sample i is order[s + i]; its draw is keyed
// by (augment.seed, state->epoch, order[s + i]) as cpu::gather_augment's, and the same float
// expression normalizes the pixel (0 for padding), so the batch is bitwise the CPU's.
template <typename Index>
__global__ void __launch_bounds__(256)
    gather_augment_kernel(const uint8_t* __restrict__ pixels, const int32_t* __restrict__ labels,
                          const int32_t* __restrict__ order, const StepState* __restrict__ state,
                          int64_t first, int count, int channels, int height, int width,
                          AugmentSpec augment, const float* __restrict__ mean,
                          const float* __restrict__ std, float* __restrict__ out,
                          int32_t* __restrict__ batch_labels) {
  const int64_t s = first + state->first;
  const int64_t epoch = state->epoch;
  const int64_t plane = int64_t(height) * width, image = int64_t(channels) * plane;
  const Index plane_items = Index(plane);
  const Index total = Index(count) * plane_items;
  const int64_t stride = detail::grid_threads();
  for (Index j = Index(detail::global_thread_index()); j < total; j += Index(stride)) {
    const Index i = j / plane_items, p = j - i * plane_items;
    const int y = int(p / Index(width)), x = int(p - Index(y) * Index(width));
    const int64_t src = order ? int64_t(__ldg(order + s + i)) : s + int64_t(i);
    const AugmentDraw d = augment_draw(augment, epoch, src);
    const int64_t from = augment_source(d, y, x, height, width);
    const uint8_t* image_in = pixels + src * image;
    float* image_out = out + int64_t(i) * image + int64_t(p);
    for (int c = 0; c < channels; ++c) {
      const unsigned char v = from < 0 ? 0 : image_in[c * plane + from];
      image_out[c * plane] = normalize_pixel(v, __ldg(mean + c), __ldg(std + c));
    }
  }
  if (labels && batch_labels)
    for (int64_t i = detail::global_thread_index(); i < count; i += stride)
      batch_labels[i] = __ldg(labels + (order ? int64_t(__ldg(order + s + i)) : s + i));
}

// <<<1, 1>>>: the step's last node.
__global__ void advance_step_kernel(StepState* state, int64_t count) {
  state->first += count;
  state->step += 1;
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
