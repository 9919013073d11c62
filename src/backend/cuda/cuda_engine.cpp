// The CUDA engine: gputrain::Engine on one GPU. Convolutions through cuDNN, linear layers through
// cuBLAS, everything else through the hand-written kernels (kernels/launchers.hpp). Built once per
// (ModelPlan, EngineOptions): every buffer a step touches is allocated here, cuDNN algorithms are
// chosen here, and a step only enqueues work on the engine's one stream. No step allocates or waits
// for the host, which is what lets a whole full-batch step be captured once as a CUDA graph and
// replayed (see forward_backward).
//
// Buffers ("slots"). Slot 0 is the normalized input batch [B, C, H, W]; conv2d, linear and
// maxpool2d each write a new slot [B, out]; relu works in place on its input's slot and flatten is
// a view of it, so they add none. That is safe because no op's backward needs the output of the op
// *before* a ReLU (conv/linear backward read their input x and weights; maxpool backward reads its
// argmax), and ReLU's backward only needs its own output y. Each slot has a gradient slot of the
// same size. A ReLU right after a conv2d/linear is folded into it: forward runs bias+ReLU in one
// kernel, backward runs "ReLU backward + bias gradient" in one kernel (launch_bias_grad with
// relu_y).
//
// Numerics: FP32 throughout, no TF32 (cuDNN CUDNN_FMA_MATH, cuBLAS default math which does not use
// TF32 for SGEMM), so the results match the CPU engine and PyTorch (with TF32 off) to FP32
// rounding. With EngineOptions::deterministic only cuDNN algorithms flagged CUDNN_DETERMINISTIC are
// used; the hand-written kernels and cuBLAS (no atomics mode) are deterministic already, so the
// whole run is.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/cuda_resources.hpp"
#include "backend/cuda/device_probe.hpp"
#include "backend/cuda/nvml_sampler.hpp"
#include "gputrain/errors.hpp"
#include "launchers.hpp"

namespace gputrain::cuda {
namespace {

namespace k = gputrain::kernels;

constexpr size_t kMiB = size_t(1) << 20;
// cuBLAS's own workspace, set explicitly so that it is the same memory in eager and captured steps
// (cuBLAS docs: 32 MiB recommended for Hopper and newer, 4 MiB before; we use the larger always).
constexpr size_t kCublasWorkspaceBytes = 32 * kMiB;
// cuDNN algorithms needing more workspace than this are not considered.
constexpr size_t kConvWorkspaceCap = 512 * kMiB;

std::string mib(size_t bytes) {
  return std::to_string((bytes + kMiB - 1) / kMiB);
}

std::string shape_string(const ActivationShape& s) {
  return std::to_string(s.channels) + "x" + std::to_string(s.height) + "x" +
         std::to_string(s.width);
}

// ---- per-layer state -------------------------------------------------------------------------

struct Layer {
  LayerKind kind = LayerKind::Relu;
  std::string name;  // for messages: "conv1", "layer 3 (maxpool2d)"
  ActivationShape in, out;
  int in_slot = 0, out_slot = 0;
  bool fused_relu = false;            // conv2d/linear: the next layer's ReLU runs here
  bool folded = false;                // relu: run by the previous conv2d/linear, nothing of its own
  size_t w_offset = 0, b_offset = 0;  // into the flat parameter / gradient buffers (floats)
  int kernel = 0, stride = 1, padding = 0;
  FilterDesc filter;             // conv2d: w [O, C, k, k]
  ConvDesc conv;                 // conv2d
  DeviceBuffer<int32_t> argmax;  // maxpool2d: [B, C, Ho, Wo]
};

// cuDNN descriptors and algorithms of one conv layer for one batch size n.
struct ConvShape {
  TensorDesc x, y;  // [n, C, H, W], [n, O, Ho, Wo]
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  bool has_bwd_data = false;  // false for a conv on slot 0: the input needs no gradient
};

// Everything that depends on the batch size n: the conv shapes and the workspace they and the
// kernels need. Made for the planned batch when the engine is built, and for each smaller n that
// occurs (the last batch of an epoch, the last eval chunk) when it first occurs.
struct BatchPlan {
  int n = 0;
  std::vector<ConvShape> conv;  // indexed like layers; default (empty) for non-conv layers
  size_t workspace_bytes = 0;
};

// Which cuDNN algorithm results we accept: FP32 FMA math (no TF32 tensor ops), deterministic when
// asked for, workspace within `limit`; then the heuristics' own ranking (best first).
template <typename Perf>
bool acceptable(const Perf& p, bool deterministic) {
  if (p.status != CUDNN_STATUS_SUCCESS) return false;
  if (p.mathType != CUDNN_FMA_MATH && p.mathType != CUDNN_DEFAULT_MATH) return false;
  if (deterministic && p.determinism != CUDNN_DETERMINISTIC) return false;
  return true;
}

// Picks from `perfs` (ranked) the first acceptable algorithm whose workspace (asked of cuDNN for
// our descriptors, which also confirms the algorithm supports them) is at most `soft_limit`, or
// failing that at most `hard_limit`. Returns false when none qualifies.
template <typename Perf, typename Algo>
bool pick_algorithm(const std::vector<Perf>& perfs, bool deterministic, size_t soft_limit,
                    size_t hard_limit, const std::function<cudnnStatus_t(Algo, size_t*)>& ws,
                    Algo* algo, size_t* bytes) {
  for (size_t limit : {soft_limit, hard_limit}) {
    for (const Perf& p : perfs) {
      if (!acceptable(p, deterministic)) continue;
      size_t need = 0;
      if (ws(p.algo, &need) != CUDNN_STATUS_SUCCESS) continue;  // not for these descriptors
      if (need > limit) continue;
      *algo = p.algo;
      *bytes = need;
      return true;
    }
  }
  return false;
}

class CudaEngine final : public Engine {
 public:
  CudaEngine(const ModelPlan& plan, const EngineOptions& options);
  ~CudaEngine() override;
  CudaEngine(const CudaEngine&) = delete;
  CudaEngine& operator=(const CudaEngine&) = delete;

