// Test helpers that WRITE data-set files (IDX raw or gzip, CIFAR-10 binary) and a temporary folder
// that cleans up after itself. Header-only; any test binary linked with gputrain_core can use it.
// Helpers throw std::runtime_error on failure: a broken fixture should fail the test loudly, and
// never look like a DataError from the code under test.
#pragma once

#include <stdlib.h>  // mkdtemp
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gputrain/dataset.hpp"

namespace gputrain::testing {

using Bytes = std::vector<uint8_t>;

// A fresh folder under /tmp (mkdtemp), removed with everything in it when this goes out of scope.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "gputrain-test") {
    std::string templ = "/tmp/" + prefix + "-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for " + templ);
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;  // a destructor must not throw; a leftover folder in /tmp is harmless
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name (name may hold subfolders; they are not created).
  std::string file(const std::string& name) const {
    return (std::filesystem::path(path_) / name).string();
  }
  // Creates path()/name (and parents) and returns it.
  std::string subdir(const std::string& name) const {
    std::string p = file(name);
    std::filesystem::create_directories(p);
    return p;
  }

 private:
  std::string path_;
};

inline Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes `bytes` to `path`, gzip-compressed when `gzip` (whatever the file's name).
inline void write_bytes(const std::string& path, const Bytes& bytes, bool gzip = false) {
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    if (!f) throw std::runtime_error("cannot create " + path);
    size_t done = 0;
    while (done < bytes.size()) {
      unsigned n = unsigned(std::min<size_t>(bytes.size() - done, size_t(1) << 30));
      if (gzwrite(f, bytes.data() + done, n) != int(n)) {
        gzclose(f);
        throw std::runtime_error("gzwrite failed for " + path);
      }
      done += n;
    }
    if (gzclose(f) != Z_OK) throw std::runtime_error("gzclose failed for " + path);
    return;
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

// IDX header: 00 00 <dtype> <ndim>, then each dimension as a big-endian uint32.
inline Bytes idx_header(const std::vector<uint32_t>& dims, uint8_t dtype = 0x08) {
  Bytes h = {0, 0, dtype, uint8_t(dims.size())};
  for (uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) h.push_back(uint8_t(d >> shift));
  return h;
}

// Any IDX file; `data` is written as given, so it may disagree with `dims` on purpose.
inline void write_idx(const std::string& path, const std::vector<uint32_t>& dims, const Bytes& data,
                      bool gzip = false, uint8_t dtype = 0x08) {
  Bytes bytes = idx_header(dims, dtype);
  bytes.insert(bytes.end(), data.begin(), data.end());
  write_bytes(path, bytes, gzip);
}

// n×h×w unsigned-byte images (pixels.size() should be n·h·w).
inline void write_idx_images(const std::string& path, uint32_t n, uint32_t h, uint32_t w,
                             const Bytes& pixels, bool gzip = false) {
  write_idx(path, {n, h, w}, pixels, gzip);
}

inline void write_idx_labels(const std::string& path, const Bytes& labels, bool gzip = false) {
  write_idx(path, {uint32_t(labels.size())}, labels, gzip);
}

// CIFAR-10 binary batch: per record one label byte then 3072 pixel bytes (3×32×32).
// pixels.size() should be labels.size()·3072; anything else is written as given.
inline void write_cifar10_batch(const std::string& path, const Bytes& labels, const Bytes& pixels) {
  constexpr size_t kImage = 3 * 32 * 32;
  Bytes bytes;
  bytes.reserve(labels.size() * (kImage + 1));
  for (size_t i = 0; i < labels.size(); ++i) {
    bytes.push_back(labels[i]);
    size_t begin = std::min(pixels.size(), i * kImage),
           end = std::min(pixels.size(), begin + kImage);
    bytes.insert(bytes.end(), pixels.begin() + std::ptrdiff_t(begin),
                 pixels.begin() + std::ptrdiff_t(end));
  }
  write_bytes(path, bytes);
}

// A deterministic pseudo-random image set (pixels uniform in 0..255, labels uniform in
// 0..num_classes-1), the same for the same arguments on every machine.
inline ImageSet make_image_set(int64_t count, int channels, int height, int width, int num_classes,
                               uint64_t seed = 1) {
  uint64_t state = seed;
  auto next = [&state] {  // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  ImageSet set;
  set.count = count;
  set.channels = channels;
  set.height = height;
  set.width = width;
  set.pixels.resize(size_t(count * set.image_size()));
  for (auto& p : set.pixels) p = uint8_t(next() >> 56);
  set.labels.resize(size_t(count));
  for (auto& l : set.labels) l = int32_t(next() % uint64_t(num_classes));
  return set;
}

inline Bytes label_bytes(const std::vector<int32_t>& labels) {
  Bytes out;
  out.reserve(labels.size());
  for (int32_t l : labels) {
    if (l < 0 || l > 255) throw std::runtime_error("label does not fit a byte");
    out.push_back(uint8_t(l));
  }
  return out;
}

// The four IDX files of a data set in `dir` (single-channel sets), raw or with ".gz" appended.
inline void write_idx_dataset(const std::string& dir, const ImageSet& train, const ImageSet& test,
                              bool gzip = false) {
  const std::string suffix = gzip ? ".gz" : "";
  for (auto [prefix, set] : {std::pair<const char*, const ImageSet*>{"train", &train},
                             std::pair<const char*, const ImageSet*>{"t10k", &test}}) {
    if (set->channels != 1) throw std::runtime_error("IDX data sets hold one channel");
    const std::string base = (std::filesystem::path(dir) / prefix).string();
    write_idx_images(base + "-images-idx3-ubyte" + suffix, uint32_t(set->count),
                     uint32_t(set->height), uint32_t(set->width), set->pixels, gzip);
    write_idx_labels(base + "-labels-idx1-ubyte" + suffix, label_bytes(set->labels), gzip);
  }
}

// data_batch_1..5.bin (the training set split into five consecutive parts, so it needs at least
// five images) and test_batch.bin in `dir`. Images must be 3×32×32.
inline void write_cifar10_dataset(const std::string& dir, const ImageSet& train,
                                  const ImageSet& test) {
  for (const ImageSet* set : {&train, &test})
    if (set->channels != 3 || set->height != 32 || set->width != 32)
      throw std::runtime_error("CIFAR-10 images are 3x32x32");
  if (train.count < 5) throw std::runtime_error("CIFAR-10 training set needs >= 5 images");
  auto part = [](const ImageSet& set, int64_t begin, int64_t end, Bytes& labels, Bytes& pixels) {
    std::vector<int32_t> l(set.labels.begin() + begin, set.labels.begin() + end);
    labels = label_bytes(l);
    pixels.assign(set.image(begin), set.image(begin) + (end - begin) * set.image_size());
  };
  Bytes labels, pixels;
  for (int b = 0; b < 5; ++b) {
    part(train, train.count * b / 5, train.count * (b + 1) / 5, labels, pixels);
    write_cifar10_batch(
        (std::filesystem::path(dir) / ("data_batch_" + std::to_string(b + 1) + ".bin")).string(),
        labels, pixels);
  }
  part(test, 0, test.count, labels, pixels);
  write_cifar10_batch((std::filesystem::path(dir) / "test_batch.bin").string(), labels, pixels);
}

}  // namespace gputrain::testing
