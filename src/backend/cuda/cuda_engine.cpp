// The CUDA engine: gputrain::Engine on one GPU, as orchestration of its parts — the model lowered
// for the GPU (cuda_layers), cuDNN plans per batch size (conv_plans), the data and step state on
// the device (device_data), the optimizer (cuda_optimizer), numerics (precision). Built once per
// (ModelPlan, EngineOptions): every buffer a step touches is declared in one AllocationList,
// checked against free memory and allocated here; a step only enqueues work on the engine's one
// stream. No step allocates or waits for the host, which is what lets a whole full-batch
// forward_backward be captured once as a CUDA graph and replayed; should the capture fail, the
// engine says why (describe(), take_warnings()) and runs every step eagerly instead.
//
// With EngineOptions::deterministic only cuDNN algorithms flagged CUDNN_DETERMINISTIC are used; the
// hand-written kernels and cuBLAS (no atomics mode) are deterministic already, so the whole run is.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/allocation_plan.hpp"
#include "backend/cuda/conv_plans.hpp"
#include "backend/cuda/cuda_backend.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/cuda_layers.hpp"
#include "backend/cuda/cuda_optimizer.hpp"
#include "backend/cuda/cuda_resources.hpp"
#include "backend/cuda/device_data.hpp"
#include "backend/cuda/device_probe.hpp"
#include "backend/cuda/nvml_sampler.hpp"
#include "backend/cuda/precision.hpp"
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

class CudaEngineImpl final : public CudaEngine {
 public:
  CudaEngineImpl(const ModelPlan& plan, const EngineOptions& options);
  ~CudaEngineImpl() override;
  CudaEngineImpl(const CudaEngineImpl&) = delete;
  CudaEngineImpl& operator=(const CudaEngineImpl&) = delete;

  std::string describe() const override;
  void set_parameters(const std::vector<float>& values) override;
  std::vector<float> parameters() override { return download_flat(params_); }
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
  std::vector<std::string> take_warnings() override { return std::exchange(warnings_, {}); }

  int64_t graph_replays() const override { return graph_replays_; }
  bool graph_active() const override { return opt_.use_graph && capture_failure_.empty(); }
  std::string algorithm_report() const override;
  void break_next_capture_for_testing() override { break_next_capture_ = true; }

 private:
  PassContext pass_context() const;
  ConvPlanOptions conv_options(size_t soft_limit) const;
  const BatchPlan& plan_for(int n);
  void upload_flat(DeviceBuffer<float>& dst, const std::vector<float>& values, const char* what);
  std::vector<float> download_flat(const DeviceBuffer<float>& src);
  // The step's device work up to the gradients, in stream order (enqueue only).
  void enqueue_forward_backward(const BatchPlan& bp, int n, float grad_scale);
  void run_full_step_as_graph(const BatchPlan& bp, int n, float grad_scale);

  ModelPlan plan_;
  EngineOptions opt_;
  Precision precision_ = Precision::Fp32;
  int batch_ = 0;
  int device_ = 0;
  std::string description_;

  Stream stream_;
  CublasHandle cublas_;
  CudnnHandle cudnn_;

  std::optional<CudaLayers> layers_;  // made once the device is open
  CudaOptimizer optimizer_;
  std::optional<DeviceData> data_;         // made once the stream exists
  DeviceBuffer<float> params_, grads_;     // flat [parameter_count] each
  DeviceBuffer<unsigned char> workspace_;  // cuDNN + bias-grad + softmax-xent scratch
  DeviceBuffer<unsigned char> cublas_workspace_;
  DeviceBuffer<double> train_loss_, eval_loss_;
  DeviceBuffer<unsigned long long> train_correct_, eval_correct_, confusion_;
  PinnedBuffer<double> loss_host_;
  PinnedBuffer<unsigned long long> count_host_;

  int64_t samples_ = 0;      // training samples since the last counter reset (host-side, exact)
  int64_t global_step_ = 0;  // optimizer updates applied (StepState::step once they have run)

  std::map<int, BatchPlan> plans_;
  CudaGraph graph_;
  float graph_grad_scale_ = 0;  // the grad_scale the captured graph was recorded with
  bool warmed_up_ = false;      // one eager full-batch step has run: the next one is captured
  int64_t graph_replays_ = 0;
  std::string capture_failure_;  // why capture failed (then every step runs eagerly)
  bool break_next_capture_ = false;
  std::vector<std::string> warnings_;

  std::unique_ptr<NvmlSampler> nvml_;
};

// ---- construction ------------------------------------------------------------------------------

