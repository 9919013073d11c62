// kernels/batchnorm.cu under the host emulation vs cpu::batchnorm2d_forward_train /
// batchnorm2d_forward_eval / batchnorm2d_backward.
//
// Tolerances. The kernels sum each channel's statistics in double in a blocked order the CPU does
// not share; both round the double results to float, so the mean, invstd, dw and db may differ by
// about one float ulp (rtol 2e-6, plus an absolute floor for values near 0 that are sums of
// cancelling terms: 1e-6 × the channel's scale). y and dx are then float expressions of those
// per-channel values: one ulp in invstd moves y by ~|x̂·w|·2^-23 and dx, which subtracts two
// per-channel terms from dy, by a few ulps of |dy| + |x̂·proj| (atol 1e-5 for values of order 1).
// The eval forward has no reduction: equal up to a fused multiply-add (1e-6). Determinism: every
// emulation schedule and grid shape gives the same bits. The emulation header first, then the
// kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "batchnorm.cu"
// clang-format on
#include "gputrain/ops.hpp"

namespace gk = gputrain::kernels;
using namespace kernel_test;

namespace {

struct BnShape {
  int n, c;
  int64_t plane;
};

std::string describe(const BnShape& s) {
  return std::to_string(s.n) + "x" + std::to_string(s.c) + "x" + std::to_string(s.plane);
}

// x with a per-channel offset and scale (so the shift and the variance both matter).
std::vector<float> bn_input(const BnShape& s, uint64_t seed) {
  auto x = random_floats(size_t(s.n) * s.c * s.plane, seed);
  for (int n = 0; n < s.n; ++n)
    for (int c = 0; c < s.c; ++c)
      for (int64_t p = 0; p < s.plane; ++p) {
        float& v = x[(size_t(n) * s.c + c) * s.plane + p];
        v = 3.0f * float(c % 3) - 2.0f + v * (0.5f + 0.25f * float(c % 4));
      }
  return x;
}

struct BnResult {
  std::vector<float> y, save_mean, save_invstd, running_mean, running_var, dx, dw, db;
};

void expect_same_bits(const BnResult& a, const BnResult& b) {
  expect_equal(a.y, b.y, "y (another schedule)");
  expect_equal(a.save_mean, b.save_mean, "save_mean (another schedule)");
  expect_equal(a.save_invstd, b.save_invstd, "save_invstd (another schedule)");
  expect_equal(a.running_mean, b.running_mean, "running_mean (another schedule)");
  expect_equal(a.running_var, b.running_var, "running_var (another schedule)");
  expect_equal(a.dx, b.dx, "dx (another schedule)");
  expect_equal(a.dw, b.dw, "dw (another schedule)");
  expect_equal(a.db, b.db, "db (another schedule)");
}

void check_batchnorm(const BnShape& s, bool all_schedules) {
  INFO("shape " << describe(s));
  const size_t total = size_t(s.n) * s.c * s.plane, C = size_t(s.c);
  const auto x = bn_input(s, 101 + total);
  const auto dy = random_floats(total, 102 + total);
  const auto w = random_floats(C, 103 + C, 0.5f, 1.5f);
  const auto b = random_floats(C, 104 + C);
  const auto rm0 = random_floats(C, 105 + C, -0.5f, 0.5f);
  const auto rv0 = random_floats(C, 106 + C, 0.5f, 2.0f);
  const float eps = 1e-5f, momentum = 0.1f;

  BnResult want{std::vector<float>(total), std::vector<float>(C), std::vector<float>(C), rm0, rv0,
                std::vector<float>(total), std::vector<float>(C), std::vector<float>(C)};
  gputrain::cpu::batchnorm2d_forward_train(
      s.n, s.c, s.plane, x.data(), w.data(), b.data(), eps, momentum, want.running_mean.data(),
      want.running_var.data(), want.y.data(), want.save_mean.data(), want.save_invstd.data());
  gputrain::cpu::batchnorm2d_backward(s.n, s.c, s.plane, x.data(), w.data(), want.save_mean.data(),
                                      want.save_invstd.data(), dy.data(), want.dx.data(),
                                      want.dw.data(), want.db.data());
  std::vector<float> want_eval(total);
  gputrain::cpu::batchnorm2d_forward_eval(s.n, s.c, s.plane, x.data(), w.data(), b.data(),
                                          rm0.data(), rv0.data(), eps, want_eval.data());
  // Channel scales for the absolute floors: Σ|dy| for db, Σ|dy·x̂| for dw.
  double dy_scale = 0, dyx_scale = 0;
  for (size_t i = 0; i < total; ++i) {
    const size_t c = (i / size_t(s.plane)) % C;
    dy_scale = std::max(dy_scale, std::fabs(double(dy[i])));
    dyx_scale += std::fabs(double(dy[i]) * (x[i] - want.save_mean[c]) * want.save_invstd[c]);
  }

  bool have_first = false;
  BnResult first;
  auto run = [&] {
    BnResult got{poisoned(total), poisoned(C), poisoned(C), rm0, rv0,
                 poisoned(total), poisoned(C), poisoned(C)};
    std::vector<unsigned char> workspace(gk::batchnorm_workspace_bytes(s.n, s.c, s.plane), 0xFF);
    gk::launch_batchnorm2d_forward_train(s.n, s.c, s.plane, x.data(), w.data(), b.data(), eps,
                                         momentum, got.running_mean.data(), got.running_var.data(),
                                         got.y.data(), got.save_mean.data(), got.save_invstd.data(),
                                         workspace.data(), workspace.size(), nullptr);
    expect_close(got.save_mean, want.save_mean, 1e-6, 2e-6, "save_mean");
    expect_close(got.save_invstd, want.save_invstd, 0, 2e-6, "save_invstd");
    expect_close(got.running_mean, want.running_mean, 1e-6, 2e-6, "running_mean");
    expect_close(got.running_var, want.running_var, 0, 2e-6, "running_var");
    expect_close(got.y, want.y, 1e-5, 1e-5, "y");
    // Backward from the CPU's saved statistics, so a forward difference does not hide one here.
    std::fill(workspace.begin(), workspace.end(), 0xFF);
    gk::launch_batchnorm2d_backward(s.n, s.c, s.plane, x.data(), w.data(), want.save_mean.data(),
                                    want.save_invstd.data(), dy.data(), got.dx.data(),
                                    got.dw.data(), got.db.data(), workspace.data(),
                                    workspace.size(), nullptr);
    expect_close(got.db, want.db, 1e-6 * dy_scale * std::sqrt(double(total / C)), 2e-6, "db");
    expect_close(got.dw, want.dw, 1e-6 * dyx_scale / double(C), 2e-6, "dw");
    expect_close(got.dx, want.dx, 1e-5, 1e-5, "dx");
    std::vector<float> eval = poisoned(total);
    gk::launch_batchnorm2d_forward_eval(s.n, s.c, s.plane, x.data(), w.data(), b.data(), rm0.data(),
                                        rv0.data(), eps, eval.data(), nullptr);
    expect_close(eval, want_eval, 1e-6, 1e-6, "eval y");  // a fused multiply-add at most
    if (!have_first) {
      first = got;
      have_first = true;
    } else {
      expect_same_bits(got, first);
    }
  };
  if (all_schedules)
    for_each_schedule(run);
  else
    run();
}

}  // namespace

