// The CUDA engine with batchnorm2d, avgpool2d, global_avgpool and dropout against the CPU engine
// (whose ops are checked by finite differences in tests/unit): the eval forward with running
// statistics, a training step's gradients (dropout dropping the same units on both: the masks
// are keyed by seed, epoch, sample index and layer, so the comparison is exact in what is
// dropped), the running statistics and num_batches_tracked after steps; and the CUDA engine
// against itself (graph replay vs eager steps, bitwise, with the dropout draws and the batch
// statistics inside the captured step).
//
// Skipped without a device like every case of this binary (see test_cuda_engine.cpp's listener).
//
// Tolerances as test_cuda_engine.cpp's: |got − ref| <= atol_frac·max|ref| + rtol·|ref| per tensor,
// FP32 sums in other orders (cuDNN/cuBLAS vs im2col + BLAS, the batch statistics' blocked double
// sums vs the CPU's sequential ones: both round to float, an ulp apart). A ReLU after a
// batchnorm2d sees values centred on 0, so some sit within rounding of the kink; a flip routes a
// gradient term elsewhere and moves every parameter upstream by about one term: those tensors
// compare by relative L2 norm (2e-2), as test_cuda_engine.cpp's before_branch tensors.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"
#include "support/compare.hpp"
#include "support/layers.hpp"
#include "support/model_data.hpp"

namespace {

using namespace gputrain;
using gputrain::testing::avgpool;
using gputrain::testing::batchnorm;
using gputrain::testing::check_close;
using gputrain::testing::check_close_l2;
using gputrain::testing::conv;
using gputrain::testing::dropout;
using gputrain::testing::flatten;
using gputrain::testing::global_avgpool;
using gputrain::testing::linear;
using gputrain::testing::make_plan;
using gputrain::testing::random_images;
using gputrain::testing::relu;

// Every new layer, dropout both on an image and on flat features; a batchnorm2d on the input
// batch itself (no input gradient) and one with a 1×1 plane (after global pooling).
ModelPlan layers_net() {
  return make_plan(3, 12, 10,
                   {batchnorm("bn0"), conv("c1", 8, 3, 1, 1), batchnorm("bn1", 0.2), relu(),
                    avgpool(2, 2), dropout(0.25), conv("c2", 12, 3, 1, 1), batchnorm("bn2"), relu(),
                    avgpool(3, 1), global_avgpool(), batchnorm("bn3"), flatten(), linear("fc1", 16),
                    relu(), dropout(0.5), linear("fc2", 10)});
}

EngineOptions options_for(const ModelPlan& plan, int batch, bool use_graph, bool deterministic) {
  EngineOptions o;
  o.optimizer.momentum = 0.9f;
  o.optimizer.weight_decay = 1e-3f;
  o.batch_size = batch;
  o.mean.assign(size_t(plan.input.channels), 0.45f);
  o.std.assign(size_t(plan.input.channels), 0.27f);
  o.threads = 2;
  o.use_graph = use_graph;
  o.deterministic = deterministic;
  o.seed = 20261130;
  return o;
}

std::vector<int32_t> shuffled_order(int64_t n, uint32_t seed) {
  std::vector<int32_t> o(static_cast<size_t>(n));
  std::iota(o.begin(), o.end(), 0);
  std::shuffle(o.begin(), o.end(), std::mt19937(seed));
  return o;
}

void prepare(Engine& e, const ModelPlan& plan, const ImageSet& train, const ImageSet& eval) {
  const std::vector<float> params = initial_parameters(plan, 4321);
  e.set_parameters(params);
  e.set_state("momentum", std::vector<float>(params.size(), 0.0f));
  e.set_buffers(initial_buffers(plan));
  e.set_step_table({StepHyper{0.05f, 1.0f, 1.0f}});
  e.set_global_step(0);
  e.set_train_data(train);
  e.set_eval_data(eval);
}

void train_step(Engine& e, int64_t first, int count) {
  e.forward_backward(first, count, float(count));
  e.apply_optimizer();
}

// Per parameter tensor: by relative L2 norm where a ReLU flip after a batchnorm2d can move it
// (every tensor before the net's last ReLU), element-wise after it.
void check_params(const std::string& what, const ModelPlan& plan, const std::vector<float>& got,
                  const std::vector<float>& ref, double rtol, double atol_frac, double l2_rel) {
  REQUIRE(got.size() == plan.parameter_count);
  REQUIRE(ref.size() == plan.parameter_count);
  size_t last_relu = 0;
  for (size_t i = 0; i < plan.layers.size(); ++i)
    if (plan.layers[i].config.kind == LayerKind::Relu) last_relu = i;
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const LayerPlan& l = plan.layers[i];
    for (int index : {l.weight_index, l.bias_index}) {
      if (index < 0) continue;
      const ParameterInfo& p = plan.parameters[size_t(index)];
      if (i < last_relu)
        check_close_l2(what + " " + p.name, got.data() + p.offset, ref.data() + p.offset, p.count,
                       l2_rel);
      else
        check_close(what + " " + p.name, got.data() + p.offset, ref.data() + p.offset, p.count,
                    rtol, atol_frac);
    }
  }
}

