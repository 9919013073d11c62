// Sizes derived by the plan cannot overflow (issue 8, item 11): int64 with checks, int where the
// ops index with int, memory estimated before anything is allocated.
#include <catch2/catch.hpp>
#include <climits>

#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"
#include "gputrain/ops.hpp"
#include "support/expect_error.hpp"
#include "support/layers.hpp"

using namespace gputrain;
using gputrain::testing::conv;
using gputrain::testing::expect_error;
using gputrain::testing::flatten;
using gputrain::testing::linear;
using gputrain::testing::maxpool;
using gputrain::testing::relu;

namespace {

ModelConfig net(int c, int h, int w, std::vector<LayerConfig> layers) {
  ModelConfig m;
  m.input_channels = c;
  m.input_height = h;
  m.input_width = w;
  m.layers = std::move(layers);
  return m;
}

}  // namespace

TEST_CASE("plan_model rejects sizes that overflow int or int64, naming the layer",
          "[model][sizes]") {
  auto plan = [](const ModelConfig& m) { return [m] { plan_model(m, "c.yaml"); }; };
  expect_error<ConfigError>(
      plan(net(1, 12, 12, {conv("conv1", 4, 3, 1, INT_MAX), flatten(), linear("fc", 10)})),
      {"c.yaml", "conv1", "padding 2147483647", "2147483647"});
  expect_error<ConfigError>(
      plan(net(1, 12, 12, {conv("conv1", INT_MAX, 3, 1, 1), flatten(), linear("fc", 10)})),
      {"conv1", "output"});
  expect_error<ConfigError>(plan(net(INT_MAX, INT_MAX, INT_MAX, {flatten(), linear("fc", 10)})),
                            {"model.input", "64-bit"});
  expect_error<ConfigError>(plan(net(1, 65536, 65536, {flatten(), linear("fc", 10)})),
                            {"model.input", "4294967296"});
  // im2col rows C·k·k beyond int (a GEMM dimension): 32768 channels × a 256² window.
  expect_error<ConfigError>(
      plan(net(32768, 8, 8, {conv("wide", 2, 256, 1, 124), flatten(), linear("fc", 10)})),
      {"wide", "in_channels x kernel x kernel"});
  // Parameters that fit int64 but not any machine's memory: 2^31-1 outputs × 144 inputs.
  expect_error<ConfigError>(plan(net(1, 12, 12, {flatten(), linear("fc1", INT_MAX)})),
                            {"fc1", "needs", "available"});
}

TEST_CASE("plan_model still accepts large valid sizes", "[model][sizes]") {
  const ModelPlan plan = plan_model(net(
      3, 1000, 1000, {conv("c", 8, 5, 3, 40), relu(), maxpool(3, 3), flatten(), linear("fc", 10)}));
  CHECK(plan.layers[0].output.height == (1000 + 80 - 5) / 3 + 1);
}

TEST_CASE("estimate_cpu_memory counts what the CPU engine allocates", "[model][sizes]") {
  const ModelPlan plan =
      plan_model(net(2, 9, 8,
                     {conv("c1", 3, 3, 2, 1), relu(), conv("c2", 4, 3, 1, 1), maxpool(2, 2),
                      flatten(), linear("f1", 7), relu(), linear("f2", 5)}));
  const int batch = 5, threads = 3;
  const MemoryEstimate e = estimate_cpu_memory(plan, batch, threads, 1);
  // Parameters: weights, gradients, one optimizer buffer, one host copy.
  CHECK(e.parameter_bytes == int64_t(plan.parameter_count) * 4 * 4);
  int64_t want = e.parameter_bytes + int64_t(batch) * plan.input.size() * 4;
  int64_t workspace = 0;
  for (const LayerPlan& l : plan.layers) {
    const int64_t act = int64_t(batch) * l.output.size() * 4;
    if (!l.folded && l.config.kind != LayerKind::Flatten) want += 2 * act;
    if (l.config.kind == LayerKind::MaxPool2d) want += act;
    if (l.config.kind == LayerKind::Conv2d)  // the same formula as the ops' own query
      workspace =
          std::max(workspace, cpu::conv_workspace_floats(l.conv_geometry(batch), threads) * 4);
  }
  CHECK(e.total_bytes == want + workspace);
  REQUIRE(e.largest_layer >= 0);
  CHECK(e.largest_layer_bytes > 0);
  CHECK(e.largest_layer_bytes <= e.total_bytes);
  // A batch this large overflows nothing but needs far more than any machine has.
  expect_error<ConfigError>([&] { check_cpu_memory(plan, int64_t(1) << 40, threads, 1); },
                            {"needs", "batch size 1099511627776", "available"});
  CHECK_NOTHROW(check_cpu_memory(plan, batch, threads, 1));
}

TEST_CASE("available memory and byte texts", "[model][sizes]") {
  CHECK(available_memory_bytes() > 0);
  CHECK(bytes_text(512) == "512 bytes");
  CHECK(bytes_text(int64_t(3) << 20) == "3.0 MiB");
  CHECK(bytes_text(int64_t(3) << 29) == "1.5 GiB");
}
