// kernels/bias_act.cu under the host emulation vs the CPU reference: bias + ReLU, ReLU forward and
// backward, bias gradient (plain and fused with the ReLU backward).
// The emulation header first, then the kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "bias_act.cu"
// clang-format on
#include "gputrain/ops.hpp"

namespace gk = gputrain::kernels;
using namespace kernel_test;

namespace {

struct Shape {
  int64_t batch;
  int channels;
  int64_t plane;
};

// y + b[c] in float, then cpu::relu_forward: the meaning of launch_bias_act.
std::vector<float> reference_bias_act(const std::vector<float>& y, const std::vector<float>& b,
                                      const Shape& s, bool relu) {
  std::vector<float> out(y.size());
  for (int64_t n = 0; n < s.batch; ++n)
    for (int c = 0; c < s.channels; ++c)
      for (int64_t p = 0; p < s.plane; ++p) {
        const size_t i = size_t((n * s.channels + c) * s.plane + p);
        out[i] = y[i] + b[size_t(c)];
      }
  if (relu) gputrain::cpu::relu_forward(int64_t(out.size()), out.data(), out.data());
  return out;
}

// Σ_{n,p} g[n,c,p] in double.
std::vector<double> reference_bias_grad(const std::vector<float>& g, const Shape& s) {
  std::vector<double> db(size_t(s.channels), 0.0);
  for (int64_t n = 0; n < s.batch; ++n)
    for (int c = 0; c < s.channels; ++c)
      for (int64_t p = 0; p < s.plane; ++p)
        db[size_t(c)] += double(g[size_t((n * s.channels + c) * s.plane + p)]);
  return db;
}

std::string describe(const Shape& s) {
  return "[" + std::to_string(s.batch) + ", " + std::to_string(s.channels) + ", " +
         std::to_string(s.plane) + "]";
}

}  // namespace

TEST_CASE("bias_act matches y + b then relu_forward", "[kernels]") {
  const Shape shapes[] = {{1, 1, 1},  {1, 3, 5},   {2, 7, 13}, {3, 16, 1024}, {5, 256, 1},
                          {4, 10, 1}, {2, 5, 784}, {3, 6, 36}, {64, 16, 1024}};
  for (const Shape& s : shapes)
    for (bool relu : {false, true})
      for (int misalign : {0, 1}) {  // 1: y starts one float past a 16-byte boundary (scalar path)
        const size_t n = size_t(s.batch * s.channels * s.plane);
        if (n > 100000 && misalign) continue;  // the scalar path is covered by the smaller shapes
        INFO("shape " << describe(s) << ", relu " << relu << ", misaligned " << misalign);
        const auto y0 = random_floats(n, 1 + n);
        const auto b = random_floats(size_t(s.channels), 2 + n);
        const auto want = reference_bias_act(y0, b, s, relu);
        auto run = [&] {
          std::vector<float> buffer(n + 4);
          std::copy(y0.begin(), y0.end(), buffer.begin() + misalign);
          gk::launch_bias_act(buffer.data() + misalign, b.data(), s.batch, s.channels, s.plane,
                              relu, nullptr);
          expect_equal(std::vector<float>(buffer.begin() + misalign,
                                          buffer.begin() + misalign + std::ptrdiff_t(n)),
                       want, "bias_act");
        };
        if (n < 20000)
          for_each_schedule(run);
        else
          run();
      }
}

TEST_CASE("relu_forward and relu_backward match the CPU also in place", "[kernels]") {
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(4), int64_t(1027), int64_t(100003)})
    for (int misalign : {0, 1})
      for (bool in_place : {false, true}) {
        INFO("n " << n << ", misaligned " << misalign << ", in place " << in_place);
        const auto x = random_floats(size_t(n), 11 + size_t(n));
        const auto dy = random_floats(size_t(n), 12 + size_t(n));
        std::vector<float> want_y(static_cast<size_t>(n)), want_dx(static_cast<size_t>(n));
        gputrain::cpu::relu_forward(n, x.data(), want_y.data());
        gputrain::cpu::relu_backward(n, want_y.data(), dy.data(), want_dx.data());
        auto run = [&] {
          // Forward.
          std::vector<float> in(size_t(n) + 4), out(size_t(n) + 4, NAN);
          std::copy(x.begin(), x.end(), in.begin() + misalign);
          float* y = in_place ? in.data() + misalign : out.data() + misalign;
          gk::launch_relu_forward(in.data() + misalign, y, n, nullptr);
          expect_equal(std::vector<float>(y, y + n), want_y, "relu_forward");
          // Backward: dx from (y, dy).
          std::vector<float> yb(size_t(n) + 4), g(size_t(n) + 4), dx(size_t(n) + 4, NAN);
          std::copy(want_y.begin(), want_y.end(), yb.begin() + misalign);
          std::copy(dy.begin(), dy.end(), g.begin() + misalign);
          float* d = in_place ? g.data() + misalign : dx.data() + misalign;
          gk::launch_relu_backward(yb.data() + misalign, g.data() + misalign, d, n, nullptr);
          expect_equal(std::vector<float>(d, d + n), want_dx, "relu_backward");
        };
        if (n < 10000)
          for_each_schedule(run);
        else
          run();
      }
  CHECK_NOTHROW(gk::launch_relu_forward(nullptr, nullptr, 0, nullptr));
}