  std::string describe() const override { return description_; }
  void set_parameters(const std::vector<float>& values) override;
  std::vector<float> parameters() override;
  void set_state(const std::string& name, const std::vector<float>& values) override;
  std::vector<float> state(const std::string& name) override;
  void set_step_table(const std::vector<StepHyper>& table) override;
  void set_global_step(int64_t step) override;
  int64_t global_step() const override { return global_step_; }
  void set_train_data(const ImageSet& train) override;
  void set_eval_data(const ImageSet& eval) override;
  void set_order(const std::vector<int32_t>& order) override;
  void forward_backward(int64_t first, int count, float grad_scale) override;
  FlatBuffer gradients() override { return FlatBuffer{grads_.get(), plan_.parameter_count, true}; }
  void apply_optimizer() override;
  TrainCounters read_counters(bool reset) override;
  EvalResult evaluate(std::vector<float>* logits, const std::atomic<bool>* stop) override;
  double take_busy_percent() override { return nvml_ ? nvml_->take_mean() : -1.0; }

 private:
  void open_device();
  void build_layers();
  BatchPlan make_plan(int n, size_t soft_limit) const;
  const BatchPlan& plan_for(int n);
  void ensure_fits(size_t needed, const std::string& what) const;
  void upload_flat(DeviceBuffer<float>& dst, const std::vector<float>& values, const char* what);
  std::vector<float> download_flat(const DeviceBuffer<float>& src);
  void check_images(const ImageSet& set, const char* what) const;
  void upload_images(const ImageSet& set, DeviceBuffer<uint8_t>& pixels,
                     DeviceBuffer<int32_t>& labels, int64_t* count, const char* what);
  void set_step_first(int64_t first);
  DeviceBuffer<float>& state_buffer(const std::string& name);

  // The step's device work up to the gradients, in stream order (enqueue only: no sync, no
  // allocation).
  void enqueue_forward_backward(const BatchPlan& bp, int n, float grad_scale);
  void forward(const BatchPlan& bp, int n);
  void backward(const BatchPlan& bp, int n);

  float* param(size_t offset) const { return params_.get() + offset; }
  float* grad(size_t offset) const { return grads_.get() + offset; }
  float* logits() const { return act_[size_t(layers_.back().out_slot)].get(); }
  float* dlogits() const { return grad_[size_t(layers_.back().out_slot)].get(); }

  ModelPlan plan_;
  EngineOptions opt_;
  int batch_ = 0;
  int device_ = 0;
  cudaDeviceProp prop_{};
  std::string description_;

  Stream stream_;
  CublasHandle cublas_;
  CudnnHandle cudnn_;

  std::vector<Layer> layers_;
  std::vector<int64_t> slot_floats_;  // per sample
  std::vector<DeviceBuffer<float>> act_, grad_;

  // Flat [parameter_count] each. momentum_ is SGD's one state buffer ("momentum").
  DeviceBuffer<float> params_, grads_, momentum_;
  DeviceBuffer<StepHyper> step_table_;     // [table size], entry = global step (clamped)
  DeviceBuffer<float> mean_, std_;         // [C]
  DeviceBuffer<int32_t> batch_labels_;     // [B]
  DeviceBuffer<unsigned char> workspace_;  // cuDNN + bias-grad + softmax-xent scratch
  DeviceBuffer<unsigned char> cublas_workspace_;

  DeviceBuffer<uint8_t> train_pixels_, eval_pixels_;
  DeviceBuffer<int32_t> train_labels_, eval_labels_, order_;
  int64_t train_count_ = -1, eval_count_ = -1;  // -1: not set
  size_t order_size_ = 0;                       // 0: no order set for the current training data

  DeviceBuffer<k::StepState> step_state_;
  DeviceBuffer<double> train_loss_, eval_loss_;
  DeviceBuffer<unsigned long long> train_correct_, eval_correct_, confusion_;

  // Host → device updates of the step state go through pinned staging structs so that the copy is
  // truly asynchronous (no stream sync). The copy reads the staging memory when it executes on the
  // stream, which may be after several queued steps; so before the host rewrites a staging struct
  // it waits on the event recorded after the previous copy from it. That wait only happens when the
  // position jumps (epoch start, resume) and only blocks when the GPU still has that copy queued.
  // The learning rate needs no such update: it is read from step_table_ by the device's step.
  PinnedBuffer<k::StepState> step_staging_;
  PinnedBuffer<int32_t> order_staging_;
  PinnedBuffer<double> loss_host_;
  PinnedBuffer<unsigned long long> count_host_;
  Event step_staging_free_, order_staging_free_;

  int64_t device_first_ = -1;  // StepState::first once the queued work has run; -1 unknown
  int64_t samples_ = 0;        // training samples since the last counter reset (host-side, exact)
  int64_t global_step_ = 0;    // optimizer updates applied (StepState::step once they have run)
  size_t step_table_size_ = 0;
  float graph_grad_scale_ = 0;  // the grad_scale the captured graph was recorded with

  std::map<int, BatchPlan> plans_;
  CudaGraph graph_;
  bool warmed_up_ = false;  // one eager full-batch step has run: the next one is captured

