// kernels/pool.cu under the host emulation vs cpu::maxpool2d_forward / maxpool2d_backward.
// The emulation header first, then the kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "pool.cu"
// clang-format on
#include "gputrain/ops.hpp"

namespace gk = gputrain::kernels;
using gputrain::PoolGeometry;
using namespace kernel_test;

namespace {

std::string describe(const PoolGeometry& g) {
  return std::to_string(g.batch) + "x" + std::to_string(g.channels) + "x" +
         std::to_string(g.in_height) + "x" + std::to_string(g.in_width) + " k" +
         std::to_string(g.kernel) + " s" + std::to_string(g.stride);
}

enum class Values { Random, Ties, WithNaN };

std::vector<float> pool_input(size_t n, uint64_t seed, Values kind) {
  auto x = random_floats(n, seed);
  if (kind == Values::Ties)  // few distinct values: many windows with several maxima
    for (float& v : x) v = std::floor(v * 2.0f);
  if (kind == Values::WithNaN)
    for (size_t i = 7; i < n; i += 37) x[i] = NAN;
  return x;
}

void check_pool(const PoolGeometry& g, Values kind, bool all_schedules) {
  const size_t in = size_t(g.batch) * g.channels * g.in_height * g.in_width;
  const size_t out = size_t(g.batch) * g.channels * g.out_height() * g.out_width();
  INFO(describe(g) << ", values " << int(kind));
  const auto x = pool_input(in, 31 + in, kind);
  const auto dy = random_floats(out, 32 + out);
  std::vector<float> want_y(out), want_dx(in);
  std::vector<int32_t> want_arg(out);
  gputrain::cpu::maxpool2d_forward(g, x.data(), want_y.data(), want_arg.data());
  gputrain::cpu::maxpool2d_backward(g, dy.data(), want_arg.data(), want_dx.data());
  auto run = [&] {
    std::vector<float> y = poisoned(out), dx = poisoned(in);
    std::vector<int32_t> arg(out, -7);
    gk::launch_maxpool2d_forward(g, x.data(), y.data(), arg.data(), nullptr);
    expect_equal(y, want_y, "maxpool y");
    expect_equal(arg, want_arg, "maxpool argmax");
    // Backward from the CPU's argmax, so a forward mismatch does not hide a backward one.
    gk::launch_maxpool2d_backward(g, dy.data(), want_arg.data(), dx.data(), nullptr);
    expect_equal(dx, want_dx, "maxpool dx");
  };
  if (all_schedules)
    for_each_schedule(run);
  else
    run();
}

}  // namespace

TEST_CASE("maxpool2d forward and backward match the CPU on awkward geometries", "[kernels]") {
  const PoolGeometry geometries[] = {
      // batch, channels, H, W, kernel, stride
      {1, 1, 2, 2, 2, 2},  {1, 1, 1, 1, 1, 1}, {2, 3, 28, 28, 2, 2}, {1, 5, 7, 7, 2, 2},
      {3, 2, 9, 11, 3, 2}, {2, 3, 8, 5, 3, 1}, {2, 2, 10, 13, 2, 3}, {1, 1, 33, 31, 5, 4},
      {4, 3, 6, 6, 6, 6},  {1, 2, 4, 9, 1, 2}};
  for (const PoolGeometry& g : geometries)
    for (Values kind : {Values::Random, Values::Ties, Values::WithNaN}) check_pool(g, kind, true);
}

TEST_CASE("maxpool2d on a tutorial-sized batch", "[kernels]") {
  check_pool(PoolGeometry{64, 16, 32, 32, 2, 2}, Values::Random, false);
  check_pool(PoolGeometry{37, 32, 14, 14, 3, 2}, Values::Ties, false);
}
