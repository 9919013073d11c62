#include "gputrain/model.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "gputrain/errors.hpp"
#include "gputrain/rng.hpp"

namespace gputrain {
namespace {

constexpr int64_t kParameterAlignment = 64;  // floats

const char* kind_name(LayerKind kind) {
  switch (kind) {
    case LayerKind::Conv2d:
      return "conv2d";
    case LayerKind::Relu:
      return "relu";
    case LayerKind::MaxPool2d:
      return "maxpool2d";
    case LayerKind::Flatten:
      return "flatten";
    case LayerKind::Linear:
      return "linear";
    case LayerKind::BatchNorm2d:
      return "batchnorm2d";
    case LayerKind::AvgPool2d:
      return "avgpool2d";
    case LayerKind::GlobalAvgPool:
      return "global_avgpool";
    case LayerKind::Dropout:
      return "dropout";
  }
  return "?";
}

std::string shape_text(const ActivationShape& s) {
  return std::to_string(s.channels) + "x" + std::to_string(s.height) + "x" +
         std::to_string(s.width);
}

// Sizes are derived in int64 with every product and sum checked: a config error names the layer
// instead of a wrapped-around size reaching an allocation or an index (issue 8, item 11).
int64_t checked_mul(int64_t a, int64_t b, const std::string& where) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw ConfigError(where + ": its sizes overflow 64-bit integers (" + std::to_string(a) + " x " +
                      std::to_string(b) + ")");
  return r;
}
int64_t checked_add(int64_t a, int64_t b, const std::string& where) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    throw ConfigError(where + ": its sizes overflow 64-bit integers (" + std::to_string(a) + " + " +
                      std::to_string(b) + ")");
  return r;
}
int64_t checked_product(std::initializer_list<int64_t> factors, const std::string& where) {
  int64_t r = 1;
  for (int64_t f : factors) r = checked_mul(r, f, where);
  return r;
}

// The ops index one sample's activations, GEMM dimensions and padded extents with `int` (as cuDNN,
// cuBLAS and CBLAS do): each must stay at or below INT_MAX.
void check_int_range(int64_t value, const std::string& where, const std::string& what) {
  if (value > INT_MAX)
    throw ConfigError(where + ": " + what + " is " + std::to_string(value) +
                      ", more than the 2147483647 gputrain supports");
}

std::string layer_where(const std::string& source, size_t i, const LayerConfig& layer) {
  return source + (layer.source_line > 0 ? ":" + std::to_string(layer.source_line) : "") +
         ": model.layers[" + std::to_string(i) + "] (" + kind_name(layer.kind) +
         (layer.name.empty() ? "" : " '" + layer.name + "'") + ")";
}

}  // namespace

ConvGeometry LayerPlan::conv_geometry(int n) const {
  ConvGeometry g;
  g.batch = n;
  g.in_channels = input.channels;
  g.in_height = input.height;
  g.in_width = input.width;
  g.out_channels = config.out_channels;
  g.kernel = config.kernel;
  g.stride = config.stride;
  g.padding = config.padding;
  return g;
}

PoolGeometry LayerPlan::pool_geometry(int n) const {
  PoolGeometry g;
  g.batch = n;
  g.channels = input.channels;
  g.in_height = input.height;
  g.in_width = input.width;
  g.kernel = config.kernel;
  g.stride = config.stride;
  return g;
}

