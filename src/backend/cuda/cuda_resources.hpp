// Move-only RAII owners of every CUDA / cuBLAS / cuDNN object the engine holds: device and pinned
// buffers, a stream, events, library handles, cuDNN descriptors and a captured CUDA graph. Creation
// failures throw (cuda_check.hpp); destruction never throws (a destructor may run while an
// exception unwinds, or after the device failed), so release errors are deliberately ignored there.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <string>
#include <utility>

#include "backend/cuda/cuda_check.hpp"

namespace gputrain::cuda {

// Generic move-only holder: `Traits::destroy(handle)` releases a non-null handle.
template <typename Handle, typename Traits>
class UniqueHandle {
 public:
  UniqueHandle() = default;
  explicit UniqueHandle(Handle h) : h_(h) {}
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  UniqueHandle(UniqueHandle&& o) noexcept : h_(std::exchange(o.h_, Handle{})) {}
  UniqueHandle& operator=(UniqueHandle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, Handle{});
    }
    return *this;
  }
  ~UniqueHandle() { reset(); }

  void reset() noexcept {
    if (h_ != Handle{}) Traits::destroy(h_);
    h_ = Handle{};
  }
  Handle get() const { return h_; }
  operator Handle() const { return h_; }  // NOLINT: handles are passed straight to C APIs
  explicit operator bool() const { return h_ != Handle{}; }

 private:
  Handle h_{};
};

// ---- memory ----

// A device allocation of `count` elements of T (uninitialized). Move-only; size 0 holds nullptr.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // `what` names the allocation in an out-of-memory DeviceError ("activations", "training images").
  explicit DeviceBuffer(size_t count, const std::string& what = "device buffer") {
    allocate(count, what);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  void allocate(size_t count, const std::string& what = "device buffer") {
    release();
    if (count == 0) return;
    void* p = nullptr;
    check_alloc(cudaMalloc(&p, count * sizeof(T)), count * sizeof(T), what, __FILE__, __LINE__);
    ptr_ = static_cast<T*>(p);
    count_ = count;
  }
  void release() noexcept {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    count_ = 0;
  }

  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

// Page-locked host memory: the source/destination of truly asynchronous copies.
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t count) { allocate(count); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  ~PinnedBuffer() { release(); }

  void allocate(size_t count) {
    release();
    if (count == 0) return;
    void* p = nullptr;
    GT_CHECK(cudaMallocHost(&p, count * sizeof(T)));
    ptr_ = static_cast<T*>(p);
    count_ = count;
  }
  void release() noexcept {
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    count_ = 0;
  }
  T* get() const { return ptr_; }
  T& operator[](size_t i) const { return ptr_[i]; }
  size_t size() const { return count_; }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

// ---- streams, events, library handles ----

struct StreamTraits {
  static void destroy(cudaStream_t s) noexcept { cudaStreamDestroy(s); }
};
// A non-blocking stream: it never synchronizes implicitly with the legacy default stream, so every
// ordering in the engine is explicit (everything it does goes through this one stream).
class Stream : public UniqueHandle<cudaStream_t, StreamTraits> {
 public:
  static Stream create() {
    cudaStream_t s = nullptr;
    GT_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return Stream(s);
  }
  void synchronize() const { GT_CHECK(cudaStreamSynchronize(get())); }

 private:
  using UniqueHandle::UniqueHandle;
};

struct EventTraits {
  static void destroy(cudaEvent_t e) noexcept { cudaEventDestroy(e); }
};
class Event : public UniqueHandle<cudaEvent_t, EventTraits> {
 public:
  // Timing disabled by default: such events are cheaper to record and to wait on.
  static Event create(bool timing = false) {
    cudaEvent_t e = nullptr;
    GT_CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
    return Event(e);
  }
  void record(cudaStream_t s) const { GT_CHECK(cudaEventRecord(get(), s)); }
  void synchronize() const { GT_CHECK(cudaEventSynchronize(get())); }

 private:
  using UniqueHandle::UniqueHandle;
};

struct CublasTraits {
  static void destroy(cublasHandle_t h) noexcept { cublasDestroy(h); }
};
class CublasHandle : public UniqueHandle<cublasHandle_t, CublasTraits> {
 public:
  static CublasHandle create() {
    cublasHandle_t h = nullptr;
    GT_CHECK(cublasCreate(&h));
    return CublasHandle(h);
  }

 private:
  using UniqueHandle::UniqueHandle;
};

struct CudnnTraits {
  static void destroy(cudnnHandle_t h) noexcept { cudnnDestroy(h); }
};
class CudnnHandle : public UniqueHandle<cudnnHandle_t, CudnnTraits> {
 public:
  static CudnnHandle create() {
    cudnnHandle_t h = nullptr;
    GT_CHECK(cudnnCreate(&h));
    return CudnnHandle(h);
  }

 private:
  using UniqueHandle::UniqueHandle;
};

// ---- cuDNN descriptors (legacy API, still in cuDNN 9's cudnn_ops.h / cudnn_cnn.h) ----

struct TensorDescTraits {
  static void destroy(cudnnTensorDescriptor_t d) noexcept { cudnnDestroyTensorDescriptor(d); }
};
// A packed NCHW tensor [n, c, h, w] of elements `type` (precision.cpp decides which).
class TensorDesc : public UniqueHandle<cudnnTensorDescriptor_t, TensorDescTraits> {
 public:
  static TensorDesc nchw(cudnnDataType_t type, int n, int c, int h, int w) {
    cudnnTensorDescriptor_t d = nullptr;
    GT_CHECK(cudnnCreateTensorDescriptor(&d));
    TensorDesc owner(d);  // owns it before the next call can throw
    GT_CHECK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, type, n, c, h, w));
    return owner;
  }

 private:
  using UniqueHandle::UniqueHandle;
};

