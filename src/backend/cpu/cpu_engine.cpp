// The CPU backend: gputrain::Engine over the ops of src/backend/cpu/ops.cpp. Every buffer is sized
// for the planned batch when the engine is built; a step only reads and writes them.
#include <omp.h>

#include <cmath>
#include <numeric>
#include <string>
#include <utility>

#include "backend/cpu/cpu_optimizer.hpp"
#include "gputrain/blas_info.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/ops.hpp"
#include "gputrain/optimizer.hpp"

namespace gputrain {
namespace {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelPlan& plan, const EngineOptions& options)
      : plan_(plan), options_(options), batch_(options.batch_size) {
    threads_ = options.threads > 0 ? options.threads : omp_get_num_procs();
    omp_set_num_threads(threads_);
    // Whichever OpenBLAS build the dynamic linker gave us (openmp, pthread, serial): one thread
    // per GEMM call, the calls spread over our OpenMP threads (blas_info.hpp says why).
    blas_ = describe_blas(configure_blas_threads(threads_));
    // Before anything is allocated: a model that cannot fit is a config error naming the layer.
    check_cpu_memory(plan, batch_, threads_, int(optimizer_state(options.optimizer).size()));
    if (int(options.mean.size()) != plan.input.channels ||
        int(options.std.size()) != plan.input.channels)
      throw Error("normalization needs one mean and std per input channel");

    // The CPU ops are FP32 only (OpenBLAS SGEMM); computing BF16/TF32 by rounding the inputs here
    // would be slower and still not the GPU's kernels, so the run says so and stays FP32.
    if (options.precision != Precision::Fp32)
      warnings_.push_back(std::string("train.precision: ") + precision_key(options.precision) +
                          " is for the CUDA engine; the CPU engine trains in fp32");

    params_.assign(plan.parameter_count, 0.0f);
    grads_.assign(plan.parameter_count, 0.0f);
    optimizer_state_ = cpu::make_optimizer_buffers(options.optimizer, plan.parameter_count);
    decay_mask_ = weight_decay_mask(plan, options.optimizer);
    buffers_ = initial_buffers(plan);

    // Activation i is layer i's output, activation "-1" the normalized input. Flatten is a view:
    // it shares its input's buffer (NCHW is already C,H,W-major per sample).
    const size_t L = plan.layers.size();
    input_.assign(size_t(batch_) * size_t(plan.input.size()), 0.0f);
    if (options.augment.enabled()) {
      augmented_.assign(size_t(batch_) * size_t(plan.input.size()), 0);
      batch_positions_.resize(size_t(batch_));
      std::iota(batch_positions_.begin(), batch_positions_.end(), 0);
    }
    storage_.resize(L);
    grad_storage_.resize(L);
    act_.assign(L, nullptr);
    grad_.assign(L, nullptr);
    argmax_.resize(L);
    saved_stats_.resize(L);
    dropout_mask_.resize(L);
    int64_t workspace = 0;
    for (size_t i = 0; i < L; ++i) {
      const LayerPlan& layer = plan.layers[i];
      const size_t n = size_t(batch_) * size_t(layer.output.size());
      if (layer.folded) {
        // conv/linear → relu: the producer applies the ReLU to its own output in place, and the
        // ReLU's backward masks the gradient in place.
        act_[i] = act_[i - 1];
        grad_[i] = grad_[i - 1];
      } else if (layer.config.kind == LayerKind::Flatten) {
        act_[i] = i == 0 ? input_.data() : act_[i - 1];
        grad_[i] = i == 0 ? nullptr : grad_[i - 1];
      } else {
        storage_[i].assign(n, 0.0f);
        grad_storage_[i].assign(n, 0.0f);
        act_[i] = storage_[i].data();
        grad_[i] = grad_storage_[i].data();
      }
      if (layer.config.kind == LayerKind::MaxPool2d) argmax_[i].assign(n, 0);
      // batchnorm2d keeps its batch's mean and 1/std per channel for the backward pass.
      if (layer.config.kind == LayerKind::BatchNorm2d)
        saved_stats_[i].assign(2 * size_t(layer.input.channels), 0.0f);
      if (layer.config.kind == LayerKind::Dropout) dropout_mask_[i].assign(n, 0);
      if (layer.config.kind == LayerKind::Conv2d)
        workspace =
            std::max(workspace, cpu::conv_workspace_floats(layer.conv_geometry(batch_), threads_));
    }
    workspace_.assign(size_t(workspace), 0.0f);
    labels_.assign(size_t(batch_), 0);
    predicted_.assign(size_t(batch_), 0);
    eval_index_.resize(size_t(batch_));
  }

  std::vector<std::string> take_warnings() override { return std::exchange(warnings_, {}); }

