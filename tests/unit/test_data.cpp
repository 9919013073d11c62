#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "gputrain/dataset.hpp"
#include "gputrain/errors.hpp"
#include "support/data_files.hpp"
#include "support/expect_error.hpp"

using namespace gputrain;
using namespace gputrain::testing;

namespace {

void check_same(const ImageSet& got, const ImageSet& want, int64_t count) {
  REQUIRE(got.count == count);
  CHECK(got.channels == want.channels);
  CHECK(got.height == want.height);
  CHECK(got.width == want.width);
  REQUIRE(got.pixels.size() == size_t(count * want.image_size()));
  REQUIRE(got.labels.size() == size_t(count));
  CHECK(std::equal(got.pixels.begin(), got.pixels.end(), want.pixels.begin()));
  CHECK(std::equal(got.labels.begin(), got.labels.end(), want.labels.begin()));
}

// A small valid IDX data set in `dir`; returns its (train, test).
std::pair<ImageSet, ImageSet> write_small_idx(const std::string& dir, bool gzip = false) {
  ImageSet train = make_image_set(12, 1, 5, 3, 10, 1);
  ImageSet test = make_image_set(7, 1, 5, 3, 10, 2);
  write_idx_dataset(dir, train, test, gzip);
  return {train, test};
}

const std::string kTrainImages = "train-images-idx3-ubyte";
const std::string kTrainLabels = "train-labels-idx1-ubyte";

}  // namespace

TEST_CASE("IDX data sets round trip, raw and gzip", "[data]") {
  for (bool gzip : {false, true}) {
    DYNAMIC_SECTION((gzip ? "gzip" : "raw")) {
      TempDir dir;
      auto [train, test] = write_small_idx(dir.path(), gzip);
      Dataset ds = load_idx_dataset(dir.path(), 0, 0, 10);
      check_same(ds.train, train, 12);
      check_same(ds.test, test, 7);
      CHECK(ds.train.channels == 1);
    }
  }
}

TEST_CASE("IDX: raw and gzip files mix, the raw one wins when both exist", "[data]") {
  TempDir dir;
  auto [train, test] = write_small_idx(dir.path());
  // A gzip twin with other content must be ignored.
  ImageSet other = make_image_set(12, 1, 5, 3, 10, 99);
  write_idx_images(dir.file(kTrainImages + ".gz"), 12, 5, 3, other.pixels, true);
  // And a file present only gzipped is found.
  std::filesystem::remove(dir.file(kTrainLabels));
  write_idx_labels(dir.file(kTrainLabels + ".gz"), label_bytes(train.labels), true);

  Dataset ds = load_idx_dataset(dir.path(), 0, 0, 10);
  check_same(ds.train, train, 12);
  check_same(ds.test, test, 7);
}

TEST_CASE("read_idx_file reads any rank, raw and gzip", "[data]") {
  TempDir dir;
  Bytes data(2 * 3 * 4);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 7 + 1);
  write_idx(dir.file("a.idx"), {2, 3, 4}, data);
  write_idx(dir.file("a.idx.gz"), {2, 3, 4}, data, true);
  write_idx(dir.file("empty.idx"), {0, 5}, {});
  for (const char* name : {"a.idx", "a.idx.gz"}) {
    IdxArray a = read_idx_file(dir.file(name));
    CHECK(a.dims == std::vector<uint32_t>{2, 3, 4});
    CHECK(a.data == data);
  }
  IdxArray e = read_idx_file(dir.file("empty.idx"));
  CHECK(e.dims == std::vector<uint32_t>{0, 5});
  CHECK(e.data.empty());
}