CudaEngineImpl::CudaEngineImpl(const ModelPlan& plan, const EngineOptions& options)
    : plan_(plan),
      opt_(options),
      batch_(options.batch_size),
      device_(options.device_index),
      optimizer_(options.optimizer, plan.parameter_count) {
  if (batch_ < 1) throw RuntimeFailure("CUDA engine: batch size must be >= 1");
  if (plan_.layers.empty()) throw RuntimeFailure("CUDA engine: the model has no layers");
  if (int(opt_.mean.size()) != plan_.input.channels || int(opt_.std.size()) != plan_.input.channels)
    throw RuntimeFailure("CUDA engine: normalization needs one mean and std per input channel (" +
                         std::to_string(plan_.input.channels) + ")");
  description_ = open_device(device_);
  DeviceScope scope(device_);

  stream_ = Stream::create();
  cublas_ = CublasHandle::create();
  cudnn_ = CudnnHandle::create();
  GT_CHECK(cublasSetStream(cublas_, stream_));
  configure_cublas(precision_, cublas_);
  GT_CHECK(cudnnSetStream(cudnn_, stream_));
  layers_.emplace(plan_, precision_);
  data_.emplace(plan_, batch_, stream_.get(), description_);

  BatchPlan full = plan_convolutions(cudnn_, *layers_, batch_, conv_options(kConvWorkspaceCap));

  // Every buffer this engine allocates now, declared once (the data sets come later, checked
  // then). The memory check sums this list; the allocation walks it.
  const size_t P = plan_.parameter_count;
  const size_t K = size_t(plan_.num_classes);
  AllocationList list;
  list.add(params_, P, "parameters");
  list.add(grads_, P, "gradients");
  optimizer_.plan_allocations(list);
  layers_->plan_allocations(batch_, list);
  list.add(workspace_, std::max<size_t>(full.workspace_bytes, 256), "workspace", false);
  list.add(cublas_workspace_, kCublasWorkspaceBytes, "cuBLAS workspace", false);
  data_->plan_allocations(list);
  list.add(train_loss_, 1, "counters");
  list.add(eval_loss_, 1, "counters");
  list.add(train_correct_, 1, "counters");
  list.add(eval_correct_, 1, "counters");
  list.add(confusion_, K * K, "confusion matrix");
  ensure_fits(list.total_bytes(), "the model at batch size " + std::to_string(batch_),
              description_);
  list.allocate_all(stream_);
  // After cublasSetStream: setting the stream resets cuBLAS to its default workspace pool.
  GT_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_.get(), cublas_workspace_.bytes()));
  data_->initialize(opt_.mean, opt_.std);
  loss_host_.allocate(1);
  count_host_.allocate(1);

  verify_convolutions(full, *layers_, pass_context(), opt_.deterministic);
  plans_.emplace(batch_, std::move(full));

  char pci[32] = {0};
  if (cudaDeviceGetPCIBusId(pci, sizeof(pci), device_) == cudaSuccess)
    nvml_ = std::make_unique<NvmlSampler>(pci);
  else
    cudaGetLastError();
  if (nvml_ && !nvml_->active()) nvml_.reset();
}

CudaEngineImpl::~CudaEngineImpl() {
  // Queued work may still use the buffers about to be freed (cudaFree would wait anyway, but a
  // graph exec or handle destroyed under running work is undefined). Errors are ignored: a
  // destructor must not throw, and a failed device has nothing left to wait for. The device stays
  // current (not restored) because the members are released after this body, on this device.
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  nvml_.reset();
  graph_.reset();
}

std::string CudaEngineImpl::describe() const {
  if (capture_failure_.empty()) return description_;
  return description_ + ", eager (graph capture failed: " + capture_failure_ + ")";
}

std::string CudaEngineImpl::algorithm_report() const {
  std::string report;
  for (const auto& [n, bp] : plans_)
    for (const std::string& line : bp.report) report += line + "\n";
  return report;
}

PassContext CudaEngineImpl::pass_context() const {
  return PassContext{precision_,    cudnn_.get(), cublas_.get(),    stream_.get(),
                     params_.get(), grads_.get(), workspace_.get(), workspace_.bytes()};
}

ConvPlanOptions CudaEngineImpl::conv_options(size_t soft_limit) const {
  return ConvPlanOptions{precision_, opt_.deterministic, soft_limit, kConvWorkspaceCap};
}

// A plan per batch size, made when a size first occurs (set_*_data plan the partial ones ahead).
const BatchPlan& CudaEngineImpl::plan_for(int n) {
  auto it = plans_.find(n);
  if (it != plans_.end()) return it->second;
  // Prefer algorithms that fit the workspace we have; grow it only when none does.
  BatchPlan bp = plan_convolutions(cudnn_, *layers_, n, conv_options(workspace_.bytes()));
  if (bp.workspace_bytes > workspace_.bytes()) {
    stream_.synchronize();  // queued work may still use the old workspace
    graph_.reset();         // the captured step holds the old workspace's address
    const size_t old = workspace_.bytes();
    workspace_.release();
    ensure_fits(bp.workspace_bytes, "the workspace for batch size " + std::to_string(n),
                description_);
    workspace_.allocate(std::max(bp.workspace_bytes, old), "workspace");
  }
  verify_convolutions(bp, *layers_, pass_context(), opt_.deterministic);
  return plans_.emplace(n, std::move(bp)).first->second;
}

