// See include/gputrain/preview.hpp.
#include "gputrain/preview.hpp"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/atomic_file.hpp"
#include "core/run_setup.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/ops.hpp"
#include "gputrain/rng.hpp"

namespace gputrain {

PreviewImages preview_images(const Config& config, const ImageSet& train, int count, int epoch) {
  PreviewImages p;
  p.channels = train.channels;
  p.height = train.height;
  p.width = train.width;
  p.count = int(std::min<int64_t>(std::max(count, 0), train.count));
  // The trainer's epochs are 0-based inside (epoch_order, the engines' draws).
  const int e = epoch - 1;
  const std::vector<int32_t> order =
      epoch_order(train.count, config.train.seed, e, config.train.shuffle);
  const size_t image = size_t(train.image_size());
  p.pixels.resize(size_t(p.count) * image);
  const AugmentSpec spec = augment_spec(config);
  if (spec.enabled()) {
    cpu::gather_augment(p.count, p.channels, p.height, p.width, train.pixels.data(), order.data(),
                        e, spec, p.pixels.data());
  } else {
    for (int i = 0; i < p.count; ++i)
      std::memcpy(p.pixels.data() + size_t(i) * image,
                  train.pixels.data() + size_t(order[size_t(i)]) * image, image);
  }
  for (int i = 0; i < p.count; ++i) p.labels.push_back(train.labels[size_t(order[size_t(i)])]);
  return p;
}

void write_image_grid_png(const std::string& path, const PreviewImages& images) {
  const int n = std::max(images.count, 1);
  const int columns = int(std::ceil(std::sqrt(double(n))));
  const int rows = (n + columns - 1) / columns;
  const int smaller = std::max(1, std::min(images.height, images.width));
  const int scale = std::max(1, (64 + smaller - 1) / smaller);
  const int gap = 2;
  const int cell_h = images.height * scale, cell_w = images.width * scale;
  const int width = columns * cell_w + (columns + 1) * gap;
  const int height = rows * cell_h + (rows + 1) * gap;
  const bool rgb = images.channels == 3;
  const int out_channels = rgb ? 3 : 1;
  std::vector<uint8_t> canvas(size_t(width) * size_t(height) * size_t(out_channels), 255);
  const int64_t plane = int64_t(images.height) * images.width;
  for (int i = 0; i < images.count; ++i) {
    const uint8_t* src = images.pixels.data() + size_t(i) * size_t(images.channels) * size_t(plane);
    const int x0 = gap + (i % columns) * (cell_w + gap), y0 = gap + (i / columns) * (cell_h + gap);
    for (int y = 0; y < cell_h; ++y)
      for (int x = 0; x < cell_w; ++x) {
        const int64_t s = int64_t(y / scale) * images.width + x / scale;
        uint8_t* dst = canvas.data() +
                       (size_t(y0 + y) * size_t(width) + size_t(x0 + x)) * size_t(out_channels);
        for (int c = 0; c < out_channels; ++c) dst[c] = src[c * plane + s];
      }
  }
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  png.width = png_uint_32(width);
  png.height = png_uint_32(height);
  png.format = rgb ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  png_alloc_size_t size = 0;
  const png_int_32 stride = png_int_32(width * out_channels);
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, canvas.data(), stride, nullptr))
    throw IoError(path + ": cannot encode the PNG (" + png.message + ")");
  std::vector<char> bytes(size);
  if (!png_image_write_to_memory(&png, bytes.data(), &size, 0, canvas.data(), stride, nullptr))
    throw IoError(path + ": cannot encode the PNG (" + png.message + ")");
  write_file_atomic(path, std::string_view(bytes.data(), size));
}

}  // namespace gputrain