TEST_CASE("bias_grad sums over batch and plane optionally through the ReLU mask", "[kernels]") {
  const Shape shapes[] = {// columns path (plane < 64), linear layers (plane 1)
                          {1, 1, 1},
                          {5, 10, 1},
                          {70, 256, 1},
                          {33, 7, 9},
                          {2, 3, 63},
                          {512, 10, 1},
                          // planes path
                          {1, 1, 64},
                          {3, 5, 100},
                          {3, 5, 99},
                          {600, 3, 64},
                          {2, 2, 10007},
                          {64, 16, 1024}};
  for (const Shape& s : shapes)
    for (bool relu : {false, true})
      for (bool in_place : {false, true}) {
        if (in_place && !relu) continue;
        if (s.batch * s.channels * s.plane > 100000 && in_place) continue;
        const size_t n = size_t(s.batch * s.channels * s.plane);
        INFO("shape " << describe(s) << ", relu " << relu << ", in place " << in_place);
        const auto dy = random_floats(n, 21 + n);
        auto y = random_floats(n, 22 + n);
        std::vector<float> masked(n);
        gputrain::cpu::relu_backward(int64_t(n), y.data(), dy.data(), masked.data());
        const auto want = reference_bias_grad(relu ? masked : dy, s);
        // Float sums of `count` values in [-1, 1] in some fixed order.
        const double count = double(s.batch * s.plane);
        const double atol = 2e-6 * std::sqrt(count) + 1e-6;
        auto run = [&] {
          std::vector<float> g = dy, dx = poisoned(n), db = poisoned(size_t(s.channels));
          std::vector<unsigned char> workspace(
              gk::bias_grad_workspace_bytes(s.batch, s.channels, s.plane), 0xFF);
          float* out = in_place ? g.data() : dx.data();
          gk::launch_bias_grad(g.data(), relu ? y.data() : nullptr, relu ? out : nullptr, db.data(),
                               s.batch, s.channels, s.plane, workspace.data(), workspace.size(),
                               nullptr);
          expect_close(db, want, atol, 1e-5, "db");
          if (relu) expect_equal(std::vector<float>(out, out + n), masked, "dx");
        };
        if (n < 50000)
          for_each_schedule(run);
        else
          run();
      }
}

TEST_CASE("bias_grad is deterministic and checks its workspace", "[kernels]") {
  const Shape s{64, 16, 1024};
  const size_t n = size_t(s.batch * s.channels * s.plane);
  const auto dy = random_floats(n, 5);
  std::vector<unsigned char> workspace(gk::bias_grad_workspace_bytes(s.batch, s.channels, s.plane));
  std::vector<float> a(16), b(16);
  gk::launch_bias_grad(dy.data(), nullptr, nullptr, a.data(), s.batch, s.channels, s.plane,
                       workspace.data(), workspace.size(), nullptr);
  emu::set_schedule(emu::Schedule::Shuffled, 99);
  gk::launch_bias_grad(dy.data(), nullptr, nullptr, b.data(), s.batch, s.channels, s.plane,
                       workspace.data(), workspace.size(), nullptr);
  emu::set_schedule(emu::Schedule::Forward);
  expect_equal(a, b, "two runs");
  CHECK_THROWS_AS(gk::launch_bias_grad(dy.data(), nullptr, nullptr, a.data(), s.batch, s.channels,
                                       s.plane, workspace.data(), workspace.size() - 4, nullptr),
                  gputrain::RuntimeFailure);
  // No samples: db = 0.
  std::vector<float> db = poisoned(3);
  gk::launch_bias_grad(dy.data(), nullptr, nullptr, db.data(), 0, 3, 100, workspace.data(),
                       workspace.size(), nullptr);
  expect_equal(db, std::vector<float>(3, 0.0f), "db of an empty batch");
}
