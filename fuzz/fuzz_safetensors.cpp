// libFuzzer target: the safetensors reader (read_safetensors, through a temporary file). Any input
// is read or rejected with WeightsError; a file that is read writes back and reads back the same.
#include <cstdint>
#include <cstdlib>

#include "fuzz_support.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = gputrain::fuzz::write_file("input.safetensors", data, size);
  try {
    const gputrain::TensorFile file = gputrain::read_safetensors(path);
    const std::string again = gputrain::fuzz::scratch_dir() + "/again.safetensors";
    gputrain::write_safetensors(again, file);
    const gputrain::TensorFile back = gputrain::read_safetensors(again);
    if (back.tensors.size() != file.tensors.size() || back.metadata != file.metadata) std::abort();
  } catch (const gputrain::WeightsError&) {
  }
  return 0;
}
