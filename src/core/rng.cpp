#include "gputrain/rng.hpp"

#include <numeric>

namespace gputrain {

std::vector<int32_t> epoch_order(int64_t count, uint64_t seed, int epoch, bool shuffle) {
  std::vector<int32_t> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), 0);
  if (!shuffle) return order;
  // A distinct stream per epoch: mix the epoch into the seed (SplitMix64 seeding spreads it).
  Rng rng(seed * 0x9E3779B97F4A7C15ull + uint64_t(epoch) + 1);
  for (int64_t i = count - 1; i > 0; --i) {
    int64_t j = int64_t(rng.below(uint64_t(i) + 1));
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
  return order;
}

}  // namespace gputrain
