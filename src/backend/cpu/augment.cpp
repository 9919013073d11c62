// cpu::gather_augment: the training batch's augmented raw images (see
// include/gputrain/augment.hpp), the CPU twin of kernels/data.cuh's augmenting gather.
#include "gputrain/augment.hpp"

#include "gputrain/ops.hpp"

namespace gputrain::cpu {

void gather_augment(int64_t count, int channels, int height, int width, const uint8_t* pixels,
                    const int32_t* index, int64_t epoch, const AugmentSpec& spec, uint8_t* out) {
  const int64_t plane = int64_t(height) * width, image = int64_t(channels) * plane;
#pragma omp parallel for schedule(static) if (count * image > 65536)
  for (int64_t i = 0; i < count; ++i) {
    const AugmentDraw d = augment_draw(spec, epoch, index[i]);
    const uint8_t* src = pixels + int64_t(index[i]) * image;
    uint8_t* dst = out + i * image;
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) {
        const int64_t s = augment_source(d, y, x, height, width);
        for (int c = 0; c < channels; ++c)
          dst[c * plane + int64_t(y) * width + x] = s < 0 ? uint8_t(0) : src[c * plane + s];
      }
  }
}

}  // namespace gputrain::cpu