  std::unique_ptr<NvmlSampler> nvml_;
};

// ---- construction ------------------------------------------------------------------------------

CudaEngine::CudaEngine(const ModelPlan& plan, const EngineOptions& options)
    : plan_(plan), opt_(options), batch_(options.batch_size), device_(options.device_index) {
  if (batch_ < 1) throw RuntimeFailure("CUDA engine: batch size must be >= 1");
  if (plan_.layers.empty()) throw RuntimeFailure("CUDA engine: the model has no layers");
  if (int(opt_.mean.size()) != plan_.input.channels || int(opt_.std.size()) != plan_.input.channels)
    throw RuntimeFailure("CUDA engine: normalization needs one mean and std per input channel (" +
                         std::to_string(plan_.input.channels) + ")");
  open_device();
  DeviceScope scope(device_);

  stream_ = Stream::create();
  cublas_ = CublasHandle::create();
  cudnn_ = CudnnHandle::create();
  GT_CHECK(cublasSetStream(cublas_, stream_));
  // Default math: FP32 SGEMM without TF32 (TF32 only with CUBLAS_TF32_TENSOR_OP_MATH).
  GT_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
  GT_CHECK(cudnnSetStream(cudnn_, stream_));

  build_layers();
  BatchPlan full = make_plan(batch_, kConvWorkspaceCap);

  // Everything this engine allocates now (the data sets come later, checked then).
  const size_t P = plan_.parameter_count;
  size_t bytes = 3 * P * sizeof(float) + full.workspace_bytes + kCublasWorkspaceBytes;
  for (int64_t f : slot_floats_) bytes += 2 * size_t(batch_) * size_t(f) * sizeof(float);
  for (const Layer& l : layers_)
    if (l.kind == LayerKind::MaxPool2d) bytes += size_t(batch_) * l.out.size() * sizeof(int32_t);
  bytes += size_t(batch_) * sizeof(int32_t) + size_t(plan_.num_classes) * plan_.num_classes * 8;
  ensure_fits(bytes, "the model at batch size " + std::to_string(batch_));

  params_.allocate(P, "parameters");
  grads_.allocate(P, "gradients");
  momentum_.allocate(P, "momentum");
  act_.resize(slot_floats_.size());
  grad_.resize(slot_floats_.size());
  for (size_t s = 0; s < slot_floats_.size(); ++s) {
    const size_t n = size_t(batch_) * size_t(slot_floats_[s]);
    act_[s].allocate(n, "activations");
    grad_[s].allocate(n, "activation gradients");
    // Zeroed once so no buffer ever holds NaN bit patterns, whatever reads it.
    GT_CHECK(cudaMemsetAsync(act_[s].get(), 0, act_[s].bytes(), stream_));
    GT_CHECK(cudaMemsetAsync(grad_[s].get(), 0, grad_[s].bytes(), stream_));
  }
  for (Layer& l : layers_)
    if (l.kind == LayerKind::MaxPool2d) l.argmax.allocate(size_t(batch_) * l.out.size(), "argmax");
  GT_CHECK(cudaMemsetAsync(params_.get(), 0, params_.bytes(), stream_));
  GT_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), stream_));
  GT_CHECK(cudaMemsetAsync(momentum_.get(), 0, momentum_.bytes(), stream_));

  workspace_.allocate(std::max<size_t>(full.workspace_bytes, 256), "workspace");
  plans_.emplace(batch_, std::move(full));
  cublas_workspace_.allocate(kCublasWorkspaceBytes, "cuBLAS workspace");
  // After cublasSetStream: setting the stream resets cuBLAS to its default workspace pool.
  GT_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_.get(), cublas_workspace_.bytes()));

  mean_.allocate(opt_.mean.size(), "normalization");
  std_.allocate(opt_.std.size(), "normalization");
  GT_CHECK(cudaMemcpyAsync(mean_.get(), opt_.mean.data(), mean_.bytes(), cudaMemcpyHostToDevice,
                           stream_));
  GT_CHECK(
      cudaMemcpyAsync(std_.get(), opt_.std.data(), std_.bytes(), cudaMemcpyHostToDevice, stream_));
  batch_labels_.allocate(size_t(batch_), "labels");
  GT_CHECK(cudaMemsetAsync(batch_labels_.get(), 0, batch_labels_.bytes(), stream_));

  step_state_.allocate(1, "step state");
  train_loss_.allocate(1, "counters");
  eval_loss_.allocate(1, "counters");
  train_correct_.allocate(1, "counters");
  eval_correct_.allocate(1, "counters");
  confusion_.allocate(size_t(plan_.num_classes) * plan_.num_classes, "confusion matrix");
  GT_CHECK(cudaMemsetAsync(step_state_.get(), 0, step_state_.bytes(), stream_));
  GT_CHECK(cudaMemsetAsync(train_loss_.get(), 0, train_loss_.bytes(), stream_));
  GT_CHECK(cudaMemsetAsync(train_correct_.get(), 0, train_correct_.bytes(), stream_));

  step_staging_.allocate(1);
  loss_host_.allocate(1);
  count_host_.allocate(1);
  step_staging_free_ = Event::create();
  order_staging_free_ = Event::create();
  stream_.synchronize();  // the pageable sources above (options) go out of scope

  char pci[32] = {0};
  if (cudaDeviceGetPCIBusId(pci, sizeof(pci), device_) == cudaSuccess)
    nvml_ = std::make_unique<NvmlSampler>(pci);
  else
    cudaGetLastError();
  if (nvml_ && !nvml_->active()) nvml_.reset();
}

CudaEngine::~CudaEngine() {
  // Queued work may still use the buffers about to be freed (cudaFree would wait anyway, but a
  // graph exec or handle destroyed under running work is undefined). Errors are ignored: a
  // destructor must not throw, and a failed device has nothing left to wait for. The device stays
  // current (not restored) because the members are released after this body, on this device.
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  nvml_.reset();
  graph_.reset();
}

