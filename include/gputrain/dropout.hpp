// Dropout's keep decision from a counter-based generator: whether unit u of a sample is kept is a
// pure function of (seed, epoch, sample index in the data set, layer ordinal, unit), so the CPU op
// and the CUDA kernel drop the same units whatever the batch size, thread count, device or resume
// point. The hash is augment.hpp's SplitMix64 finalizer under its own domain tag; usable from host
// code and from CUDA device code.
#pragma once

#include <cstdint>

#include "gputrain/augment.hpp"

namespace gputrain {

// A unit is dropped when its 32-bit draw is below p·2^32 (rounded): p = 0 never drops. Host and
// device, so that a kernel may take p as the CPU op does.
GPUTRAIN_HOST_DEVICE inline uint64_t dropout_drop_threshold(float p) {
  if (!(p > 0)) return 0;
  if (p >= 1) return uint64_t(1) << 32;
  return uint64_t(double(p) * 4294967296.0 + 0.5);
}

// The scale of a kept unit: 1 / (1 − p) in float, as torch's dropout (noise.div_(1 − p)).
GPUTRAIN_HOST_DEVICE inline float dropout_scale(float p) {
  return 1.0f / (1.0f - p);
}

// The key of one (sample, layer) pair of an epoch; `layer` is the dropout layer's index in
// model.layers.
GPUTRAIN_HOST_DEVICE inline uint64_t dropout_sample_key(uint64_t seed, int64_t epoch,
                                                        int64_t sample, int layer) {
  const uint64_t key = augment_mix64(seed ^ 0x64726f706f757431ull);  // "dropout1"
  const uint64_t e = augment_mix64(key + uint64_t(epoch));
  return augment_mix64(augment_mix64(e + uint64_t(sample)) + uint64_t(uint32_t(layer)));
}

// Whether unit `unit` (index within one sample's activations) of the sample keyed by `sample_key`
// is kept.
GPUTRAIN_HOST_DEVICE inline bool dropout_keep(uint64_t sample_key, int64_t unit,
                                              uint64_t drop_threshold) {
  return (augment_mix64(sample_key + uint64_t(unit)) >> 32) >= drop_threshold;
}

}  // namespace gputrain
