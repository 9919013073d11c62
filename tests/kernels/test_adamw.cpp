// kernels/adamw.cu under the host emulation vs cpu::adamw_update (with clipping: the gradient
// scaled first, as cpu::clip_grad_norm leaves it).
// The emulation header first, then the kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "adamw.cu"
// clang-format on
#include <algorithm>
#include <cmath>

#include "gputrain/ops.hpp"
#include "gputrain/optimizer.hpp"

namespace gk = gputrain::kernels;
using namespace kernel_test;

TEST_CASE("adamw_step matches cpu::adamw_update step by step from the step table", "[kernels]") {
  struct Setting {
    double lr, wd, beta1, beta2, eps;
    float clip_scale;  // < 0: no GradClip
  };
  const Setting settings[] = {{1e-3, 0.0, 0.9, 0.999, 1e-8, -1.0f},
                              {1e-2, 0.01, 0.9, 0.999, 1e-8, -1.0f},
                              {3e-3, 0.1, 0.8, 0.99, 1e-6, 0.25f}};
  for (const Setting& st : settings)
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(1001), int64_t(100003)})
      for (int misalign : {0, 1}) {
        if (n > 10000 && misalign) continue;
        INFO("lr " << st.lr << ", wd " << st.wd << ", n " << n << ", misaligned " << misalign
                   << ", clip " << st.clip_scale);
        gputrain::OptimizerSpec spec;
        spec.kind = gputrain::OptimizerKind::AdamW;
        spec.beta1 = st.beta1;
        spec.beta2 = st.beta2;
        spec.eps = st.eps;
        spec.weight_decay = float(st.wd);
        gputrain::ScheduleSpec schedule;
        schedule.base_lr = st.lr;
        schedule.kind = gputrain::ScheduleKind::Cosine;
        schedule.steps_per_epoch = 2;
        schedule.warmup_epochs = 1;
        const int steps = 4;
        const auto table = gputrain::step_table(spec, schedule, steps);
        const gk::AdamWConstants constants = gk::make_adamw_constants(spec);
        const size_t m = size_t(n);
        auto run = [&] {
          auto w_want = random_floats(m, 61 + m);
          std::vector<float> m_want(m, 0.0f), v_want(m, 0.0f);
          std::vector<float> w(m + 4), mb(m + 4, 0.0f), vb(m + 4, 0.0f);
          std::copy(w_want.begin(), w_want.end(), w.begin() + misalign);
          gk::StepState state;
          gk::GradClip clip;
          clip.scale = st.clip_scale;
          for (int s = 0; s < steps; ++s) {
            auto g = random_floats(m, 62 + m + size_t(s));
            if (s == 2) g[0] = 0.0f;  // eps region
            std::vector<float> gb(m + 4);
            std::copy(g.begin(), g.end(), gb.begin() + misalign);
            if (st.clip_scale >= 0)
              for (float& x : g) x *= st.clip_scale;
            gputrain::cpu::AdamWParams p;
            p.lr = table[size_t(s)].lr;
            p.beta1 = constants.beta1;
            p.beta2 = constants.beta2;
            p.one_minus_beta1 = constants.one_minus_beta1;
            p.one_minus_beta2 = constants.one_minus_beta2;
            p.eps = constants.eps;
            p.weight_decay = constants.weight_decay;
            p.bias_correction1 = table[size_t(s)].bias_correction1;
            p.bias_correction2_sqrt = table[size_t(s)].bias_correction2_sqrt;
            gputrain::cpu::adamw_update(n, w_want.data(), g.data(), m_want.data(), v_want.data(),
                                        p);
            state.step = s + 1;  // after the step's forward_backward
            gk::launch_adamw_step(n, w.data() + misalign, gb.data() + misalign,
                                  mb.data() + misalign, vb.data() + misalign, constants,
                                  table.data(), int64_t(table.size()), &state,
                                  st.clip_scale >= 0 ? &clip : nullptr, nullptr, nullptr);
          }
          auto slice = [&](const std::vector<float>& b) {
            return std::vector<float>(b.begin() + misalign, b.begin() + misalign + n);
          };
          // The same float expressions in the same order: equal up to fused multiply-adds.
          expect_close(slice(w), w_want, 1e-6, 1e-6, "w");
          expect_close(slice(mb), m_want, 1e-7, 1e-6, "exp_avg");
          expect_close(slice(vb), v_want, 1e-9, 1e-6, "exp_avg_sq");
        };
        if (n < 10000)
          for_each_schedule(run);
        else
          run();
      }
}