void CudaEngine::open_device() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError(std::string("no usable CUDA device: ") + cudaGetErrorString(e));
  }
  if (device_ < 0 || device_ >= count)
    throw DeviceError("CUDA device " + std::to_string(device_) + " asked for, but " +
                      std::to_string(count) + " device" + (count == 1 ? "" : "s") + " present");
  GT_CHECK(cudaGetDeviceProperties(&prop_, device_));
  char cc[32];
  std::snprintf(cc, sizeof(cc), "sm_%d%d", prop_.major, prop_.minor);
  char mem[32];
  std::snprintf(mem, sizeof(mem), "%.1f GiB", double(prop_.totalGlobalMem) / double(1ull << 30));
  description_ =
      "cuda:" + std::to_string(device_) + " " + prop_.name + " (" + cc + ", " + mem + ")";

  DeviceScope scope(device_);
  // Creates the context now, so that "device busy / unavailable" (exclusive-process mode, a
  // failed GPU) is reported as an unusable device rather than a failure of some later call.
  const cudaError_t ctx = cudaFree(nullptr);
  if (ctx != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError(description_ + " cannot be used: " + cudaGetErrorString(ctx));
  }
  const cudaError_t image = probe_kernel_image();
  if (image != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError(description_ + ": this gputrain has no code for " + cc + " (" +
                      cudaGetErrorString(image) +
                      "); rebuild with -DCMAKE_CUDA_ARCHITECTURES=native on this machine");
  }
}

void CudaEngine::build_layers() {
  slot_floats_.assign(1, plan_.input.size());
  int current = 0;
  layers_.resize(plan_.layers.size());
  for (size_t i = 0; i < plan_.layers.size(); ++i) {
    const LayerPlan& lp = plan_.layers[i];
    Layer& l = layers_[i];
    l.kind = lp.config.kind;
    l.in = lp.input;
    l.out = lp.output;
    l.kernel = lp.config.kernel;
    l.stride = lp.config.stride;
    l.padding = lp.config.padding;
    l.name = !lp.config.name.empty() ? lp.config.name : "layer " + std::to_string(i + 1);
    l.in_slot = current;
    switch (l.kind) {
      case LayerKind::Relu:
      case LayerKind::Flatten:
        l.out_slot = current;  // in place / a view
        break;
      case LayerKind::Conv2d:
      case LayerKind::Linear:
      case LayerKind::MaxPool2d:
        slot_floats_.push_back(l.out.size());
        current = l.out_slot = int(slot_floats_.size()) - 1;
        break;
    }
    if (l.kind == LayerKind::Conv2d || l.kind == LayerKind::Linear) {
      l.w_offset = plan_.weight(lp).offset;
      l.b_offset = plan_.bias(lp).offset;
    }
    l.fused_relu = lp.fused_relu;  // ReLU folding: decided once in the plan
    l.folded = lp.folded;
    if (l.kind == LayerKind::Conv2d) {
      l.filter = FilterDesc::oihw(l.out.channels, l.in.channels, l.kernel, l.kernel);
      l.conv = ConvDesc::create(l.padding, l.stride);
    }
  }
}

// ---- batch plans: cuDNN algorithms and workspace per batch size --------------------------------

BatchPlan CudaEngine::make_plan(int n, size_t soft_limit) const {
  BatchPlan bp;
  bp.n = n;
  bp.conv.resize(layers_.size());
  size_t ws = k::softmax_xent_workspace_bytes(n);
  const bool det = opt_.deterministic;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    if (l.kind == LayerKind::Conv2d || l.kind == LayerKind::Linear) {
      const int64_t plane = l.kind == LayerKind::Conv2d ? int64_t(l.out.height) * l.out.width : 1;
      ws = std::max(ws, k::bias_grad_workspace_bytes(n, l.out.channels, plane));
    }
    if (l.kind != LayerKind::Conv2d) continue;
    ConvShape& s = bp.conv[i];
    s.x = TensorDesc::nchw(n, l.in.channels, l.in.height, l.in.width);
    s.y = TensorDesc::nchw(n, l.out.channels, l.out.height, l.out.width);
    int dn = 0, dc = 0, dh = 0, dw = 0;
    GT_CHECK(cudnnGetConvolution2dForwardOutputDim(l.conv, s.x, l.filter, &dn, &dc, &dh, &dw));
    if (dn != n || dc != l.out.channels || dh != l.out.height || dw != l.out.width)
      throw RuntimeFailure("cuDNN's output shape for " + l.name + " (" + std::to_string(dc) + "x" +
                           std::to_string(dh) + "x" + std::to_string(dw) +
                           ") differs from the planned " + shape_string(l.out));
    const std::string what = l.name + " (" + shape_string(l.in) + " -> " + shape_string(l.out) +
                             ", batch " + std::to_string(n) + (det ? ", deterministic" : "") + ")";
    cudnnHandle_t h = cudnn_;

    int max_count = 0, returned = 0;
    size_t bytes = 0;
    {
      GT_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_count));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(size_t(std::max(max_count, 1)));
      GT_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, s.x, l.filter, l.conv, s.y, max_count,
                                                      &returned, perf.data()));
      perf.resize(size_t(returned));
      std::function<cudnnStatus_t(cudnnConvolutionFwdAlgo_t, size_t*)> query =
          [&](cudnnConvolutionFwdAlgo_t a, size_t* b) {
            return cudnnGetConvolutionForwardWorkspaceSize(h, s.x, l.filter, l.conv, s.y, a, b);
          };
      if (!pick_algorithm(perf, det, soft_limit, kConvWorkspaceCap, query, &s.fwd, &bytes))
        throw RuntimeFailure("cuDNN offers no usable forward algorithm for " + what);
      ws = std::max(ws, bytes);
    }
    {
      GT_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max_count));
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(size_t(std::max(max_count, 1)));
      GT_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, s.x, s.y, l.conv, l.filter,
                                                             max_count, &returned, perf.data()));
      perf.resize(size_t(returned));
      std::function<cudnnStatus_t(cudnnConvolutionBwdFilterAlgo_t, size_t*)> query =
          [&](cudnnConvolutionBwdFilterAlgo_t a, size_t* b) {
            return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, s.x, s.y, l.conv, l.filter, a,
                                                                  b);
          };
      if (!pick_algorithm(perf, det, soft_limit, kConvWorkspaceCap, query, &s.bwd_filter, &bytes))
        throw RuntimeFailure("cuDNN offers no usable weight-gradient algorithm for " + what);
      ws = std::max(ws, bytes);
    }
    s.has_bwd_data = l.in_slot != 0;  // the first parameter layer's input is data: no gradient
    if (s.has_bwd_data) {
      GT_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max_count));
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(size_t(std::max(max_count, 1)));
      GT_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, l.filter, s.y, l.conv, s.x, max_count,
                                                           &returned, perf.data()));
      perf.resize(size_t(returned));
      std::function<cudnnStatus_t(cudnnConvolutionBwdDataAlgo_t, size_t*)> query =
          [&](cudnnConvolutionBwdDataAlgo_t a, size_t* b) {
            return cudnnGetConvolutionBackwardDataWorkspaceSize(h, l.filter, s.y, l.conv, s.x, a,
                                                                b);
          };
      if (!pick_algorithm(perf, det, soft_limit, kConvWorkspaceCap, query, &s.bwd_data, &bytes))
        throw RuntimeFailure("cuDNN offers no usable input-gradient algorithm for " + what);
      ws = std::max(ws, bytes);
    }
  }
  bp.workspace_bytes = ws;
  return bp;
}

