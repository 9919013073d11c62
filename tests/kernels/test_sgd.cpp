// kernels/sgd.cu under the host emulation vs cpu::sgd_update.
// The emulation header first, then the kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "sgd.cu"
// clang-format on
#include <algorithm>

#include "gputrain/ops.hpp"

namespace gk = gputrain::kernels;
using gputrain::cpu::SgdParams;
using namespace kernel_test;

TEST_CASE("sgd_update matches torch.optim.SGD's CPU version over several steps", "[kernels]") {
  const SgdParams settings[] = {{0.1f, 0.0f, 0.0f, false},
                                {0.05f, 0.0f, 5e-4f, false},
                                {0.01f, 0.9f, 0.0f, false},
                                {0.02f, 0.9f, 1e-3f, false},
                                {0.03f, 0.8f, 1e-2f, true}};
  for (const SgdParams& p : settings)
    for (int64_t n : {int64_t(1), int64_t(3), int64_t(4), int64_t(1001), int64_t(262147)})
      for (int misalign : {0, 1})
        for (bool device_hyper : {false, true}) {
          // The large size (many blocks, a grid-stride loop) once per setting: aligned, by pointer.
          if (n > 10000 && (misalign || !device_hyper)) continue;
          INFO("lr " << p.lr << ", momentum " << p.momentum << ", wd " << p.weight_decay
                     << ", nesterov " << p.nesterov << ", n " << n << ", misaligned " << misalign
                     << ", hyper in device memory " << device_hyper);
          const size_t m = size_t(n);
          auto run = [&] {
            auto w_want = random_floats(m, 51 + m);
            std::vector<float> v_want(m, 0.0f);
            std::vector<float> w(m + 4), v(m + 4, 0.0f);
            std::copy(w_want.begin(), w_want.end(), w.begin() + misalign);
            if (p.momentum == 0.0f) std::fill(v.begin(), v.end(), NAN);  // must stay untouched
            const gk::SgdHyper hyper = gk::make_sgd_hyper(p);
            for (int step = 0; step < 3; ++step) {
              const auto g = random_floats(m, 52 + m + size_t(step));
              std::vector<float> gb(m + 4);
              std::copy(g.begin(), g.end(), gb.begin() + misalign);
              gputrain::cpu::sgd_update(n, w_want.data(), g.data(), v_want.data(), p);
              if (device_hyper)
                gk::launch_sgd_update(n, w.data() + misalign, gb.data() + misalign,
                                      v.data() + misalign, &hyper, nullptr);
              else
                gk::launch_sgd_update(n, w.data() + misalign, gb.data() + misalign,
                                      v.data() + misalign, p, nullptr);
            }
            expect_close(std::vector<float>(w.begin() + misalign, w.begin() + misalign + n), w_want,
                         1e-6, 1e-6, "w");
            if (p.momentum != 0.0f)
              expect_close(std::vector<float>(v.begin() + misalign, v.begin() + misalign + n),
                           v_want, 1e-6, 1e-6, "v");
            else
              CHECK(std::all_of(v.begin(), v.end(), [](float x) { return std::isnan(x); }));
          };
          if (n < 10000)
            for_each_schedule(run);
          else
            run();
        }
}

TEST_CASE("sgd_update reads a new lr from device memory and takes no v without momentum",
          "[kernels]") {
  const int64_t n = 37;
  auto w = random_floats(size_t(n), 1), g = random_floats(size_t(n), 2);
  auto w_want = w;
  std::vector<float> v(size_t(n), 0.0f), v_want(size_t(n), 0.0f);
  gk::SgdHyper hyper = gk::make_sgd_hyper(SgdParams{0.1f, 0.5f, 0.0f, false});
  gk::launch_sgd_update(n, w.data(), g.data(), v.data(), &hyper, nullptr);
  hyper.lr = 0.01f;  // as the engine would between graph replays
  gk::launch_sgd_update(n, w.data(), g.data(), v.data(), &hyper, nullptr);
  gputrain::cpu::sgd_update(n, w_want.data(), g.data(), v_want.data(),
                            SgdParams{0.1f, 0.5f, 0.0f, false});
  gputrain::cpu::sgd_update(n, w_want.data(), g.data(), v_want.data(),
                            SgdParams{0.01f, 0.5f, 0.0f, false});
  expect_close(w, w_want, 1e-6, 1e-6, "w");

  auto w2 = w, w2_want = w;
  gk::launch_sgd_update(n, w2.data(), g.data(), nullptr, SgdParams{0.1f, 0.0f, 0.0f, false},
                        nullptr);
  gputrain::cpu::sgd_update(n, w2_want.data(), g.data(), nullptr,
                            SgdParams{0.1f, 0.0f, 0.0f, false});
  expect_close(w2, w2_want, 1e-6, 1e-6, "w without momentum buffer");
  CHECK_THROWS_AS(gk::launch_sgd_update(n, w.data(), g.data(), nullptr, &hyper, nullptr),
                  gputrain::RuntimeFailure);
}

