// libFuzzer target: config YAML (parse_config) and config → plan (plan_model, the CPU memory
// estimate). Any input is either a valid config with a plan whose sizes fit, or a ConfigError;
// every other exception, signal or sanitizer report is a bug (issue 8, item 11: a validated config
// once overflowed int in the plan).
#include <cstdint>
#include <string>

#include "gputrain/config.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const gputrain::Config config = gputrain::parse_config(text, "fuzz.yaml");
    (void)gputrain::to_yaml(config);
    const gputrain::ModelPlan plan = gputrain::plan_model(config.model, "fuzz.yaml");
    (void)gputrain::estimate_cpu_memory(plan, config.train.batch_size, 2, 1);
  } catch (const gputrain::ConfigError&) {
  }
  return 0;
}
