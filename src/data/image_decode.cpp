// Image files to model inputs: libpng (simplified API) and libjpeg-turbo (TurboJPEG API) decode;
// this file only converts channels and resamples, as PIL does, so images prepared with PIL and
// images read here agree.
#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gputrain/errors.hpp"
#include "gputrain/images.hpp"

namespace gputrain {
namespace {

std::vector<uint8_t> read_whole_file(const std::string& path) {
  errno = 0;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                       &std::fclose);
  if (!file)
    throw DataError(path + ": cannot open (" + std::strerror(errno) +
                    "), expected a readable image file");
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, file.get())) > 0)
    bytes.insert(bytes.end(), buf, buf + n);
  if (std::ferror(file.get()))
    throw DataError(path + ": read error (" + std::strerror(errno) + ")");
  return bytes;
}

RgbImage decode_png(const std::string& path, const std::vector<uint8_t>& bytes) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()))
    throw DataError(path + ": not a valid PNG image (libpng: " + image.message + ")");
  // Freed on every path: png_image_finish_read frees it too, png_image_free twice is harmless.
  std::unique_ptr<png_image, void (*)(png_image*)> guard(&image, &png_image_free);
  image.format = PNG_FORMAT_RGB;  // grey replicated, alpha composited over black
  RgbImage out;
  out.width = int(image.width);
  out.height = int(image.height);
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr))
    throw DataError(path + ": not a valid PNG image (libpng: " + image.message + ")");
  return out;
}

RgbImage decode_jpeg(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::unique_ptr<void, int (*)(tjhandle)> handle(tjInitDecompress(), &tjDestroy);
  if (!handle) throw DataError(path + ": cannot start the JPEG decoder");
  auto fail = [&]() -> DataError {
    return DataError(
        path + ": not a valid JPEG image (libjpeg-turbo: " + tjGetErrorStr2(handle.get()) + ")");
  };
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(handle.get(), bytes.data(), (unsigned long)bytes.size(), &width, &height,
                          &subsampling, &colorspace) != 0)
    throw fail();
  if (width <= 0 || height <= 0) throw fail();
  RgbImage out;
  out.width = width;
  out.height = height;
  out.rgb.resize(size_t(width) * height * 3);
  // A warning (e.g. a truncated file) is an error too: a half-grey image is not the image.
  if (tjDecompress2(handle.get(), bytes.data(), (unsigned long)bytes.size(), out.rgb.data(), width,
                    0, height, TJPF_RGB, TJFLAG_STOPONWARNING) != 0)
    throw fail();
  return out;
}

// PIL's resampling (Resample.c, precompute_coeffs + normalize_coeffs_8bpc) for the bilinear
// filter: per output pixel, a window of input pixels with integer weights of 22 fractional bits.
constexpr int kPrecisionBits = 32 - 8 - 2;

struct Taps {
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // `window` per output pixel
  int window = 0;
};

Taps resample_taps(int in_size, int out_size) {
  const double scale = double(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;  // bilinear: support 1
  Taps t;
  t.window = int(std::ceil(support)) * 2 + 1;
  t.first.resize(size_t(out_size));
  t.count.resize(size_t(out_size));
  t.weights.assign(size_t(out_size) * t.window, 0);
  std::vector<double> k(size_t(t.window));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double sum = 0;
    for (int x = 0; x < xmax; ++x) {
      double d = (x + xmin - center + 0.5) / filter_scale;
      if (d < 0) d = -d;
      const double w = d < 1 ? 1 - d : 0;
      k[size_t(x)] = w;
      sum += w;
    }
    for (int x = 0; x < xmax; ++x) {
      const double w = sum != 0 ? k[size_t(x)] / sum : 0;
      t.weights[size_t(xx) * t.window + x] =
          int32_t(w < 0 ? w * (1 << kPrecisionBits) - 0.5 : w * (1 << kPrecisionBits) + 0.5);
    }
    t.first[size_t(xx)] = xmin;
    t.count[size_t(xx)] = xmax;
  }
  return t;
}

