// The network as planned from the config: every layer's input/output shape and every parameter's
// place in the one flat parameter buffer (gradients and momentum use the same layout).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gputrain/config.hpp"
#include "gputrain/geometry.hpp"

namespace gputrain {

// Per-sample activation shape. Flattened activations are (C=features, H=1, W=1).
struct ActivationShape {
  int channels = 0, height = 0, width = 0;
  int64_t size() const { return int64_t(channels) * height * width; }
};

// How a parameter starts (PyTorch's reset_parameters of its module).
enum class ParameterInit {
  UniformFanIn,  // nn.Conv2d / nn.Linear: U(±1/sqrt(fan_in)) for weight and bias
  Ones,          // nn.BatchNorm2d weight
  Zeros          // nn.BatchNorm2d bias
};

// One parameter tensor, named as PyTorch's state_dict names it ("conv1.weight").
struct ParameterInfo {
  std::string name;
  std::vector<int64_t> shape;  // conv: O×I×kH×kW, linear: out×in, bias: out, batchnorm2d: C
  size_t offset = 0;           // into the flat buffer, in floats
  size_t count = 0;
  int fan_in = 0;  // for PyTorch's default init bound 1/sqrt(fan_in)
  ParameterInit init = ParameterInit::UniformFanIn;
  // A bias or a normalization layer's weight/bias: optimizer.decay_norm_and_bias = false exempts
  // it from weight decay (optimizer.hpp: weight_decay_mask).
  bool norm_or_bias = false;
};

// A non-trainable tensor of the model (PyTorch's module buffers), saved with the parameters in
// weights files and checkpoints under its state_dict name. batchnorm2d has three:
//   <name>.running_mean  F32 [C], starts at 0      <name>.running_var  F32 [C], starts at 1
//   <name>.num_batches_tracked  I64 scalar (shape []), starts at 0: training steps that updated
//   the running statistics
enum class BufferKind { RunningMean, RunningVar, BatchesTracked };
struct BufferInfo {
  std::string name;  // "bn1.running_mean"
  BufferKind kind = BufferKind::RunningMean;
  std::vector<int64_t> shape;  // [C]; {} for num_batches_tracked
  // RunningMean/RunningVar: floats into ModelBuffers::values (64-float aligned, like parameters);
  // BatchesTracked: the index into ModelBuffers::batches_tracked.
  size_t offset = 0;
  size_t count = 0;  // floats; 1 for num_batches_tracked
};

// The values of every buffer of a plan (host copies; Engine::set_buffers / buffers()).
struct ModelBuffers {
  std::vector<float> values;             // ModelPlan::buffer_count floats (running statistics)
  std::vector<int64_t> batches_tracked;  // one per batchnorm2d layer, in layer order
  bool operator==(const ModelBuffers& o) const {
    return values == o.values && batches_tracked == o.batches_tracked;
  }
};

struct LayerPlan {
  LayerConfig config;
  ActivationShape input, output;
  int weight_index = -1, bias_index = -1;  // into ModelPlan::parameters, -1 when none
  // A ReLU right after a conv2d/linear is folded into it, decided here once for every backend:
  // the producer applies max(y, 0) to its own output (fused_relu), and the ReLU layer (folded) does
  // nothing of its own; its backward masks the gradient in place.
  bool fused_relu = false;  // conv2d/linear: applies the next layer's ReLU
  bool folded = false;      // relu: applied by the previous layer
  // batchnorm2d: indices into ModelPlan::buffers (its running_mean, running_var and
  // num_batches_tracked; the latter's BufferInfo::offset is the layer's batchnorm ordinal).
  int running_mean_index = -1, running_var_index = -1, batches_tracked_index = -1;

  // conv2d / maxpool2d / avgpool2d: the op's geometry for a batch of n.
  ConvGeometry conv_geometry(int n) const;
  PoolGeometry pool_geometry(int n) const;
};

struct ModelPlan {
  ActivationShape input;
  std::vector<LayerPlan> layers;
  std::vector<ParameterInfo> parameters;
  size_t parameter_count = 0;       // floats in the flat buffer (tensors start 64-float aligned)
  int num_classes = 0;              // output features of the last layer
  std::string source;               // the config's name, for messages about a layer ("config.yaml")
  std::vector<BufferInfo> buffers;  // in state_dict order (after each layer's parameters)
  size_t buffer_count = 0;          // floats of ModelBuffers::values
  int batchnorm_count = 0;          // entries of ModelBuffers::batches_tracked

  const ParameterInfo& weight(const LayerPlan& l) const { return parameters[l.weight_index]; }
  const ParameterInfo& bias(const LayerPlan& l) const { return parameters[l.bias_index]; }
};

// The buffers' initial values: running_mean 0, running_var 1, num_batches_tracked 0 (as a fresh
// nn.BatchNorm2d), the gaps between tensors 0.
ModelBuffers initial_buffers(const ModelPlan& plan);

// Resolves shapes and the parameter layout. Throws ConfigError naming the layer (and config line)
// when a shape does not work out: a kernel larger than its padded input, linear before flatten of a
// spatial input, a net that does not end in a flat output, duplicate parameter names; or when a
// size does not fit: every size is derived in int64 with overflow checks, and what the ops index
// with `int` (one sample's activations, padded sides, im2col rows, GEMM dimensions) stays <=
// INT_MAX.
ModelPlan plan_model(const ModelConfig& config, const std::string& config_source = "config");

// What the CPU engine allocates for `plan` at batch size `batch` with `threads` OpenMP threads and
// `state_buffers` optimizer state buffers (SGD with momentum: 1), computed with overflow checks
// (ConfigError naming the layer when even the count overflows int64).
struct MemoryEstimate {
  int64_t total_bytes = 0;
  int64_t parameter_bytes = 0;      // weights, gradients, optimizer state and one host copy
  int largest_layer = -1;           // index into plan.layers of the layer needing the most
  int64_t largest_layer_bytes = 0;  // its parameters (all copies), activations, workspace
};
MemoryEstimate estimate_cpu_memory(const ModelPlan& plan, int64_t batch, int threads,
                                   int state_buffers);

// Memory this process can still get: /proc/meminfo's MemAvailable (else free physical pages),
// lowered to the cgroup's memory.max - memory.current where a limit is set. -1 when unknown.
int64_t available_memory_bytes();

// Throws ConfigError, one line naming the layer that needs the most, how much, the run's total
// and the memory available, when estimate_cpu_memory exceeds available_memory_bytes(). The CPU
// engine calls it before it allocates anything.
void check_cpu_memory(const ModelPlan& plan, int64_t batch, int threads, int state_buffers);

// "1.5 GiB", "12.0 MiB", "512 bytes".
std::string bytes_text(int64_t bytes);

// PyTorch's default initialization: nn.Conv2d / nn.Linear weight and bias uniform in
// ±1/sqrt(fan_in), drawn from a generator seeded by `seed` (same seed → same values) in parameter
// order; nn.BatchNorm2d weight 1, bias 0 (no draws).
std::vector<float> initial_parameters(const ModelPlan& plan, uint64_t seed);

}  // namespace gputrain
