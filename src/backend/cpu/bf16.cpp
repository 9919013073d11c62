// BF16 rounding, the meaning of the CUDA engine's cast kernels (kernels/cast.cuh), and the bf16
// convolution forward they serve.
#include <cstring>
#include <vector>

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

namespace {
// v rounded to BF16 and widened back: the value a BF16 copy of v holds.
std::vector<float> bf16_values(int64_t n, const float* v) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = bf16_to_float(round_to_bf16(v[i]));
  return out;
}
}  // namespace

void conv2d_forward_bf16_reference(const ConvGeometry& g, const float* x, const float* w,
                                   const float* b, float* y, int threads, bool relu) {
  const int64_t in_size = int64_t(g.batch) * g.in_channels * g.in_height * g.in_width;
  const int64_t w_size = int64_t(g.out_channels) * g.col_rows();
  const int64_t plane = g.col_cols();
  const int64_t y_size = int64_t(g.batch) * g.out_channels * plane;
  const std::vector<float> xb = bf16_values(in_size, x), wb = bf16_values(w_size, w);
  const std::vector<float> no_bias(size_t(g.out_channels), 0.0f);
  std::vector<float> workspace(static_cast<size_t>(conv_workspace_floats(g, threads)));
  // A zero bias: conv2d_forward's GEMM accumulates onto it, and 0 + s is exactly s.
  conv2d_forward(g, xb.data(), wb.data(), no_bias.data(), y, workspace.data(), threads, false);
  for (int64_t i = 0; i < y_size; ++i) {
    const float v = bf16_to_float(round_to_bf16(y[i])) + b[(i / plane) % g.out_channels];
    y[i] = relu && !(v > 0.0f) ? 0.0f : v;
  }
}

}  // namespace gputrain::cpu