TEST_CASE("batchnorm2d forward (train, eval) and backward match the CPU", "[kernels]") {
  const BnShape shapes[] = {
      // n, c, plane
      // (12 × 784: 2 stage-1 blocks per channel; 20 × 1000: 3, the last one short; 70 channels:
      // more than one stage-2 block; 8193: a plane larger than a stage-1 block's share)
      {2, 1, 1},    {1, 3, 2},  {2, 3, 1},     {4, 5, 49},  {3, 2, 33},
      {12, 4, 784}, {5, 70, 9}, {20, 3, 1000}, {1, 1, 8193}};
  for (const BnShape& s : shapes) check_batchnorm(s, true);
}

TEST_CASE("batchnorm2d on a tutorial-sized batch", "[kernels]") {
  check_batchnorm(BnShape{37, 16, 16 * 16}, false);
}

TEST_CASE("batchnorm2d backward without dx, and bad arguments", "[kernels]") {
  const BnShape s{3, 4, 5};
  const size_t total = size_t(s.n) * s.c * s.plane;
  const auto x = bn_input(s, 7), dy = random_floats(total, 8);
  const std::vector<float> w(4, 1.0f), mean(4, 0.5f), invstd(4, 2.0f);
  std::vector<float> dw(4), db(4), want_dw(4), want_db(4), want_dx(total);
  gputrain::cpu::batchnorm2d_backward(s.n, s.c, s.plane, x.data(), w.data(), mean.data(),
                                      invstd.data(), dy.data(), want_dx.data(), want_dw.data(),
                                      want_db.data());
  std::vector<unsigned char> workspace(gk::batchnorm_workspace_bytes(s.n, s.c, s.plane));
  gk::launch_batchnorm2d_backward(s.n, s.c, s.plane, x.data(), w.data(), mean.data(), invstd.data(),
                                  dy.data(), nullptr, dw.data(), db.data(), workspace.data(),
                                  workspace.size(), nullptr);
  expect_close(dw, want_dw, 1e-5, 2e-6, "dw");
  expect_close(db, want_db, 1e-5, 2e-6, "db");
  CHECK_THROWS_AS(
      gk::launch_batchnorm2d_backward(s.n, s.c, s.plane, x.data(), w.data(), mean.data(),
                                      invstd.data(), dy.data(), nullptr, dw.data(), db.data(),
                                      workspace.data(), workspace.size() - 1, nullptr),
      gputrain::RuntimeFailure);
  CHECK_THROWS_AS(gk::launch_batchnorm2d_forward_eval(-1, 1, 1, nullptr, nullptr, nullptr, nullptr,
                                                      nullptr, 1e-5f, nullptr, nullptr),
                  gputrain::RuntimeFailure);
}
