// Helpers of the kernel tests (tests/kernels/test_*.cpp): random inputs, NaN poisoning, a tolerant
// comparison that names the first mismatches, and running a check under every emulation schedule.
#pragma once

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "gputrain/rng.hpp"
// The emulation before any kernel source.
// clang-format off
#include "emulation/cuda_emulation.hpp"
#include "common.cuh"
// clang-format on

namespace kernel_test {

inline std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  gputrain::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = rng.uniform(lo, hi);
  return v;
}

inline std::vector<int32_t> random_ints(size_t n, uint64_t seed, int32_t below) {
  gputrain::Rng rng(seed);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = int32_t(rng.below(uint64_t(below)));
  return v;
}

inline std::vector<float> poisoned(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// |got - want| <= atol + rtol·|want| everywhere (NaN never passes); on failure the first few
// mismatches are reported with their index.
template <typename T, typename U>
void expect_close(const std::vector<T>& got, const std::vector<U>& want, double atol, double rtol,
                  const std::string& what) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0;
  std::ostringstream first;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    const double d = std::fabs(g - w);
    const bool ok = d <= atol + rtol * std::fabs(w);  // false for NaN
    if (!ok) {
      if (bad < 8) first << "\n  [" << i << "] got " << g << ", want " << w << " (|d| " << d << ")";
      ++bad;
    }
    if (d > worst || std::isnan(d)) worst = d;
  }
  if (bad) {
    FAIL_CHECK(what << ": " << bad << " of " << got.size() << " values differ (atol " << atol
                    << ", rtol " << rtol << ", worst |d| " << worst << "):" << first.str());
  } else {
    SUCCEED();
  }
}

// Exactly equal (bit for bit for floats: also NaN == NaN of the same payload).
template <typename T>
void expect_equal(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      if (bad < 8) first << "\n  [" << i << "] got " << +got[i] << ", want " << +want[i];
      ++bad;
    }
  }
  if (bad) {
    FAIL_CHECK(what << ": " << bad << " of " << got.size() << " values differ:" << first.str());
  } else {
    SUCCEED();
  }
}

// Runs `body` once under each thread/block schedule of the emulation (data races that depend on
// the order show up as a mismatch in one of them), then once more with grids of at most 3 blocks
// (every grid-stride loop goes round many times); restores the defaults afterwards.
// Include the kernel sources (kernels/*.cu) before this header's users call it.
template <typename F>
void for_each_schedule(F&& body) {
  struct Restore {
    ~Restore() {
      emu::set_schedule(emu::Schedule::Forward);
      gputrain::kernels::detail::grid_stride_block_limit =
          gputrain::kernels::detail::kMaxGridStrideBlocks;
    }
  } restore;
  const std::pair<emu::Schedule, const char*> schedules[] = {{emu::Schedule::Forward, "forward"},
                                                             {emu::Schedule::Reverse, "reverse"},
                                                             {emu::Schedule::Shuffled, "shuffled"}};
  for (const auto& [schedule, name] : schedules) {
    emu::set_schedule(schedule, 12345);
    INFO("emulation schedule: " << name);
    body();
  }
  emu::set_schedule(emu::Schedule::Forward);
  gputrain::kernels::detail::grid_stride_block_limit = 3;
  INFO("emulation: grids of at most 3 blocks");
  body();
}

}  // namespace kernel_test
