// CIFAR-10 binary version: fixed-size records (1 label byte + 3×32×32 channel-major pixels), no
// header, so the file size alone says how many records there are.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "data/data_dir.hpp"
#include "gputrain/dataset.hpp"
#include "gputrain/errors.hpp"

namespace gputrain {
namespace {

namespace fs = std::filesystem;

constexpr int kChannels = 3, kSide = 32;
constexpr size_t kImageBytes = size_t(kChannels) * kSide * kSide;
constexpr size_t kRecordBytes = 1 + kImageBytes;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

struct Batch {
  std::string path;
  int64_t records = 0;
};

Batch inspect(const std::string& dir, const std::string& name) {
  const std::string path = (fs::path(dir) / name).string();
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (!fs::exists(status))
    throw DataError(path +
                    ": no such file, expected the CIFAR-10 binary batches data_batch_1.bin "
                    "... data_batch_5.bin and test_batch.bin in " +
                    dir);
  if (!fs::is_regular_file(status))
    throw DataError(path + ": not a regular file, expected a CIFAR-10 binary batch");
  const uintmax_t size = fs::file_size(path, ec);
  if (ec)
    throw DataError(path + ": cannot read its size (" + ec.message() +
                    "), expected a readable file");
  if (size == 0 || size % kRecordBytes != 0)
    throw DataError(path + ": " + std::to_string(size) +
                    " bytes is not a positive multiple of the 3073-byte record (truncated?), "
                    "expected records of 1 label byte + 3072 pixel bytes");
  return {path, int64_t(size / kRecordBytes)};
}

// Appends the batch's records at `first` of `set`, whose buffers are already sized for them.
void read_batch(const Batch& batch, ImageSet& set, int64_t first, int num_classes) {
  errno = 0;
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(batch.path.c_str(), "rb"));
  if (!file)
    throw DataError(batch.path + ": cannot open (" + std::strerror(errno) +
                    "), expected a readable file");
  constexpr int64_t kChunk = 1024;  // records per read: a few MB, few syscalls
  std::vector<unsigned char> buf(size_t(kChunk) * kRecordBytes);
  for (int64_t done = 0; done < batch.records;) {
    const int64_t n = std::min(kChunk, batch.records - done);
    const size_t want = size_t(n) * kRecordBytes;
    if (std::fread(buf.data(), 1, want, file.get()) != want) {
      if (std::ferror(file.get()))
        throw DataError(batch.path + ": read error (" + std::strerror(errno) +
                        "), expected a readable file");
      throw DataError(batch.path + ": file shrank while being read, expected " +
                      std::to_string(batch.records * int64_t(kRecordBytes)) + " bytes");
    }
    for (int64_t r = 0; r < n; ++r) {
      const unsigned char* rec = buf.data() + size_t(r) * kRecordBytes;
      if (rec[0] >= num_classes)
        throw DataError(batch.path + ": label " + std::to_string(rec[0]) + " in record " +
                        std::to_string(done + r) + " is out of range, expected 0.." +
                        std::to_string(num_classes - 1) + " (" + std::to_string(num_classes) +
                        " classes)");
      const int64_t i = first + done + r;
      set.labels[size_t(i)] = rec[0];
      std::memcpy(set.pixels.data() + size_t(i) * kImageBytes, rec + 1, kImageBytes);
    }
    done += n;
  }
}

ImageSet load_split(const std::string& dir, const std::vector<std::string>& names,
                    const char* limit_key, int64_t limit, int num_classes) {
  std::vector<Batch> batches;
  int64_t total = 0;
  for (const auto& name : names) {
    batches.push_back(inspect(dir, name));
    total += batches.back().records;
  }
  if (limit < 0)
    throw DataError(std::string(limit_key) + "=" + std::to_string(limit) +
                    ": negative, expected 0 (all images) or a positive count");
  if (limit > total) {
    std::string files = batches.front().path;
    if (batches.size() > 1) files += " ... " + fs::path(batches.back().path).filename().string();
    throw DataError(std::string(limit_key) + "=" + std::to_string(limit) + " but " + files +
                    (batches.size() > 1 ? " hold " : " holds ") + std::to_string(total) +
                    " images, expected at most " + std::to_string(total) + " (or 0 = all)");
  }

  // Sizes come from the files' real sizes, never from anything the files claim.
  ImageSet set;
  set.channels = kChannels;
  set.height = set.width = kSide;
  set.count = total;
  set.pixels.resize(size_t(total) * kImageBytes);
  set.labels.resize(size_t(total));
  int64_t first = 0;
  for (const auto& batch : batches) {
    read_batch(batch, set, first, num_classes);
    first += batch.records;
  }
  if (limit > 0 && limit < total) {
    set.count = limit;
    set.pixels.resize(size_t(limit) * kImageBytes);
    set.pixels.shrink_to_fit();
    set.labels.resize(size_t(limit));
    set.labels.shrink_to_fit();
  }
  return set;
}

}  // namespace

Dataset load_cifar10_dataset(const std::string& dir, int64_t train_limit, int64_t test_limit,
                             int num_classes) {
  if (num_classes < 1)
    throw DataError("num_classes=" + std::to_string(num_classes) + ": expected at least 1");
  check_data_dir(dir, "the folder of the CIFAR-10 batches");
  Dataset ds;
  ds.train = load_split(dir,
                        {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                         "data_batch_4.bin", "data_batch_5.bin"},
                        "data.train_limit", train_limit, num_classes);
  ds.test = load_split(dir, {"test_batch.bin"}, "data.test_limit", test_limit, num_classes);
  return ds;
}

}  // namespace gputrain
