// IDX (MNIST / Fashion-MNIST) reader. Every file goes through zlib's gz* API, which reads gzip and
// raw files alike, so one code path serves both.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>

#include "data/data_dir.hpp"
#include "gputrain/dataset.hpp"
#include "gputrain/errors.hpp"

namespace gputrain {
namespace {

namespace fs = std::filesystem;

std::string hex_byte(unsigned v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", v & 0xFFu);
  return buf;
}

std::string join_dims(const std::vector<uint32_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return s;
}

const char* idx_type_name(unsigned dtype) {
  switch (dtype) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "int16";
    case 0x0C:
      return "int32";
    case 0x0D:
      return "float32";
    case 0x0E:
      return "float64";
    default:
      return "unknown";
  }
}

class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    std::error_code ec;
    auto status = fs::status(path, ec);
    if (!fs::exists(status)) throw DataError(path + ": no such file, expected an IDX file");
    if (!fs::is_regular_file(status))
      throw DataError(path + ": not a regular file, expected an IDX file");
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) {
      std::string why = errno ? std::strerror(errno) : "out of memory";
      throw DataError(path + ": cannot open (" + why + "), expected a readable file");
    }
    // zlib's default 8 KiB buffer makes inflating tens of MB measurably slower.
    gzbuffer(file_, 1u << 18);
  }
  ~GzFile() {
    if (file_) gzclose_r(file_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to `len` bytes; returns how many. Fewer than `len` means the end of the data (clean or
  // a truncated gzip stream, see truncated_stream()); a corrupt stream or a read error throws.
  size_t read(void* buf, size_t len) {
    size_t got = 0;
    auto* out = static_cast<unsigned char*>(buf);
    while (got < len) {
      unsigned want = unsigned(std::min<size_t>(len - got, size_t(1) << 30));
      int n = gzread(file_, out + got, want);
      if (n < 0) {
        int errnum = 0;
        const char* msg = gzerror(file_, &errnum);
        if (errnum == Z_ERRNO)
          throw DataError(path_ + ": read error (" + std::strerror(errno) +
                          "), expected a readable file");
        // zlib prefixes its messages with the path, which the error already starts with.
        std::string why = msg ? msg : "unknown zlib error";
        if (why.compare(0, path_.size() + 2, path_ + ": ") == 0) why.erase(0, path_.size() + 2);
        throw DataError(path_ + ": corrupt gzip data (" + why + "), expected a valid gzip stream");
      }
      if (n == 0) break;
      got += size_t(n);
    }
    return got;
  }

  // True when the last short read came from a gzip stream that ended early.
  bool truncated_stream() {
    int errnum = 0;
    gzerror(file_, &errnum);
    return errnum == Z_BUF_ERROR;
  }

  // Counts (and discards) whatever is left; used only to word the trailing-bytes error.
  uint64_t count_rest() {
    static thread_local unsigned char sink[1 << 16];
    uint64_t total = 0;
    for (;;) {
      size_t n = read(sink, sizeof sink);
      total += n;
      if (n < sizeof sink) return total;
    }
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

// `expected_ndim` = 0 accepts any rank; otherwise a mismatch is reported before any data is read.
IdxArray read_idx(const std::string& path, unsigned expected_ndim, const char* what) {
  GzFile file(path);
  const std::string expect_magic =
      "00 00 08 " + (expected_ndim ? hex_byte(expected_ndim).substr(2) : std::string("<ndim>"));

  unsigned char magic[4];
  size_t n = file.read(magic, 4);
  if (n < 4) {
    if (file.truncated_stream())
      throw DataError(path + ": truncated gzip stream (" + std::to_string(n) +
                      " bytes decompressed), expected a complete gzip file");
    if (n == 0)
      throw DataError(path + ": empty file, expected an IDX file (magic " + expect_magic + ")");
    throw DataError(path + ": truncated IDX header (" + std::to_string(n) +
                    " bytes), expected a 4-byte magic number");
  }
  if (magic[0] != 0 || magic[1] != 0) {
    char got[16];
    std::snprintf(got, sizeof got, "%02X %02X %02X %02X", magic[0], magic[1], magic[2], magic[3]);
    throw DataError(path + ": not an IDX file (magic " + got + "), expected magic " + expect_magic);
  }
  if (magic[2] != 0x08)
    throw DataError(path + ": IDX data type " + hex_byte(magic[2]) + " (" +
                    idx_type_name(magic[2]) + "), expected 0x08 (unsigned byte)");
  const unsigned ndim = magic[3];
  if (ndim == 0) throw DataError(path + ": IDX file with 0 dimensions, expected at least 1");
  if (expected_ndim && ndim != expected_ndim)
    throw DataError(path + ": IDX file with " + std::to_string(ndim) + " dimension(s), expected " +
                    std::to_string(expected_ndim) + " (" + what + ")");

  IdxArray out;
  unsigned char raw_dims[255 * 4];
  n = file.read(raw_dims, 4 * size_t(ndim));
  if (n < 4 * size_t(ndim))
    throw DataError(path +
                    (file.truncated_stream() ? ": truncated gzip stream in the IDX header ("
                                             : ": truncated IDX header (") +
                    std::to_string(4 + n) + " bytes), expected " + std::to_string(4 + 4 * ndim) +
                    " for " + std::to_string(ndim) + " dimensions");
  out.dims.resize(ndim);
  uint64_t expected = 1;
  bool overflow = false;
  for (unsigned i = 0; i < ndim; ++i) {
    const unsigned char* b = raw_dims + 4 * i;
    out.dims[i] = uint32_t(b[0]) << 24 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 8 | b[3];
    if (out.dims[i] != 0 && expected > uint64_t(std::numeric_limits<int64_t>::max()) / out.dims[i])
      overflow = true;
    else
      expected *= out.dims[i];
  }
  if (overflow)
    throw DataError(path + ": IDX dimensions " + join_dims(out.dims) +
                    " are impossibly large, expected the sizes of the data in the file");

  // The header is not trusted with the allocation: the buffer grows only as fast as data actually
  // arrives, so a bogus count in a small file costs nothing and ends as a truncation error.
  const size_t header = 4 + 4 * size_t(ndim);
  auto& data = out.data;
  size_t got = 0;
  data.resize(size_t(std::min<uint64_t>(expected, uint64_t(1) << 22)));
  while (got < expected) {
    if (got == data.size())
      data.resize(size_t(std::min<uint64_t>(expected, uint64_t(data.size()) * 2)));
    size_t want = data.size() - got;
    size_t n_read = file.read(data.data() + got, want);
    got += n_read;
    if (n_read < want) {
      const std::string where = file.truncated_stream() ? "truncated gzip stream" : "truncated";
      throw DataError(path + ": " + where + ", " + std::to_string(got) +
                      " bytes of data after the header, expected " + std::to_string(expected) +
                      " (" + join_dims(out.dims) + ")");
    }
  }
  // One more read also makes zlib check the gzip trailer (CRC and length) of a gzip file.
  unsigned char probe;
  if (file.read(&probe, 1) == 1) {
    uint64_t extra = 1 + file.count_rest();
    throw DataError(
        path + ": " + std::to_string(extra) + (extra == 1 ? " trailing byte" : " trailing bytes") +
        " after the " + std::to_string(expected) + " bytes of data (" + join_dims(out.dims) +
        "), expected the file to end there (" + std::to_string(header + expected) + " bytes)");
  }
  if (file.truncated_stream())
    throw DataError(path +
                    ": truncated gzip stream (its end and checksum are missing), expected a "
                    "complete gzip file");
  return out;
}

// Prefers the raw file when both exist (decompressing is the slower path).
std::string find_file(const std::string& dir, const std::string& name) {
  std::error_code ec;
  const fs::path raw = fs::path(dir) / name;
  if (fs::exists(raw, ec)) return raw.string();
  const fs::path gz = fs::path(dir) / (name + ".gz");
  if (fs::exists(gz, ec)) return gz.string();
  throw DataError(raw.string() + ": no such file, expected " + name + " or " + name + ".gz in " +
                  dir);
}

ImageSet load_split(const std::string& dir, const std::string& prefix, const char* limit_key,
                    int64_t limit, int num_classes) {
  const std::string images_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_file(dir, prefix + "-labels-idx1-ubyte");
  IdxArray images = read_idx(images_path, 3, "images: count x height x width");
  const auto& d = images.dims;
  constexpr uint32_t kIntMax = uint32_t(std::numeric_limits<int>::max());
  if (d[0] == 0 || d[1] == 0 || d[2] == 0 || d[1] > kIntMax || d[2] > kIntMax)
    throw DataError(images_path + ": images of " + join_dims(d) +
                    ", expected at least one image of at least 1x1 pixels");
  IdxArray labels = read_idx(labels_path, 1, "labels: count");
  if (labels.dims[0] != d[0])
    throw DataError(labels_path + ": " + std::to_string(labels.dims[0]) + " labels but " +
                    images_path + " holds " + std::to_string(d[0]) +
                    " images, expected one label per image");
  for (size_t i = 0; i < labels.data.size(); ++i)
    if (labels.data[i] >= num_classes)
      throw DataError(labels_path + ": label " + std::to_string(labels.data[i]) + " at index " +
                      std::to_string(i) + " is out of range, expected 0.." +
                      std::to_string(num_classes - 1) + " (" + std::to_string(num_classes) +
                      " classes)");

  int64_t count = d[0];
  if (limit < 0)
    throw DataError(std::string(limit_key) + "=" + std::to_string(limit) +
                    ": negative, expected 0 (all images) or a positive count");
  if (limit > count)
    throw DataError(std::string(limit_key) + "=" + std::to_string(limit) + " but " + images_path +
                    " holds " + std::to_string(count) + " images, expected at most " +
                    std::to_string(count) + " (or 0 = all)");
  if (limit > 0) count = limit;

  ImageSet set;
  set.count = count;
  set.channels = 1;
  set.height = int(d[1]);
  set.width = int(d[2]);
  set.pixels = std::move(images.data);
  if (count < int64_t(d[0])) {
    set.pixels.resize(size_t(count * set.image_size()));
    set.pixels.shrink_to_fit();
  }
  set.labels.assign(labels.data.begin(), labels.data.begin() + count);
  return set;
}

}  // namespace

IdxArray read_idx_file(const std::string& path) {
  return read_idx(path, 0, "");
}

Dataset load_idx_dataset(const std::string& dir, int64_t train_limit, int64_t test_limit,
                         int num_classes) {
  if (num_classes < 1)
    throw DataError("num_classes=" + std::to_string(num_classes) + ": expected at least 1");
  check_data_dir(dir, "the folder of the IDX files");
  Dataset ds;
  ds.train = load_split(dir, "train", "data.train_limit", train_limit, num_classes);
  ds.test = load_split(dir, "t10k", "data.test_limit", test_limit, num_classes);
  if (ds.train.height != ds.test.height || ds.train.width != ds.test.width)
    throw DataError(find_file(dir, "t10k-images-idx3-ubyte") + ": images of " +
                    std::to_string(ds.test.height) + "x" + std::to_string(ds.test.width) +
                    ", expected " + std::to_string(ds.train.height) + "x" +
                    std::to_string(ds.train.width) + " as in the training images");
  return ds;
}

}  // namespace gputrain
