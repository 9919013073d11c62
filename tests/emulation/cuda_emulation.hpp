// A host emulation of the CUDA execution model, enough to run gputrain's hand-written kernels
// (kernels/*.cuh, and their launchers in kernels/*.cu) without a GPU, compiled by the host C++
// compiler. Include this header FIRST, then the kernel sources:
//
//   #include "emulation/cuda_emulation.hpp"
//   #include "bias_act.cu"        // kernels + launchers, now host code in
//   gputrain::kernels::emulated
//
// Model
// - emu::launch(kernel, grid, block, smem_bytes, args...) runs the grid's blocks one after another;
//   each CUDA thread of a block is a fiber (ucontext, own mmap'd stack with a guard page), so
//   threads really block at barriers and resume after them.
// - threadIdx / blockIdx / blockDim / gridDim are the running fiber's values; warpSize is 32; lanes
//   are linear thread index % 32, as on the GPU.
// - __syncthreads(): a barrier among all threads of the block.
// - Warp intrinsics (__shfl_sync, __shfl_up/down/xor_sync, __ballot_sync, __any_sync, __all_sync,
//   __syncwarp): each lane parks at the call; once every lane named in the mask has arrived, the
//   results are computed with the PTX shfl.sync semantics (width segments, clamping, own value when
//   out of range) and the lanes resume. Values of any trivially copyable type of up to 8 bytes.
// - __shared__ is `static`: one instance shared by all threads; blocks never overlap, so that is
//   per-block shared memory (not cleared between blocks, as on the GPU). Dynamic shared memory
//   (GT_DYNAMIC_SHARED / emu::dynamic_shared_memory()) is a per-launch buffer, filled with 0xFF
//   bytes (NaN floats, -1 ints) before every block, so a read of something never written shows up.
// - atomics are plain read-modify-writes (fibers never run at the same time), __threadfence*
// no-ops.
// - Math: the <cmath> float functions (expf, logf, fmaxf, ...); the fast intrinsics (__expf, ...)
//   map to the accurate ones; __ldg is a plain load; float4/int4/uchar4/... are plain structs with
//   the CUDA alignment.
//
// Errors (thrown as emu::Failure from emu::launch, never a hang):
// - a deadlock: __syncthreads() reached by some threads while others exited (or wait elsewhere);
//   a warp intrinsic whose mask names a lane that exited, does not exist (beyond blockDim), or
//   waits at another barrier; no fiber able to run;
// - lanes meeting at one warp-sync point with different masks or different intrinsics; a mask that
//   does not contain the calling lane; a shuffle reading a lane that is not in the mask;
// - a launch configuration CUDA would reject (0 or > 1024 threads, grid.y/z > 65535, ...);
// - an exception thrown by the kernel body.
//
// Limits (what it does NOT show)
// - Data races: fibers run one at a time and only switch at barriers / warp intrinsics, so a
// missing
//   __syncthreads() or __syncwarp() between a write and a read by another thread is only caught
//   when the order of execution matters. emu::set_schedule(Schedule::Reverse / Shuffled) changes
//   the order in which threads (between barriers) and blocks run, which exposes many such bugs; run
//   tests under more than one schedule.
// - Warps are not lock-step: code relying on implicit warp-synchronous execution (pre-Volta style,
//   no __syncwarp) is not modelled; neither are memory-ordering effects, caches, or __restrict__
//   aliasing assumptions.
// - Floating point is the host's (IEEE float/double, glibc's expf/logf, whatever FMA contraction
//   the host compiler does): results match the CPU reference, not a GPU's last bits.
// - No streams, events, graphs, cooperative groups, textures, tensor cores or inline PTX; one
//   launch runs at a time per host thread (state is thread_local), and not recursively.
// - Speed: ~0.25 µs per fiber switch (glibc swapcontext does a syscall), two switches per thread
//   per block plus two per barrier / warp intrinsic: a few million threads per second.
#pragma once

#if defined(GPUTRAIN_KERNELS_LAUNCHERS_HPP)
#error \
    "include emulation/cuda_emulation.hpp before kernels/launchers.hpp (it selects the namespace)"
