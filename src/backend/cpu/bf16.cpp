// BF16 rounding, the meaning of the CUDA engine's cast kernels (kernels/cast.cuh).
#include <cstring>

#include "gputrain/ops.hpp"

namespace gputrain::cpu {

uint16_t round_to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u)  // NaN: truncating could clear every mantissa bit
    return uint16_t((bits >> 16) | 0x0040u);
  // Adding 0x7fff rounds up past the halfway point; the kept bit's value (the "+1") makes an
  // exact tie round up only when the kept part is odd: ties to even. A carry out of the mantissa
  // steps the exponent (the largest finite values round to Inf, as IEEE says).
  const uint32_t round = 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t((bits + round) >> 16);
}

float bf16_to_float(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

void round_to_bf16(int64_t n, const float* x, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = round_to_bf16(x[i]);
}

void bf16_to_float(int64_t n, const uint16_t* x, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(x[i]);
}

}  // namespace gputrain::cpu
