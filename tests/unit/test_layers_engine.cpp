// The CPU engine with the issue-11 layers: training mode updates the batch-norm buffers and drops
// units keyed by sample (not by batch position), evaluation uses the running statistics and no
// dropout, and set_buffers/buffers carry the state.
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>

#include "gputrain/engine.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"
#include "support/data_files.hpp"
#include "support/layers.hpp"

using namespace gputrain;
using namespace gputrain::testing;

namespace {

ModelConfig net(double dropout_p) {
  ModelConfig m;
  m.input_channels = 2;
  m.input_height = 8;
  m.input_width = 8;
  m.layers = {conv("c1", 3, 3, 1, 1), batchnorm("bn1", 0.2), relu(),
              avgpool(2, 2),          global_avgpool(),      flatten(),
              dropout(dropout_p),     linear("fc", 4)};
  return m;
}

std::unique_ptr<Engine> engine_for(const ModelPlan& plan, const ImageSet& set, int batch) {
  EngineOptions options;
  options.batch_size = batch;
  options.mean = {0.5f, 0.4f};
  options.std = {0.3f, 0.2f};
  options.threads = 2;
  options.seed = 11;
  auto e = make_cpu_engine(plan, options);
  e->set_train_data(set);
  e->set_eval_data(set);
  e->set_parameters(initial_parameters(plan, 3));
  e->set_buffers(initial_buffers(plan));
  e->set_step_table({StepHyper{0.1f, 1.0f, 1.0f}});
  return e;
}

}  // namespace

TEST_CASE("CPU engine: dropout masks follow the sample, not its place in the batch",
          "[engine][layers][dropout]") {
  // Without batch norm in the way (its statistics depend on the batch), a batch of 4 and the same
  // 4 images as two batches of 2 give the same gradient sum when each image keeps its mask.
  ModelConfig m;
  m.input_channels = 2;
  m.input_height = 8;
  m.input_width = 8;
  m.layers = {conv("c1", 3, 3, 1, 1), relu(), flatten(), dropout(0.5), linear("fc", 4)};
  const ModelPlan plan = plan_model(m);
  const ImageSet set = make_image_set(8, 2, 8, 8, 4, 21);
  const std::vector<int32_t> order = {5, 2, 7, 0};
  auto whole = engine_for(plan, set, 4);
  whole->set_order(order, 3);
  whole->forward_backward(0, 4, 4.0f);
  const FlatBuffer g4 = whole->gradients();
  auto halves = engine_for(plan, set, 2);
  halves->set_order(order, 3);
  halves->forward_backward(0, 2, 4.0f);
  const FlatBuffer a = halves->gradients();
  const std::vector<float> first(a.data, a.data + a.count);
  halves->forward_backward(2, 2, 4.0f);
  const FlatBuffer b = halves->gradients();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < g4.count; ++i) {
    diff = std::max(diff, std::abs(double(first[i]) + b.data[i] - g4.data[i]));
    scale = std::max(scale, std::abs(double(g4.data[i])));
  }
  INFO("max |g(2) + g(2) - g(4)| " << diff << ", max |g(4)| " << scale);
  CHECK(diff <= 1e-5 * scale);
  // Another epoch draws other masks: the gradient changes.
  auto other = engine_for(plan, set, 4);
  other->set_order(order, 4);
  other->forward_backward(0, 4, 4.0f);
  const FlatBuffer g_other = other->gradients();
  double change = 0;
  for (size_t i = 0; i < g4.count; ++i)
    change = std::max(change, std::abs(double(g_other.data[i]) - g4.data[i]));
  CHECK(change > 1e-3 * scale);
}

TEST_CASE("CPU engine: training updates the batch-norm buffers, evaluation only reads them",
          "[engine][layers][batchnorm]") {
  const ModelPlan plan = plan_model(net(0.5));
  const ImageSet set = make_image_set(12, 2, 8, 8, 4, 22);
  auto e = engine_for(plan, set, 6);
  std::vector<int32_t> order(12);
  std::iota(order.begin(), order.end(), 0);
  e->set_order(order, 0);
  const ModelBuffers start = e->buffers();
  CHECK(start == initial_buffers(plan));

  // Evaluation twice: the same result, buffers untouched, dropout off (deterministic).
  const EvalResult r1 = e->evaluate();
  const EvalResult r2 = e->evaluate();
  CHECK(r1.loss_sum == r2.loss_sum);
  CHECK(e->buffers() == start);

  e->forward_backward(0, 6, 6.0f);
  e->apply_optimizer();
  e->forward_backward(6, 6, 6.0f);
  e->apply_optimizer();
  const ModelBuffers after = e->buffers();
  CHECK(after.batches_tracked == std::vector<int64_t>{2});
  const BufferInfo& mean = plan.buffers[size_t(plan.layers[1].running_mean_index)];
  const BufferInfo& var = plan.buffers[size_t(plan.layers[1].running_var_index)];
  for (size_t c = 0; c < 3; ++c) {
    CHECK(after.values[mean.offset + c] != 0.0f);
    CHECK(after.values[var.offset + c] != 1.0f);
  }
  // The evaluation reads the running statistics: other buffers, other loss.
  const double trained_loss = e->evaluate().loss_sum;
  ModelBuffers shifted = after;
  for (size_t c = 0; c < 3; ++c) shifted.values[mean.offset + c] += 0.5f;
  e->set_buffers(shifted);
  CHECK(e->buffers() == shifted);
  CHECK(e->evaluate().loss_sum != trained_loss);
  e->set_buffers(after);
  CHECK(e->evaluate().loss_sum == trained_loss);

  // Wrong sizes are refused.
  ModelBuffers bad = after;
  bad.values.pop_back();
  CHECK_THROWS_AS(e->set_buffers(bad), Error);
  bad = after;
  bad.batches_tracked.push_back(0);
  CHECK_THROWS_AS(e->set_buffers(bad), Error);
}