#endif
#define GPUTRAIN_KERNELS_EMULATED 1

// Tells valgrind about the fiber stacks where its header is present (no cost outside valgrind).
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define GPUTRAIN_EMU_VALGRIND 1
#endif
#endif
#ifndef GPUTRAIN_EMU_VALGRIND
#define GPUTRAIN_EMU_VALGRIND 0
#endif

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---- CUDA vector and index types (global, as in CUDA)
// --------------------------------------------

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) int2 {
  int x, y;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(4) uchar4 {
  unsigned char x, y, z, w;
};
struct alignas(2) uchar2 {
  unsigned char x, y;
};
inline float2 make_float2(float x, float y) {
  return float2{x, y};
}
inline float4 make_float4(float x, float y, float z, float w) {
  return float4{x, y, z, w};
}
inline int2 make_int2(int x, int y) {
  return int2{x, y};
}
inline int4 make_int4(int x, int y, int z, int w) {
  return int4{x, y, z, w};
}
inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) {
  return uchar4{x, y, z, w};
}

// ---- qualifiers ---------------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static
// __restrict__ is a GNU C++ keyword already.

namespace emu {

// Everything the emulation reports: deadlocks, misuse of warp intrinsics, bad launch configs.
class Failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The order in which runnable threads (between two barriers) and blocks are run.
enum class Schedule { Forward, Reverse, Shuffled };

namespace detail {

enum class State { Runnable, AtBlockBarrier, AtWarpSync, Done };
enum class WarpOp { Sync, ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All };

inline const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Sync:
      return "__syncwarp";
    case WarpOp::ShflIdx:
      return "__shfl_sync";
    case WarpOp::ShflUp:
      return "__shfl_up_sync";
    case WarpOp::ShflDown:
      return "__shfl_down_sync";
    case WarpOp::ShflXor:
      return "__shfl_xor_sync";
    case WarpOp::Ballot:
      return "__ballot_sync";
    case WarpOp::Any:
      return "__any_sync";
    case WarpOp::All:
      return "__all_sync";
  }
  return "?";
}

// Never moved once created (Runtime holds them by pointer): a saved ucontext_t points into itself
// (uc_mcontext.fpregs), so a moved one would restore its FPU state from freed memory.
struct Fiber {
  ucontext_t context;
  void* stack_base = nullptr;  // mmap'd region (guard page + stack)
  size_t stack_bytes = 0;
  bool fresh = true;  // needs makecontext before its next run
  uint3 thread_idx{0, 0, 0};
  int linear = 0;  // x + y*bx + z*bx*by
  State state = State::Done;
  // The pending warp intrinsic (valid while state == AtWarpSync).
  WarpOp op = WarpOp::Sync;
  unsigned mask = 0;
  uint64_t value = 0;  // the operand's bits (shuffles) or the predicate (votes)
  int operand = 0;     // srcLane / delta / laneMask
  int width = 32;
  uint64_t result = 0;  // set when the lanes are released
  std::exception_ptr error;
#if GPUTRAIN_EMU_VALGRIND
  unsigned valgrind_stack_id = 0;
#endif
};

struct Runtime {
  ucontext_t scheduler;
  // One per thread of the block, reused across blocks and launches.
  std::vector<std::unique_ptr<Fiber>> fibers;
  Fiber& fiber(int i) { return *fibers[size_t(i)]; }
  Fiber* current = nullptr;
  int threads = 0;  // threads in a block
  dim3 grid_dim, block_dim;
  uint3 block_idx{0, 0, 0};
  std::vector<unsigned char> dynamic_smem;
  void (*body)(void*) = nullptr;  // runs the kernel with the launch's arguments
  void* body_arg = nullptr;
  bool running = false;
  Schedule schedule = Schedule::Forward;
  uint64_t seed = 1;
  // Progress of the running block.
  int done = 0, at_block_barrier = 0;
  std::string failure;  // first error found by the scheduler