TEST_CASE("adamw_step clamps the table index and refuses a missing table", "[kernels]") {
  gputrain::OptimizerSpec spec;
  spec.kind = gputrain::OptimizerKind::AdamW;
  gputrain::ScheduleSpec schedule;
  schedule.base_lr = 0.01;
  const auto table = gputrain::step_table(spec, schedule, 1);
  std::vector<float> w(5, 1.0f), g(5, 0.5f), m(5, 0.0f), v(5, 0.0f);
  gk::StepState state;
  state.step = 99;  // beyond the table: its last entry
  gk::launch_adamw_step(5, w.data(), g.data(), m.data(), v.data(), gk::make_adamw_constants(spec),
                        table.data(), 1, &state, nullptr, nullptr, nullptr);
  CHECK(w[0] < 1.0f);
  CHECK_THROWS_AS(gk::launch_adamw_step(5, w.data(), g.data(), m.data(), v.data(),
                                        gk::make_adamw_constants(spec), nullptr, 0, &state, nullptr,
                                        nullptr, nullptr),
                  gputrain::RuntimeFailure);
}

TEST_CASE("adamw_step with a weight decay mask matches cpu::adamw_update's", "[kernels]") {
  // Exempt elements (mask 0) are not scaled by 1 − lr·wd; the others are.
  gputrain::OptimizerSpec spec;
  spec.kind = gputrain::OptimizerKind::AdamW;
  spec.weight_decay = 0.1f;
  gputrain::ScheduleSpec schedule;
  schedule.base_lr = 0.01;
  const auto table = gputrain::step_table(spec, schedule, 3);
  const gk::AdamWConstants constants = gk::make_adamw_constants(spec);
  for (int misalign : {0, 1}) {
    INFO("misaligned " << misalign);
    const int64_t n = 1001;
    const size_t m = size_t(n);
    std::vector<uint8_t> mask(m + 4);
    for (size_t i = 0; i < mask.size(); ++i) mask[i] = uint8_t((i / 5) % 2);
    const uint8_t* decay = mask.data() + misalign;
    auto run = [&] {
      auto w_want = random_floats(m, 91);
      std::vector<float> m_want(m, 0.0f), v_want(m, 0.0f);
      std::vector<float> w(m + 4), mb(m + 4, 0.0f), vb(m + 4, 0.0f);
      std::copy(w_want.begin(), w_want.end(), w.begin() + misalign);
      gk::StepState state;
      for (int s = 0; s < 3; ++s) {
        const auto g = random_floats(m, 92 + size_t(s));
        std::vector<float> gb(m + 4);
        std::copy(g.begin(), g.end(), gb.begin() + misalign);
        gputrain::cpu::AdamWParams p;
        p.lr = table[size_t(s)].lr;
        p.beta1 = constants.beta1;
        p.beta2 = constants.beta2;
        p.one_minus_beta1 = constants.one_minus_beta1;
        p.one_minus_beta2 = constants.one_minus_beta2;
        p.eps = constants.eps;
        p.weight_decay = constants.weight_decay;
        p.bias_correction1 = table[size_t(s)].bias_correction1;
        p.bias_correction2_sqrt = table[size_t(s)].bias_correction2_sqrt;
        gputrain::cpu::adamw_update(n, w_want.data(), g.data(), m_want.data(), v_want.data(), p,
                                    decay);
        state.step = s + 1;
        gk::launch_adamw_step(n, w.data() + misalign, gb.data() + misalign, mb.data() + misalign,
                              vb.data() + misalign, constants, table.data(), int64_t(table.size()),
                              &state, nullptr, decay, nullptr);
      }
      expect_close(std::vector<float>(w.begin() + misalign, w.begin() + misalign + n), w_want, 1e-6,
                   1e-6, "w");
    };
    for_each_schedule(run);
  }
}
