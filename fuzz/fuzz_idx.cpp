// libFuzzer target: the IDX reader (read_idx_file, through a temporary file). The first byte picks
// a plain or a .gz file name (the reader gunzips by name), the rest is the file. Any input is read
// (dims matching the data size) or rejected with DataError.
#include <cstdint>
#include <cstdlib>

#include "fuzz_support.hpp"
#include "gputrain/dataset.hpp"
#include "gputrain/errors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool gz = data[0] & 1;
  const std::string path =
      gputrain::fuzz::write_file(gz ? "images.gz" : "images", data + 1, size - 1);
  try {
    const gputrain::IdxArray array = gputrain::read_idx_file(path);
    uint64_t count = 1;
    for (uint32_t d : array.dims) count *= d;
    if (count != array.data.size()) std::abort();
  } catch (const gputrain::DataError&) {
  }
  return 0;
}