// ---- host <-> device copies --------------------------------------------------------------------

// Bulk copies go through cudaMemcpyAsync on the engine's stream (the stream is non-blocking, so a
// plain cudaMemcpy on the legacy stream would NOT be ordered after queued steps) and then wait for
// the stream: they are rare (start, checkpoints, end of an epoch) and the caller needs the data.
void CudaEngineImpl::upload_flat(DeviceBuffer<float>& dst, const std::vector<float>& values,
                                 const char* what) {
  if (values.size() != plan_.parameter_count)
    throw RuntimeFailure(std::string(what) + ": expected " + std::to_string(plan_.parameter_count) +
                         " values, got " + std::to_string(values.size()));
  DeviceScope scope(device_);
  GT_CHECK(cudaMemcpyAsync(dst.get(), values.data(), dst.bytes(), cudaMemcpyHostToDevice, stream_));
  stream_.synchronize();
}

std::vector<float> CudaEngineImpl::download_flat(const DeviceBuffer<float>& src) {
  DeviceScope scope(device_);
  std::vector<float> out(src.size());
  GT_CHECK(cudaMemcpyAsync(out.data(), src.get(), src.bytes(), cudaMemcpyDeviceToHost, stream_));
  stream_.synchronize();
  return out;
}

void CudaEngineImpl::set_parameters(const std::vector<float>& values) {
  upload_flat(params_, values, "parameters");
}
void CudaEngineImpl::set_state(const std::string& name, const std::vector<float>& values) {
  upload_flat(optimizer_.state(name), values, name.c_str());
}
std::vector<float> CudaEngineImpl::state(const std::string& name) {
  return download_flat(optimizer_.state(name));
}

void CudaEngineImpl::set_step_table(const std::vector<StepHyper>& table) {
  DeviceScope scope(device_);
  optimizer_.set_step_table(table, stream_);
}

void CudaEngineImpl::set_global_step(int64_t step) {
  global_step_ = step;
  data_->forget_position();  // the next forward_backward stages {first, step} explicitly
}

void CudaEngineImpl::set_train_data(const ImageSet& train) {
  DeviceScope scope(device_);
  if (data_->set_train(train)) graph_.reset();  // the captured step holds the old addresses
  // Plan the epoch's last, partial batch now rather than in the middle of the first epoch.
  const int64_t count = data_->train_count();
  if (count > 0 && count % batch_ != 0) plan_for(int(count % batch_));
}

void CudaEngineImpl::set_eval_data(const ImageSet& eval) {
  DeviceScope scope(device_);
  data_->set_eval(eval);  // evaluation is never captured: moved buffers need nothing more
  const int64_t count = data_->eval_count();
  if (count > 0 && count % batch_ != 0) plan_for(int(count % batch_));
}

void CudaEngineImpl::set_order(const std::vector<int32_t>& order) {
  DeviceScope scope(device_);
  if (data_->set_order(order)) graph_.reset();
}

// ---- the step ----------------------------------------------------------------------------------

// A training step's first phase on the device: the batch at order[state.first, +n) → forward →
// loss (dlogits, loss and correct accumulated on the device) → backward → state.first += n,
// state.step += 1. Reads nothing from the host, so it can be captured and replayed as is.
void CudaEngineImpl::enqueue_forward_backward(const BatchPlan& bp, int n, float grad_scale) {
  const PassContext c = pass_context();
  data_->enqueue_train_batch(n, layers_->input());
  layers_->forward(c, bp, n);
  k::launch_softmax_xent(n, plan_.num_classes, layers_->logits(), data_->batch_labels(), grad_scale,
                         layers_->dlogits(), nullptr, train_loss_.get(), train_correct_.get(),
                         nullptr, workspace_.get(), workspace_.bytes(), stream_);
  layers_->backward(c, bp, n);
  data_->enqueue_advance(n);
}

