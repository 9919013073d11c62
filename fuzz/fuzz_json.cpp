// libFuzzer target: the JSON parser behind safetensors headers and metadata (src/core/json.cpp).
// Any input either parses or throws JsonParseError; what parses dumps to text that parses back to
// the same text.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const gputrain::JsonValue value = gputrain::parse_json(text);
    const std::string dumped = value.dump();
    if (gputrain::parse_json(dumped).dump() != dumped) std::abort();  // not a fixed point
  } catch (const gputrain::JsonParseError&) {
  }
  return 0;
}