ModelPlan plan_model(const ModelConfig& config, const std::string& config_source) {
  ModelPlan plan;
  plan.source = config_source;
  plan.input = {config.input_channels, config.input_height, config.input_width};
  if (plan.input.channels < 1 || plan.input.height < 1 || plan.input.width < 1)
    throw ConfigError(config_source + ": model.input: expected [C, H, W] with every entry >= 1");
  check_int_range(checked_product({plan.input.channels, plan.input.height, plan.input.width},
                                  config_source + ": model.input"),
                  config_source + ": model.input", "one image's size " + shape_text(plan.input));
  if (config.layers.empty())
    throw ConfigError(config_source + ": model.layers: expected at least one layer");

  ActivationShape shape = plan.input;
  bool flat = false;
  std::set<std::string> names;
  int64_t offset = 0;
  auto add_parameter = [&](const std::string& name, std::vector<int64_t> dims, int fan_in,
                           const std::string& where,
                           ParameterInit init = ParameterInit::UniformFanIn) {
    ParameterInfo info;
    info.name = name;
    info.init = init;
    // PyTorch's usual parameter groups leave biases and normalization parameters undecayed.
    info.norm_or_bias = init != ParameterInit::UniformFanIn || dims.size() == 1;
    int64_t count = 1;
    for (int64_t d : dims) count = checked_mul(count, d, where);
    info.count = size_t(count);
    info.shape = std::move(dims);
    info.offset = offset;
    info.fan_in = fan_in;
    // Each tensor starts on a 256-byte boundary: cuDNN/cuBLAS pick their fast (vectorized)
    // kernels only for aligned pointers, and the views into the flat buffer are those pointers.
    // The gaps stay zero (zero gradient, so SGD leaves them zero).
    const int64_t padded = checked_add(count, kParameterAlignment - 1, where) /
                           kParameterAlignment * kParameterAlignment;
    offset = checked_add(offset, padded, where);
    // Bytes of the flat buffer (and of its gradient and optimizer copies) must fit in int64 too.
    checked_mul(offset, 4 * int64_t(sizeof(float)), where);
    plan.parameters.push_back(std::move(info));
    return int(plan.parameters.size() - 1);
  };

  int64_t buffer_offset = 0;
  auto add_buffer = [&](const std::string& name, BufferKind kind, int channels) {
    BufferInfo info;
    info.name = name;
    info.kind = kind;
    if (kind == BufferKind::BatchesTracked) {
      info.offset = size_t(plan.batchnorm_count++);
      info.count = 1;
    } else {
      info.shape = {channels};
      info.offset = size_t(buffer_offset);
      info.count = size_t(channels);
      // Aligned as the parameters, for the same reason (cuDNN takes these pointers too).
      buffer_offset +=
          (channels + kParameterAlignment - 1) / kParameterAlignment * kParameterAlignment;
    }
    plan.buffers.push_back(std::move(info));
    return int(plan.buffers.size() - 1);
  };

  for (size_t i = 0; i < config.layers.size(); ++i) {
    const LayerConfig& layer = config.layers[i];
    const std::string where = layer_where(config_source, i, layer);
    LayerPlan lp;
    lp.config = layer;
    lp.input = shape;
    if ((layer.kind == LayerKind::Conv2d || layer.kind == LayerKind::Linear ||
         layer.kind == LayerKind::BatchNorm2d) &&
        !names.insert(layer.name).second)
      throw ConfigError(where + ": duplicate layer name '" + layer.name + "'");
    switch (layer.kind) {
      case LayerKind::Conv2d: {
        if (flat) throw ConfigError(where + ": needs an image input, but it comes after flatten");
        const int64_t k = layer.kernel, p = layer.padding, s = layer.stride;
        // The padded extents are computed in int by every backend's geometry.
        const int64_t padded_h = int64_t(shape.height) + 2 * p,
                      padded_w = int64_t(shape.width) + 2 * p;
        check_int_range(std::max(padded_h, padded_w), where,
                        "the padded input's side (padding " + std::to_string(p) + ")");
        if (k > padded_h || k > padded_w)
          throw ConfigError(where + ": kernel " + std::to_string(k) +
                            " is larger than its padded input " + shape_text(shape) + " (padding " +
                            std::to_string(p) + ")");
        // im2col rows (C·k·k) are a GEMM dimension and the init's fan_in.
        const int64_t fan_in = checked_product({shape.channels, k, k}, where);
        check_int_range(fan_in, where, "in_channels x kernel x kernel");
        lp.weight_index = add_parameter(
            layer.name + ".weight", {layer.out_channels, shape.channels, k, k}, int(fan_in), where);
        lp.bias_index =
            add_parameter(layer.name + ".bias", {layer.out_channels}, int(fan_in), where);
        shape = {layer.out_channels, int((padded_h - k) / s + 1), int((padded_w - k) / s + 1)};
        check_int_range(checked_product({shape.channels, shape.height, shape.width}, where), where,
                        "one sample's output " + shape_text(shape));
        break;
      }
      case LayerKind::BatchNorm2d: {
        if (flat) throw ConfigError(where + ": needs an image input, but it comes after flatten");
        const int c = shape.channels;
        lp.weight_index = add_parameter(layer.name + ".weight", {c}, 0, where, ParameterInit::Ones);
        lp.bias_index = add_parameter(layer.name + ".bias", {c}, 0, where, ParameterInit::Zeros);
        lp.running_mean_index =
            add_buffer(layer.name + ".running_mean", BufferKind::RunningMean, c);
        lp.running_var_index = add_buffer(layer.name + ".running_var", BufferKind::RunningVar, c);
        lp.batches_tracked_index =
            add_buffer(layer.name + ".num_batches_tracked", BufferKind::BatchesTracked, c);
        break;
      }
      case LayerKind::GlobalAvgPool:
        if (flat) throw ConfigError(where + ": needs an image input, but it comes after flatten");
        shape = {shape.channels, 1, 1};
        break;
      case LayerKind::Dropout:
        break;
      case LayerKind::MaxPool2d:
      case LayerKind::AvgPool2d: {
        if (flat) throw ConfigError(where + ": needs an image input, but it comes after flatten");
        const int k = layer.kernel, s = layer.stride;
        if (k > shape.height || k > shape.width)
          throw ConfigError(where + ": kernel " + std::to_string(k) + " is larger than its input " +
                            shape_text(shape));
        shape = {shape.channels, (shape.height - k) / s + 1, (shape.width - k) / s + 1};
        break;
      }
      case LayerKind::Relu:
        break;
      case LayerKind::Flatten:
        shape = {int(shape.size()), 1, 1};
        flat = true;
        break;
      case LayerKind::Linear: {
        if (!flat && (shape.height != 1 || shape.width != 1))
          throw ConfigError(where + ": needs a flat input but gets " + shape_text(shape) +
                            "; add {type: flatten} before it");
        const int in = int(shape.size());  // <= INT_MAX: checked when the shape was made
        lp.weight_index =
            add_parameter(layer.name + ".weight", {layer.out_features, in}, in, where);
        lp.bias_index = add_parameter(layer.name + ".bias", {layer.out_features}, in, where);
        shape = {layer.out_features, 1, 1};
        flat = true;
        break;
      }
    }
    lp.output = shape;
    if (layer.kind == LayerKind::Relu && i > 0) {
      LayerPlan& producer = plan.layers.back();
      const LayerKind k = producer.config.kind;
      if ((k == LayerKind::Conv2d || k == LayerKind::Linear) && !producer.fused_relu)
        producer.fused_relu = lp.folded = true;
    }
    plan.layers.push_back(lp);
  }
  if (!flat || shape.height != 1 || shape.width != 1 || plan.parameters.empty())
    throw ConfigError(config_source +
                      ": model.layers: the last layers must produce class scores: end with "
                      "flatten and linear (out_features = number of classes)");
  if (shape.channels < 2)
    throw ConfigError(config_source + ": model.layers: the output has " +
                      std::to_string(shape.channels) + " feature(s), expected >= 2 classes");
  plan.num_classes = shape.channels;
  plan.parameter_count = size_t(offset);
  plan.buffer_count = size_t(buffer_offset);
  // Every use of a plan holds at least one copy of the parameters (the weights a reader loads, the
  // initial values): one that cannot fit is an error here, before anyone allocates it.
  const int64_t available = available_memory_bytes();
  const int64_t parameter_bytes = offset * int64_t(sizeof(float));
  if (available >= 0 && parameter_bytes > available) {
    size_t largest = 0;
    int64_t largest_count = -1;
    for (size_t i = 0; i < plan.layers.size(); ++i) {
      int64_t count = 0;
      for (int index : {plan.layers[i].weight_index, plan.layers[i].bias_index})
        if (index >= 0) count += int64_t(plan.parameters[size_t(index)].count);
      if (count > largest_count) largest = i, largest_count = count;
    }
    throw ConfigError(layer_where(config_source, largest, plan.layers[largest].config) +
                      ": needs " + bytes_text(largest_count * int64_t(sizeof(float))) +
                      " for its parameters alone (the model's " + bytes_text(parameter_bytes) +
                      ", four times that to train), but " + bytes_text(available) +
                      " of memory is available");
  }
  return plan;
}