const BatchPlan& CudaEngine::plan_for(int n) {
  auto it = plans_.find(n);
  if (it != plans_.end()) return it->second;
  // Prefer algorithms that fit the workspace we have; grow it only when none does.
  BatchPlan bp = make_plan(n, workspace_.bytes());
  if (bp.workspace_bytes > workspace_.bytes()) {
    stream_.synchronize();  // queued work may still use the old workspace
    graph_.reset();         // the captured step holds the old workspace's address
    const size_t old = workspace_.bytes();
    workspace_.release();
    ensure_fits(bp.workspace_bytes, "the workspace for batch size " + std::to_string(n));
    workspace_.allocate(std::max(bp.workspace_bytes, old), "workspace");
  }
  return plans_.emplace(n, std::move(bp)).first->second;
}

void CudaEngine::ensure_fits(size_t needed, const std::string& what) const {
  size_t free_bytes = 0, total = 0;
  GT_CHECK(cudaMemGetInfo(&free_bytes, &total));
  if (needed > free_bytes)
    throw DeviceError(what + " needs " + mib(needed) + " MiB on " + description_ + ", " +
                      mib(free_bytes) + " MiB free");
}

// ---- host <-> device copies --------------------------------------------------------------------

// Bulk copies go through cudaMemcpyAsync on the engine's stream (the stream is non-blocking, so a
// plain cudaMemcpy on the legacy stream would NOT be ordered after queued steps) and then wait for
// the stream: they are rare (start, checkpoints, end of an epoch) and the caller needs the data.
void CudaEngine::upload_flat(DeviceBuffer<float>& dst, const std::vector<float>& values,
                             const char* what) {
  if (values.size() != plan_.parameter_count)
    throw RuntimeFailure(std::string(what) + ": expected " + std::to_string(plan_.parameter_count) +
                         " values, got " + std::to_string(values.size()));
  DeviceScope scope(device_);
  GT_CHECK(cudaMemcpyAsync(dst.get(), values.data(), dst.bytes(), cudaMemcpyHostToDevice, stream_));
  stream_.synchronize();
}

std::vector<float> CudaEngine::download_flat(const DeviceBuffer<float>& src) {
  DeviceScope scope(device_);
  std::vector<float> out(src.size());
  GT_CHECK(cudaMemcpyAsync(out.data(), src.get(), src.bytes(), cudaMemcpyDeviceToHost, stream_));
  stream_.synchronize();
  return out;
}

void CudaEngine::set_parameters(const std::vector<float>& values) {
  upload_flat(params_, values, "parameters");
}
std::vector<float> CudaEngine::parameters() {
  return download_flat(params_);
}
DeviceBuffer<float>& CudaEngine::state_buffer(const std::string& name) {
  if (name != "momentum")
    throw RuntimeFailure("CUDA engine: the optimizer has no state named '" + name + "'");
  return momentum_;
}
void CudaEngine::set_state(const std::string& name, const std::vector<float>& values) {
  upload_flat(state_buffer(name), values, name.c_str());
}
std::vector<float> CudaEngine::state(const std::string& name) {
  return download_flat(state_buffer(name));
}

void CudaEngine::set_step_table(const std::vector<StepHyper>& table) {
  if (table.empty()) throw RuntimeFailure("set_step_table: empty table");
  DeviceScope scope(device_);
  stream_.synchronize();  // queued steps may still read the old table
  if (step_table_.size() < table.size()) step_table_.allocate(table.size(), "step table");
  GT_CHECK(cudaMemcpy(step_table_.get(), table.data(), table.size() * sizeof(StepHyper),
                      cudaMemcpyHostToDevice));
  step_table_size_ = table.size();
}

void CudaEngine::set_global_step(int64_t step) {
  global_step_ = step;
  device_first_ = -1;  // the next forward_backward stages {first, step} explicitly
}

void CudaEngine::check_images(const ImageSet& set, const char* what) const {
  if (set.channels != plan_.input.channels || set.height != plan_.input.height ||
      set.width != plan_.input.width)
    throw DataError(std::string("the ") + what + " images are " + std::to_string(set.channels) +
                    "x" + std::to_string(set.height) + "x" + std::to_string(set.width) +
                    " but model.input is " + shape_string(plan_.input));
  if (set.count < 0 || set.pixels.size() != size_t(set.count) * size_t(set.image_size()) ||
      set.labels.size() != size_t(set.count))
    throw DataError(std::string("the ") + what + " set's pixel or label count does not match its " +
                    std::to_string(set.count) + " images");
  // The softmax kernel would turn a bad label into a NaN loss; say what is wrong instead.
  for (size_t i = 0; i < set.labels.size(); ++i)
    if (set.labels[i] < 0 || set.labels[i] >= plan_.num_classes)
      throw DataError(std::string("the ") + what + " set's label " + std::to_string(set.labels[i]) +
                      " (image " + std::to_string(i) + ") is outside [0, " +
                      std::to_string(plan_.num_classes) + ")");
}