// Captures the full step (first time) and replays it. Capture records the step without running
// it; if capture fails, nothing ran and the engine gives up on graphs for good: it notes why
// (describe(), take_warnings()) and runs this and every later step eagerly, with the same results.
void CudaEngineImpl::run_full_step_as_graph(const BatchPlan& bp, int n, float grad_scale) {
  if (!graph_.ready()) {
    const bool sabotage = std::exchange(break_next_capture_, false);
    const std::string failure = graph_.try_capture(stream_, [&] {
      // Test hook: a stream synchronize is refused inside a capture (and invalidates it).
      if (sabotage) GT_CHECK(cudaStreamSynchronize(stream_));
      enqueue_forward_backward(bp, n, grad_scale);
    });
    if (!failure.empty()) {
      capture_failure_ = failure;
      warnings_.push_back("CUDA graph capture of the training step failed (" + failure +
                          "); every step runs eagerly from now on (same results, more host work)");
      enqueue_forward_backward(bp, n, grad_scale);
      return;
    }
    graph_grad_scale_ = grad_scale;
  }
  graph_.launch(stream_);
  ++graph_replays_;
}

void CudaEngineImpl::forward_backward(int64_t first, int count, float grad_scale) {
  const int64_t order_size = int64_t(data_->order_size());
  if (data_->train_count() < 0 || order_size == 0)
    throw RuntimeFailure("forward_backward: set_train_data and set_order come first");
  if (count < 1 || count > batch_ || first < 0 || first + count > order_size)
    throw RuntimeFailure("forward_backward: batch [" + std::to_string(first) + ", +" +
                         std::to_string(count) + ") is outside the planned batch size " +
                         std::to_string(batch_) + " or the order of " + std::to_string(order_size));
  DeviceScope scope(device_);
  const BatchPlan& bp = plan_for(count);  // no-op after the first step of this size

  // The device's step position follows the trainer's `first` exactly: normally each step's
  // advance leaves it where the next step starts, and only a jump (new epoch, resume, a skipped
  // range) costs an explicit (asynchronous) set.
  data_->move_to(first, global_step_);
  // grad_scale is a launch argument baked into the graph; a new one (rare) needs a new capture.
  if (graph_.ready() && grad_scale != graph_grad_scale_) graph_.reset();

  if (graph_active() && count == batch_ && warmed_up_) {
    run_full_step_as_graph(bp, count, grad_scale);
  } else {
    // Eager: the last partial batch, --no-graph, after a failed capture, and the one warm-up step
    // before capture (first calls into cuBLAS/cuDNN load kernels and set up state, which must not
    // happen in a capture).
    enqueue_forward_backward(bp, count, grad_scale);
    if (count == batch_) warmed_up_ = true;
  }
  data_->advanced(first, count);
  samples_ += count;
}

// The second phase: one kernel over the flat buffers, its lr from the step table entry of the
// device's step count (advanced by forward_backward), so it needs nothing from the host either.
void CudaEngineImpl::apply_optimizer() {
  DeviceScope scope(device_);
  optimizer_.enqueue_update(params_.get(), grads_.get(), data_->step_state(), stream_);
  ++global_step_;
}

TrainCounters CudaEngineImpl::read_counters(bool reset) {
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

EvalResult CudaEngineImpl::evaluate(std::vector<float>* out_logits, const std::atomic<bool>* stop) {
  EvalResult r;
  const int K = plan_.num_classes;
  r.classes = K;
  r.confusion.assign(size_t(K) * K, 0);
  const int64_t total = std::max<int64_t>(data_->eval_count(), 0);
  if (out_logits) out_logits->assign(size_t(total) * K, 0.0f);
  if (total == 0) return r;
  DeviceScope scope(device_);
  GT_CHECK(cudaMemsetAsync(eval_loss_.get(), 0, sizeof(double), stream_));
  GT_CHECK(cudaMemsetAsync(eval_correct_.get(), 0, sizeof(unsigned long long), stream_));
  GT_CHECK(cudaMemsetAsync(confusion_.get(), 0, confusion_.bytes(), stream_));
  for (int64_t start = 0; start < total; start += batch_) {
    if (stop && stop->load()) {  // a host-side check only: chunks are queued, not waited for
      r.interrupted = true;
      break;
    }
    const int n = int(std::min<int64_t>(batch_, total - start));
    const BatchPlan& bp = plan_for(n);
    data_->enqueue_eval_chunk(start, n, layers_->input());
    layers_->forward(pass_context(), bp, n);
    k::launch_softmax_xent(n, K, layers_->logits(), data_->batch_labels(), 1.0f, nullptr, nullptr,
                           eval_loss_.get(), eval_correct_.get(), confusion_.get(),
                           workspace_.get(), workspace_.bytes(), stream_);
    // Stream-ordered before the next chunk overwrites the logits slot.
    if (out_logits)
      GT_CHECK(cudaMemcpyAsync(out_logits->data() + size_t(start) * K, layers_->logits(),
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

std::unique_ptr<CudaEngine> make_cuda_engine(const ModelPlan& plan, const EngineOptions& options) {
  return std::make_unique<CudaEngineImpl>(plan, options);
}

}  // namespace gputrain::cuda
