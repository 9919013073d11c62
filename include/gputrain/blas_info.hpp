// The BLAS that the dynamic linker gave this process (gputrain links libopenblas.so.0, which
// Debian's alternatives or LD_LIBRARY_PATH may resolve to the OpenMP, pthread or serial build), and
// how the CPU backend runs its threads with it so that the cores are never oversubscribed.
#pragma once

#include <string>

namespace gputrain {

// openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP.
enum class BlasThreading { Sequential, Pthreads, OpenMP };

struct BlasInfo {
  std::string version;  // "0.3.21"; empty when the build string does not name one
  std::string config;   // openblas_get_config() verbatim: version, options, core, MAX_THREADS
  BlasThreading threading = BlasThreading::Sequential;
  int threads = 1;  // openblas_get_num_threads(): threads one GEMM may use outside OpenMP regions
};

// "sequential", "pthreads" or "openmp".
const char* threading_name(BlasThreading threading);

// What the loaded library reports now.
BlasInfo blas_info();

// "OpenBLAS 0.3.21 (openmp, 2 threads)": for `gputrain info` and the CPU engine's description.
std::string describe_blas(const BlasInfo& info);
std::string describe_blas();

// Sets the BLAS up for a CPU backend that runs `threads` OpenMP threads (> 0) and calls every GEMM
// from inside its own OpenMP parallel regions (src/backend/cpu/ops.cpp): the OpenMP build then runs
// each GEMM on the calling thread by itself; the pthread build is set to 1 thread, since its own
// thread pool would otherwise start `threads` more busy threads for every GEMM of every OpenMP
// thread; the sequential build needs nothing. Returns the resulting state.
BlasInfo configure_blas_threads(int threads);

}  // namespace gputrain