  std::string describe() const override {
    return "cpu, " + std::to_string(threads_) + " thread" + (threads_ == 1 ? "" : "s") + ", " +
           blas_;
  }

  void set_parameters(const std::vector<float>& values) override {
    check_size(values, "parameters");
    params_ = values;
  }
  std::vector<float> parameters() override { return params_; }
  void set_state(const std::string& name, const std::vector<float>& values) override {
    check_size(values, name.c_str());
    state_buffer(name) = values;
  }
  std::vector<float> state(const std::string& name) override { return state_buffer(name); }
  void set_buffers(const ModelBuffers& buffers) override {
    if (buffers.values.size() != plan_.buffer_count ||
        buffers.batches_tracked.size() != size_t(plan_.batchnorm_count))
      throw Error("buffers: expected " + std::to_string(plan_.buffer_count) + " values and " +
                  std::to_string(plan_.batchnorm_count) + " counts, got " +
                  std::to_string(buffers.values.size()) + " and " +
                  std::to_string(buffers.batches_tracked.size()));
    buffers_ = buffers;
  }
  ModelBuffers buffers() override { return buffers_; }

  void set_step_table(const std::vector<StepHyper>& table) override {
    if (table.empty()) throw Error("set_step_table: empty table");
    step_table_ = table;
  }
  void set_global_step(int64_t step) override { global_step_ = step; }
  int64_t global_step() const override { return global_step_; }

  void set_train_data(const ImageSet& train) override {
    check_shape(train);
    train_ = train;
  }
  void set_eval_data(const ImageSet& eval) override {
    check_shape(eval);
    eval_ = eval;
  }
  void set_order(const std::vector<int32_t>& order, int epoch) override {
    for (int32_t i : order)
      if (i < 0 || i >= train_.count)
        throw Error("set_order: index " + std::to_string(i) + " outside the training set");
    order_ = order;
    epoch_ = epoch;
  }

  void forward_backward(int64_t first, int count, float grad_scale) override {
    if (count < 1 || count > batch_ || first < 0 || first + count > int64_t(order_.size()))
      throw Error("forward_backward: batch [" + std::to_string(first) + ", +" +
                  std::to_string(count) + ") outside the planned batch or the order");
    const int32_t* index = order_.data() + first;
    const int64_t plane = int64_t(plan_.input.height) * plan_.input.width;
    if (options_.augment.enabled()) {
      // Augment the raw images, then normalize them in batch order (identity index).
      cpu::gather_augment(count, plan_.input.channels, plan_.input.height, plan_.input.width,
                          train_.pixels.data(), index, epoch_, options_.augment, augmented_.data());
      cpu::gather_normalize(count, plan_.input.channels, plane, augmented_.data(),
                            batch_positions_.data(), options_.mean.data(), options_.std.data(),
                            input_.data());
    } else {
      cpu::gather_normalize(count, plan_.input.channels, plane, train_.pixels.data(), index,
                            options_.mean.data(), options_.std.data(), input_.data());
    }
    for (int i = 0; i < count; ++i) labels_[size_t(i)] = train_.labels[size_t(index[i])];
    forward(count, index);
    for (int64_t& tracked : buffers_.batches_tracked) ++tracked;
    const size_t last = plan_.layers.size() - 1;
    float* dlogits = grad_[last];
    int64_t correct = 0;
    const double loss =
        cpu::softmax_cross_entropy(count, plan_.num_classes, act_[last], labels_.data(), grad_scale,
                                   dlogits, nullptr, &correct, options_.label_smoothing);
    if (!std::isfinite(loss)) throw NonFiniteLoss("the training loss is not finite");
    counters_.loss_sum += loss;
    counters_.correct += correct;
    counters_.samples += count;
    backward(count);
    if (gradient_hook_) gradient_hook_(gradients());  // done on return: host memory
  }

  FlatBuffer gradients() override { return FlatBuffer{grads_.data(), grads_.size(), false}; }
  void set_gradient_hook(GradientHook hook) override { gradient_hook_ = std::move(hook); }

  void apply_optimizer() override {
    if (step_table_.empty()) throw Error("apply_optimizer: set_step_table comes first");
    const size_t entry = size_t(std::min<int64_t>(global_step_, int64_t(step_table_.size()) - 1));
    if (options_.optimizer.grad_clip > 0) {
      counters_.grad_norm_sum +=
          cpu::clip_grad_norm(int64_t(grads_.size()), grads_.data(), options_.optimizer.grad_clip);
      ++counters_.grad_norm_steps;
    }
    cpu::optimizer_step(options_.optimizer, step_table_[entry], int64_t(params_.size()),
                        params_.data(), grads_.data(), optimizer_state_,
                        decay_mask_.empty() ? nullptr : decay_mask_.data());
    ++global_step_;
  }

  TrainCounters read_counters(bool reset) override {
    TrainCounters c = counters_;
    if (reset) counters_ = {};
    return c;
  }