std::vector<float> initial_parameters(const ModelPlan& plan, uint64_t seed) {
  std::vector<float> values(plan.parameter_count);
  Rng rng(seed);
  for (const ParameterInfo& p : plan.parameters) {
    if (p.init != ParameterInit::UniformFanIn) {
      std::fill(values.begin() + long(p.offset), values.begin() + long(p.offset + p.count),
                p.init == ParameterInit::Ones ? 1.0f : 0.0f);
      continue;
    }
    // nn.Conv2d / nn.Linear reset_parameters(): kaiming_uniform(a=sqrt(5)) for the weight, which
    // is U(±1/sqrt(fan_in)), and U(±1/sqrt(fan_in)) for the bias.
    const float bound = 1.0f / std::sqrt(float(p.fan_in));
    for (size_t i = 0; i < p.count; ++i) values[p.offset + i] = rng.uniform(-bound, bound);
  }
  return values;
}

ModelBuffers initial_buffers(const ModelPlan& plan) {
  ModelBuffers b;
  b.values.assign(plan.buffer_count, 0.0f);
  b.batches_tracked.assign(size_t(plan.batchnorm_count), 0);
  for (const BufferInfo& info : plan.buffers)
    if (info.kind == BufferKind::RunningVar)
      std::fill(b.values.begin() + long(info.offset),
                b.values.begin() + long(info.offset + info.count), 1.0f);
  return b;
}

}  // namespace gputrain

