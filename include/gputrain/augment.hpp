// Training-image augmentation drawn from a counter-based generator: the random crop offset and the
// flip of a sample are a pure function of (seed, epoch, sample index in the data set), so the CPU
// gather and the CUDA gather kernel produce the same bits whatever the batch size, thread count,
// device or resume point. Integer arithmetic only (no float rounding to disagree on). Usable from
// host code and from CUDA device code (kernels/data.cuh includes it).
//
// The transform is torchvision's RandomCrop(size, padding=P, fill=0) then RandomHorizontalFlip(p)
// on the raw uint8 image, before normalization: output pixel (y, x) of a sample is source pixel
// (y + dy, xs + dx) with xs = flip ? W-1-x : x, and 0 where that lies outside the image;
// dy, dx uniform in [-P, P].
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define GPUTRAIN_HOST_DEVICE __host__ __device__
#else
#define GPUTRAIN_HOST_DEVICE
#endif

namespace gputrain {

// Constant for a run (kernel arguments that a captured graph may keep).
struct AugmentSpec {
  int crop_padding = 0;         // P ≥ 0
  uint64_t flip_threshold = 0;  // flip when a 32-bit draw is below it: p·2^32, in [0, 2^32]
  uint64_t seed = 0;            // the run's seed (train.seed)
  GPUTRAIN_HOST_DEVICE bool enabled() const { return crop_padding > 0 || flip_threshold > 0; }
};

// The flip threshold for probability p in [0, 1] (p = 1: always, p = 0: never).
inline uint64_t augment_flip_threshold(double p) {
  if (!(p > 0)) return 0;
  if (p >= 1) return uint64_t(1) << 32;
  return uint64_t(p * 4294967296.0 + 0.5);
}

struct AugmentDraw {
  int dy = 0, dx = 0;  // source offset of the crop, in [-P, P]
  bool flip = false;
};

// SplitMix64's finalizer: a bijective 64-bit mix with full avalanche.
GPUTRAIN_HOST_DEVICE inline uint64_t augment_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

GPUTRAIN_HOST_DEVICE inline AugmentDraw augment_draw(const AugmentSpec& spec, int64_t epoch,
                                                     int64_t sample) {
  // A domain tag keeps these draws apart from other users of the same seed (the epoch order).
  const uint64_t key = augment_mix64(spec.seed ^ 0x6175676d656e7431ull);
  const uint64_t h = augment_mix64(augment_mix64(key + uint64_t(epoch)) + uint64_t(sample));
  const uint64_t h2 = augment_mix64(h + 0x9E3779B97F4A7C15ull);
  AugmentDraw d;
  const uint64_t span = uint64_t(2 * spec.crop_padding + 1);
  // Lemire's multiply-shift on 32 random bits: bias below span/2^32, the same on every platform.
  d.dy = int(((h & 0xffffffffull) * span) >> 32) - spec.crop_padding;
  d.dx = int(((h >> 32) * span) >> 32) - spec.crop_padding;
  d.flip = (h2 >> 32) < spec.flip_threshold;
  return d;
}

// Offset within a plane (height × width) of the source pixel for output (y, x), or -1 for a
// padding pixel (value 0).
GPUTRAIN_HOST_DEVICE inline int64_t augment_source(const AugmentDraw& d, int y, int x, int height,
                                                   int width) {
  const int sy = y + d.dy;
  const int sx = (d.flip ? width - 1 - x : x) + d.dx;
  if (sy < 0 || sy >= height || sx < 0 || sx >= width) return -1;
  return int64_t(sy) * width + sx;
}

}  // namespace gputrain