  ~Runtime() {
    for (auto& f : fibers) {
#if GPUTRAIN_EMU_VALGRIND
      VALGRIND_STACK_DEREGISTER(f->valgrind_stack_id);
#endif
      munmap(f->stack_base, f->stack_bytes);
    }
  }
};

inline Runtime& rt() {
  static thread_local Runtime runtime;
  return runtime;
}

inline Fiber& self() {
  Runtime& r = rt();
  if (!r.current) throw Failure("a CUDA device function was called outside an emulated kernel");
  return *r.current;
}

constexpr size_t kStackBytes = 128 * 1024;

inline void fiber_main() {
  Runtime& r = rt();
  for (;;) {
    Fiber* f = r.current;
    try {
      r.body(r.body_arg);
    } catch (...) {
      f->error = std::current_exception();
    }
    f->state = State::Done;
    swapcontext(&f->context, &r.scheduler);
  }
}

inline void ensure_fibers(int n) {
  Runtime& r = rt();
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  while (int(r.fibers.size()) < n) {
    auto f = std::make_unique<Fiber>();
    f->stack_bytes = kStackBytes + page;
    void* mem =
        mmap(nullptr, f->stack_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw Failure("cannot allocate a fiber stack");
    mprotect(mem, page, PROT_NONE);  // stacks grow down: overflow hits the guard page
    f->stack_base = mem;
#if GPUTRAIN_EMU_VALGRIND
    f->valgrind_stack_id = VALGRIND_STACK_REGISTER(static_cast<char*>(mem) + page,
                                                   static_cast<char*>(mem) + f->stack_bytes);
#endif
    getcontext(&f->context);
    f->fresh = true;
    r.fibers.push_back(std::move(f));
  }
}

inline void reset_fiber(Fiber& f) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  f.context.uc_stack.ss_sp = static_cast<char*>(f.stack_base) + page;
  f.context.uc_stack.ss_size = f.stack_bytes - page;
  f.context.uc_link = nullptr;
  makecontext(&f.context, fiber_main, 0);
  f.fresh = false;
}

// Parks the running fiber (its state already set) until the scheduler resumes it.
inline void yield_to_scheduler() {
  Runtime& r = rt();
  Fiber* f = r.current;
  swapcontext(&f->context, &r.scheduler);
  r.current = f;
}

inline std::string describe_thread(const Fiber& f) {
  return "thread (" + std::to_string(f.thread_idx.x) + "," + std::to_string(f.thread_idx.y) + "," +
         std::to_string(f.thread_idx.z) + ")";
}
inline std::string describe_block() {
  Runtime& r = rt();
  return "block (" + std::to_string(r.block_idx.x) + "," + std::to_string(r.block_idx.y) + "," +
         std::to_string(r.block_idx.z) + ")";
}

inline std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

inline void fail(const std::string& what) {
  Runtime& r = rt();
  if (r.failure.empty()) r.failure = describe_block() + ": " + what;
}

// PTX shfl.sync: the source lane of `lane` for this op, or -1 when out of range (own value).
inline int shuffle_source(WarpOp op, int lane, int b, int width) {
  const int seg_mask = (32 - width) & 31;  // lanes sharing a segment agree on these bits
  const int clamp = op == WarpOp::ShflUp ? 0 : 31;
  const int min_lane = lane & seg_mask;
  const int max_lane = min_lane | (clamp & ~seg_mask);
  int j = lane;
  bool ok = false;
  switch (op) {
    case WarpOp::ShflIdx:
      j = min_lane | (b & ~seg_mask);
      ok = j <= max_lane;
      break;
    case WarpOp::ShflUp:
      j = lane - b;
      ok = j >= max_lane;
      break;
    case WarpOp::ShflDown:
      j = lane + b;
      ok = j <= max_lane;
      break;
    case WarpOp::ShflXor:
      j = lane ^ b;
      ok = j <= max_lane;
      break;
    default:
      break;
  }
  return ok ? j : -1;
}