TEST_CASE("IDX limits keep the first N images", "[data]") {
  TempDir dir;
  auto [train, test] = write_small_idx(dir.path(), true);
  Dataset ds = load_idx_dataset(dir.path(), 5, 7, 10);
  check_same(ds.train, train, 5);
  check_same(ds.test, test, 7);
  ds = load_idx_dataset(dir.path(), 12, 1, 10);
  check_same(ds.train, train, 12);
  check_same(ds.test, test, 1);

  const std::string images = dir.file(kTrainImages + ".gz");
  testing::expect_error<DataError>([&] { load_idx_dataset(dir.path(), 13, 0, 10); },
                                   {"data.train_limit=13", images, "holds 12 images"});
  testing::expect_error<DataError>(
      [&] { load_idx_dataset(dir.path(), 0, 70000, 10); },
      {"data.test_limit=70000", "t10k-images-idx3-ubyte.gz", "holds 7 images"});
  testing::expect_error<DataError>([&] { load_idx_dataset(dir.path(), -1, 0, 10); },
                                   {"data.train_limit=-1"});
}

TEST_CASE("CIFAR-10 data sets round trip, with limits across batches", "[data]") {
  TempDir dir;
  ImageSet train = make_image_set(11, 3, 32, 32, 10, 3);  // batches of 2, 2, 2, 2, 3 records
  ImageSet test = make_image_set(4, 3, 32, 32, 10, 4);
  write_cifar10_dataset(dir.path(), train, test);

  Dataset ds = load_cifar10_dataset(dir.path(), 0, 0, 10);
  check_same(ds.train, train, 11);
  check_same(ds.test, test, 4);
  CHECK(ds.train.channels == 3);
  CHECK(ds.train.height == 32);

  ds = load_cifar10_dataset(dir.path(), 5, 2, 10);  // the limit ends inside data_batch_3.bin
  check_same(ds.train, train, 5);
  check_same(ds.test, test, 2);

  testing::expect_error<DataError>([&] { load_cifar10_dataset(dir.path(), 12, 0, 10); },
                                   {"data.train_limit=12", "data_batch_1.bin", "hold 11 images"});
  testing::expect_error<DataError>([&] { load_cifar10_dataset(dir.path(), 0, 5, 10); },
                                   {"data.test_limit=5", "test_batch.bin", "holds 4 images"});
}

TEST_CASE("CIFAR-10 record layout: label byte then channel-major pixels", "[data]") {
  TempDir dir;
  Bytes pixels(3072);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t(i / 1024 * 100 + i % 7);
  for (int b = 1; b <= 5; ++b)
    write_cifar10_batch(dir.file("data_batch_" + std::to_string(b) + ".bin"), {uint8_t(b)}, pixels);
  write_cifar10_batch(dir.file("test_batch.bin"), {9}, pixels);
  Dataset ds = load_cifar10_dataset(dir.path(), 0, 0, 10);
  REQUIRE(ds.train.count == 5);
  CHECK(ds.train.labels == std::vector<int32_t>{1, 2, 3, 4, 5});
  CHECK(ds.test.labels == std::vector<int32_t>{9});
  const uint8_t* img = ds.train.image(4);
  CHECK(img[0] == 0);
  CHECK(img[1024] == 100 + 1024 % 7);  // first pixel of the green plane
  CHECK(img[2048 + 5] == 200 + 2053 % 7);
}