  EvalResult evaluate(std::vector<float>* logits, const std::atomic<bool>* stop) override {
    EvalResult result;
    result.classes = plan_.num_classes;
    result.confusion.assign(size_t(result.classes) * result.classes, 0);
    const int K = plan_.num_classes;
    if (logits) logits->assign(size_t(eval_.count) * K, 0.0f);
    const size_t last = plan_.layers.size() - 1;
    for (int64_t first = 0; first < eval_.count; first += batch_) {
      if (stop && stop->load()) {
        result.interrupted = true;
        break;
      }
      const int count = int(std::min<int64_t>(batch_, eval_.count - first));
      std::iota(eval_index_.begin(), eval_index_.begin() + count, int32_t(first));
      cpu::gather_normalize(count, plan_.input.channels,
                            int64_t(plan_.input.height) * plan_.input.width, eval_.pixels.data(),
                            eval_index_.data(), options_.mean.data(), options_.std.data(),
                            input_.data());
      forward(count, nullptr);
      int64_t correct = 0;
      result.loss_sum +=
          cpu::softmax_cross_entropy(count, K, act_[last], eval_.labels.data() + first, 1.0f,
                                     nullptr, predicted_.data(), &correct);
      result.correct += correct;
      for (int i = 0; i < count; ++i)
        ++result.confusion[size_t(eval_.labels[size_t(first + i)]) * K + predicted_[size_t(i)]];
      if (logits)
        std::copy(act_[last], act_[last] + int64_t(count) * K, logits->data() + first * K);
    }
    result.samples = eval_.count;
    return result;
  }

 private:
  const float* input_of(size_t i) const { return i == 0 ? input_.data() : act_[i - 1]; }

  // Training mode when `samples` (the batch's indices into the training set, keying dropout) is
  // given, evaluation mode otherwise (engine.hpp).
  void forward(int count, const int32_t* samples) {
    const bool training = samples != nullptr;
    for (size_t i = 0; i < plan_.layers.size(); ++i) {
      const LayerPlan& layer = plan_.layers[i];
      const float* x = input_of(i);
      float* y = act_[i];
      const int channels = layer.input.channels;
      const int64_t plane = int64_t(layer.input.height) * layer.input.width;
      switch (layer.config.kind) {
        case LayerKind::Conv2d:
          cpu::conv2d_forward(layer.conv_geometry(count), x, param(layer.weight_index),
                              param(layer.bias_index), y, workspace_.data(), threads_,
                              layer.fused_relu);
          break;
        case LayerKind::Linear:
          cpu::linear_forward(count, int(layer.input.size()), layer.config.out_features, x,
                              param(layer.weight_index), param(layer.bias_index), y,
                              layer.fused_relu);
          break;
        case LayerKind::Relu:
          if (x != y) cpu::relu_forward(int64_t(count) * layer.output.size(), x, y);
          break;
        case LayerKind::MaxPool2d:
          cpu::maxpool2d_forward(layer.pool_geometry(count), x, y, argmax_[i].data());
          break;
        case LayerKind::Flatten:
          break;
        case LayerKind::BatchNorm2d: {
          const float eps = float(layer.config.eps);
          float* mean = buffer(layer.running_mean_index);
          float* var = buffer(layer.running_var_index);
          if (training)
            cpu::batchnorm2d_forward_train(
                count, channels, plane, x, param(layer.weight_index), param(layer.bias_index), eps,
                float(layer.config.momentum), mean, var, y, saved_stats_[i].data(),
                saved_stats_[i].data() + channels);
          else
            cpu::batchnorm2d_forward_eval(count, channels, plane, x, param(layer.weight_index),
                                          param(layer.bias_index), mean, var, eps, y);
          break;
        }
        case LayerKind::AvgPool2d:
          cpu::avgpool2d_forward(layer.pool_geometry(count), x, y);
          break;
        case LayerKind::GlobalAvgPool:
          cpu::global_avgpool_forward(count, channels, plane, x, y);
          break;
        case LayerKind::Dropout: {
          const int64_t n = int64_t(count) * layer.input.size();
          if (training)
            cpu::dropout_forward(n, layer.input.size(), samples, options_.seed, epoch_, int(i),
                                 float(layer.config.p), x, y, dropout_mask_[i].data());
          else
            std::copy(x, x + n, y);
          break;
        }
      }
    }
  }

