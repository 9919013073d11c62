// Model planning, initialization, checkpoints, and the CPU engine's whole-network gradient.
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>

#include "gputrain/checkpoint.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"
#include "gputrain/safetensors.hpp"
#include "support/data_files.hpp"
#include "support/layers.hpp"

using namespace gputrain;
using gputrain::testing::conv;
using gputrain::testing::flatten;
using gputrain::testing::linear;
using gputrain::testing::maxpool;
using gputrain::testing::relu;

namespace {

ModelConfig tutorial(int c, int h, int w) {
  ModelConfig m;
  m.input_channels = c;
  m.input_height = h;
  m.input_width = w;
  m.layers = {conv("conv1", 16, 3, 1, 1), relu(), conv("conv2", 32, 3, 1, 1), relu(), flatten(),
              linear("fc1", 256),         relu(), linear("fc2", 10)};
  return m;
}

// A small net with every layer kind: conv (stride 2) → relu → maxpool → flatten → linear → relu →
// linear.
ModelConfig small_net() {
  ModelConfig m;
  m.input_channels = 2;
  m.input_height = 9;
  m.input_width = 8;
  m.layers = {conv("c1", 3, 3, 2, 1), relu(), conv("c2", 4, 3, 1, 1), maxpool(2, 2), flatten(),
              linear("f1", 7),        relu(), linear("f2", 5)};
  return m;
}

}  // namespace

TEST_CASE("plan_model: the tutorial net's shapes and state_dict names", "[model]") {
  const ModelPlan plan = plan_model(tutorial(1, 28, 28));
  REQUIRE(plan.parameters.size() == 8);
  CHECK(plan.parameters[0].name == "conv1.weight");
  CHECK(plan.parameters[0].shape == std::vector<int64_t>{16, 1, 3, 3});
  CHECK(plan.parameters[3].shape == std::vector<int64_t>{32});
  CHECK(plan.parameters[4].name == "fc1.weight");
  CHECK(plan.parameters[4].shape == std::vector<int64_t>{256, 32 * 28 * 28});
  CHECK(plan.parameters[7].name == "fc2.bias");
  CHECK(plan.num_classes == 10);
  size_t end = 0;
  for (const ParameterInfo& p : plan.parameters) {
    CHECK(p.offset % 64 == 0);  // 256-byte aligned views for cuDNN/cuBLAS
    CHECK(p.offset >= end);     // no overlap
    end = p.offset + p.count;
  }
  CHECK(plan.parameter_count >= end);
  CHECK(plan.parameter_count < end + 64 * plan.parameters.size());
  const ModelPlan cifar = plan_model(tutorial(3, 32, 32));
  CHECK(cifar.parameters[4].shape == std::vector<int64_t>{256, 32 * 32 * 32});
  const ModelPlan s = plan_model(small_net());
  CHECK(s.layers[0].output.height == 5);  // (9 + 2 - 3) / 2 + 1
  CHECK(s.layers[0].output.width == 4);   // (8 + 2 - 3) / 2 + 1
  CHECK(s.layers[3].output.height == 2);
  CHECK(s.layers[3].output.width == 2);
  CHECK(s.parameters[4].shape == std::vector<int64_t>{7, 16});
}

TEST_CASE("plan_model rejects shapes that do not work out, naming the layer", "[model]") {
  ModelConfig big_kernel = tutorial(1, 28, 28);
  big_kernel.layers[0].kernel = 31;
  big_kernel.layers[0].source_line = 7;
  try {
    plan_model(big_kernel, "net.yaml");
    FAIL("expected a ConfigError");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Catch::Contains("net.yaml:7") && Catch::Contains("conv1") &&
                             Catch::Contains("larger than"));
  }
  ModelConfig no_flatten = tutorial(1, 28, 28);
  no_flatten.layers.erase(no_flatten.layers.begin() + 4);
  CHECK_THROWS_AS(plan_model(no_flatten), ConfigError);
  ModelConfig duplicate = tutorial(1, 28, 28);
  duplicate.layers[2].name = "conv1";
  CHECK_THROWS_WITH(plan_model(duplicate), Catch::Contains("duplicate"));
  ModelConfig no_head = tutorial(1, 28, 28);
  no_head.layers.resize(4);
  CHECK_THROWS_AS(plan_model(no_head), ConfigError);
  ModelConfig big_pool = small_net();
  big_pool.layers[3].kernel = 6;
  CHECK_THROWS_WITH(plan_model(big_pool), Catch::Contains("maxpool2d"));
}

