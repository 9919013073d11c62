#include "gputrain/model.hpp"

#include <cmath>
#include <set>

#include "gputrain/errors.hpp"
#include "gputrain/rng.hpp"

namespace gputrain {
namespace {

constexpr size_t kParameterAlignment = 64;  // floats

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
  }
  return "?";
}

std::string shape_text(const ActivationShape& s) {
  return std::to_string(s.channels) + "x" + std::to_string(s.height) + "x" +
         std::to_string(s.width);
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
  plan.input = {config.input_channels, config.input_height, config.input_width};
  if (plan.input.size() <= 0)
    throw ConfigError(config_source + ": model.input: expected [C, H, W] with every entry >= 1");
  if (config.layers.empty())
    throw ConfigError(config_source + ": model.layers: expected at least one layer");

  ActivationShape shape = plan.input;
  bool flat = false;
  std::set<std::string> names;
  size_t offset = 0;
  auto add_parameter = [&](const std::string& name, std::vector<int64_t> dims, int fan_in) {
    ParameterInfo info;
    info.name = name;
    info.count = 1;
    for (int64_t d : dims) info.count *= size_t(d);
    info.shape = std::move(dims);
    info.offset = offset;
    info.fan_in = fan_in;
    // Each tensor starts on a 256-byte boundary: cuDNN/cuBLAS pick their fast (vectorized)
    // kernels only for aligned pointers, and the views into the flat buffer are those pointers.
    // The gaps stay zero (zero gradient, so SGD leaves them zero).
    offset += (info.count + kParameterAlignment - 1) / kParameterAlignment * kParameterAlignment;
    plan.parameters.push_back(std::move(info));
    return int(plan.parameters.size() - 1);
  };

  for (size_t i = 0; i < config.layers.size(); ++i) {
    const LayerConfig& layer = config.layers[i];
    const std::string where =
        config_source + (layer.source_line > 0 ? ":" + std::to_string(layer.source_line) : "") +
        ": model.layers[" + std::to_string(i) + "] (" + kind_name(layer.kind) +
        (layer.name.empty() ? "" : " '" + layer.name + "'") + ")";
    LayerPlan lp;
    lp.config = layer;
    lp.input = shape;
    if ((layer.kind == LayerKind::Conv2d || layer.kind == LayerKind::Linear) &&
        !names.insert(layer.name).second)
      throw ConfigError(where + ": duplicate layer name '" + layer.name + "'");
    switch (layer.kind) {
      case LayerKind::Conv2d: {
        if (flat) throw ConfigError(where + ": needs an image input, but it comes after flatten");
        const int k = layer.kernel, p = layer.padding, s = layer.stride;
        if (k > shape.height + 2 * p || k > shape.width + 2 * p)
          throw ConfigError(where + ": kernel " + std::to_string(k) +
                            " is larger than its padded input " + shape_text(shape) + " (padding " +
                            std::to_string(p) + ")");
        const int fan_in = shape.channels * k * k;
        lp.weight_index = add_parameter(layer.name + ".weight",
                                        {layer.out_channels, shape.channels, k, k}, fan_in);
        lp.bias_index = add_parameter(layer.name + ".bias", {layer.out_channels}, fan_in);
        shape = {layer.out_channels, (shape.height + 2 * p - k) / s + 1,
                 (shape.width + 2 * p - k) / s + 1};
        break;
      }
      case LayerKind::MaxPool2d: {
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
        const int in = int(shape.size());
        lp.weight_index = add_parameter(layer.name + ".weight", {layer.out_features, in}, in);
        lp.bias_index = add_parameter(layer.name + ".bias", {layer.out_features}, in);
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
  plan.parameter_count = offset;
  return plan;
}

std::vector<float> initial_parameters(const ModelPlan& plan, uint64_t seed) {
  std::vector<float> values(plan.parameter_count);
  Rng rng(seed);
  for (const ParameterInfo& p : plan.parameters) {
    // nn.Conv2d / nn.Linear reset_parameters(): kaiming_uniform(a=sqrt(5)) for the weight, which
    // is U(±1/sqrt(fan_in)), and U(±1/sqrt(fan_in)) for the bias.
    const float bound = 1.0f / std::sqrt(float(p.fan_in));
    for (size_t i = 0; i < p.count; ++i) values[p.offset + i] = rng.uniform(-bound, bound);
  }
  return values;
}

}  // namespace gputrain