  void backward(int count) {
    for (size_t i = plan_.layers.size(); i-- > 0;) {
      const LayerPlan& layer = plan_.layers[i];
      const float* dy = grad_[i];
      // The first layer's input gradient is never needed (the input is data).
      float* dx = i == 0 ? nullptr : grad_[i - 1];
      switch (layer.config.kind) {
        case LayerKind::Conv2d:
          cpu::conv2d_backward(layer.conv_geometry(count), input_of(i), param(layer.weight_index),
                               dy, dx, grad(layer.weight_index), grad(layer.bias_index),
                               workspace_.data(), threads_);
          break;
        case LayerKind::Linear:
          cpu::linear_backward(count, int(layer.input.size()), layer.config.out_features,
                               input_of(i), param(layer.weight_index), dy, dx,
                               grad(layer.weight_index), grad(layer.bias_index));
          break;
        case LayerKind::Relu:
          if (dx) cpu::relu_backward(int64_t(count) * layer.output.size(), act_[i], dy, dx);
          break;
        case LayerKind::MaxPool2d:
          if (dx) cpu::maxpool2d_backward(layer.pool_geometry(count), dy, argmax_[i].data(), dx);
          break;
        case LayerKind::Flatten:
          break;
        case LayerKind::BatchNorm2d: {
          const int channels = layer.input.channels;
          cpu::batchnorm2d_backward(
              count, channels, int64_t(layer.input.height) * layer.input.width, input_of(i),
              param(layer.weight_index), saved_stats_[i].data(), saved_stats_[i].data() + channels,
              dy, dx, grad(layer.weight_index), grad(layer.bias_index));
          break;
        }
        case LayerKind::AvgPool2d:
          if (dx) cpu::avgpool2d_backward(layer.pool_geometry(count), dy, dx);
          break;
        case LayerKind::GlobalAvgPool:
          if (dx)
            cpu::global_avgpool_backward(count, layer.input.channels,
                                         int64_t(layer.input.height) * layer.input.width, dy, dx);
          break;
        case LayerKind::Dropout:
          if (dx)
            cpu::dropout_backward(int64_t(count) * layer.input.size(), float(layer.config.p),
                                  dropout_mask_[i].data(), dy, dx);
          break;
      }
    }
  }

  float* param(int index) { return params_.data() + plan_.parameters[size_t(index)].offset; }
  float* grad(int index) { return grads_.data() + plan_.parameters[size_t(index)].offset; }
  float* buffer(int index) { return buffers_.values.data() + plan_.buffers[size_t(index)].offset; }

  std::vector<float>& state_buffer(const std::string& name) {
    std::vector<float>* buffer = optimizer_state_.find(name);
    if (!buffer) throw Error("the optimizer has no state named '" + name + "'");
    return *buffer;
  }

  void check_size(const std::vector<float>& values, const char* what) const {
    if (values.size() != plan_.parameter_count)
      throw Error(std::string(what) + ": expected " + std::to_string(plan_.parameter_count) +
                  " values, got " + std::to_string(values.size()));
  }
  void check_shape(const ImageSet& set) const {
    if (set.channels != plan_.input.channels || set.height != plan_.input.height ||
        set.width != plan_.input.width)
      throw DataError("the data's images are " + std::to_string(set.channels) + "x" +
                      std::to_string(set.height) + "x" + std::to_string(set.width) +
                      " but model.input is " + std::to_string(plan_.input.channels) + "x" +
                      std::to_string(plan_.input.height) + "x" + std::to_string(plan_.input.width));
  }

  ModelPlan plan_;
  EngineOptions options_;
  std::vector<std::string> warnings_;  // until take_warnings()
  int batch_ = 0, threads_ = 1;
  std::string blas_;  // "OpenBLAS 0.3.21 (openmp, 2 threads)"
  std::vector<float> params_, grads_, input_, workspace_;
  cpu::OptimizerBuffers optimizer_state_;
  std::vector<uint8_t> decay_mask_;  // weight_decay_mask: empty when every element decays
  ModelBuffers buffers_;             // batchnorm2d running statistics and counts
  std::vector<StepHyper> step_table_;
  int64_t global_step_ = 0;
  std::vector<std::vector<float>> storage_, grad_storage_;
  std::vector<float*> act_, grad_;
  std::vector<std::vector<int32_t>> argmax_;
  std::vector<std::vector<float>> saved_stats_;     // batchnorm2d: mean[C] then invstd[C]
  std::vector<std::vector<uint8_t>> dropout_mask_;  // dropout: kept units of the last batch
  std::vector<int32_t> labels_, predicted_, eval_index_, order_;
  int epoch_ = 0;                         // the order's epoch: keys the augmentation draws
  std::vector<uint8_t> augmented_;        // [batch, C, H, W] raw augmented images
  std::vector<int32_t> batch_positions_;  // 0 .. batch-1
  ImageSet train_, eval_;
  TrainCounters counters_;
  GradientHook gradient_hook_;
};

}  // namespace

std::unique_ptr<Engine> make_cpu_engine(const ModelPlan& plan, const EngineOptions& options) {
  return std::make_unique<CpuEngine>(plan, options);
}

}  // namespace gputrain
