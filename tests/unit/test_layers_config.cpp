// The issue-11 layers from config to plan to weights file: keys, defaults and file:line errors;
// parameter and buffer names, shapes and initial values; the weight decay mask; buffers in weights
// files (num_batches_tracked as an I64 scalar) and their strict loading.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "gputrain/checkpoint.hpp"
#include "gputrain/config.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"
#include "gputrain/optimizer.hpp"
#include "gputrain/safetensors.hpp"
#include "support/data_files.hpp"
#include "support/expect_error.hpp"

using namespace gputrain;

namespace {

const std::string kNet =
    "model:\n"                                                                     // 1
    "  input: [1, 12, 12]\n"                                                       // 2
    "  layers:\n"                                                                  // 3
    "    - {type: conv2d, name: conv1, out_channels: 4, kernel: 3, padding: 1}\n"  // 4
    "    - {type: batchnorm2d, name: bn1}\n"                                       // 5
    "    - {type: relu}\n"                                                         // 6
    "    - {type: avgpool2d, kernel: 2}\n"                                         // 7
    "    - {type: batchnorm2d, name: bn2, momentum: 0.25, eps: 0.001}\n"           // 8
    "    - {type: global_avgpool}\n"                                               // 9
    "    - {type: flatten}\n"                                                      // 10
    "    - {type: dropout, p: 0.5}\n"                                              // 11
    "    - {type: linear, name: fc, out_features: 3}\n"                            // 12
    "data:\n"                                                                      // 13
    "  dir: some/data\n"                                                           // 14
    "optimizer:\n"                                                                 // 15
    "  lr: 0.1\n"                                                                  // 16
    "  weight_decay: 0.01\n";                                                      // 17

std::string with(const std::string& from, const std::string& to) {
  std::string text = kNet;
  const size_t at = text.find(from);
  REQUIRE(at != std::string::npos);
  text.replace(at, from.size(), to);
  return text;
}

void parse_error(const std::string& text, const std::vector<std::string>& parts) {
  INFO("config:\n" << text);
  testing::expect_error<ConfigError>([&] { parse_config(text, "cfg.yaml"); }, parts);
}

void plan_error(const std::string& text, const std::vector<std::string>& parts) {
  INFO("config:\n" << text);
  const Config c = parse_config(text, "cfg.yaml");
  testing::expect_error<ConfigError>([&] { plan_model(c.model, "cfg.yaml"); }, parts);
}

}  // namespace

TEST_CASE("the new layer types read with their defaults and write back", "[config][layers]") {
  const Config c = parse_config(kNet, "cfg.yaml");
  REQUIRE(c.model.layers.size() == 9);
  const LayerConfig& bn1 = c.model.layers[1];
  CHECK(bn1.kind == LayerKind::BatchNorm2d);
  CHECK(bn1.name == "bn1");
  CHECK(bn1.momentum == 0.1);
  CHECK(bn1.eps == 1e-5);
  CHECK(c.model.layers[3].kind == LayerKind::AvgPool2d);
  CHECK(c.model.layers[3].kernel == 2);
  CHECK(c.model.layers[3].stride == 2);  // = kernel
  CHECK(c.model.layers[4].momentum == 0.25);
  CHECK(c.model.layers[4].eps == 0.001);
  CHECK(c.model.layers[5].kind == LayerKind::GlobalAvgPool);
  CHECK(c.model.layers[7].kind == LayerKind::Dropout);
  CHECK(c.model.layers[7].p == 0.5);
  CHECK(c.optimizer.decay_norm_and_bias);
  const Config back = parse_config(to_yaml(c), "back.yaml");
  CHECK(to_yaml(back) == to_yaml(c));
  CHECK(back.model.layers[4].momentum == 0.25);
  CHECK(back.model.layers[7].p == 0.5);
  const Config off = parse_config(
      with("  weight_decay: 0.01\n", "  weight_decay: 0.01\n  decay_norm_and_bias: false\n"),
      "cfg.yaml");
  CHECK_FALSE(off.optimizer.decay_norm_and_bias);
  CHECK_FALSE(parse_config(to_yaml(off), "back.yaml").optimizer.decay_norm_and_bias);
  CHECK_FALSE(parse_config(kNet, "cfg.yaml", {"optimizer.decay_norm_and_bias=false"})
                  .optimizer.decay_norm_and_bias);
  CHECK(parse_config(kNet, "cfg.yaml", {"model.layers.7.p=0.25"}).model.layers[7].p == 0.25);
}

