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
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/allocation_plan.hpp"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/cuda_engine_impl.hpp"
#include "backend/cuda/device_probe.hpp"
#include "gputrain/errors.hpp"

namespace gputrain::cuda {

// ---- construction ------------------------------------------------------------------------------

CudaEngineImpl::CudaEngineImpl(const ModelPlan& plan, const EngineOptions& options)
    : plan_(plan),
      opt_(options),
      precision_(options.precision),
      batch_(options.batch_size),
      device_(options.device_index),
      optimizer_(options.optimizer, plan.parameter_count,
                 weight_decay_mask(plan, options.optimizer)) {
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
  data_.emplace(plan_, batch_, opt_.augment, stream_.get(), description_);

  BatchPlan full = plan_convolutions(cudnn_, *layers_, batch_, conv_options(kConvWorkspaceCap));

  // Every buffer this engine allocates now, declared once (the data sets come later, checked
  // then). The memory check sums this list; the allocation walks it.
  const size_t P = plan_.parameter_count;
  const size_t K = size_t(plan_.num_classes);
  AllocationList list;
  list.add(params_, P, "parameters");
  list.add(grads_, P, "gradients");
  list.add(buffers_, plan_.buffer_count, "batchnorm2d running statistics");
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
  optimizer_.initialize(stream_);
  loss_host_.allocate(2);  // the loss sum, the gradient norm sum (with clipping)
  count_host_.allocate(1);

  verify_convolutions(full, *layers_, pass_context(false), opt_.deterministic);
  plans_.emplace(batch_, std::move(full));
  set_buffers(initial_buffers(plan_));  // a fresh model's, until the caller sets its own

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

std::string CudaEngineImpl::details() const {
  return "precision " + precision_name(precision_) + "; cuDNN algorithms:\n" + algorithm_report();
}

std::string CudaEngineImpl::algorithm_report() const {
  std::string report;
  for (const auto& [n, bp] : plans_)
    for (const std::string& line : bp.report) report += line + "\n";
  return report;
}

PassContext CudaEngineImpl::pass_context(bool training) const {
  PassContext c{precision_,    cudnn_.get(), cublas_.get(),    stream_.get(),
                params_.get(), grads_.get(), workspace_.get(), workspace_.bytes()};
  c.buffers = buffers_.get();
  c.training = training;
  if (training) {
    c.order = data_->order();
    c.step = data_->step_state();
    c.seed = opt_.seed;
  }
  return c;
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
  verify_convolutions(bp, *layers_, pass_context(false), opt_.deterministic);
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

void CudaEngineImpl::set_buffers(const ModelBuffers& buffers) {
  if (buffers.values.size() != plan_.buffer_count ||
      buffers.batches_tracked.size() != size_t(plan_.batchnorm_count))
    throw RuntimeFailure("model buffers: expected " + std::to_string(plan_.buffer_count) +
                         " running-statistics values and " + std::to_string(plan_.batchnorm_count) +
                         " batch counts, got " + std::to_string(buffers.values.size()) + " and " +
                         std::to_string(buffers.batches_tracked.size()));
  if (plan_.buffer_count > 0) {
    DeviceScope scope(device_);
    GT_CHECK(cudaMemcpyAsync(buffers_.get(), buffers.values.data(), buffers_.bytes(),
                             cudaMemcpyHostToDevice, stream_));
    stream_.synchronize();
  }
  batches_tracked_ = buffers.batches_tracked;
}

ModelBuffers CudaEngineImpl::buffers() {
  ModelBuffers b;
  if (plan_.buffer_count > 0) b.values = download_flat(buffers_);
  b.batches_tracked = batches_tracked_;
  return b;
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

void CudaEngineImpl::set_order(const std::vector<int32_t>& order, int epoch) {
  DeviceScope scope(device_);
  if (data_->set_order(order, epoch)) graph_.reset();
}

std::unique_ptr<CudaEngine> make_cuda_engine(const ModelPlan& plan, const EngineOptions& options) {
  return std::make_unique<CudaEngineImpl>(plan, options);
}

}  // namespace gputrain::cuda