// Called after fiber `f` parked at a warp intrinsic: releases its lanes when all have arrived.
inline void try_release_warp(Fiber& f) {
  Runtime& r = rt();
  const int warp_base = f.linear & ~31;
  const unsigned mask = f.mask;
  for (int lane = 0; lane < 32; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    const int t = warp_base + lane;
    if (t >= r.threads) {
      fail(std::string(op_name(f.op)) + " in " + describe_thread(f) + ": mask names lane " +
           std::to_string(lane) + ", which does not exist (block of " + std::to_string(r.threads) +
           " threads)");
      return;
    }
    const Fiber& g = r.fiber(t);
    if (g.state == State::Done) {
      fail(std::string(op_name(f.op)) + " in " + describe_thread(f) + ": mask names lane " +
           std::to_string(lane) + ", which has exited (deadlock)");
      return;
    }
    if (g.state != State::AtWarpSync) return;  // not there yet
  }
  // Everyone is here: check agreement, then compute each lane's result.
  for (int lane = 0; lane < 32; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    const Fiber& g = r.fiber(warp_base + lane);
    if (g.mask != mask || g.op != f.op) {
      fail("warp lanes disagree at a warp-sync point: " + describe_thread(f) + " at " +
           op_name(f.op) + " (mask " + hex(mask) + "), " + describe_thread(g) + " at " +
           op_name(g.op) + " (mask " + hex(g.mask) + ")");
      return;
    }
  }
  uint64_t ballot = 0;
  for (int lane = 0; lane < 32; ++lane)
    if ((mask >> lane & 1u) && r.fiber(warp_base + lane).value != 0) ballot |= 1ull << lane;
  for (int lane = 0; lane < 32; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    Fiber& g = r.fiber(warp_base + lane);
    switch (g.op) {
      case WarpOp::Sync:
        g.result = 0;
        break;
      case WarpOp::Ballot:
        g.result = ballot;
        break;
      case WarpOp::Any:
        g.result = ballot != 0;
        break;
      case WarpOp::All:
        g.result = ballot == (uint64_t(mask));
        break;
      default: {
        const int src = shuffle_source(g.op, lane, g.operand, g.width);
        if (src < 0) {
          g.result = g.value;
        } else if (!(mask >> src & 1u)) {
          fail(std::string(op_name(g.op)) + " in " + describe_thread(g) + " reads lane " +
               std::to_string(src) + ", which is not in the mask");
          return;
        } else {
          g.result = r.fiber(warp_base + src).value;
        }
      }
    }
  }
  for (int lane = 0; lane < 32; ++lane)
    if (mask >> lane & 1u) r.fiber(warp_base + lane).state = State::Runnable;
}

inline uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int operand, int width) {
  Fiber& f = self();
  const int lane = f.linear & 31;
  if (!(mask >> lane & 1u))
    throw Failure(std::string(op_name(op)) + " in " + describe_thread(f) + ": mask " + hex(mask) +
                  " does not contain the calling lane " + std::to_string(lane));
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    throw Failure(std::string(op_name(op)) + ": width " + std::to_string(width) +
                  " is not a power of two in [1, 32]");
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.operand = operand;
  f.width = width;
  f.state = State::AtWarpSync;
  yield_to_scheduler();
  return f.result;
}

template <typename T>
uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                "warp shuffles of trivially copyable types of up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

