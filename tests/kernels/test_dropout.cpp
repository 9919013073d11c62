// kernels/dropout.cu under the host emulation vs cpu::dropout_forward / dropout_backward: the
// masks and outputs must be BITWISE equal (the same units dropped on CPU and GPU), for several
// seeds, epochs, layers, rates, batch sizes, positions in the order and partial last batches.
// The emulation header first, then the kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "dropout.cu"
// clang-format on
#include <numeric>

#include "gputrain/ops.hpp"

namespace gk = gputrain::kernels;
using namespace kernel_test;

namespace {

// A shuffled order of `samples` training-set indices.
std::vector<int32_t> shuffled_order(int samples, uint64_t seed) {
  std::vector<int32_t> order(static_cast<size_t>(samples));
  std::iota(order.begin(), order.end(), 0);
  gputrain::Rng rng(seed);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  return order;
}

struct Case {
  uint64_t seed;
  int64_t epoch;
  int layer;
  float p;
  int batch;           // planned batch size: the order is walked in batches of this size
  int64_t per_sample;  // units per sample
};

// Every batch of one epoch (the last one partial when batch does not divide the order), each
// compared with the CPU bitwise: y, mask, and the backward's dx (in place too).
void check_epoch(const Case& k, bool all_schedules) {
  constexpr int kSamples = 23;
  INFO("seed " << k.seed << ", epoch " << k.epoch << ", layer " << k.layer << ", p " << k.p
               << ", batch " << k.batch << ", per sample " << k.per_sample);
  const auto order = shuffled_order(kSamples, k.seed + 17);
  for (int first = 0; first < kSamples; first += k.batch) {
    const int n = std::min(k.batch, kSamples - first);
    const int64_t count = n * k.per_sample;
    const size_t units = static_cast<size_t>(count);
    INFO("batch at " << first << " of " << n);
    const auto x = random_floats(units, 200 + first);
    const auto dy = random_floats(units, 300 + first);
    std::vector<float> want_y(units), want_dx(units);
    std::vector<uint8_t> want_mask(units);
    gputrain::cpu::dropout_forward(count, k.per_sample, order.data() + first, k.seed, k.epoch,
                                   k.layer, k.p, x.data(), want_y.data(), want_mask.data());
    gputrain::cpu::dropout_backward(count, k.p, want_mask.data(), dy.data(), want_dx.data());
    // The device step state: the batch's position in the order and the epoch (a step count that
    // must not matter).
    const gk::StepState state{first, 1000 + first, k.epoch};
    auto run = [&] {
      std::vector<float> y = poisoned(units), dx = poisoned(units);
      std::vector<uint8_t> mask(units, 0x55);
      gk::launch_dropout_forward(count, k.per_sample, order.data(), &state, k.seed, k.layer, k.p,
                                 x.data(), y.data(), mask.data(), nullptr);
      expect_equal(mask, want_mask, "dropout mask");
      expect_equal(y, want_y, "dropout y");
      gk::launch_dropout_backward(count, k.p, want_mask.data(), dy.data(), dx.data(), nullptr);
      expect_equal(dx, want_dx, "dropout dx");
      // In place, as the engine runs both.
      auto inplace = x;
      gk::launch_dropout_forward(count, k.per_sample, order.data(), &state, k.seed, k.layer, k.p,
                                 inplace.data(), inplace.data(), mask.data(), nullptr);
      expect_equal(inplace, want_y, "dropout y in place");
      inplace = dy;
      gk::launch_dropout_backward(count, k.p, want_mask.data(), inplace.data(), inplace.data(),
                                  nullptr);
      expect_equal(inplace, want_dx, "dropout dx in place");
    };
    if (all_schedules)
      for_each_schedule(run);
    else
      run();
  }
}

}  // namespace

