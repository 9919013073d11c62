// The CUDA engine's class, shared by its two source files: cuda_engine.cpp (construction, plans
// per batch size, host <-> device copies) and cuda_step.cpp (the step, the graph and its eager
// fallback, the optimizer phase, counters, evaluation). See cuda_engine.cpp for the overview.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/conv_plans.hpp"
#include "backend/cuda/cuda_backend.hpp"
#include "backend/cuda/cuda_layers.hpp"
#include "backend/cuda/cuda_optimizer.hpp"
#include "backend/cuda/cuda_resources.hpp"
#include "backend/cuda/device_data.hpp"
#include "backend/cuda/nvml_sampler.hpp"
#include "backend/cuda/precision.hpp"

namespace gputrain::cuda {

inline constexpr size_t kMiB = size_t(1) << 20;
// cuBLAS's own workspace, set explicitly so that it is the same memory in eager and captured steps
// (cuBLAS docs: 32 MiB recommended for Hopper and newer, 4 MiB before; we use the larger always).
inline constexpr size_t kCublasWorkspaceBytes = 32 * kMiB;
// cuDNN algorithms needing more workspace than this are not considered.
inline constexpr size_t kConvWorkspaceCap = 512 * kMiB;

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
  void set_buffers(const ModelBuffers& buffers) override;
  ModelBuffers buffers() override;
  void set_step_table(const std::vector<StepHyper>& table) override;
  void set_global_step(int64_t step) override;
  int64_t global_step() const override { return global_step_; }
  void set_train_data(const ImageSet& train) override;
  void set_eval_data(const ImageSet& eval) override;
  void set_order(const std::vector<int32_t>& order, int epoch) override;
  void forward_backward(int64_t first, int count, float grad_scale) override;
  FlatBuffer gradients() override {
    return FlatBuffer{grads_.get(), plan_.parameter_count, true, stream_.get(), device_};
  }
  void set_gradient_hook(GradientHook hook) override;
  void apply_optimizer() override;
  TrainCounters read_counters(bool reset) override;
  EvalResult evaluate(std::vector<float>* logits, const std::atomic<bool>* stop) override;
  double take_busy_percent() override { return nvml_ ? nvml_->take_mean() : -1.0; }
  std::vector<std::string> take_warnings() override { return std::exchange(warnings_, {}); }

  int64_t graph_replays() const override { return graph_replays_; }
  int64_t graph_captures() const override { return graph_captures_; }
  bool graph_active() const override { return opt_.use_graph && capture_failure_.empty(); }
  std::string algorithm_report() const override;
  // --verbose: the numerics mode and the cuDNN algorithm report.
  std::string details() const override;
  void break_next_capture_for_testing() override { break_next_capture_ = true; }

 private:
  // training: the forward_backward pass (batch statistics, dropout); else evaluation.
  PassContext pass_context(bool training) const;
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
  std::optional<DeviceData> data_;      // made once the stream exists
  DeviceBuffer<float> params_, grads_;  // flat [parameter_count] each
  DeviceBuffer<float> buffers_;         // the model buffers' floats [buffer_count]
  // num_batches_tracked per batchnorm2d layer: no kernel reads it (the momentum is fixed), so the
  // host counts the training forward passes exactly, without any device traffic.
  std::vector<int64_t> batches_tracked_;
  DeviceBuffer<unsigned char> workspace_;  // cuDNN + bias-grad + softmax-xent scratch
  DeviceBuffer<unsigned char> cublas_workspace_;
  DeviceBuffer<double> train_loss_, eval_loss_;
  DeviceBuffer<unsigned long long> train_correct_, eval_correct_, confusion_;
  PinnedBuffer<double> loss_host_;  // [2]: loss sum, gradient norm sum (read_counters)
  PinnedBuffer<unsigned long long> count_host_;

  int64_t samples_ = 0;      // training samples since the last counter reset (host-side, exact)
  int64_t global_step_ = 0;  // optimizer updates applied (StepState::step once they have run)

  std::map<int, BatchPlan> plans_;
  CudaGraph graph_;
  float graph_grad_scale_ = 0;  // the grad_scale the captured graph was recorded with
  bool warmed_up_ = false;      // one eager full-batch step has run: the next one is captured
  int64_t graph_replays_ = 0, graph_captures_ = 0;
  std::string capture_failure_;  // why capture failed (then every step runs eagerly)
  bool break_next_capture_ = false;
  std::vector<std::string> warnings_;
  GradientHook gradient_hook_;  // the trainer's all-reduce, enqueued after backward (graph too)

  std::unique_ptr<NvmlSampler> nvml_;
};

}  // namespace gputrain::cuda