inline uint64_t next_random(uint64_t& s) {  // SplitMix64, for Schedule::Shuffled
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline void order_of(std::vector<int>& order, int n, Schedule s, uint64_t& rng) {
  order.resize(size_t(n));
  std::iota(order.begin(), order.end(), 0);
  if (s == Schedule::Reverse) {
    std::reverse(order.begin(), order.end());
  } else if (s == Schedule::Shuffled) {
    for (int i = n - 1; i > 0; --i) std::swap(order[size_t(i)], order[next_random(rng) % (i + 1)]);
  }
}

inline std::string state_summary() {
  Runtime& r = rt();
  int runnable = 0, barrier = 0, warp = 0, done = 0;
  std::string first_warp;
  for (int i = 0; i < r.threads; ++i) {
    const Fiber& f = r.fiber(i);
    switch (f.state) {
      case State::Runnable:
        ++runnable;
        break;
      case State::AtBlockBarrier:
        ++barrier;
        break;
      case State::AtWarpSync:
        if (first_warp.empty()) first_warp = describe_thread(f) + " at " + op_name(f.op);
        ++warp;
        break;
      case State::Done:
        ++done;
        break;
    }
  }
  std::string s = std::to_string(barrier) + " thread(s) at __syncthreads, " + std::to_string(warp) +
                  " at warp intrinsics, " + std::to_string(done) + " exited, of " +
                  std::to_string(r.threads);
  if (!first_warp.empty()) s += " (e.g. " + first_warp + ")";
  return s;
}

// Runs one block to completion; returns false (with rt().failure set) on a deadlock or an error.
inline bool run_block(uint64_t& rng) {
  Runtime& r = rt();
  r.done = 0;
  r.at_block_barrier = 0;
  for (int i = 0; i < r.threads; ++i) {
    Fiber& f = r.fiber(i);
    if (f.fresh) reset_fiber(f);
    f.state = State::Runnable;
    f.error = nullptr;
  }
  std::vector<int> order;
  while (r.done < r.threads) {
    order_of(order, r.threads, r.schedule, rng);
    bool progress = false;
    for (int i : order) {
      Fiber& f = r.fiber(i);
      if (f.state != State::Runnable) continue;
      progress = true;
      r.current = &f;
      swapcontext(&r.scheduler, &f.context);
      r.current = nullptr;
      if (f.error) {
        try {
          std::rethrow_exception(f.error);
        } catch (const std::exception& e) {
          fail(describe_thread(f) + ": " + e.what());
        } catch (...) {
          fail(describe_thread(f) + ": unknown exception");
        }
        return false;
      }
      switch (f.state) {
        case State::Done:
          ++r.done;
          if (r.at_block_barrier > 0) {
            fail(describe_thread(f) +
                 " exited while others wait at __syncthreads (deadlock): " + state_summary());
            return false;
          }
          break;
        case State::AtBlockBarrier:
          if (r.done > 0) {
            fail(describe_thread(f) + " reached __syncthreads after other threads exited " +
                 "(deadlock): " + state_summary());
            return false;
          }
          if (++r.at_block_barrier == r.threads) {
            r.at_block_barrier = 0;
            for (int t = 0; t < r.threads; ++t) r.fiber(t).state = State::Runnable;
          }
          break;
        case State::AtWarpSync:
          try_release_warp(f);
          if (!r.failure.empty()) return false;
          break;
        case State::Runnable:
          break;
      }
    }
    if (!progress) {
      fail("deadlock: no thread can run: " + state_summary());
      return false;
    }
  }
  return true;
}

template <typename Tuple, typename Kernel>
struct Invocation {
  Kernel kernel;
  Tuple args;
  static void run(void* self) {
    auto* inv = static_cast<Invocation*>(self);
    std::apply(inv->kernel, inv->args);
  }
};

inline void validate(dim3 grid, dim3 block, size_t smem) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  auto bad = [&](const std::string& why) {
    throw Failure("invalid launch configuration (grid " + std::to_string(grid.x) + "x" +
                  std::to_string(grid.y) + "x" + std::to_string(grid.z) + ", block " +
                  std::to_string(block.x) + "x" + std::to_string(block.y) + "x" +
                  std::to_string(block.z) + ", " + std::to_string(smem) + " B shared): " + why);
  };
  if (threads == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0) bad("a zero dimension");
  if (threads > 1024) bad("more than 1024 threads per block");
  if (block.z > 64) bad("block.z > 64");
  if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) bad("grid too large");
  if (smem > 227 * 1024) bad("more than 227 KiB of dynamic shared memory");
}

}  // namespace detail

// Thread and block order for the following launches on this host thread (see "Limits").
inline void set_schedule(Schedule s, uint64_t seed = 1) {
  detail::rt().schedule = s;
  detail::rt().seed = seed;
}
inline Schedule schedule() {
  return detail::rt().schedule;
}