struct FilterDescTraits {
  static void destroy(cudnnFilterDescriptor_t d) noexcept { cudnnDestroyFilterDescriptor(d); }
};
// Conv weights [out, in, k, k] (PyTorch's layout, which is cuDNN's NCHW filter layout).
class FilterDesc : public UniqueHandle<cudnnFilterDescriptor_t, FilterDescTraits> {
 public:
  static FilterDesc oihw(cudnnDataType_t type, int o, int i, int kh, int kw) {
    cudnnFilterDescriptor_t d = nullptr;
    GT_CHECK(cudnnCreateFilterDescriptor(&d));
    FilterDesc owner(d);
    GT_CHECK(cudnnSetFilter4dDescriptor(d, type, CUDNN_TENSOR_NCHW, o, i, kh, kw));
    return owner;
  }

 private:
  using UniqueHandle::UniqueHandle;
};

struct ConvDescTraits {
  static void destroy(cudnnConvolutionDescriptor_t d) noexcept {
    cudnnDestroyConvolutionDescriptor(d);
  }
};
// Cross-correlation (nn.Conv2d), symmetric padding and stride, no dilation; the accumulation type
// and math type come from precision.cpp (the one file that decides the engine's numerics).
class ConvDesc : public UniqueHandle<cudnnConvolutionDescriptor_t, ConvDescTraits> {
 public:
  static ConvDesc create(int padding, int stride, cudnnDataType_t compute_type,
                         cudnnMathType_t math) {
    cudnnConvolutionDescriptor_t d = nullptr;
    GT_CHECK(cudnnCreateConvolutionDescriptor(&d));
    ConvDesc owner(d);
    GT_CHECK(cudnnSetConvolution2dDescriptor(d, padding, padding, stride, stride, 1, 1,
                                             CUDNN_CROSS_CORRELATION, compute_type));
    GT_CHECK(cudnnSetConvolutionMathType(d, math));
    return owner;
  }

 private:
  using UniqueHandle::UniqueHandle;
};

// ---- CUDA graph ----