TEST_CASE("bad fields of the new layers name the file, line, key and value", "[config][layers]") {
  parse_error(with("momentum: 0.25", "momentum: 1.5"),
              {"cfg.yaml:8: model.layers[4].momentum: expected a number in [0, 1], got '1.5'"});
  parse_error(with("eps: 0.001", "eps: 0"),
              {"cfg.yaml:8: model.layers[4].eps: expected a number > 0, got '0'"});
  parse_error(with("eps: 0.001", "eps: abc"), {"cfg.yaml:8: model.layers[4].eps", "'abc'"});
  parse_error(with("p: 0.5", "p: 1"),
              {"cfg.yaml:11: model.layers[7].p: expected a probability in [0, 1), got '1'"});
  parse_error(with("p: 0.5", "p: -0.1"), {"cfg.yaml:11: model.layers[7].p", "'-0.1'"});
  parse_error(with("{type: dropout, p: 0.5}", "{type: dropout}"),
              {"cfg.yaml:11", "missing required key 'model.layers[7].p'", "dropout needs p"});
  parse_error(with("{type: batchnorm2d, name: bn1}", "{type: batchnorm2d}"),
              {"cfg.yaml:5", "missing required key 'model.layers[1].name'"});
  parse_error(with("{type: avgpool2d, kernel: 2}", "{type: avgpool2d, kernel: 0}"),
              {"cfg.yaml:7: model.layers[3].kernel: expected an integer ≥ 1, got '0'"});
  parse_error(with("{type: avgpool2d, kernel: 2}", "{type: avgpool2d}"),
              {"cfg.yaml:7", "missing required key 'model.layers[3].kernel'"});
  parse_error(with("{type: global_avgpool}", "{type: global_avgpool, kernel: 2}"),
              {"cfg.yaml:9", "model.layers[5]", "kernel", "known for global_avgpool"});
  parse_error(with("{type: batchnorm2d, name: bn1}", "{type: batchnorm2d, name: conv1}"),
              {"cfg.yaml:5", "'conv1' is already the name of model.layers[0]"});
  parse_error(with("  weight_decay: 0.01\n", "  decay_norm_and_bias: maybe\n"),
              {"cfg.yaml:17: optimizer.decay_norm_and_bias", "'maybe'"});
  // Shapes: after flatten there is no image to normalize or pool.
  plan_error(with("    - {type: dropout, p: 0.5}\n", "    - {type: batchnorm2d, name: bn3}\n"),
             {"cfg.yaml:11: model.layers[7] (batchnorm2d 'bn3')", "needs an image input"});
  plan_error(with("    - {type: dropout, p: 0.5}\n", "    - {type: global_avgpool}\n"),
             {"cfg.yaml:11: model.layers[7] (global_avgpool)", "after flatten"});
  plan_error(with("{type: avgpool2d, kernel: 2}", "{type: avgpool2d, kernel: 13}"),
             {"cfg.yaml:7: model.layers[3] (avgpool2d)", "kernel 13 is larger than its input"});
}

TEST_CASE("the plan: PyTorch's names, shapes, initial values and buffers", "[model][layers]") {
  const ModelPlan plan = plan_model(parse_config(kNet, "cfg.yaml").model, "cfg.yaml");
  std::vector<std::string> names;
  for (const ParameterInfo& p : plan.parameters) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias",
                                          "bn2.weight", "bn2.bias", "fc.weight", "fc.bias"});
  std::vector<std::string> buffers;
  for (const BufferInfo& b : plan.buffers) buffers.push_back(b.name);
  CHECK(buffers == std::vector<std::string>{"bn1.running_mean", "bn1.running_var",
                                            "bn1.num_batches_tracked", "bn2.running_mean",
                                            "bn2.running_var", "bn2.num_batches_tracked"});
  CHECK(plan.batchnorm_count == 2);
  CHECK(plan.layers[1].output.channels == 4);
  CHECK(plan.layers[3].output.height == 6);
  CHECK(plan.layers[5].output.height == 1);
  CHECK(plan.layers[5].output.channels == 4);
  CHECK(plan.parameters[6].shape == std::vector<int64_t>{3, 4});
  CHECK(plan.buffers[2].shape.empty());
  CHECK(plan.buffers[0].shape == std::vector<int64_t>{4});

  const std::vector<float> init = initial_parameters(plan, 3);
  for (size_t i = 0; i < 4; ++i) {
    CHECK(init[plan.parameters[2].offset + i] == 1.0f);  // bn1.weight
    CHECK(init[plan.parameters[3].offset + i] == 0.0f);  // bn1.bias
  }
  const ModelBuffers b = initial_buffers(plan);
  REQUIRE(b.values.size() == plan.buffer_count);
  CHECK(b.batches_tracked == std::vector<int64_t>{0, 0});
  for (size_t i = 0; i < 4; ++i) {
    CHECK(b.values[plan.buffers[0].offset + i] == 0.0f);
    CHECK(b.values[plan.buffers[1].offset + i] == 1.0f);
  }

  // The decay mask: conv and linear weights only (when asked), nothing otherwise.
  OptimizerSpec spec;
  spec.weight_decay = 0.01f;
  CHECK(weight_decay_mask(plan, spec).empty());
  spec.decay_norm_and_bias = false;
  const std::vector<uint8_t> mask = weight_decay_mask(plan, spec);
  REQUIRE(mask.size() == plan.parameter_count);
  for (const ParameterInfo& p : plan.parameters) {
    const bool decays = p.name == "conv1.weight" || p.name == "fc.weight";
    INFO(p.name);
    CHECK(p.norm_or_bias == !decays);
    for (size_t i = 0; i < p.count; ++i) REQUIRE(mask[p.offset + i] == (decays ? 1 : 0));
  }
  spec.weight_decay = 0.0f;
  CHECK(weight_decay_mask(plan, spec).empty());
}

