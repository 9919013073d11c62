// Gradient clipping (optimizer.grad_clip) on the CUDA engine against the CPU engine: the same
// clipped trajectory, with the norm and scale computed in apply_optimizer's device work (after
// the gradients are complete), the updates reading the scale from device memory, the norms summed
// on the device and read only with read_counters, and one captured graph serving every full step
// of a schedule. Skipped (exit 4) without a device, like every case of this binary (see the
// listener in test_cuda_engine.cpp).
//
// The net has no ReLU or max-pool (conv → flatten → linear): no branch point, so the two engines'
// trajectories differ by FP32 summation order only and compare element by element (see
// Net::before_branch in test_cuda_engine.cpp for why nets with branch points cannot). AdamW runs
// with eps 1e-3, away from its eps region where m/√v of near-zero gradient elements amplifies
// rounding differences (the parity suite covers AdamW's own numerics against PyTorch).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/model.hpp"
#include "gputrain/optimizer.hpp"
#include "support/layers.hpp"
#include "support/model_data.hpp"

namespace {

using namespace gputrain;
using gputrain::testing::conv;
using gputrain::testing::flatten;
using gputrain::testing::linear;
using gputrain::testing::make_plan;
using gputrain::testing::random_images;

ModelPlan smooth_net() {
  return make_plan(1, 12, 12, {conv("c1", 4, 3, 1, 1), flatten(), linear("fc", 10)}, "conv-linear");
}

EngineOptions clip_options(const ModelPlan& plan, const OptimizerSpec& optimizer, int batch) {
  EngineOptions o;
  o.optimizer = optimizer;
  o.batch_size = batch;
  o.mean.assign(size_t(plan.input.channels), 0.45f);
  o.std.assign(size_t(plan.input.channels), 0.27f);
  o.threads = 2;
  o.use_graph = true;
  return o;
}

// A linear warmup over the run: a new lr every step, from the table in device memory.
std::vector<StepHyper> warmup_table(const OptimizerSpec& optimizer, int64_t steps, double lr) {
  ScheduleSpec s;
  s.kind = ScheduleKind::Constant;
  s.base_lr = lr;
  s.steps_per_epoch = steps;
  s.warmup_epochs = 1.0;
  s.warmup_start_factor = 0.2;
  return step_table(optimizer, s, steps);
}

// One epoch in order; the global norm of every step (read_counters after each: a test may wait).
std::vector<double> run_epoch(Engine& e, const ModelPlan& plan, const OptimizerSpec& optimizer,
                              const std::vector<float>& params, const ImageSet& train, int batch,
                              double lr) {
  const int64_t steps = (train.count + batch - 1) / batch;
  e.set_parameters(params);
  for (const OptimizerStateInfo& s : optimizer_state(optimizer))
    e.set_state(s.name, std::vector<float>(plan.parameter_count, 0.0f));
  e.set_step_table(warmup_table(optimizer, steps, lr));
  e.set_global_step(0);
  e.set_train_data(train);
  e.set_eval_data(train);
  std::vector<int32_t> order(size_t(train.count));
  for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
  e.set_order(order, 0);
  std::vector<double> norms;
  for (int64_t first = 0; first < train.count; first += batch) {
    const int count = int(std::min<int64_t>(batch, train.count - first));
    e.forward_backward(first, count, float(count));
    e.apply_optimizer();
    const TrainCounters c = e.read_counters(true);
    REQUIRE(c.grad_norm_steps == (optimizer.grad_clip > 0 ? 1 : 0));
    norms.push_back(c.grad_norm_sum);
  }
  return norms;
}

void check_close(const std::string& what, const std::vector<float>& got,
                 const std::vector<float>& ref, double tol) {
  REQUIRE(got.size() == ref.size());
  double scale = 0, worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < ref.size(); ++i) scale = std::max(scale, double(std::abs(ref[i])));
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::abs(double(got[i]) - double(ref[i]));
    if (!(d <= worst)) {  // NaN becomes the worst
      worst = d;
      at = i;
    }
  }
  INFO(what << ": max|got - ref| / max|ref| = " << worst / scale << " at [" << at << "] (got "
            << got[at] << ", ref " << ref[at] << "), allowed " << tol);
  CHECK(worst <= tol * scale);
}

}  // namespace