// One captured stream sequence, instantiated once and replayed (in the style of tiny-cuda-nn's
// cuda_graph.h, without its nesting support: the engine captures exactly one graph, the full step).
//   try_capture(stream, fn): begins capture on `stream`, runs fn (which enqueues work on it), ends
//   the capture and instantiates it. Nothing runs on the device during capture; call launch() to
//   run the captured step. Returns "" on success. When capture fails (a call inside fn refused by
//   the capture, the capture invalidated, instantiation failing) it returns why, naming the CUDA
//   status, with the capture ended, its partial graph destroyed, the stream usable and this object
//   empty: the caller can run the same work eagerly. Only RuntimeFailure (a failed CUDA / cuDNN /
//   cuBLAS call) from fn counts as a capture failure; other exceptions propagate after the cleanup.
class CudaGraph {
 public:
  CudaGraph() = default;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  CudaGraph(CudaGraph&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}
  CudaGraph& operator=(CudaGraph&& o) noexcept {
    if (this != &o) {
      reset();
      exec_ = std::exchange(o.exec_, nullptr);
    }
    return *this;
  }
  ~CudaGraph() { reset(); }

  template <typename Fn>
  std::string try_capture(cudaStream_t stream, Fn&& fn) {
    reset();
    // Thread-local mode: only capture-unsafe calls made by this thread (the one enqueuing the step)
    // invalidate the capture; other threads (the NVML sampler, a logger) are unaffected.
    const cudaError_t begin = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    if (begin != cudaSuccess) {
      cudaGetLastError();
      return status_text("cudaStreamBeginCapture", begin);
    }
    std::string failed_call;
    try {
      fn();
    } catch (const RuntimeFailure& e) {
      failed_call = e.what();
    } catch (...) {
      end_and_discard(stream);
      throw;
    }
    if (!failed_call.empty()) {
      const cudaError_t end = end_and_discard(stream);
      return status_text("cudaStreamEndCapture", end) + " after " + failed_call;
    }
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (end != cudaSuccess || graph == nullptr) {
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      return status_text("cudaStreamEndCapture", end);
    }
    const cudaError_t inst = cudaGraphInstantiate(&exec_, graph, 0);
    cudaGraphDestroy(graph);  // the executable graph is independent of the template
    if (inst != cudaSuccess) {
      exec_ = nullptr;
      cudaGetLastError();
      return status_text("cudaGraphInstantiate", inst);
    }
    // Upload now so the first replay does not pay for it inside a timed step.
    const cudaError_t upload = cudaGraphUpload(exec_, stream);
    if (upload != cudaSuccess) {
      reset();
      cudaGetLastError();
      return status_text("cudaGraphUpload", upload);
    }
    return "";
  }

  void launch(cudaStream_t stream) const { GT_CHECK(cudaGraphLaunch(exec_, stream)); }
  bool ready() const { return exec_ != nullptr; }
  void reset() noexcept {
    if (exec_) cudaGraphExecDestroy(exec_);
    exec_ = nullptr;
  }

 private:
  static std::string status_text(const char* call, cudaError_t s) {
    return std::string(call) + ": " + cudaGetErrorName(s) + " (" + cudaGetErrorString(s) + ")";
  }
  // Ends capture mode (always, even when invalidated), destroys the partial graph, clears the
  // (non-sticky) capture error so the next check does not see it. Returns EndCapture's status.
  static cudaError_t end_and_discard(cudaStream_t stream) noexcept {
    cudaGraph_t partial = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream, &partial);
    if (partial) cudaGraphDestroy(partial);
    cudaGetLastError();
    return end;
  }

  cudaGraphExec_t exec_ = nullptr;
};

// Sets the current device for a scope and restores the previous one (the trainer's thread may use
// other devices or libraries between calls; every public engine entry point uses one of these).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    GT_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) GT_CHECK(cudaSetDevice(device));
    changed_ = previous_ != device;
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  ~DeviceScope() {
    if (changed_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
  bool changed_ = false;
};

}  // namespace gputrain::cuda