// The running block's dynamic shared memory (the launch's smem_bytes, 16-byte aligned).
inline void* dynamic_shared_memory() {
  detail::Runtime& r = detail::rt();
  return r.dynamic_smem.empty() ? nullptr : static_cast<void*>(r.dynamic_smem.data());
}

// kernel<<<grid, block, smem_bytes>>>(args...), run to completion before it returns.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "kernel argument count");
  detail::Runtime& r = detail::rt();
  if (r.running) throw Failure("emu::launch called from inside an emulated kernel");
  detail::validate(grid, block, smem_bytes);
  using Tuple = std::tuple<std::decay_t<Params>...>;
  detail::Invocation<Tuple, void (*)(Params...)> inv{kernel, Tuple(std::forward<Args>(args)...)};
  r.body = &decltype(inv)::run;
  r.body_arg = &inv;
  r.threads = int(block.x * block.y * block.z);
  r.grid_dim = grid;
  r.block_dim = block;
  r.failure.clear();
  detail::ensure_fibers(r.threads);
  // 16-byte alignment: a vector<unsigned char> is allocated by operator new (>= 16 aligned).
  r.dynamic_smem.assign(smem_bytes, 0xFF);
  for (int t = 0; t < r.threads; ++t) {
    detail::Fiber& f = r.fiber(t);
    f.linear = t;
    f.thread_idx = uint3{unsigned(t) % block.x, unsigned(t) / block.x % block.y,
                         unsigned(t) / (block.x * block.y)};
  }
  uint64_t rng = r.seed;
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  // Schedule::Shuffled visits blocks in the order offset + i·step (mod blocks): a permutation when
  // step is coprime with the block count, different for each seed, without a table of all blocks.
  uint64_t step = 1, offset = 0;
  if (r.schedule == Schedule::Shuffled) {
    step = detail::next_random(rng) % blocks | 1;
    while (std::gcd(step, blocks) != 1) ++step;
    offset = detail::next_random(rng) % blocks;
  }
  r.running = true;
  bool ok = true;
  for (uint64_t i = 0; i < blocks && ok; ++i) {
    uint64_t b = i;
    if (r.schedule == Schedule::Reverse) {
      b = blocks - 1 - i;
    } else if (r.schedule == Schedule::Shuffled) {
      b = (offset + i % blocks * step) % blocks;  // blocks <= 2^31 · 2^32: no overflow in practice
    }
    r.block_idx = uint3{unsigned(b % grid.x), unsigned(b / grid.x % grid.y),
                        unsigned(b / (uint64_t(grid.x) * grid.y))};
    if (smem_bytes && i > 0) std::fill(r.dynamic_smem.begin(), r.dynamic_smem.end(), 0xFF);
    ok = detail::run_block(rng);
  }
  r.running = false;
  if (!ok) {
    // Fibers stopped mid-kernel hold stale frames: restart them all from scratch next time.
    for (auto& f : r.fibers) f->fresh = true;
    throw Failure(r.failure);
  }
}

}  // namespace emu

// ---- the CUDA built-ins kernels see
// --------------------------------------------------------------

#define threadIdx (static_cast<const uint3&>(::emu::detail::self().thread_idx))
#define blockIdx (static_cast<const uint3&>(::emu::detail::rt().block_idx))
#define blockDim (static_cast<const dim3&>(::emu::detail::rt().block_dim))
#define gridDim (static_cast<const dim3&>(::emu::detail::rt().grid_dim))
constexpr int warpSize = 32;

