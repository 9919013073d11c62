// FP32 ↔ BF16 element-wise casts for the bf16 precision mode: the exact bit operations of
// cpu::round_to_bf16 / cpu::bf16_to_float (include/gputrain/ops.hpp), so the kernel tests can
// compare bit for bit. Launchers: kernels/cast.cu; semantics: kernels/launchers.hpp.
#pragma once

#include "common.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// Round to nearest, ties to even; NaN made quiet with its sign kept (cpu::round_to_bf16). Written
// on the bits rather than with __float2bfloat16_rn so the host emulation runs the same code.
__device__ __forceinline__ uint16_t float_to_bf16_bits(float x) {
  const uint32_t bits = __float_as_uint(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x0040u);
  return uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float bf16_bits_to_float(uint16_t b) {
  return __uint_as_float(uint32_t(b) << 16);
}

__global__ void __launch_bounds__(256)
    round_to_bf16_kernel(const float* __restrict__ x, uint16_t* __restrict__ out, int64_t n) {
  for (int64_t i = detail::global_thread_index(); i < n; i += detail::grid_threads())
    out[i] = float_to_bf16_bits(x[i]);
}

__global__ void __launch_bounds__(256)
    bf16_to_float_kernel(const uint16_t* __restrict__ x, float* __restrict__ out, int64_t n) {
  for (int64_t i = detail::global_thread_index(); i < n; i += detail::grid_threads())
    out[i] = bf16_bits_to_float(x[i]);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