TEST_CASE("gradient clipping on CUDA follows the CPU engine's clipped trajectory", "[gpu]") {
  const ModelPlan plan = smooth_net();
  const ImageSet train = random_images(plan, 1000, 41);  // 15 full batches of 64 + one of 40
  const int batch = 64;
  const std::vector<float> params = initial_parameters(plan, 5);

  for (const bool adamw : {false, true}) {
    OptimizerSpec spec;
    spec.kind = adamw ? OptimizerKind::AdamW : OptimizerKind::Sgd;
    spec.momentum = 0.9f;
    spec.weight_decay = adamw ? 0.01f : 0.0f;
    spec.eps = 1e-3;
    const double lr = adamw ? 1e-2 : 0.05;
    SECTION(adamw ? "AdamW" : "SGD with momentum") {
      // The clip value: the median norm of an unclipped CPU run (norms read with a clip no norm
      // reaches), so that the clipped runs clip some steps and not others.
      OptimizerSpec probe = spec;
      probe.grad_clip = 1e30f;
      auto probe_e = make_cpu_engine(plan, clip_options(plan, probe, batch));
      std::vector<double> free_norms = run_epoch(*probe_e, plan, probe, params, train, batch, lr);
      std::vector<double> sorted = free_norms;
      std::sort(sorted.begin(), sorted.end());
      spec.grad_clip = float(sorted[sorted.size() / 2]);

      auto cpu_e = make_cpu_engine(plan, clip_options(plan, spec, batch));
      auto gpu_e = cuda::make_cuda_engine(plan, clip_options(plan, spec, batch));
      const std::vector<double> cpu_norms = run_epoch(*cpu_e, plan, spec, params, train, batch, lr);
      const std::vector<double> gpu_norms = run_epoch(*gpu_e, plan, spec, params, train, batch, lr);

      int clipped = 0;
      for (double n : cpu_norms) clipped += n > spec.grad_clip;
      INFO("max_norm " << spec.grad_clip << ", " << clipped << " of " << cpu_norms.size()
                       << " steps clipped");
      CHECK(clipped > 0);
      CHECK(clipped < int(cpu_norms.size()));

      // The norm of every step, as the device summed it and read_counters returned it.
      REQUIRE(gpu_norms.size() == cpu_norms.size());
      for (size_t s = 0; s < cpu_norms.size(); ++s) {
        INFO("step " << s + 1 << ": gpu norm " << gpu_norms[s] << ", cpu " << cpu_norms[s]);
        CHECK(std::abs(gpu_norms[s] - cpu_norms[s]) <= 1e-4 * cpu_norms[s]);
      }
      check_close("parameters after the clipped epoch", gpu_e->parameters(), cpu_e->parameters(),
                  1e-4);
      for (const OptimizerStateInfo& s : optimizer_state(spec))
        check_close(s.name, gpu_e->state(s.name), cpu_e->state(s.name), 1e-4);

      // One graph served every full step (the first runs eagerly before the capture, the
      // partial last one eagerly): the clip scale and lr come from device memory.
      CHECK(gpu_e->graph_captures() == 1);
      CHECK(gpu_e->graph_replays() == 14);
    }
  }
}

TEST_CASE("with clipping, the norms of several steps are summed on the device", "[gpu]") {
  // read_counters only at the end (no wait in between): the sum and count cover every step, and
  // a reset starts them over.
  const ModelPlan plan = smooth_net();
  const ImageSet train = random_images(plan, 256, 43);
  const int batch = 64;
  OptimizerSpec spec;
  spec.momentum = 0.5f;
  spec.grad_clip = 0.5f;
  const std::vector<float> params = initial_parameters(plan, 6);
  std::vector<TrainCounters> got;
  for (const bool gpu : {false, true}) {
    std::unique_ptr<Engine> e =
        gpu ? std::unique_ptr<Engine>(cuda::make_cuda_engine(plan, clip_options(plan, spec, batch)))
            : make_cpu_engine(plan, clip_options(plan, spec, batch));
    e->set_parameters(params);
    e->set_state("momentum", std::vector<float>(plan.parameter_count, 0.0f));
    e->set_step_table(warmup_table(spec, 4, 0.05));
    e->set_train_data(train);
    std::vector<int32_t> order(size_t(train.count));
    for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
    e->set_order(order, 0);
    for (int64_t first = 0; first < train.count; first += batch) {
      e->forward_backward(first, batch, float(batch));
      e->apply_optimizer();
    }
    got.push_back(e->read_counters(true));
    const TrainCounters after_reset = e->read_counters(false);
    CHECK(after_reset.grad_norm_steps == 0);
    CHECK(after_reset.grad_norm_sum == 0.0);
  }
  CHECK(got[0].grad_norm_steps == 4);
  CHECK(got[1].grad_norm_steps == 4);
  INFO("cpu " << got[0].grad_norm_sum << ", gpu " << got[1].grad_norm_sum);
  CHECK(std::abs(got[1].grad_norm_sum - got[0].grad_norm_sum) <= 1e-4 * got[0].grad_norm_sum);
}