TEST_CASE("initial_parameters: PyTorch's default bounds, reproducible from the seed", "[model]") {
  const ModelPlan plan = plan_model(small_net());
  const auto a = initial_parameters(plan, 3), b = initial_parameters(plan, 3),
             c = initial_parameters(plan, 4);
  CHECK(a == b);
  CHECK(a != c);
  for (const ParameterInfo& p : plan.parameters) {
    const float bound = 1.0f / std::sqrt(float(p.fan_in));
    float lo = 1e9f, hi = -1e9f;
    for (size_t i = 0; i < p.count; ++i) {
      lo = std::min(lo, a[p.offset + i]);
      hi = std::max(hi, a[p.offset + i]);
    }
    INFO(p.name);
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    if (p.count >= 20) CHECK(hi - lo > bound);  // spread over the range, not a constant
  }
}

TEST_CASE("weights and checkpoints round-trip; loading is strict", "[model][checkpoint]") {
  testing::TempDir dir;
  const ModelPlan plan = plan_model(small_net());
  const auto params = initial_parameters(plan, 1), momentum = initial_parameters(plan, 2);
  const Normalization norm{{0.25f, 0.5f}, {0.125f, 2.0f}};
  save_weights(dir.file("w.safetensors"), plan, params, initial_buffers(plan), norm);
  const LoadedWeights w = load_weights(dir.file("w.safetensors"), plan);
  CHECK(w.parameters == params);
  REQUIRE(w.has_normalization);
  CHECK(w.normalization.mean == norm.mean);
  CHECK(w.normalization.std == norm.std);

  TrainingState s;
  s.epoch = 2;
  s.step_in_epoch = 17;
  s.global_step = 99;
  s.partial = {12.375, 40, 64};
  s.best_test_acc = 0.8125;
  s.best_epoch = 2;
  s.config_yaml = "model: {}\n";
  const OptimizerStateInfo momentum_info{"momentum", "momentum."};
  save_checkpoint(dir.file("c.safetensors"), plan, params, initial_buffers(plan),
                  {{momentum_info, momentum}}, norm, s);
  const LoadedCheckpoint c = load_checkpoint(dir.file("c.safetensors"), plan, {momentum_info});
  CHECK(c.parameters == params);
  REQUIRE(c.optimizer_state.size() == 1);
  CHECK(c.optimizer_state[0].values == momentum);
  CHECK(c.state.epoch == 2);
  CHECK(c.state.step_in_epoch == 17);
  CHECK(c.state.global_step == 99);
  CHECK(c.state.partial.loss_sum == 12.375);
  CHECK(c.state.partial.correct == 40);
  CHECK(c.state.best_test_acc == 0.8125);
  CHECK(c.state.config_yaml == s.config_yaml);
  // A checkpoint also serves as weights (momentum tensors are skipped); weights are no checkpoint.
  CHECK(load_weights(dir.file("c.safetensors"), plan).parameters == params);
  CHECK_THROWS_AS(load_checkpoint(dir.file("w.safetensors"), plan, {momentum_info}), WeightsError);

  // Strictness: a wrong shape, a missing tensor, an unexpected tensor.
  TensorFile f = read_safetensors(dir.file("w.safetensors"));
  TensorFile wrong_shape = f;
  wrong_shape.tensors[0].shape = {3, 2, 9};
  write_safetensors(dir.file("shape.safetensors"), wrong_shape);
  CHECK_THROWS_WITH(load_weights(dir.file("shape.safetensors"), plan),
                    Catch::Contains("c1.weight") && Catch::Contains("shape"));
  TensorFile missing = f;
  missing.tensors.pop_back();
  write_safetensors(dir.file("missing.safetensors"), missing);
  CHECK_THROWS_WITH(load_weights(dir.file("missing.safetensors"), plan),
                    Catch::Contains("f2.bias"));
  TensorFile extra = f;
  extra.tensors.push_back({"fc9.weight", {1}, {0.0f}});
  write_safetensors(dir.file("extra.safetensors"), extra);
  CHECK_THROWS_WITH(load_weights(dir.file("extra.safetensors"), plan),
                    Catch::Contains("fc9.weight"));
}

