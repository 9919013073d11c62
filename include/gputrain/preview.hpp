// What the model is fed: the first images of an epoch's training order after augmentation, before
// normalization (`gputrain preview`, and train_batch.png at the start of a run).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gputrain/config.hpp"
#include "gputrain/dataset.hpp"

namespace gputrain {

struct PreviewImages {
  int count = 0, channels = 0, height = 0, width = 0;
  std::vector<uint8_t> pixels;  // [count, channels, height, width]
  std::vector<int32_t> labels;  // [count]
};

// The first min(count, train.count) images of epoch `epoch`'s order (1-based, as the metrics
// count epochs), augmented as the engines augment them (data.augment, keyed by train.seed).
PreviewImages preview_images(const Config& config, const ImageSet& train, int count, int epoch);

// A grid of ⌈√N⌉ columns with 2-pixel white gaps, each image upscaled (nearest) by the smallest
// whole factor that makes a cell ≥ 64 pixels: RGB for 3 channels, else gray from channel 0.
// Written atomically; throws IoError when it cannot be.
void write_image_grid_png(const std::string& path, const PreviewImages& images);

}  // namespace gputrain