uint8_t clip8(int64_t v) {
  v >>= kPrecisionBits;
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// One plane (H×W bytes) resampled to out_h×out_w, horizontally then vertically, as PIL does
// (each pass rounds to 8 bits; a pass whose size does not change is skipped).
std::vector<uint8_t> resample_plane(const std::vector<uint8_t>& in, int in_w, int in_h, int out_w,
                                    int out_h) {
  std::vector<uint8_t> horizontal = in;
  if (out_w != in_w) {
    const Taps t = resample_taps(in_w, out_w);
    horizontal.assign(size_t(in_h) * out_w, 0);
    for (int y = 0; y < in_h; ++y)
      for (int x = 0; x < out_w; ++x) {
        int64_t acc = int64_t(1) << (kPrecisionBits - 1);
        const int32_t* w = &t.weights[size_t(x) * t.window];
        const uint8_t* row = &in[size_t(y) * in_w + t.first[size_t(x)]];
        for (int i = 0; i < t.count[size_t(x)]; ++i) acc += int64_t(row[i]) * w[i];
        horizontal[size_t(y) * out_w + x] = clip8(acc);
      }
  }
  if (out_h == in_h) return horizontal;
  const Taps t = resample_taps(in_h, out_h);
  std::vector<uint8_t> out(size_t(out_h) * out_w);
  for (int y = 0; y < out_h; ++y) {
    const int32_t* w = &t.weights[size_t(y) * t.window];
    for (int x = 0; x < out_w; ++x) {
      int64_t acc = int64_t(1) << (kPrecisionBits - 1);
      for (int i = 0; i < t.count[size_t(y)]; ++i)
        acc += int64_t(horizontal[size_t(t.first[size_t(y)] + i) * out_w + x]) * w[i];
      out[size_t(y) * out_w + x] = clip8(acc);
    }
  }
  return out;
}

}  // namespace

RgbImage decode_image_file(const std::string& path) {
  const std::vector<uint8_t> bytes = read_whole_file(path);
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPng, 8) == 0) return decode_png(path, bytes);
  if (bytes.size() >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff)
    return decode_jpeg(path, bytes);
  throw DataError(path + ": not a PNG or JPEG image (" +
                  (bytes.empty() ? std::string("empty file") : "unknown first bytes") + ")");
}

void image_to_input(const RgbImage& image, const std::string& path, int channels, int height,
                    int width, bool resize, uint8_t* out) {
  if (!resize && (image.width != width || image.height != height))
    throw DataError(path + ": image is " + std::to_string(image.width) + "x" +
                    std::to_string(image.height) + " (width x height), the model takes " +
                    std::to_string(width) + "x" + std::to_string(height) +
                    " (model.input); resize it or set data.resize: true");
  const size_t pixels = size_t(image.width) * image.height;
  std::vector<std::vector<uint8_t>> planes(static_cast<size_t>(channels),
                                           std::vector<uint8_t>(pixels));
  for (size_t p = 0; p < pixels; ++p) {
    const uint8_t* px = &image.rgb[p * 3];
    if (channels == 1)
      planes[0][p] = uint8_t((19595 * px[0] + 38470 * px[1] + 7471 * px[2] + 0x8000) >> 16);
    else
      for (int c = 0; c < channels; ++c) planes[size_t(c)][p] = px[c % 3];
  }
  const size_t plane_size = size_t(height) * width;
  for (int c = 0; c < channels; ++c) {
    const std::vector<uint8_t> plane =
        (image.width == width && image.height == height)
            ? planes[size_t(c)]
            : resample_plane(planes[size_t(c)], image.width, image.height, width, height);
    std::memcpy(out + size_t(c) * plane_size, plane.data(), plane_size);
  }
}

}  // namespace gputrain
