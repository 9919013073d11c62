// kernels/cast.cu under the host emulation: FP32 → BF16 and back, bit for bit against
// cpu::round_to_bf16 / cpu::bf16_to_float, including ties, Inf, NaN and subnormals.
// clang-format off
#include "kernel_test_util.hpp"
#include "cast.cu"
// clang-format on
#include "gputrain/ops.hpp"

namespace gk = gputrain::kernels;
using namespace kernel_test;

namespace {

float from_bits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// Random floats plus the values where rounding is delicate.
std::vector<float> cast_inputs(size_t n, uint64_t seed) {
  std::vector<float> v = random_floats(n, seed, -3.0f, 3.0f);
  const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0xbf818000u, 0x3f807fffu, 0x3f808001u,
                              0x7f7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
                              0xff800001u, 0x00018000u, 0x00008000u, 0x007fffffu, 0x80000000u};
  for (size_t i = 0; i < sizeof special / sizeof special[0] && i < n; ++i)
    v[i * 7 % n] = from_bits(special[i]);
  return v;
}

}  // namespace

TEST_CASE("round_to_bf16 kernel matches cpu::round_to_bf16 bit for bit", "[kernels]") {
  for (size_t n : {size_t(1), size_t(15), size_t(1000), size_t(70001)}) {
    INFO("n " << n);
    const auto x = cast_inputs(n, 90 + n);
    std::vector<uint16_t> want(n);
    gputrain::cpu::round_to_bf16(int64_t(n), x.data(), want.data());
    for_each_schedule([&] {
      std::vector<uint16_t> got(n, 0xdead);
      gk::launch_round_to_bf16(int64_t(n), x.data(), got.data(), nullptr);
      expect_equal(got, want, "round_to_bf16");
    });
  }
}

TEST_CASE("bf16_to_float kernel widens every bf16 exactly", "[kernels]") {
  std::vector<uint16_t> all(0x10000);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  std::vector<float> want(all.size());
  gputrain::cpu::bf16_to_float(int64_t(all.size()), all.data(), want.data());
  for_each_schedule([&] {
    std::vector<float> got = poisoned(all.size());
    gk::launch_bf16_to_float(int64_t(all.size()), all.data(), got.data(), nullptr);
    expect_equal(got, want, "bf16_to_float");  // memcmp: NaNs compare by their bits
  });
}

TEST_CASE("cast launchers refuse a negative count and launch nothing for 0", "[kernels]") {
  float x = 1.0f;
  uint16_t b = 7;
  gk::launch_round_to_bf16(0, &x, &b, nullptr);
  CHECK(b == 7);
  CHECK_THROWS_AS(gk::launch_round_to_bf16(-1, &x, &b, nullptr), gputrain::RuntimeFailure);
  CHECK_THROWS_AS(gk::launch_bf16_to_float(-1, &b, &x, nullptr), gputrain::RuntimeFailure);
}