TEST_CASE("channel_statistics: per-channel mean and population std of pixel/255", "[data]") {
  ImageSet set;
  set.count = 2;
  set.channels = 2;
  set.height = 1;
  set.width = 2;
  // channel 0 over both images: 0, .2, .4, .6 -> mean .3, population variance .05
  // channel 1: all 255 -> mean 1, std 0
  set.pixels = {0, 51, 255, 255, 102, 153, 255, 255};
  set.labels = {0, 1};
  std::vector<float> mean, stddev;
  channel_statistics(set, mean, stddev);
  REQUIRE(mean.size() == 2);
  REQUIRE(stddev.size() == 2);
  CHECK(mean[0] == Approx(0.3).epsilon(1e-6));
  CHECK(stddev[0] == Approx(std::sqrt(0.05)).epsilon(1e-6));
  CHECK(mean[1] == Approx(1.0).epsilon(1e-6));
  CHECK(stddev[1] == Approx(0.0).margin(1e-7));

  // Against a direct two-pass computation on an awkward random set.
  ImageSet r = make_image_set(37, 3, 7, 5, 10, 5);
  channel_statistics(r, mean, stddev);
  REQUIRE(mean.size() == 3);
  for (int c = 0; c < 3; ++c) {
    double s = 0, sq = 0, n = 0;
    for (int64_t i = 0; i < r.count; ++i)
      for (int k = 0; k < 35; ++k) s += r.image(i)[c * 35 + k] / 255.0, n += 1;
    const double m = s / n;
    for (int64_t i = 0; i < r.count; ++i)
      for (int k = 0; k < 35; ++k) sq += std::pow(r.image(i)[c * 35 + k] / 255.0 - m, 2);
    CHECK(mean[size_t(c)] == Approx(m).epsilon(1e-6));
    CHECK(stddev[size_t(c)] == Approx(std::sqrt(sq / n)).epsilon(1e-6));
  }

  ImageSet empty;
  empty.channels = 1;
  empty.height = empty.width = 28;
  testing::expect_error<DataError>([&] { channel_statistics(empty, mean, stddev); },
                                   {"at least one image"});
}

TEST_CASE("IDX errors: folder and files", "[data]") {
  TempDir dir;
  const std::string missing = dir.file("nope");
  testing::expect_error<DataError>([&] { load_idx_dataset(missing, 0, 0, 10); },
                                   {"data.dir: folder '" + missing + "' does not exist"});
  write_bytes(dir.file("plain"), {1, 2, 3});
  testing::expect_error<DataError>([&] { load_idx_dataset(dir.file("plain"), 0, 0, 10); },
                                   {"data.dir", "not a folder"});
  testing::expect_error<DataError>([&] { load_idx_dataset(dir.path(), 0, 0, 10); },
                                   {dir.file(kTrainImages), kTrainImages + ".gz"});
  write_small_idx(dir.path());
  std::filesystem::remove(dir.file("t10k-labels-idx1-ubyte"));
  testing::expect_error<DataError>([&] { load_idx_dataset(dir.path(), 0, 0, 10); },
                                   {dir.file("t10k-labels-idx1-ubyte"), "no such file"});
  testing::expect_error<DataError>([&] { read_idx_file(dir.file("t10k-labels-idx1-ubyte")); },
                                   {dir.file("t10k-labels-idx1-ubyte"), "no such file"});
}

TEST_CASE("IDX errors: header", "[data]") {
  TempDir dir;
  auto [train, test] = write_small_idx(dir.path());
  const std::string images = dir.file(kTrainImages);
  auto load = [&] { load_idx_dataset(dir.path(), 0, 0, 10); };

  SECTION("wrong magic") {
    Bytes bytes = read_bytes(images);
    bytes[0] = 0x12;
    write_bytes(images, bytes);
    testing::expect_error<DataError>(load,
                                     {images, "not an IDX file", "expected magic 00 00 08 03"});
  }
  SECTION("wrong dtype") {
    write_idx(images, {12, 5, 3}, train.pixels, false, 0x0D);
    testing::expect_error<DataError>(load, {images, "0x0D", "expected 0x08"});
  }
  SECTION("wrong number of dimensions") {
    write_idx(images, {12, 15}, train.pixels);
    testing::expect_error<DataError>(load, {images, "2 dimension(s), expected 3"});
  }
  SECTION("empty file") {
    write_bytes(images, {});
    testing::expect_error<DataError>(load, {images, "empty file"});
  }
  SECTION("truncated header") {
    write_bytes(images, {0, 0, 8, 3, 0, 0, 0, 12, 0});
    testing::expect_error<DataError>(load, {images, "truncated IDX header"});
  }
  SECTION("zero-sized images") {
    write_idx_images(images, 12, 0, 3, {});
    testing::expect_error<DataError>(load, {images, "at least one image"});
  }
}

