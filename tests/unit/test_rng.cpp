#include <algorithm>
#include <catch2/catch.hpp>

#include "gputrain/rng.hpp"

using namespace gputrain;

TEST_CASE("epoch_order is a permutation, reproducible per (seed, epoch), different across epochs") {
  auto a = epoch_order(1000, 7, 0, true);
  auto b = epoch_order(1000, 7, 0, true);
  auto c = epoch_order(1000, 7, 1, true);
  auto d = epoch_order(1000, 8, 0, true);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a != d);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 1000; ++i) REQUIRE(sorted[size_t(i)] == i);
  auto identity = epoch_order(5, 7, 3, false);
  CHECK(identity == std::vector<int32_t>{0, 1, 2, 3, 4});
}

TEST_CASE("Rng uniform values stay in range and cover it") {
  Rng rng(1);
  float lo = 1, hi = 0;
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    float u = rng.uniform01();
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
  }
  CHECK(lo < 0.001f);
  CHECK(hi > 0.999f);
  CHECK(sum / 100000 == Approx(0.5).margin(0.01));
}