void CudaEngine::upload_images(const ImageSet& set, DeviceBuffer<uint8_t>& pixels,
                               DeviceBuffer<int32_t>& labels, int64_t* count, const char* what) {
  check_images(set, what);
  DeviceScope scope(device_);
  stream_.synchronize();  // queued steps / evaluations may read the old copy
  if (pixels.size() != set.pixels.size() || labels.size() != set.labels.size()) {
    // Reallocated: addresses change, so the captured step (which holds them) is dropped.
    graph_.reset();
    pixels.release();
    labels.release();
    const size_t need = set.pixels.size() + set.labels.size() * sizeof(int32_t);
    ensure_fits(need,
                std::string("the ") + what + " set (" + std::to_string(set.count) + " images)");
    pixels.allocate(set.pixels.size(), std::string(what) + " images");
    labels.allocate(set.labels.size(), std::string(what) + " labels");
  }
  if (!set.pixels.empty())
    GT_CHECK(cudaMemcpyAsync(pixels.get(), set.pixels.data(), set.pixels.size(),
                             cudaMemcpyHostToDevice, stream_));
  if (!set.labels.empty())
    GT_CHECK(cudaMemcpyAsync(labels.get(), set.labels.data(), set.labels.size() * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  stream_.synchronize();
  *count = set.count;
}

void CudaEngine::set_train_data(const ImageSet& train) {
  upload_images(train, train_pixels_, train_labels_, &train_count_, "training");
  order_size_ = 0;  // an order refers to a particular training set: set_order again
  device_first_ = -1;
  // Plan the epoch's last, partial batch now rather than in the middle of the first epoch.
  DeviceScope scope(device_);
  if (train_count_ > 0 && train_count_ % batch_ != 0) plan_for(int(train_count_ % batch_));
}

void CudaEngine::set_eval_data(const ImageSet& eval) {
  upload_images(eval, eval_pixels_, eval_labels_, &eval_count_, "evaluation");
  DeviceScope scope(device_);
  if (eval_count_ > 0 && eval_count_ % batch_ != 0) plan_for(int(eval_count_ % batch_));
}

void CudaEngine::set_order(const std::vector<int32_t>& order) {
  if (train_count_ < 0) throw RuntimeFailure("set_order: no training data set");
  // Every index is checked on the host: the gather kernel trusts them (out of range = a wild read).
  for (size_t i = 0; i < order.size(); ++i)
    if (order[i] < 0 || order[i] >= train_count_)
      throw RuntimeFailure("set_order: index " + std::to_string(order[i]) + " at position " +
                           std::to_string(i) + " is outside the " + std::to_string(train_count_) +
                           " training images");
  DeviceScope scope(device_);
  if (order.size() > order_.size()) {
    stream_.synchronize();
    graph_.reset();  // new address
    order_.release();
    order_staging_.release();
    ensure_fits(order.size() * sizeof(int32_t), "the training order");
    order_.allocate(order.size(), "training order");
    order_staging_.allocate(order.size());
  }
  order_size_ = order.size();
  if (order.empty()) return;
  // The previous epoch's steps may still be queued and reading order_; the copy below is queued
  // after them on the same stream, so they see the old order and later steps the new one.
  order_staging_free_.synchronize();
  std::memcpy(order_staging_.get(), order.data(), order.size() * sizeof(int32_t));
  GT_CHECK(cudaMemcpyAsync(order_.get(), order_staging_.get(), order.size() * sizeof(int32_t),
                           cudaMemcpyHostToDevice, stream_));
  order_staging_free_.record(stream_);
  device_first_ = -1;  // a new order: the next step sets its position explicitly
}

void CudaEngine::set_step_first(int64_t first) {
  step_staging_free_.synchronize();  // the previous copy from the staging struct has run
  step_staging_[0] = k::StepState{first, global_step_};
  GT_CHECK(cudaMemcpyAsync(step_state_.get(), step_staging_.get(), sizeof(k::StepState),
                           cudaMemcpyHostToDevice, stream_));
  step_staging_free_.record(stream_);
  device_first_ = first;
}

// ---- the step ----------------------------------------------------------------------------------

void CudaEngine::forward(const BatchPlan& bp, int n) {
  const float one = 1.0f, zero = 0.0f;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const float* x = act_[size_t(l.in_slot)].get();
    float* y = act_[size_t(l.out_slot)].get();
    switch (l.kind) {
      case LayerKind::Conv2d: {
        const ConvShape& s = bp.conv[i];
        // y[n,O,Ho,Wo] = conv(x[n,C,H,W], w[O,C,k,k]); then y += b[O] (and ReLU) in place.
        GT_CHECK(cudnnConvolutionForward(cudnn_, &one, s.x, x, l.filter, param(l.w_offset), l.conv,
                                         s.fwd, workspace_.get(), workspace_.bytes(), &zero, s.y,
                                         y));
        k::launch_bias_act(y, param(l.b_offset), n, l.out.channels,
                           int64_t(l.out.height) * l.out.width, l.fused_relu, stream_);
        break;
      }
      case LayerKind::Linear: {
        // Row-major y[n,O] = x[n,I]·W[O,I]^T. cuBLAS is column-major, where row-major y is
        // y^T [O,n] (ld O), W is W^T [I,O] (ld I) and x is x^T [I,n] (ld I):
        // y^T = op_T(W^T) · x^T, i.e. m=O, n=n, k=I.
        const int I = int(l.in.size()), O = int(l.out.size());
        GT_CHECK(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, O, n, I, &one, param(l.w_offset), I,
                             x, I, &zero, y, O));
        k::launch_bias_act(y, param(l.b_offset), n, O, 1, l.fused_relu, stream_);
        break;
      }
      case LayerKind::Relu:
        if (!l.folded) k::launch_relu_forward(x, y, int64_t(n) * l.out.size(), stream_);
        break;
      case LayerKind::MaxPool2d: {
        const PoolGeometry g = plan_.layers[i].pool_geometry(n);
        k::launch_maxpool2d_forward(g, x, y, l.argmax.get(), stream_);
        break;
      }
      case LayerKind::Flatten:
        break;  // [n,C,H,W] is already [n, C·H·W] in memory
    }
  }
}