// The running statistics tensor by tensor (element-wise: means and variances of the batch are
// sums over the whole batch, far from any branch of their own; a bug such as a biased variance,
// off by M/(M − 1) >= 1/400 here, or a wrong momentum is far outside), the counts exactly.
void check_buffers(const std::string& what, const ModelPlan& plan, const ModelBuffers& got,
                   const ModelBuffers& ref, double rtol, double atol_frac) {
  REQUIRE(got.values.size() == plan.buffer_count);
  REQUIRE(ref.values.size() == plan.buffer_count);
  for (const BufferInfo& b : plan.buffers)
    if (b.kind != BufferKind::BatchesTracked)
      check_close(what + " " + b.name, got.values.data() + b.offset, ref.values.data() + b.offset,
                  b.count, rtol, atol_frac);
  CHECK(got.batches_tracked == ref.batches_tracked);
}

}  // namespace

TEST_CASE("batchnorm2d / avgpool / global_avgpool / dropout: the CUDA engine matches the CPU's",
          "[gpu]") {
  const ModelPlan plan = layers_net();
  for (int batch : {3, 33}) {
    DYNAMIC_SECTION("batch " << batch) {
      const ImageSet train = random_images(plan, 3 * batch - 1, 61);  // a partial last batch
      const ImageSet eval = random_images(plan, 2 * batch + 3, 62);
      auto cpu_e = make_cpu_engine(plan, options_for(plan, batch, false, false));
      auto gpu_e = cuda::make_cuda_engine(plan, options_for(plan, batch, false, false));
      prepare(*cpu_e, plan, train, eval);
      prepare(*gpu_e, plan, train, eval);

      // Eval mode with fresh running statistics (mean 0, variance 1) and no dropout.
      std::vector<float> cpu_logits, gpu_logits;
      const EvalResult cr = cpu_e->evaluate(&cpu_logits);
      const EvalResult gr = gpu_e->evaluate(&gpu_logits);
      check_close("eval logits", gpu_logits.data(), cpu_logits.data(), cpu_logits.size(), 1e-4,
                  1e-4);
      CHECK(std::abs(gr.loss_sum - cr.loss_sum) <= 1e-5 * std::abs(cr.loss_sum));

      // One training step: with v = 0 the momentum buffer after it is the gradient (+ wd·w).
      const auto order = shuffled_order(train.count, 7);
      for (Engine* e : std::initializer_list<Engine*>{cpu_e.get(), gpu_e.get()}) {
        e->set_order(order, 3);
        train_step(*e, batch, batch);  // the epoch's second batch: sample indices != positions
      }
      const TrainCounters cc = cpu_e->read_counters(true), gc = gpu_e->read_counters(true);
      CHECK(std::abs(gc.loss_sum - cc.loss_sum) <= 1e-5 * std::abs(cc.loss_sum));
      check_params("gradient", plan, gpu_e->state("momentum"), cpu_e->state("momentum"), 1e-3, 2e-4,
                   2e-2);
      check_params("parameters after a step", plan, gpu_e->parameters(), cpu_e->parameters(), 1e-4,
                   1e-5, 1e-3);
      check_buffers("running statistics after a step", plan, gpu_e->buffers(), cpu_e->buffers(),
                    1e-4, 1e-5);
      CHECK(gpu_e->buffers().batches_tracked == std::vector<int64_t>(4, 1));

      // The rest of the epoch (the partial batch last), then eval with the running statistics.
      for (Engine* e : std::initializer_list<Engine*>{cpu_e.get(), gpu_e.get()}) {
        train_step(*e, 0, batch);
        train_step(*e, 2 * batch, batch - 1);
      }
      check_buffers("running statistics after 3 steps", plan, gpu_e->buffers(), cpu_e->buffers(),
                    1e-3, 1e-4);
      CHECK(gpu_e->buffers().batches_tracked == std::vector<int64_t>(4, 3));
      cpu_e->evaluate(&cpu_logits);
      gpu_e->evaluate(&gpu_logits);
      check_close("eval logits after 3 steps", gpu_logits.data(), cpu_logits.data(),
                  cpu_logits.size(), 1e-3, 1e-3);
    }
  }
}

