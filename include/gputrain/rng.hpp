// A small, fast, portable random generator (SplitMix64 seeding + xoshiro256**): the same seed gives
// the same stream on every platform and standard library, which std::uniform_*_distribution does
// not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace gputrain {

class Rng {
 public:
  explicit Rng(uint64_t seed) {
    uint64_t x = seed;
    for (auto& s : state_) {
      x += 0x9E3779B97F4A7C15ull;
      uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      s = z ^ (z >> 31);
    }
  }
  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 24 random bits (exactly representable as float).
  float uniform01() { return float(next_u64() >> 40) * (1.0f / 16777216.0f); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform01(); }
  // Uniform integer in [0, n), unbiased (Lemire's method with rejection).
  uint64_t below(uint64_t n) {
    uint64_t threshold = (0 - n) % n;
    for (;;) {
      uint64_t r = next_u64();
      __extension__ unsigned __int128 m = (unsigned __int128)r * n;
      if (uint64_t(m) >= threshold) return uint64_t(m >> 64);
    }
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

// The training order of one epoch: identity when !shuffle, else a Fisher–Yates permutation drawn
// from a generator seeded by (seed, epoch) — so a resumed run rebuilds any epoch's order exactly.
std::vector<int32_t> epoch_order(int64_t count, uint64_t seed, int epoch, bool shuffle);

}  // namespace gputrain