inline void __syncthreads() {
  emu::detail::Fiber& f = emu::detail::self();
  f.state = emu::detail::State::AtBlockBarrier;
  emu::detail::yield_to_scheduler();
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  emu::detail::warp_op(emu::detail::WarpOp::Sync, mask, 0, 0, 32);
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return emu::detail::from_bits<T>(emu::detail::warp_op(emu::detail::WarpOp::ShflIdx, mask,
                                                        emu::detail::to_bits(v), src_lane, width));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu::detail::from_bits<T>(emu::detail::warp_op(
      emu::detail::WarpOp::ShflUp, mask, emu::detail::to_bits(v), int(delta), width));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu::detail::from_bits<T>(emu::detail::warp_op(
      emu::detail::WarpOp::ShflDown, mask, emu::detail::to_bits(v), int(delta), width));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return emu::detail::from_bits<T>(emu::detail::warp_op(emu::detail::WarpOp::ShflXor, mask,
                                                        emu::detail::to_bits(v), lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return unsigned(emu::detail::warp_op(emu::detail::WarpOp::Ballot, mask, predicate != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int predicate) {
  return int(emu::detail::warp_op(emu::detail::WarpOp::Any, mask, predicate != 0, 0, 32));
}
inline int __all_sync(unsigned mask, int predicate) {
  return int(emu::detail::warp_op(emu::detail::WarpOp::All, mask, predicate != 0, 0, 32));
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// Loads through the read-only cache: plain loads here.
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

// Atomics: plain read-modify-write (fibers never run concurrently); return the old value.
template <typename T>
inline T atomicAdd(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
inline T atomicSub(T* p, T v) {
  T old = *p;
  *p = old - v;
  return old;
}
template <typename T>
inline T atomicMax(T* p, T v) {
  T old = *p;
  *p = old < v ? v : old;
  return old;
}
template <typename T>
inline T atomicMin(T* p, T v) {
  T old = *p;
  *p = v < old ? v : old;
  return old;
}
template <typename T>
inline T atomicExch(T* p, T v) {
  T old = *p;
  *p = v;
  return old;
}
template <typename T>
inline T atomicCAS(T* p, T compare, T v) {
  T old = *p;
  if (old == compare) *p = v;
  return old;
}
inline unsigned atomicInc(unsigned* p, unsigned limit) {
  unsigned old = *p;
  *p = old >= limit ? 0 : old + 1;
  return old;
}

// Math: CUDA's global float functions (expf, logf, fmaxf, ...) are the C library's, declared
// globally by <cmath>; the fast intrinsics map to the accurate ones.
inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline float __expf(float x) {
  return std::exp(x);
}
inline float __logf(float x) {
  return std::log(x);
}
inline float __fdividef(float a, float b) {
  return a / b;
}
inline float __saturatef(float x) {
  return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
}
inline int __float_as_int(float x) {
  return emu::detail::from_bits<int>(emu::detail::to_bits(x));
}
inline float __int_as_float(int x) {
  return emu::detail::from_bits<float>(emu::detail::to_bits(x));
}
inline unsigned __float_as_uint(float x) {
  return emu::detail::from_bits<unsigned>(emu::detail::to_bits(x));
}
inline float __uint_as_float(unsigned x) {
  return emu::detail::from_bits<float>(emu::detail::to_bits(x));
}
// CUDA's global integer / float min and max overloads.
inline int min(int a, int b) {
  return a < b ? a : b;
}
inline int max(int a, int b) {
  return a < b ? b : a;
}
inline unsigned min(unsigned a, unsigned b) {
  return a < b ? a : b;
}
inline unsigned max(unsigned a, unsigned b) {
  return a < b ? b : a;
}
inline long min(long a, long b) {
  return a < b ? a : b;
}
inline long max(long a, long b) {
  return a < b ? b : a;
}
inline unsigned long min(unsigned long a, unsigned long b) {
  return a < b ? a : b;
}
inline unsigned long max(unsigned long a, unsigned long b) {
  return a < b ? b : a;
}
inline long long min(long long a, long long b) {
  return a < b ? a : b;
}
inline long long max(long long a, long long b) {
  return a < b ? b : a;
}
inline unsigned long long min(unsigned long long a, unsigned long long b) {
  return a < b ? a : b;
}
inline unsigned long long max(unsigned long long a, unsigned long long b) {
  return a < b ? b : a;
}
inline float min(float a, float b) {
  return fminf(a, b);
}
inline float max(float a, float b) {
  return fmaxf(a, b);
}
inline double min(double a, double b) {
  return fmin(a, b);
}
inline double max(double a, double b) {
  return fmax(a, b);
}

inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
inline int __clz(int x) {
  return x == 0 ? 32 : __builtin_clz(unsigned(x));
}