TEST_CASE("dropout masks and outputs equal the CPU's bitwise", "[kernels]") {
  const Case cases[] = {
      // seed, epoch, layer, p, batch, per_sample
      {1, 0, 3, 0.5f, 8, 37},       {1, 1, 3, 0.5f, 8, 37},   {1, 1, 4, 0.5f, 5, 37},
      {42, 7, 0, 0.1f, 23, 1},      {42, 7, 0, 0.1f, 1, 130}, {9, 2, 11, 0.9f, 6, 256},
      {1234567, 3, 2, 0.25f, 4, 3}, {5, 0, 1, 0.0f, 7, 10},   {77, 12, 5, 0.3f, 10, 4097}};
  for (const Case& k : cases) check_epoch(k, k.per_sample < 1000);
}

TEST_CASE("dropout: the same sample gets the same mask whatever the batch size or position",
          "[kernels]") {
  // Sample 5 at the head of a batch of 1 and in the middle of a batch of 4.
  const int64_t per = 50;
  const std::vector<int32_t> order = {9, 2, 5, 1};
  const auto x = random_floats(size_t(4 * per), 3, 0.5f, 1.0f);  // no zeros: y == 0 iff dropped
  std::vector<float> y4(static_cast<size_t>(4 * per)), y1(static_cast<size_t>(per));
  std::vector<uint8_t> m4(static_cast<size_t>(4 * per)), m1(static_cast<size_t>(per));
  const gk::StepState whole{0, 0, 3}, alone{2, 0, 3};
  gk::launch_dropout_forward(4 * per, per, order.data(), &whole, 99, 2, 0.5f, x.data(), y4.data(),
                             m4.data(), nullptr);
  gk::launch_dropout_forward(per, per, order.data(), &alone, 99, 2, 0.5f, x.data() + 2 * per,
                             y1.data(), m1.data(), nullptr);
  expect_equal(std::vector<uint8_t>(m4.begin() + 2 * per, m4.begin() + 3 * per), m1,
               "sample 5's mask");
  // A different epoch draws another mask.
  const gk::StepState later{2, 0, 4};
  std::vector<uint8_t> m1_later(static_cast<size_t>(per));
  gk::launch_dropout_forward(per, per, order.data(), &later, 99, 2, 0.5f, x.data() + 2 * per,
                             y1.data(), m1_later.data(), nullptr);
  CHECK(m1 != m1_later);
}

TEST_CASE("dropout drops a fraction p of the units (within 3 sigma)", "[kernels]") {
  const int64_t per = 1000, n = 64, count = per * n;
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 100);
  const std::vector<float> x(static_cast<size_t>(count), 1.0f);
  std::vector<float> y(static_cast<size_t>(count));
  std::vector<uint8_t> mask(static_cast<size_t>(count));
  for (float p : {0.1f, 0.5f, 0.8f}) {
    const gk::StepState state{0, 0, 1};
    gk::launch_dropout_forward(count, per, order.data(), &state, 7, 1, p, x.data(), y.data(),
                               mask.data(), nullptr);
    const double dropped = double(std::count(mask.begin(), mask.end(), uint8_t(0)));
    const double sigma = std::sqrt(double(count) * p * (1 - p));
    INFO("p " << p << ": dropped " << dropped << " of " << count);
    CHECK(std::fabs(dropped - double(count) * p) <= 3 * sigma);
  }
}

TEST_CASE("dropout kernels refuse bad arguments", "[kernels]") {
  const gk::StepState state;
  CHECK_THROWS_AS(gk::launch_dropout_forward(10, 3, nullptr, &state, 1, 0, 0.5f, nullptr, nullptr,
                                             nullptr, nullptr),
                  gputrain::RuntimeFailure);
  CHECK_THROWS_AS(gk::launch_dropout_forward(9, 3, nullptr, nullptr, 1, 0, 0.5f, nullptr, nullptr,
                                             nullptr, nullptr),
                  gputrain::RuntimeFailure);
  CHECK_THROWS_AS(gk::launch_dropout_forward(9, 3, nullptr, &state, 1, 0, 1.0f, nullptr, nullptr,
                                             nullptr, nullptr),
                  gputrain::RuntimeFailure);
  CHECK_THROWS_AS(gk::launch_dropout_backward(-1, 0.5f, nullptr, nullptr, nullptr, nullptr),
                  gputrain::RuntimeFailure);
}