TEST_CASE("CPU engine: whole-network gradient matches finite differences",
          "[model][engine][gradient]") {
  // One SGD step with lr 1 and no momentum moves the parameters by exactly -gradient; the loss of
  // the same batch, evaluated at perturbed parameters, gives the numeric gradient.
  const ModelPlan plan = plan_model(small_net());
  const int N = 5;
  ImageSet set = testing::make_image_set(N, 2, 9, 8, 5, 11);
  EngineOptions options;
  options.batch_size = N;
  options.mean = {0.5f, 0.4f};
  options.std = {0.3f, 0.2f};
  options.threads = 2;
  auto engine = make_cpu_engine(plan, options);
  engine->set_train_data(set);
  engine->set_eval_data(set);
  std::vector<int32_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  engine->set_order(order, 0);
  std::vector<float> params = initial_parameters(plan, 5);
  engine->set_parameters(params);
  engine->set_step_table({StepHyper{1.0f, 1.0f, 1.0f}});
  engine->forward_backward(0, N, float(N));
  engine->apply_optimizer();
  const auto after = engine->parameters();
  std::vector<float> gradient(params.size());
  for (size_t i = 0; i < params.size(); ++i) gradient[i] = params[i] - after[i];

  auto mean_loss = [&] {
    engine->set_parameters(params);
    return engine->evaluate().loss_sum / N;
  };
  // Check the largest gradient entries of each tensor (small ones drown in float rounding).
  int checked = 0, kinks = 0;
  for (const ParameterInfo& p : plan.parameters) {
    std::vector<size_t> idx(p.count);
    std::iota(idx.begin(), idx.end(), p.offset);
    std::sort(idx.begin(), idx.end(),
              [&](size_t a, size_t b) { return std::abs(gradient[a]) > std::abs(gradient[b]); });
    for (size_t j = 0; j < std::min<size_t>(4, idx.size()); ++j) {
      const size_t i = idx[j];
      auto numeric = [&](double eps) {
        const float saved = params[i];
        params[i] = float(saved + eps);
        const double plus = mean_loss();
        params[i] = float(saved - eps);
        const double minus = mean_loss();
        params[i] = saved;
        return (plus - minus) / (2 * eps);
      };
      // A ReLU or max-pool kink within eps makes the estimate depend on eps: skip those points
      // (Caffe's gradient checker does the same), and require that most points were checked.
      const double coarse = numeric(1e-3), fine = numeric(2.5e-4);
      if (std::abs(coarse - fine) > 1e-3 + 0.05 * std::abs(fine)) {
        ++kinks;
        continue;
      }
      INFO(p.name << "[" << i - p.offset << "]: analytic " << gradient[i] << ", numeric " << fine);
      CHECK(std::abs(fine - gradient[i]) <= 1e-3 + 2e-2 * std::abs(fine));
      ++checked;
    }
  }
  INFO(kinks << " points skipped near a kink");
  CHECK(checked >= 24);
}
