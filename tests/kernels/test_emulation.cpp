// The host emulation itself (tests/emulation/cuda_emulation.hpp): barriers, warp intrinsics,
// shared memory, launch geometry, and that misuse is reported as an error instead of a hang.
#include <catch2/catch.hpp>
#include <vector>

#include "emulation/cuda_emulation.hpp"

namespace {

// Every thread writes its global coordinates.
__global__ void coordinates_kernel(int* out) {
  const int block = int(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
  const int thread = int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
  const int threads = int(blockDim.x * blockDim.y * blockDim.z);
  out[block * threads + thread] = block * 1000 + thread;
}

// Reverses each block's chunk through shared memory: wrong without the barrier in between.
__global__ void reverse_kernel(const int* in, int* out) {
  __shared__ int tile[256];
  const int t = int(threadIdx.x), base = int(blockIdx.x * blockDim.x);
  tile[t] = in[base + t];
  __syncthreads();
  out[base + t] = tile[blockDim.x - 1 - t];
}

// The same without the barrier: a race the shuffled/reverse schedules expose.
__global__ void racy_reverse_kernel(const int* in, int* out) {
  __shared__ int tile[256];
  const int t = int(threadIdx.x), base = int(blockIdx.x * blockDim.x);
  tile[t] = in[base + t];
  out[base + t] = tile[blockDim.x - 1 - t];
}

__global__ void shuffle_kernel(int* out, int width) {
  const int lane = int(threadIdx.x % 32), t = int(threadIdx.x);
  const int v = 100 + t;
  out[t * 8 + 0] = __shfl_sync(0xffffffffu, v, 3, width);
  out[t * 8 + 1] = __shfl_up_sync(0xffffffffu, v, 2, width);
  out[t * 8 + 2] = __shfl_down_sync(0xffffffffu, v, 5, width);
  out[t * 8 + 3] = __shfl_xor_sync(0xffffffffu, v, 6, width);
  out[t * 8 + 4] = int(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[t * 8 + 5] = __any_sync(0xffffffffu, t == 40);
  out[t * 8 + 6] = __all_sync(0xffffffffu, lane < 31);
  const double d = __shfl_xor_sync(0xffffffffu, double(v) + 0.5, 1);
  out[t * 8 + 7] = int(d * 2);
}

__global__ void warp_sum_kernel(const float* in, float* out) {
  float v = in[threadIdx.x];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  out[threadIdx.x] = v;
}

__global__ void dynamic_shared_kernel(float* out) {
  float* smem = static_cast<float*>(emu::dynamic_shared_memory());
  out[blockIdx.x * 2 + 0] = smem[threadIdx.x];  // never written: 0xFF bytes, a NaN
  smem[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[blockIdx.x * 2 + 1] = smem[blockDim.x - 1];
}

__global__ void early_exit_barrier_kernel(int* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void half_warp_shuffle_kernel(int* out) {
  if (threadIdx.x % 32 < 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
}

__global__ void partial_mask_shuffle_kernel(int* out) {
  // Lanes 16..31 with the right mask: fine.
  if (threadIdx.x % 32 < 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffff0000u, int(threadIdx.x), 1);
}

__global__ void partial_warp_block_kernel(int* out) {
  // A block of 40 threads: the second warp has 8 lanes; a full mask names lanes that do not exist.
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
}

__global__ void mask_without_self_kernel(int* out) {
  out[threadIdx.x] = __shfl_xor_sync(0x2u, int(threadIdx.x), 1);
}

__global__ void throwing_kernel(int*) {
  if (threadIdx.x == 3) throw std::runtime_error("boom");
}

__global__ void atomics_kernel(unsigned long long* counter, double* sum) {
  atomicAdd(counter, 1ull);
  atomicAdd(sum, 0.5);
}

}  // namespace

TEST_CASE("emulation: block and thread coordinates cover a 3-D grid once each", "[kernels]") {
  const dim3 grid(3, 2, 2), block(5, 3, 2);
  const int blocks = 12, threads = 30;
  std::vector<int> out(size_t(blocks * threads), -1);
  emu::launch(coordinates_kernel, grid, block, 0, out.data());
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) REQUIRE(out[size_t(b * threads + t)] == b * 1000 + t);
}

TEST_CASE("emulation: __syncthreads separates the phases of a block", "[kernels]") {
  std::vector<int> in(512), out(512, -1);
  for (int i = 0; i < 512; ++i) in[size_t(i)] = i;
  for (auto s : {emu::Schedule::Forward, emu::Schedule::Reverse, emu::Schedule::Shuffled}) {
    emu::set_schedule(s, 7);
    emu::launch(reverse_kernel, dim3(2), dim3(256), 0, in.data(), out.data());
    for (int i = 0; i < 512; ++i) REQUIRE(out[size_t(i)] == (i / 256) * 256 + 255 - i % 256);
  }
  emu::set_schedule(emu::Schedule::Forward);
}

TEST_CASE("emulation: some schedule exposes a missing __syncthreads", "[kernels]") {
  std::vector<int> in(256), out(256, -1);
  for (int i = 0; i < 256; ++i) in[size_t(i)] = i;
  bool caught = false;
  for (auto s : {emu::Schedule::Forward, emu::Schedule::Reverse, emu::Schedule::Shuffled}) {
    emu::set_schedule(s, 7);
    std::fill(out.begin(), out.end(), -1);
    emu::launch(racy_reverse_kernel, dim3(1), dim3(256), 0, in.data(), out.data());
    for (int i = 0; i < 256; ++i) caught |= out[size_t(i)] != 255 - i;
  }
  emu::set_schedule(emu::Schedule::Forward);
  CHECK(caught);
}

TEST_CASE("emulation: warp shuffles and votes follow CUDA's semantics", "[kernels]") {
  for (int width : {32, 16, 8}) {
    INFO("width " << width);
    std::vector<int> out(64 * 8, -1);
    emu::launch(shuffle_kernel, dim3(1), dim3(64), 0, out.data(), width);
    for (int t = 0; t < 64; ++t) {
      const int lane = t % 32, warp_base = t - lane, v = 100 + t;
      const int seg = lane / width * width;  // first lane of the segment
      INFO("thread " << t);
      CHECK(out[size_t(t * 8 + 0)] == 100 + warp_base + seg + 3 % width);
      CHECK(out[size_t(t * 8 + 1)] == (lane - seg >= 2 ? v - 2 : v));
      CHECK(out[size_t(t * 8 + 2)] == (lane - seg + 5 < width ? v + 5 : v));
      CHECK(out[size_t(t * 8 + 3)] ==
            ((lane ^ 6) / width == lane / width ? v - lane + (lane ^ 6) : v));
      CHECK(unsigned(out[size_t(t * 8 + 4)]) == 0x49249249u);
      CHECK(out[size_t(t * 8 + 5)] == (t >= 32 ? 1 : 0));
      CHECK(out[size_t(t * 8 + 6)] == 0);
      CHECK(out[size_t(t * 8 + 7)] == 2 * (100 + warp_base + (lane ^ 1)) + 1);
    }
  }
}

TEST_CASE("emulation: a butterfly warp sum gives every lane the total", "[kernels]") {
  std::vector<float> in(96), out(96);
  for (int i = 0; i < 96; ++i) in[size_t(i)] = float(i);
  emu::launch(warp_sum_kernel, dim3(1), dim3(96), 0, in.data(), out.data());
  for (int i = 0; i < 96; ++i) REQUIRE(out[size_t(i)] == float(496 + 1024 * (i / 32)));
}

TEST_CASE("emulation: dynamic shared memory is poisoned per block", "[kernels]") {
  std::vector<float> out(6, 0.0f);
  emu::launch(dynamic_shared_kernel, dim3(3), dim3(64), 64 * sizeof(float), out.data());
  for (int b = 0; b < 3; ++b) {
    CHECK(std::isnan(out[size_t(b * 2)]));
    CHECK(out[size_t(b * 2 + 1)] == 63.0f);
  }
}

TEST_CASE("emulation: atomics accumulate", "[kernels]") {
  unsigned long long counter = 0;
  double sum = 0;
  emu::launch(atomics_kernel, dim3(7), dim3(33), 0, &counter, &sum);
  CHECK(counter == 231);
  CHECK(sum == 115.5);
}

TEST_CASE("emulation: deadlocks and misuse are errors and not hangs", "[kernels]") {
  std::vector<int> out(64, 0);
  CHECK_THROWS_WITH(emu::launch(early_exit_barrier_kernel, dim3(1), dim3(64), 0, out.data()),
                    Catch::Contains("deadlock"));
  CHECK_THROWS_WITH(emu::launch(half_warp_shuffle_kernel, dim3(1), dim3(64), 0, out.data()),
                    Catch::Contains("exited"));
  CHECK_NOTHROW(emu::launch(partial_mask_shuffle_kernel, dim3(1), dim3(64), 0, out.data()));
  CHECK(out[17] == 16);
  CHECK_THROWS_WITH(emu::launch(partial_warp_block_kernel, dim3(1), dim3(40), 0, out.data()),
                    Catch::Contains("does not exist"));
  CHECK_THROWS_WITH(emu::launch(mask_without_self_kernel, dim3(1), dim3(32), 0, out.data()),
                    Catch::Contains("does not contain the calling lane"));
  CHECK_THROWS_WITH(emu::launch(throwing_kernel, dim3(2), dim3(8), 0, out.data()),
                    Catch::Contains("boom"));
  CHECK_THROWS_WITH(emu::launch(coordinates_kernel, dim3(1), dim3(1025), 0, out.data()),
                    Catch::Contains("1024"));
  CHECK_THROWS_WITH(emu::launch(coordinates_kernel, dim3(0), dim3(32), 0, out.data()),
                    Catch::Contains("zero"));
  // After all that, the emulation still works.
  std::vector<float> in(32, 1.0f), sums(32);
  emu::launch(warp_sum_kernel, dim3(1), dim3(32), 0, in.data(), sums.data());
  CHECK(sums[0] == 32.0f);
}