TEST_CASE("with batchnorm2d and dropout, graph replay gives the same bits as eager steps",
          "[gpu]") {
  const ModelPlan plan = layers_net();
  const int batch = 16;
  const ImageSet train = random_images(plan, 4 * batch + 3, 71);
  const ImageSet eval = random_images(plan, 40, 72);
  auto graph_e = cuda::make_cuda_engine(plan, options_for(plan, batch, true, true));
  auto eager_e = cuda::make_cuda_engine(plan, options_for(plan, batch, false, true));
  std::vector<cuda::CudaEngine*> engines = {graph_e.get(), eager_e.get()};
  for (Engine* e : engines) prepare(*e, plan, train, eval);
  // Three epochs with their own orders and epoch numbers (dropout's draws change with both: the
  // graph must read them from the device, not bake in the first step's), the third resumed at
  // the second batch.
  for (int epoch = 1; epoch <= 3; ++epoch) {
    const auto order = shuffled_order(train.count, uint32_t(epoch));
    for (Engine* e : engines) {
      e->set_order(order, epoch);
      for (int64_t first = epoch == 3 ? batch : 0; first < train.count; first += batch)
        train_step(*e, first, int(std::min<int64_t>(batch, train.count - first)));
    }
  }
  INFO(graph_e->describe());
  CHECK(graph_e->graph_active());
  CHECK(graph_e->graph_captures() == 1);
  CHECK(graph_e->graph_replays() == 10);  // 11 full steps, the first eager
  CHECK(graph_e->parameters() == eager_e->parameters());
  CHECK(graph_e->state("momentum") == eager_e->state("momentum"));
  const ModelBuffers gb = graph_e->buffers(), eb = eager_e->buffers();
  CHECK(gb == eb);
  CHECK(gb.batches_tracked == std::vector<int64_t>(4, 14));
  CHECK(graph_e->read_counters(true).loss_sum == eager_e->read_counters(true).loss_sum);
  std::vector<float> l1, l2;
  graph_e->evaluate(&l1);
  eager_e->evaluate(&l2);
  CHECK(l1 == l2);
}

TEST_CASE("model buffers round-trip exactly and are checked", "[gpu]") {
  const ModelPlan plan = layers_net();
  auto e = cuda::make_cuda_engine(plan, options_for(plan, 4, true, false));
  // A fresh engine holds a fresh model's buffers.
  CHECK(e->buffers() == initial_buffers(plan));
  ModelBuffers b = initial_buffers(plan);
  for (size_t i = 0; i < b.values.size(); ++i) b.values[i] = float(i % 97) * 0.01f - 0.3f;
  for (size_t i = 0; i < b.batches_tracked.size(); ++i) b.batches_tracked[i] = int64_t(1000 + i);
  e->set_buffers(b);
  CHECK(e->buffers() == b);
  ModelBuffers short_values = b;
  short_values.values.pop_back();
  CHECK_THROWS(e->set_buffers(short_values));
  ModelBuffers short_counts = b;
  short_counts.batches_tracked.pop_back();
  CHECK_THROWS(e->set_buffers(short_counts));
  CHECK(e->buffers() == b);  // a refused set changes nothing
}