TEST_CASE("buffers round-trip through weights files, num_batches_tracked as I64",
          "[checkpoint][layers][safetensors]") {
  testing::TempDir dir;
  const ModelPlan plan = plan_model(parse_config(kNet, "cfg.yaml").model, "cfg.yaml");
  const std::vector<float> params = initial_parameters(plan, 1);
  ModelBuffers b = initial_buffers(plan);
  for (size_t i = 0; i < b.values.size(); ++i) b.values[i] = 0.25f * float(i % 7);
  b.batches_tracked = {int64_t(1) << 40, 17};  // beyond 32 bits: stored as 8 bytes
  const Normalization norm{{0.5f}, {0.25f}};
  const std::string path = dir.file("w.safetensors");
  save_weights(path, plan, params, b, norm);

  const TensorFile file = read_safetensors(path);
  const RawTensor* count = file.find_raw("bn1.num_batches_tracked");
  REQUIRE(count);
  CHECK(count->dtype == "I64");
  CHECK(count->shape.empty());
  REQUIRE(count->bytes.size() == 8);
  int64_t stored = 0;
  std::memcpy(&stored, count->bytes.data(), 8);
  CHECK(stored == int64_t(1) << 40);
  REQUIRE(file.find("bn2.running_var"));
  CHECK(file.find("bn2.running_var")->shape == std::vector<int64_t>{4});

  const LoadedWeights w = load_weights(path, plan);
  CHECK(w.parameters == params);
  // The gaps between tensors come back as zeros; compare the tensors themselves.
  for (const BufferInfo& info : plan.buffers) {
    INFO(info.name);
    if (info.kind == BufferKind::BatchesTracked) {
      CHECK(w.buffers.batches_tracked[info.offset] == b.batches_tracked[info.offset]);
      continue;
    }
    for (size_t i = 0; i < info.count; ++i)
      CHECK(w.buffers.values[info.offset + i] == b.values[info.offset + i]);
  }

  // Strict: a missing buffer, a count stored as F32 or with a shape, an unexpected I64 tensor.
  auto rewrite = [&](const std::string& name, auto change) {
    TensorFile f = read_safetensors(path);
    change(f);
    const std::string p = dir.file(name);
    write_safetensors(p, f);
    return p;
  };
  const std::string missing = rewrite("missing.safetensors", [](TensorFile& f) {
    for (auto it = f.tensors.begin(); it != f.tensors.end(); ++it)
      if (it->name == "bn1.running_mean") {
        f.tensors.erase(it);
        break;
      }
  });
  testing::expect_error<WeightsError>([&] { load_weights(missing, plan); },
                                      {"missing tensor 'bn1.running_mean'"});
  const std::string as_float = rewrite("float.safetensors", [](TensorFile& f) {
    for (auto it = f.raw_tensors.begin(); it != f.raw_tensors.end(); ++it)
      if (it->name == "bn1.num_batches_tracked") {
        f.raw_tensors.erase(it);
        break;
      }
    f.tensors.push_back({"bn1.num_batches_tracked", {}, {3.0f}});
  });
  testing::expect_error<WeightsError>([&] { load_weights(as_float, plan); },
                                      {"bn1.num_batches_tracked", "must have dtype I64"});
  const std::string shaped = rewrite("shaped.safetensors", [](TensorFile& f) {
    for (RawTensor& t : f.raw_tensors)
      if (t.name == "bn2.num_batches_tracked") t.shape = {1};
  });
  testing::expect_error<WeightsError>(
      [&] { load_weights(shaped, plan); },
      {"bn2.num_batches_tracked", "has shape [1]", "[] (a scalar)"});
  const std::string extra = rewrite("extra.safetensors", [](TensorFile& f) {
    f.raw_tensors.push_back({"bn9.num_batches_tracked", "I64", {}, std::vector<uint8_t>(8, 0)});
  });
  testing::expect_error<WeightsError>([&] { load_weights(extra, plan); },
                                      {"unexpected tensor 'bn9.num_batches_tracked'"});
}

TEST_CASE("the shipped batch-norm configs load and plan", "[config][layers]") {
  // The repository from this file's path (tests may run from any working directory).
  std::string root = __FILE__;
  root = root.substr(0, root.rfind("/tests/"));
  for (const char* name : {"configs/fashion_mnist_bn.yaml", "configs/cifar10_bn.yaml"}) {
    INFO(name);
    const Config c = load_config(root + "/" + name);
    const ModelPlan plan = plan_model(c.model, c.source);
    CHECK(plan.num_classes == 10);
    CHECK(plan.batchnorm_count >= 2);
    CHECK(c.data.augment.enabled());
    CHECK_FALSE(c.optimizer.decay_norm_and_bias);
    CHECK(c.loss.label_smoothing == 0.1);
  }
}
