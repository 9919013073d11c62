// Image classification data sets as read from disk: uint8 pixels N×C×H×W and int32 labels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gputrain {

struct ImageSet {
  int64_t count = 0;
  int channels = 0, height = 0, width = 0;
  std::vector<uint8_t> pixels;  // count × channels × height × width, row-major (NCHW)
  std::vector<int32_t> labels;  // count, each in [0, num_classes)

  int64_t image_size() const { return int64_t(channels) * height * width; }
  const uint8_t* image(int64_t i) const { return pixels.data() + i * image_size(); }
};

struct Dataset {
  ImageSet train, test;
  // The name of each label, when the data set has them (image folders: the class folders;
  // Fashion-MNIST and CIFAR-10: their published names); empty otherwise.
  std::vector<std::string> class_names;
  ImageSet val;  // data.val_split > 0: held out of the training images (else empty)
};

// MNIST / Fashion-MNIST IDX files in `dir`: train-images-idx3-ubyte, train-labels-idx1-ubyte,
// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each raw or with a .gz suffix.
// `train_limit` / `test_limit` > 0 keep only the first N images. Labels must be < num_classes.
// Throws DataError naming the file and what was wrong (magic, dims, truncation, counts, labels).
Dataset load_idx_dataset(const std::string& dir, int64_t train_limit, int64_t test_limit,
                         int num_classes);

// One IDX file, all of it (gzip'd when the name ends in .gz). Exposed for tests.
struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};
IdxArray read_idx_file(const std::string& path);

// CIFAR-10 binary version in `dir`: data_batch_1.bin … data_batch_5.bin, test_batch.bin; each
// record is 1 label byte + 3072 pixel bytes (3×32×32).
Dataset load_cifar10_dataset(const std::string& dir, int64_t train_limit, int64_t test_limit,
                             int num_classes);

// Label names where a data set has none of its own: CIFAR-10's (`format` "cifar10", from
// batches.meta.txt when present), Fashion-MNIST's (`format` "idx" and "fashion" in the folder's
// path); otherwise "0" … "num_classes-1".
std::vector<std::string> builtin_class_names(const std::string& format, const std::string& dir,
                                             int num_classes);

// Per-channel mean and population std of pixel/255 over a set (normalization "auto").
void channel_statistics(const ImageSet& set, std::vector<float>& mean, std::vector<float>& std);

}  // namespace gputrain
