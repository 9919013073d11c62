// kernels/grad_norm.cu under the host emulation vs cpu::clip_grad_norm.
// The emulation header first, then the kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "grad_norm.cu"
// clang-format on
#include <cmath>
#include <cstring>

#include "gputrain/ops.hpp"

namespace gk = gputrain::kernels;
using namespace kernel_test;

TEST_CASE("grad_norm and scale_gradients match cpu::clip_grad_norm", "[kernels]") {
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(5), int64_t(4099), int64_t(300001)})
    for (float fraction : {0.3f, 2.0f}) {  // clipping active / inactive
      INFO("n " << n << ", max_norm = " << fraction << " x the norm");
      const size_t m = size_t(n);
      const auto g0 = random_floats(m, 71 + m);
      double sum_sq = 0;
      for (float x : g0) sum_sq += double(x) * x;
      const float max_norm = n == 0 ? 1.0f : float(std::sqrt(sum_sq)) * fraction;
      auto want = g0;
      const double want_norm = gputrain::cpu::clip_grad_norm(n, want.data(), max_norm);
      auto run = [&] {
        auto g = g0;
        std::vector<unsigned char> workspace(gk::grad_norm_workspace_bytes(), 0xFF);
        gk::GradClip clip{-1.0f, -1.0f};
        double norm_sum = 0.5;  // accumulates
        gk::launch_grad_norm(n, g.data(), max_norm, &clip, &norm_sum, workspace.data(),
                             workspace.size(), nullptr);
        CHECK(clip.norm == Approx(want_norm).epsilon(1e-6));
        CHECK(norm_sum - 0.5 == Approx(want_norm).epsilon(1e-12).margin(1e-12));
        CHECK(clip.scale == Approx(std::min(1.0, max_norm / (want_norm + 1e-6))).epsilon(1e-6));
        if (fraction > 1) CHECK(clip.scale == 1.0f);
        gk::launch_scale_gradients(n, g.data(), &clip, nullptr);
        expect_close(g, want, 1e-7, 1e-6, "clipped gradients");
        return norm_sum;
      };
      if (n < 10000) {
        for_each_schedule([&] { run(); });
      } else {
        // Deterministic: the same bits under another thread schedule.
        const double a = run();
        emu::set_schedule(emu::Schedule::Shuffled, 9);
        const double b = run();
        emu::set_schedule(emu::Schedule::Forward);
        CHECK(std::memcmp(&a, &b, sizeof a) == 0);
      }
    }
}

TEST_CASE("grad_norm refuses a small workspace and a non-positive max_norm", "[kernels]") {
  std::vector<float> g(8, 1.0f);
  std::vector<unsigned char> workspace(gk::grad_norm_workspace_bytes());
  gk::GradClip clip;
  CHECK_THROWS_AS(gk::launch_grad_norm(8, g.data(), 1.0f, &clip, nullptr, workspace.data(),
                                       workspace.size() - 1, nullptr),
                  gputrain::RuntimeFailure);
  CHECK_THROWS_AS(gk::launch_grad_norm(8, g.data(), 0.0f, &clip, nullptr, workspace.data(),
                                       workspace.size(), nullptr),
                  gputrain::RuntimeFailure);
}