namespace gputrain {

MemoryEstimate estimate_cpu_memory(const ModelPlan& plan, int64_t batch, int threads,
                                   int state_buffers) {
  constexpr int64_t kFloat = sizeof(float);
  const std::string run = plan.source + ": batch " + std::to_string(batch);
  // The flat parameter buffer, its gradient, each optimizer buffer, and the host copy the trainer
  // hands over (initial or loaded values).
  const int64_t parameter_copies = 3 + std::max(state_buffers, 0);
  MemoryEstimate e;
  e.parameter_bytes =
      checked_product({int64_t(plan.parameter_count), kFloat, parameter_copies}, run);
  e.total_bytes =
      checked_add(e.parameter_bytes, checked_product({batch, plan.input.size(), kFloat}, run), run);
  int64_t workspace_bytes = 0;
  std::vector<int64_t> layer_bytes(plan.layers.size(), 0);
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const LayerPlan& layer = plan.layers[i];
    const std::string where = layer_where(plan.source, i, layer.config);
    int64_t bytes = 0;
    for (int index : {layer.weight_index, layer.bias_index})
      if (index >= 0)
        bytes = checked_add(
            bytes,
            checked_product(
                {int64_t(plan.parameters[size_t(index)].count), kFloat, parameter_copies}, where),
            where);
    const int64_t activation = checked_product({batch, layer.output.size(), kFloat}, where);
    // Output and its gradient, except where the layer is a view of its input (flatten, a ReLU
    // folded into its producer); max pooling also keeps int32 argmax indices.
    if (!layer.folded && layer.config.kind != LayerKind::Flatten) {
      bytes = checked_add(bytes, checked_mul(activation, 2, where), where);
      e.total_bytes = checked_add(e.total_bytes, checked_mul(activation, 2, where), where);
    }
    if (layer.config.kind == LayerKind::MaxPool2d) {
      bytes = checked_add(bytes, activation, where);
      e.total_bytes = checked_add(e.total_bytes, activation, where);
    }
    if (layer.config.kind == LayerKind::Dropout) {  // one mask byte per unit
      bytes = checked_add(bytes, activation / kFloat, where);
      e.total_bytes = checked_add(e.total_bytes, activation / kFloat, where);
    }
    if (layer.config.kind == LayerKind::Conv2d) {
      // As cpu::conv_workspace_floats: per thread the im2col columns and their gradient (2·K·P), a
      // private dW (O·K) and a zero-padded input (C·Hp·Wp); one workspace, the largest, is shared.
      const ConvGeometry g = layer.conv_geometry(1);
      const int64_t K = checked_product({g.in_channels, g.kernel, g.kernel}, where);
      const int64_t P = checked_product({g.out_height(), g.out_width()}, where);
      const int64_t padded = checked_product({g.in_channels, int64_t(g.in_height) + 2 * g.padding,
                                              int64_t(g.in_width) + 2 * g.padding},
                                             where);
      const int64_t per_thread =
          checked_add(checked_add(checked_product({2, K, P}, where),
                                  checked_mul(g.out_channels, K, where), where),
                      padded, where);
      const int64_t workspace = checked_product({per_thread, std::max(threads, 1), kFloat}, where);
      bytes = checked_add(bytes, workspace, where);
      workspace_bytes = std::max(workspace_bytes, workspace);
    }
    layer_bytes[i] = bytes;
    if (bytes > e.largest_layer_bytes) {
      e.largest_layer_bytes = bytes;
      e.largest_layer = int(i);
    }
  }
  e.total_bytes = checked_add(e.total_bytes, workspace_bytes, run);
  return e;
}