void CudaEngine::backward(const BatchPlan& bp, int n) {
  const float one = 1.0f, zero = 0.0f;
  for (size_t i = layers_.size(); i-- > 0;) {
    const Layer& l = layers_[i];
    const float* x = act_[size_t(l.in_slot)].get();
    const float* y = act_[size_t(l.out_slot)].get();
    float* dy = grad_[size_t(l.out_slot)].get();
    // No gradient for the input batch (slot 0): it is data.
    float* dx = l.in_slot != 0 ? grad_[size_t(l.in_slot)].get() : nullptr;
    switch (l.kind) {
      case LayerKind::Conv2d: {
        const ConvShape& s = bp.conv[i];
        // db[O] = Σ_{n,p} dy; with a folded ReLU, first dy ← dy·(y > 0) in place (y is the
        // post-ReLU output), which is the gradient the conv itself sees.
        k::launch_bias_grad(dy, l.fused_relu ? y : nullptr, l.fused_relu ? dy : nullptr,
                            grad(l.b_offset), n, l.out.channels,
                            int64_t(l.out.height) * l.out.width, workspace_.get(),
                            workspace_.bytes(), stream_);
        // dw[O,C,k,k] = Σ_n x ⋆ dy (written, beta = 0).
        GT_CHECK(cudnnConvolutionBackwardFilter(cudnn_, &one, s.x, x, s.y, dy, l.conv, s.bwd_filter,
                                                workspace_.get(), workspace_.bytes(), &zero,
                                                l.filter, grad(l.w_offset)));
        if (dx && s.has_bwd_data)
          GT_CHECK(cudnnConvolutionBackwardData(cudnn_, &one, l.filter, param(l.w_offset), s.y, dy,
                                                l.conv, s.bwd_data, workspace_.get(),
                                                workspace_.bytes(), &zero, s.x, dx));
        break;
      }
      case LayerKind::Linear: {
        const int I = int(l.in.size()), O = int(l.out.size());
        k::launch_bias_grad(dy, l.fused_relu ? y : nullptr, l.fused_relu ? dy : nullptr,
                            grad(l.b_offset), n, O, 1, workspace_.get(), workspace_.bytes(),
                            stream_);
        // Row-major dW[O,I] = dy[n,O]^T·x[n,I]. Column-major: dW^T [I,O] (ld I) =
        // x^T [I,n] (ld I, op N) · dy [n,O] (stored as dy^T [O,n], ld O, op T); m=I, n=O, k=n.
        GT_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, I, O, n, &one, x, I, dy, O, &zero,
                             grad(l.w_offset), I));
        // Row-major dx[n,I] = dy[n,O]·W[O,I]. Column-major: dx^T [I,n] (ld I) =
        // W^T [I,O] (ld I, op N) · dy^T [O,n] (ld O, op N); m=I, n=n, k=O.
        if (dx)
          GT_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, I, n, O, &one, param(l.w_offset),
                               I, dy, O, &zero, dx, I));
        break;
      }
      case LayerKind::Relu:
        // In place (dx == dy: same slot); y is this ReLU's output.
        if (!l.folded && dx) k::launch_relu_backward(y, dy, dx, int64_t(n) * l.out.size(), stream_);
        break;
      case LayerKind::MaxPool2d:
        if (dx) {
          const PoolGeometry g = plan_.layers[i].pool_geometry(n);
          k::launch_maxpool2d_backward(g, dy, l.argmax.get(), dx, stream_);
        }
        break;
      case LayerKind::Flatten:
        break;
    }
  }
}

// A training step's first phase on the device: the batch at order[state.first, +n) → forward →
// loss (dlogits, loss and correct accumulated on the device) → backward → state.first += n,
// state.step += 1. Reads nothing from the host, so it can be captured and replayed as is.
void CudaEngine::enqueue_forward_backward(const BatchPlan& bp, int n, float grad_scale) {
  const int64_t plane = int64_t(plan_.input.height) * plan_.input.width;
  k::launch_gather_batch(train_pixels_.get(), train_labels_.get(), order_.get(), step_state_.get(),
                         0, n, plan_.input.channels, plane, mean_.get(), std_.get(), act_[0].get(),
                         batch_labels_.get(), stream_);
  forward(bp, n);
  k::launch_softmax_xent(n, plan_.num_classes, logits(), batch_labels_.get(), grad_scale, dlogits(),
                         nullptr, train_loss_.get(), train_correct_.get(), nullptr,
                         workspace_.get(), workspace_.bytes(), stream_);
  backward(bp, n);
  k::launch_advance_step(step_state_.get(), n, stream_);
}

void CudaEngine::forward_backward(int64_t first, int count, float grad_scale) {
  if (train_count_ < 0 || order_size_ == 0)
    throw RuntimeFailure("forward_backward: set_train_data and set_order come first");
  if (count < 1 || count > batch_ || first < 0 || first + count > int64_t(order_size_))
    throw RuntimeFailure("forward_backward: batch [" + std::to_string(first) + ", +" +
                         std::to_string(count) + ") is outside the planned batch size " +
                         std::to_string(batch_) + " or the order of " +
                         std::to_string(order_size_));
  DeviceScope scope(device_);
  const BatchPlan& bp = plan_for(count);  // no-op after the first step of this size

  // The device's step position follows the trainer's `first` exactly: normally each step's
  // advance_step leaves it where the next step starts, and only a jump (new epoch, resume, a
  // skipped range) costs an explicit (asynchronous) set.
  if (first != device_first_) set_step_first(first);
  // grad_scale is a launch argument baked into the graph; a new one (rare) needs a new capture.
  if (graph_.ready() && grad_scale != graph_grad_scale_) graph_.reset();

  const bool graphable = opt_.use_graph && count == batch_;
  if (graphable && graph_.ready()) {
    graph_.launch(stream_);
  } else if (graphable && warmed_up_) {
    // Capture records the step without running it; then run it. If capture fails the step did not
    // happen and the state above is unchanged (device_first_ still says where the device is).
    graph_.capture(stream_, [&] { enqueue_forward_backward(bp, count, grad_scale); });
    graph_grad_scale_ = grad_scale;
    graph_.launch(stream_);
  } else {
    // Eager: the last partial batch, --no-graph, and the one warm-up step before capture (first
    // calls into cuBLAS/cuDNN load kernels and set up state, which must not happen in a capture).
    enqueue_forward_backward(bp, count, grad_scale);
    if (graphable) warmed_up_ = true;
  }
  device_first_ = first + count;
  samples_ += count;
}