TEST_CASE("sgd_step reads each step's lr from the step table by the device step count",
          "[kernels]") {
  const int64_t n = 45;  // not a multiple of 4: float4 body and a scalar tail
  auto w = random_floats(size_t(n), 3), g = random_floats(size_t(n), 4);
  auto w_want = w;
  std::vector<float> v(size_t(n), 0.0f), v_want(size_t(n), 0.0f);
  const std::vector<gputrain::StepHyper> table = {{0.1f, 1, 1}, {0.05f, 1, 1}, {0.02f, 1, 1}};
  const SgdParams constants{0.0f, 0.9f, 1e-3f, true};
  gk::StepState state;
  state.step = 1;  // resumed at global step 1
  for (int step = 1; step < 5; ++step) {
    gk::launch_advance_step(&state, 8, nullptr);  // forward_backward's last node
    gk::launch_sgd_step(n, w.data(), g.data(), v.data(), gk::make_sgd_hyper(constants),
                        table.data(), int64_t(table.size()), &state, nullptr, nullptr);
    SgdParams p = constants;
    p.lr = table[size_t(std::min(step, 2))].lr;  // past the end: the last entry
    gputrain::cpu::sgd_update(n, w_want.data(), g.data(), v_want.data(), p);
  }
  CHECK(state.step == 5);
  expect_close(w, w_want, 1e-6, 1e-6, "w");
  expect_close(v, v_want, 1e-6, 1e-6, "v");
  CHECK_THROWS_AS(
      gk::launch_sgd_step(n, w.data(), g.data(), v.data(), gk::make_sgd_hyper(constants), nullptr,
                          0, &state, nullptr, nullptr),
      gputrain::RuntimeFailure);
}

TEST_CASE("sgd_step with a weight decay mask matches cpu::sgd_update's", "[kernels]") {
  // Exempt elements (mask 0: biases, normalization parameters) get g' = g; the others g + wd·w.
  for (bool nesterov : {false, true})
    for (float momentum : {0.0f, 0.9f})
      for (int misalign : {0, 1}) {
        INFO("momentum " << momentum << ", nesterov " << nesterov << ", misaligned " << misalign);
        const int64_t n = 1003;
        const size_t m = size_t(n);
        std::vector<uint8_t> mask(m + 4);
        for (size_t i = 0; i < mask.size(); ++i) mask[i] = uint8_t((i / 7) % 3 != 0);
        const uint8_t* decay = mask.data() + misalign;
        const SgdParams p{0.05f, momentum, 0.1f, nesterov};
        const std::vector<gputrain::StepHyper> table = {{p.lr, 1, 1}};
        auto run = [&] {
          auto w_want = random_floats(m, 81), v_want = std::vector<float>(m, 0.0f);
          std::vector<float> w(m + 4), v(m + 4, 0.0f);
          std::copy(w_want.begin(), w_want.end(), w.begin() + misalign);
          gk::StepState state;
          for (int step = 0; step < 3; ++step) {
            const auto g = random_floats(m, 82 + size_t(step));
            std::vector<float> gb(m + 4);
            std::copy(g.begin(), g.end(), gb.begin() + misalign);
            gputrain::cpu::sgd_update(n, w_want.data(), g.data(), v_want.data(), p, decay);
            state.step = step + 1;
            gk::launch_sgd_step(n, w.data() + misalign, gb.data() + misalign,
                                momentum != 0.0f ? v.data() + misalign : nullptr,
                                gk::make_sgd_hyper(p), table.data(), 1, &state, decay, nullptr);
          }
          expect_close(std::vector<float>(w.begin() + misalign, w.begin() + misalign + n), w_want,
                       1e-6, 1e-6, "w");
          if (momentum != 0.0f)
            expect_close(std::vector<float>(v.begin() + misalign, v.begin() + misalign + n), v_want,
                         1e-6, 1e-6, "v");
        };
        for_each_schedule(run);
      }
}
