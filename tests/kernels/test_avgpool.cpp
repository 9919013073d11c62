// kernels/avgpool.cu under the host emulation vs cpu::avgpool2d_* and cpu::global_avgpool_*:
// bitwise, since each output is one thread's sum in the CPU's order with the same divisor.
// The emulation header first, then the kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "avgpool.cu"
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

void check_avgpool(const PoolGeometry& g, bool all_schedules) {
  const size_t in = size_t(g.batch) * g.channels * g.in_height * g.in_width;
  const size_t out = size_t(g.batch) * g.channels * g.out_height() * g.out_width();
  INFO(describe(g));
  const auto x = random_floats(in, 41 + in);
  const auto dy = random_floats(out, 42 + out);
  std::vector<float> want_y(out), want_dx(in);
  gputrain::cpu::avgpool2d_forward(g, x.data(), want_y.data());
  gputrain::cpu::avgpool2d_backward(g, dy.data(), want_dx.data());
  auto run = [&] {
    std::vector<float> y = poisoned(out), dx = poisoned(in);
    gk::launch_avgpool2d_forward(g, x.data(), y.data(), nullptr);
    expect_equal(y, want_y, "avgpool y");
    gk::launch_avgpool2d_backward(g, dy.data(), dx.data(), nullptr);
    expect_equal(dx, want_dx, "avgpool dx");
  };
  if (all_schedules)
    for_each_schedule(run);
  else
    run();
}

void check_global(int n, int c, int64_t plane, bool all_schedules) {
  INFO(n << "x" << c << "x" << plane);
  const size_t in = size_t(n) * c * size_t(plane), out = size_t(n) * c;
  const auto x = random_floats(in, 43 + in, -1.0f, 3.0f);
  const auto dy = random_floats(out, 44 + out);
  std::vector<float> want_y(out), want_dx(in);
  gputrain::cpu::global_avgpool_forward(n, c, plane, x.data(), want_y.data());
  gputrain::cpu::global_avgpool_backward(n, c, plane, dy.data(), want_dx.data());
  auto run = [&] {
    std::vector<float> y = poisoned(out), dx = poisoned(in);
    gk::launch_global_avgpool_forward(n, c, plane, x.data(), y.data(), nullptr);
    expect_equal(y, want_y, "global avgpool y");
    gk::launch_global_avgpool_backward(n, c, plane, dy.data(), dx.data(), nullptr);
    expect_equal(dx, want_dx, "global avgpool dx");
  };
  if (all_schedules)
    for_each_schedule(run);
  else
    run();
}

}  // namespace

TEST_CASE("avgpool2d forward and backward match the CPU bitwise on awkward geometries",
          "[kernels]") {
  const PoolGeometry geometries[] = {
      // batch, channels, H, W, kernel, stride
      {1, 1, 2, 2, 2, 2},  {1, 1, 1, 1, 1, 1}, {2, 3, 28, 28, 2, 2}, {1, 5, 7, 7, 2, 2},
      {3, 2, 9, 11, 3, 2}, {2, 3, 8, 5, 3, 1}, {2, 2, 10, 13, 2, 3}, {1, 1, 33, 31, 5, 4},
      {4, 3, 6, 6, 6, 6},  {1, 2, 4, 9, 1, 2}};
  for (const PoolGeometry& g : geometries) check_avgpool(g, true);
  check_avgpool(PoolGeometry{64, 16, 32, 32, 2, 2}, false);
}

TEST_CASE("global_avgpool forward and backward match the CPU bitwise", "[kernels]") {
  check_global(1, 1, 1, true);
  check_global(2, 3, 49, true);
  check_global(3, 70, 7, true);
  check_global(5, 2, 1025, true);
  check_global(64, 64, 8 * 8, false);
}

TEST_CASE("avgpool kernels refuse bad shapes", "[kernels]") {
  CHECK_THROWS_AS(
      gk::launch_avgpool2d_forward(PoolGeometry{1, 1, 2, 2, 3, 1}, nullptr, nullptr, nullptr),
      gputrain::RuntimeFailure);
  CHECK_THROWS_AS(gk::launch_global_avgpool_forward(1, 1, 0, nullptr, nullptr, nullptr),
                  gputrain::RuntimeFailure);
}