// The second phase: one kernel over the flat buffers, its lr from the step table entry of the
// device's step count (advanced by forward_backward), so it needs nothing from the host either.
void CudaEngine::apply_optimizer() {
  if (step_table_size_ == 0) throw RuntimeFailure("apply_optimizer: set_step_table comes first");
  DeviceScope scope(device_);
  const OptimizerSpec& o = opt_.optimizer;
  const k::SgdHyper constants{0.0f, o.momentum, o.weight_decay, o.nesterov ? 1 : 0};
  k::launch_sgd_step(int64_t(plan_.parameter_count), params_.get(), grads_.get(), momentum_.get(),
                     constants, step_table_.get(), int64_t(step_table_size_), step_state_.get(),
                     stream_);
  ++global_step_;
}

TrainCounters CudaEngine::read_counters(bool reset) {
  DeviceScope scope(device_);
  GT_CHECK(cudaMemcpyAsync(loss_host_.get(), train_loss_.get(), sizeof(double),
                           cudaMemcpyDeviceToHost, stream_));
  GT_CHECK(cudaMemcpyAsync(count_host_.get(), train_correct_.get(), sizeof(unsigned long long),
                           cudaMemcpyDeviceToHost, stream_));
  if (reset) {
    // Queued after the copies: steps enqueued later accumulate into the zeroed counters.
    GT_CHECK(cudaMemsetAsync(train_loss_.get(), 0, sizeof(double), stream_));
    GT_CHECK(cudaMemsetAsync(train_correct_.get(), 0, sizeof(unsigned long long), stream_));
  }
  stream_.synchronize();
  TrainCounters c;
  c.loss_sum = loss_host_[0];
  c.correct = int64_t(count_host_[0]);
  c.samples = samples_;
  if (reset) samples_ = 0;
  return c;
}

EvalResult CudaEngine::evaluate(std::vector<float>* out_logits, const std::atomic<bool>* stop) {
  EvalResult r;
  const int K = plan_.num_classes;
  r.classes = K;
  r.confusion.assign(size_t(K) * K, 0);
  const int64_t total = std::max<int64_t>(eval_count_, 0);
  if (out_logits) out_logits->assign(size_t(total) * K, 0.0f);
  if (total == 0) return r;
  DeviceScope scope(device_);
  GT_CHECK(cudaMemsetAsync(eval_loss_.get(), 0, sizeof(double), stream_));
  GT_CHECK(cudaMemsetAsync(eval_correct_.get(), 0, sizeof(unsigned long long), stream_));
  GT_CHECK(cudaMemsetAsync(confusion_.get(), 0, confusion_.bytes(), stream_));
  const int64_t plane = int64_t(plan_.input.height) * plan_.input.width;
  for (int64_t start = 0; start < total; start += batch_) {
    if (stop && stop->load()) {  // a host-side check only: chunks are queued, not waited for
      r.interrupted = true;
      break;
    }
    const int n = int(std::min<int64_t>(batch_, total - start));
    const BatchPlan& bp = plan_for(n);
    // File order: no order buffer, no device step state; the chunk's first index from the host.
    k::launch_gather_batch(eval_pixels_.get(), eval_labels_.get(), nullptr, nullptr, start, n,
                           plan_.input.channels, plane, mean_.get(), std_.get(), act_[0].get(),
                           batch_labels_.get(), stream_);
    forward(bp, n);
    k::launch_softmax_xent(n, K, logits(), batch_labels_.get(), 1.0f, nullptr, nullptr,
                           eval_loss_.get(), eval_correct_.get(), confusion_.get(),
                           workspace_.get(), workspace_.bytes(), stream_);
    // Stream-ordered before the next chunk overwrites the logits slot.
    if (out_logits)
      GT_CHECK(cudaMemcpyAsync(out_logits->data() + size_t(start) * K, logits(),
                               size_t(n) * K * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  }
  std::vector<unsigned long long> confusion(size_t(K) * K);
  GT_CHECK(cudaMemcpyAsync(loss_host_.get(), eval_loss_.get(), sizeof(double),
                           cudaMemcpyDeviceToHost, stream_));
  GT_CHECK(cudaMemcpyAsync(count_host_.get(), eval_correct_.get(), sizeof(unsigned long long),
                           cudaMemcpyDeviceToHost, stream_));
  GT_CHECK(cudaMemcpyAsync(confusion.data(), confusion_.get(), confusion_.bytes(),
                           cudaMemcpyDeviceToHost, stream_));
  stream_.synchronize();
  r.loss_sum = loss_host_[0];
  r.correct = int64_t(count_host_[0]);
  r.samples = total;
  for (size_t i = 0; i < confusion.size(); ++i) r.confusion[i] = int64_t(confusion[i]);
  return r;
}

}  // namespace

std::unique_ptr<Engine> make_cuda_engine(const ModelPlan& plan, const EngineOptions& options) {
  return std::make_unique<CudaEngine>(plan, options);
}

}  // namespace gputrain::cuda
