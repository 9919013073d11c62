// Normalization statistics ("data.mean/std: auto"). Pixels are bytes, so a per-channel histogram of
// the 256 values is exact; mean and variance then come from it in two passes over 256 bins, free of
// the cancellation that sum-of-squares formulas suffer on tens of millions of values.
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gputrain/dataset.hpp"
#include "gputrain/errors.hpp"

namespace gputrain {

void channel_statistics(const ImageSet& set, std::vector<float>& mean, std::vector<float>& stddev) {
  if (set.count <= 0 || set.channels <= 0 || set.image_size() <= 0)
    throw DataError("data: " + std::to_string(set.count) + " training images of " +
                    std::to_string(set.channels) + "x" + std::to_string(set.height) + "x" +
                    std::to_string(set.width) +
                    ", expected at least one image to compute data.mean/data.std (auto) from");
  if (set.pixels.size() < size_t(set.count) * size_t(set.image_size()))
    throw DataError("data: " + std::to_string(set.pixels.size()) + " pixel bytes for " +
                    std::to_string(set.count) + " images, expected " +
                    std::to_string(size_t(set.count) * size_t(set.image_size())));
  const int channels = set.channels;
  const size_t plane = size_t(set.height) * size_t(set.width);
  // Four sub-histograms per channel: runs of equal pixels (background) would otherwise serialize
  // on incrementing the same counter.
  std::vector<std::array<uint64_t, 4 * 256>> hist(static_cast<size_t>(channels));
  for (auto& h : hist) h.fill(0);
  for (int64_t i = 0; i < set.count; ++i) {
    const uint8_t* img = set.image(i);
    for (int c = 0; c < channels; ++c) {
      uint64_t* h = hist[size_t(c)].data();
      const uint8_t* p = img + size_t(c) * plane;
      size_t k = 0;
      for (; k + 4 <= plane; k += 4) {
        ++h[p[k]];
        ++h[256 + p[k + 1]];
        ++h[512 + p[k + 2]];
        ++h[768 + p[k + 3]];
      }
      for (; k < plane; ++k) ++h[p[k]];
    }
  }
  const double n = double(set.count) * double(plane);
  mean.assign(size_t(channels), 0.0f);
  stddev.assign(size_t(channels), 0.0f);
  for (int c = 0; c < channels; ++c) {
    const auto& sub = hist[size_t(c)];
    std::array<uint64_t, 256> h;
    for (size_t v = 0; v < 256; ++v) h[v] = sub[v] + sub[256 + v] + sub[512 + v] + sub[768 + v];
    double sum = 0;
    for (int v = 0; v < 256; ++v) sum += double(h[size_t(v)]) * (v / 255.0);
    const double m = sum / n;
    double sq = 0;
    for (int v = 0; v < 256; ++v) {
      const double d = v / 255.0 - m;
      sq += double(h[size_t(v)]) * d * d;
    }
    mean[size_t(c)] = float(m);
    stddev[size_t(c)] = float(std::sqrt(sq / n));
  }
}

}  // namespace gputrain