TEST_CASE("IDX errors: data size", "[data]") {
  TempDir dir;
  auto [train, test] = write_small_idx(dir.path());
  const std::string images = dir.file(kTrainImages);
  auto load = [&] { load_idx_dataset(dir.path(), 0, 0, 10); };

  SECTION("truncated raw") {
    Bytes short_pixels(train.pixels.begin(), train.pixels.end() - 1);
    write_idx_images(images, 12, 5, 3, short_pixels);
    testing::expect_error<DataError>(load, {images, "truncated", "179 bytes", "expected 180"});
  }
  SECTION("trailing bytes, raw and gzip") {
    Bytes long_pixels = train.pixels;
    long_pixels.push_back(7);
    long_pixels.push_back(7);
    for (bool gzip : {false, true}) {
      std::filesystem::remove(images);
      const std::string path = images + (gzip ? ".gz" : "");
      write_idx_images(path, 12, 5, 3, long_pixels, gzip);
      testing::expect_error<DataError>(load,
                                       {path, "2 trailing bytes", "expected the file to end"});
      std::filesystem::remove(path);
    }
  }
  SECTION("a huge count in a tiny file, raw and gzip") {
    for (bool gzip : {false, true}) {
      std::filesystem::remove(images);
      const std::string path = images + (gzip ? ".gz" : "");
      write_idx_images(path, 0x80000000u, 28, 28, Bytes(100, 1), gzip);
      testing::expect_error<DataError>(load, {path, "truncated", "2147483648x28x28"});
      write_idx_images(path, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, Bytes(100, 1), gzip);
      testing::expect_error<DataError>(load, {path, "impossibly large"});
      std::filesystem::remove(path);
    }
  }
}

TEST_CASE("IDX errors: damaged gzip", "[data]") {
  TempDir dir;
  write_small_idx(dir.path());
  const std::string images = dir.file(kTrainImages);
  const std::string gz = images + ".gz";
  std::filesystem::remove(images);
  auto load = [&] { load_idx_dataset(dir.path(), 0, 0, 10); };
  // Compressible content, so the stream has real deflate blocks to break.
  Bytes pixels(12 * 5 * 3);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t(i % 5 == 0 ? 200 : 0);
  write_idx_images(gz, 12, 5, 3, pixels, true);
  const Bytes good = read_bytes(gz);
  REQUIRE(good.size() > 30);

  SECTION("truncated in the data") {
    write_bytes(gz, Bytes(good.begin(), good.begin() + std::ptrdiff_t(good.size() / 2)));
    testing::expect_error<DataError>(load, {gz, "truncated gzip stream"});
  }
  SECTION("truncated in the trailer (all data there, checksum missing)") {
    write_bytes(gz, Bytes(good.begin(), good.end() - 4));
    testing::expect_error<DataError>(load, {gz, "truncated gzip stream"});
  }
  SECTION("truncated in the gzip header") {
    write_bytes(gz, Bytes(good.begin(), good.begin() + 6));
    testing::expect_error<DataError>(load, {gz, "truncated gzip stream"});
  }
  SECTION("corrupt deflate data") {
    Bytes bad = good;
    for (size_t i = 12; i < bad.size() - 8; ++i) bad[i] ^= 0x5A;
    write_bytes(gz, bad);
    testing::expect_error<DataError>(load, {gz, "corrupt gzip data"});
  }
  SECTION("checksum mismatch") {
    Bytes bad = good;
    bad[bad.size() - 6] ^= 0xFF;  // inside the CRC-32 of the trailer
    write_bytes(gz, bad);
    testing::expect_error<DataError>(load, {gz, "corrupt gzip data"});
  }
}

