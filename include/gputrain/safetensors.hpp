// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the
// tensor bytes. gputrain reads and writes F32 and I64 tensors (and writes U8, I32); writes are
// atomic (temp file, fsync, rename).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gputrain {

struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major, product(shape) elements
};

// Tensors of other dtypes, as their little-endian bytes: "U8", "I32" (written only) and "I64"
// (read and written: batchnorm2d's num_batches_tracked).
struct RawTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

struct TensorFile {
  std::vector<NamedTensor> tensors;    // in file order (by data offset)
  std::vector<RawTensor> raw_tensors;  // written after `tensors`; read: the I64 ones
  std::map<std::string, std::string> metadata;

  const NamedTensor* find(const std::string& name) const;
  const RawTensor* find_raw(const std::string& name) const;
};

// Throws WeightsError naming the file for: missing/unreadable file, a header length beyond the
// file, invalid JSON, unsupported dtype, offsets outside the data or not matching the shape.
TensorFile read_safetensors(const std::string& path);

// Writes `file` to `path` atomically; throws IoError when the folder cannot be written.
void write_safetensors(const std::string& path, const TensorFile& file);

}  // namespace gputrain
