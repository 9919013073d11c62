// One checking macro family for every CUDA-side status code: the CUDA runtime (cudaError_t), cuBLAS
// (cublasStatus_t) and cuDNN (cudnnStatus_t). A failure throws gputrain::RuntimeFailure naming the
// call as written, file:line and the library's own error string, e.g.
//   "CUDA error: cudaMemcpyAsync(...) at src/backend/cuda/cuda_engine.cpp:123: invalid argument".
// Out-of-memory at plan time is a DeviceError instead (exit code 2: the model / data does not fit),
// see GT_CUDA_ALLOC_CHECK. The library never prints; callers decide what to do with the exception.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>

#include "gputrain/errors.hpp"

namespace gputrain::cuda {

// cuBLAS has cublasGetStatusString since 11.4; kept as one function so the message format is ours.
inline const char* status_string(cublasStatus_t s) {
  return cublasGetStatusString(s);
}
inline const char* status_string(cudnnStatus_t s) {
  return cudnnGetErrorString(s);
}
inline const char* status_string(cudaError_t s) {
  return cudaGetErrorString(s);
}

[[noreturn]] inline void throw_failure(const char* library, const char* call, const char* file,
                                       int line, const std::string& what) {
  throw RuntimeFailure(std::string(library) + " error: " + call + " at " + file + ":" +
                       std::to_string(line) + ": " + what);
}

inline void check(cudaError_t s, const char* call, const char* file, int line) {
  if (s != cudaSuccess) throw_failure("CUDA", call, file, line, cudaGetErrorString(s));
}
inline void check(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) throw_failure("cuBLAS", call, file, line, status_string(s));
}
inline void check(cudnnStatus_t s, const char* call, const char* file, int line) {
  if (s != CUDNN_STATUS_SUCCESS) {
    // cuDNN 9 keeps a more specific message for the last failure of this thread.
    char detail[512] = {0};
    cudnnGetLastErrorString(detail, sizeof(detail));
    std::string what = status_string(s);
    if (detail[0] != '\0') what += std::string(" (") + detail + ")";
    throw_failure("cuDNN", call, file, line, what);
  }
}

// An allocation at plan time: out of memory is the user's problem (model or batch too large for
// the device), anything else a runtime failure. `what` says what was being allocated.
inline void check_alloc(cudaError_t s, size_t bytes, const std::string& what, const char* file,
                        int line) {
  if (s == cudaSuccess) return;
  if (s == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the (non-sticky) error so later calls are not confused by it
    throw DeviceError("out of device memory allocating " + std::to_string(bytes >> 20) +
                      " MiB for " + what);
  }
  throw_failure("CUDA", ("cudaMalloc for " + what).c_str(), file, line, cudaGetErrorString(s));
}

}  // namespace gputrain::cuda

// Any of cudaError_t / cublasStatus_t / cudnnStatus_t.
#define GT_CHECK(call) ::gputrain::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch (or a launcher that launches): the launch-configuration error, if any.
#define GT_CHECK_LAUNCH() \
  ::gputrain::cuda::check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