TEST_CASE("IDX errors: labels", "[data]") {
  TempDir dir;
  auto [train, test] = write_small_idx(dir.path());
  const std::string labels = dir.file(kTrainLabels);
  auto load = [&] { load_idx_dataset(dir.path(), 0, 0, 10); };

  SECTION("count mismatch") {
    write_idx_labels(labels, Bytes(11, 1));
    testing::expect_error<DataError>(
        load, {labels, "11 labels", dir.file(kTrainImages), "holds 12 images"});
  }
  SECTION("label >= num_classes") {
    Bytes l = label_bytes(train.labels);
    l[4] = 10;
    write_idx_labels(labels, l);
    testing::expect_error<DataError>(load, {labels, "label 10 at index 4", "expected 0..9"});
    CHECK(load_idx_dataset(dir.path(), 0, 0, 11).train.labels[4] == 10);
  }
  SECTION("an images file where labels belong") {
    write_idx_images(labels, 12, 5, 3, train.pixels);
    testing::expect_error<DataError>(load, {labels, "3 dimension(s), expected 1"});
  }
}

TEST_CASE("CIFAR-10 errors", "[data]") {
  TempDir dir;
  ImageSet train = make_image_set(5, 3, 32, 32, 10, 6);
  ImageSet test = make_image_set(2, 3, 32, 32, 10, 7);
  write_cifar10_dataset(dir.path(), train, test);
  auto load = [&] { load_cifar10_dataset(dir.path(), 0, 0, 10); };
  const std::string batch3 = dir.file("data_batch_3.bin");

  SECTION("missing folder") {
    testing::expect_error<DataError>(
        [&] { load_cifar10_dataset(dir.file("nope"), 0, 0, 10); },
        {"data.dir: folder '" + dir.file("nope") + "' does not exist"});
  }
  SECTION("missing batch") {
    std::filesystem::remove(batch3);
    testing::expect_error<DataError>(load, {batch3, "no such file"});
  }
  SECTION("size not a multiple of 3073") {
    Bytes bytes = read_bytes(batch3);
    bytes.pop_back();
    write_bytes(batch3, bytes);
    testing::expect_error<DataError>(load, {batch3, "3072 bytes", "3073"});
  }
  SECTION("empty batch") {
    write_bytes(batch3, {});
    testing::expect_error<DataError>(load, {batch3, "0 bytes", "3073"});
  }
  SECTION("label >= num_classes") {
    Bytes bytes = read_bytes(dir.file("test_batch.bin"));
    bytes[3073] = 12;  // the second record's label
    write_bytes(dir.file("test_batch.bin"), bytes);
    testing::expect_error<DataError>(
        load, {dir.file("test_batch.bin"), "label 12 in record 1", "expected 0..9"});
  }
}

TEST_CASE("Fashion-MNIST from /usr/share/datasets loads whole", "[data]") {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir)) {
    WARN("skipped: " << dir << " is not installed (scripts/setup.sh installs it)");
    return;
  }
  auto start = std::chrono::steady_clock::now();
  Dataset ds = load_idx_dataset(dir, 0, 0, 10);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO("loaded in " << seconds << " s");
  for (auto [set, count] : {std::pair<const ImageSet*, int64_t>{&ds.train, 60000},
                            std::pair<const ImageSet*, int64_t>{&ds.test, 10000}}) {
    REQUIRE(set->count == count);
    CHECK(set->channels == 1);
    CHECK(set->height == 28);
    CHECK(set->width == 28);
    CHECK(set->pixels.size() == size_t(count) * 784);
    REQUIRE(set->labels.size() == size_t(count));
    std::vector<int64_t> per_class(10, 0);
    for (int32_t l : set->labels) {
      REQUIRE(l >= 0);
      REQUIRE(l < 10);
      ++per_class[size_t(l)];
    }
    for (int64_t n : per_class) CHECK(n == count / 10);  // Fashion-MNIST is balanced
  }
  std::vector<float> mean, stddev;
  channel_statistics(ds.train, mean, stddev);
  CHECK(mean[0] == Approx(0.2860).margin(1e-4));  // the values every tutorial normalizes with
  CHECK(stddev[0] == Approx(0.3530).margin(1e-4));
}
