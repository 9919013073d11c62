// What every kernel family shares: the launch helper (the one place with <<<...>>> and the
// launch-error check), grid sizing, small device helpers.
//
// The same kernel and launcher sources compile two ways:
// - by nvcc (kernels/*.cu in the gputrain_cuda library): real kernels, real launches;
// - by the host C++ compiler under tests/emulation/cuda_emulation.hpp (included first; it defines
//   GPUTRAIN_KERNELS_EMULATED): each CUDA thread becomes a fiber, and the kernel tests call the
//   very launchers the engine calls. So the code here and in kernels/*.cu(h) sticks to what the
//   emulation provides (see that header): no CUDA-only syntax outside detail::launch,
//   dynamic shared memory only through GT_DYNAMIC_SHARED, `#pragma unroll` only as GT_UNROLL.
#pragma once

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#elif !defined(GPUTRAIN_KERNELS_EMULATED)
#error "kernels/*.cuh compile with nvcc, or for the host after tests/emulation/cuda_emulation.hpp"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "gputrain/errors.hpp"
#include "launchers.hpp"

#if defined(__CUDACC__)
#define GT_UNROLL _Pragma("unroll")
// Dynamic shared memory as an array of T named `name` (size given at launch).
#define GT_DYNAMIC_SHARED(T, name)                                  \
  extern __shared__ __align__(16) unsigned char gt_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(gt_dynamic_smem_)
#else
#define GT_UNROLL
#define GT_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::emu::dynamic_shared_memory())
#endif

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {
namespace detail {

constexpr int kWarp = 32;

// Grid-stride kernels: enough blocks to fill any current GPU several times over (an H100 holds
// 132 SMs × 2048 threads = 1056 blocks of 256), few enough that each thread does some work.
constexpr int64_t kMaxGridStrideBlocks = 4096;

#if defined(GPUTRAIN_KERNELS_EMULATED)
// The kernel tests lower this to run every grid-stride loop many times over on small inputs.
inline int64_t grid_stride_block_limit = kMaxGridStrideBlocks;
#else
constexpr int64_t grid_stride_block_limit = kMaxGridStrideBlocks;
#endif

inline unsigned grid_for(int64_t work_items, int threads_per_block,
                         int64_t max_blocks = grid_stride_block_limit) {
  int64_t blocks = (work_items + threads_per_block - 1) / threads_per_block;
  if (blocks > max_blocks) blocks = max_blocks;
  return unsigned(blocks < 1 ? 1 : blocks);
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

[[noreturn]] inline void bad_argument(const char* kernel, const std::string& what) {
  throw RuntimeFailure(std::string("kernel ") + kernel + ": " + what);
}

// kernel<<<grid, block, smem, stream>>>(args...), then the launch-error check: a failure throws
// RuntimeFailure naming the kernel. Under the emulation the kernel runs right here, on the host.
template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
            cudaStream_t stream, Args... args) {
#if defined(__CUDACC__)
  kernel<<<grid, block, smem, stream>>>(Params(args)...);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throw RuntimeFailure(std::string("CUDA error: launching kernel ") + name + ": " +
                         cudaGetErrorString(status));
#else
  (void)stream;
  try {
    ::emu::launch(kernel, grid, block, smem, Params(args)...);
  } catch (const ::emu::Failure& e) {
    throw RuntimeFailure(std::string("emulated kernel ") + name + ": " + e.what());
  }
#endif
}

// ---- device helpers ----

__device__ __forceinline__ int64_t global_thread_index() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
  return int64_t(gridDim.x) * blockDim.x;
}

// Sum over the 32 lanes of a warp (all lanes must call; every lane gets the total).
// The butterfly order is fixed, so the result is deterministic.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  GT_UNROLL
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024; every thread must call). The
// result is valid in every thread. `scratch` holds 32 values of T in shared memory; it may be
// reused right after the call returns only after another __syncthreads().
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = lane < warps ? scratch[lane] : T(0);
  total = warp_sum(total);
  return total;
}

}  // namespace detail
}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
