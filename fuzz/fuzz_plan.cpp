// libFuzzer target: config → plan, with the bytes read as a model config directly (a YAML fuzzer
// rarely reaches a valid layer list). Values are kept in the ranges the config validator accepts
// (>= 1; padding >= 0; any int up to 2^31-1): plan_model and the CPU memory estimate must then
// give a plan or a ConfigError — never a signal, a sanitizer report or another exception. The
// padding = 2^31-1 SIGSEGV of issue 8 is this target's first seed.
#include <climits>
#include <cstdint>
#include <cstring>

#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"

namespace {

struct Reader {
  const uint8_t* data;
  size_t size;
  int32_t next(int32_t min) {
    uint32_t v = 0;
    if (size >= 4) {
      std::memcpy(&v, data, 4);
      data += 4;
      size -= 4;
    } else {
      size = 0;
    }
    const int64_t value = int64_t(v & 0x7fffffffu);
    return int32_t(value < min ? min : value);
  }
  uint8_t byte() {
    if (!size) return 0;
    --size;
    return *data++;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gputrain;
  Reader in{data, size};
  ModelConfig m;
  m.input_channels = in.next(1);
  m.input_height = in.next(1);
  m.input_width = in.next(1);
  const int64_t batch = in.next(1);
  for (int i = 0; in.size > 0 && i < 16; ++i) {
    LayerConfig l;
    l.name = "l" + std::to_string(i);
    l.source_line = i + 1;
    switch (in.byte() % 5) {
      case 0:
        l.kind = LayerKind::Conv2d;
        l.out_channels = in.next(1);
        l.kernel = in.next(1);
        l.stride = in.next(1);
        l.padding = in.next(0);
        break;
      case 1:
        l.kind = LayerKind::Relu;
        break;
      case 2:
        l.kind = LayerKind::MaxPool2d;
        l.kernel = in.next(1);
        l.stride = in.next(1);
        break;
      case 3:
        l.kind = LayerKind::Flatten;
        break;
      default:
        l.kind = LayerKind::Linear;
        l.out_features = in.next(1);
    }
    m.layers.push_back(l);
  }
  try {
    const ModelPlan plan = plan_model(m, "fuzz.yaml");
    const MemoryEstimate e = estimate_cpu_memory(plan, batch, 2, 1);
    if (e.total_bytes < e.parameter_bytes) __builtin_trap();
  } catch (const ConfigError&) {
  }
  return 0;
}