int64_t available_memory_bytes() {
  int64_t available = -1;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib) {
    std::getline(meminfo, unit);
    if (key == "MemAvailable:") {
      available = kib * 1024;
      break;
    }
  }
  if (available < 0) {
    const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) available = int64_t(pages) * page;
  }
  // A container's cgroup (v2) limit is what the kernel enforces before the machine runs out.
  std::ifstream max_file("/sys/fs/cgroup/memory.max"),
      current_file("/sys/fs/cgroup/memory.current");
  std::string max_text;
  int64_t current = 0;
  if (max_file >> max_text && max_text != "max" && current_file >> current) {
    try {
      const int64_t left = std::max<int64_t>(std::stoll(max_text) - current, 0);
      available = available < 0 ? left : std::min(available, left);
    } catch (const std::exception&) {
    }
  }
  return available;
}

std::string bytes_text(int64_t bytes) {
  char text[64];
  if (bytes >= (int64_t(1) << 30))
    std::snprintf(text, sizeof text, "%.1f GiB", double(bytes) / double(int64_t(1) << 30));
  else if (bytes >= (int64_t(1) << 20))
    std::snprintf(text, sizeof text, "%.1f MiB", double(bytes) / double(int64_t(1) << 20));
  else
    std::snprintf(text, sizeof text, "%lld bytes", static_cast<long long>(bytes));
  return text;
}

void check_cpu_memory(const ModelPlan& plan, int64_t batch, int threads, int state_buffers) {
  const MemoryEstimate e = estimate_cpu_memory(plan, batch, threads, state_buffers);
  const int64_t available = available_memory_bytes();
  if (available < 0 || e.total_bytes <= available) return;
  const std::string where = e.largest_layer >= 0
                                ? layer_where(plan.source, size_t(e.largest_layer),
                                              plan.layers[size_t(e.largest_layer)].config)
                                : plan.source + ": model";
  throw ConfigError(where + ": needs " + bytes_text(e.largest_layer_bytes) + " at batch size " +
                    std::to_string(batch) + " (the whole model " + bytes_text(e.total_bytes) +
                    " on the CPU), but " + bytes_text(available) + " of memory is available");
}

}  // namespace gputrain
