// The per-step table: every schedule's closed form (issue 10) at the steps where it turns, and the
// AdamW bias corrections; PyTorch's schedulers are compared step by step in tests/parity.
#include <catch2/catch.hpp>
#include <cmath>

#include "gputrain/optimizer.hpp"

using namespace gputrain;

namespace {

ScheduleSpec schedule(ScheduleKind kind) {
  ScheduleSpec s;
  s.kind = kind;
  s.base_lr = 0.1;
  s.steps_per_epoch = 10;
  return s;
}

}  // namespace

TEST_CASE("constant, step and multistep schedules", "[optimizer][schedule]") {
  ScheduleSpec c = schedule(ScheduleKind::Constant);
  CHECK(scheduled_lr(c, 0, 100) == 0.1);
  CHECK(scheduled_lr(c, 99, 100) == 0.1);

  ScheduleSpec st = schedule(ScheduleKind::Step);
  st.step_size = 2;
  st.gamma = 0.5;
  CHECK(scheduled_lr(st, 19, 100) == Approx(0.1));    // epoch 1
  CHECK(scheduled_lr(st, 20, 100) == Approx(0.05));   // epoch 2
  CHECK(scheduled_lr(st, 45, 100) == Approx(0.025));  // epoch 4

  ScheduleSpec ms = schedule(ScheduleKind::MultiStep);
  ms.milestones = {1, 3};
  ms.gamma = 0.1;
  CHECK(scheduled_lr(ms, 9, 100) == Approx(0.1));
  CHECK(scheduled_lr(ms, 10, 100) == Approx(0.01));
  CHECK(scheduled_lr(ms, 29, 100) == Approx(0.01));
  CHECK(scheduled_lr(ms, 30, 100) == Approx(0.001));
}

TEST_CASE("warmup and cosine", "[optimizer][schedule]") {
  ScheduleSpec w = schedule(ScheduleKind::Constant);
  w.warmup_epochs = 0.55;  // W = round(5.5) = 6 steps
  w.warmup_start_factor = 0.2;
  CHECK(warmup_steps(w) == 6);
  CHECK(scheduled_lr(w, 0, 100) == Approx(0.02));
  CHECK(scheduled_lr(w, 3, 100) == Approx(0.1 * (0.2 + 0.8 * 3 / 6.0)));
  CHECK(scheduled_lr(w, 6, 100) == Approx(0.1));

  ScheduleSpec cos = schedule(ScheduleKind::Cosine);
  cos.warmup_epochs = 1;  // W = 10
  cos.eta_min = 0.01;
  CHECK(scheduled_lr(cos, 5, 110) == Approx(0.1 * (0.1 + 0.9 * 0.5)));  // warming up, no decay
  CHECK(scheduled_lr(cos, 10, 110) == Approx(0.1));                     // cos(0)
  CHECK(scheduled_lr(cos, 60, 110) == Approx(0.055));                   // half way: (max+min)/2
  CHECK(scheduled_lr(cos, 109, 110) == Approx(0.01 + 0.09 * (1 + std::cos(M_PI * 0.99)) / 2));
}

TEST_CASE("the step table carries the lr and AdamW's bias corrections", "[optimizer][schedule]") {
  OptimizerSpec adamw;
  adamw.kind = OptimizerKind::AdamW;
  adamw.beta1 = 0.9;
  adamw.beta2 = 0.999;
  const ScheduleSpec s = schedule(ScheduleKind::Cosine);
  const std::vector<StepHyper> table = step_table(adamw, s, 30);
  REQUIRE(table.size() == 30);
  for (int64_t i : {0, 1, 17, 29}) {
    CHECK(table[size_t(i)].lr == float(scheduled_lr(s, i, 30)));
    CHECK(table[size_t(i)].bias_correction1 == float(1 - std::pow(0.9, double(i + 1))));
    CHECK(table[size_t(i)].bias_correction2_sqrt ==
          float(std::sqrt(1 - std::pow(0.999, double(i + 1)))));
  }
  const std::vector<StepHyper> sgd = step_table(OptimizerSpec{}, s, 3);
  CHECK(sgd[2].bias_correction1 == 1.0f);
  CHECK(optimizer_state(adamw).size() == 2);
  CHECK(optimizer_state(adamw)[0].checkpoint_prefix == "adam.m.");
  CHECK(optimizer_state(adamw)[1].checkpoint_prefix == "adam.v.");
}
