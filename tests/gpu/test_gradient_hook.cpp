// The CUDA engine's gradient hook (what a data-parallel run's NCCL all-reduce rides on): called
// once the backward pass is enqueued, with the gradient buffer, the engine's stream and device;
// called while the step is captured, so the work it enqueues is part of the graph and runs at every
// replay. Skipped without a device like the rest of this binary (test_cuda_engine.cpp's listener).
#include <cuda_runtime.h>

#include <catch2/catch.hpp>
#include <numeric>
#include <random>
#include <vector>

#include "backend/cuda/cuda_backend.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/model.hpp"
#include "support/layers.hpp"

namespace {

using namespace gputrain;

ModelPlan small_plan() {
  using namespace gputrain::testing;
  ModelConfig m;
  m.input_channels = 3;
  m.input_height = 12;
  m.input_width = 12;
  m.layers = {conv("c1", 8, 3, 1, 1), relu(), flatten(), linear("fc1", 10)};
  return plan_model(m, "hook net");
}

ImageSet images(const ModelPlan& plan, int64_t count) {
  ImageSet s;
  s.count = count;
  s.channels = plan.input.channels;
  s.height = plan.input.height;
  s.width = plan.input.width;
  std::mt19937 gen(3);
  s.pixels.resize(size_t(count) * size_t(s.image_size()));
  for (auto& p : s.pixels) p = uint8_t(gen() & 0xFF);
  s.labels.resize(size_t(count));
  for (auto& l : s.labels) l = int32_t(gen() % uint32_t(plan.num_classes));
  return s;
}

std::unique_ptr<cuda::CudaEngine> engine_for(const ModelPlan& plan, int batch,
                                             const ImageSet& set) {
  EngineOptions o;
  o.batch_size = batch;
  o.mean.assign(3, 0.45f);
  o.std.assign(3, 0.27f);
  o.use_graph = true;
  o.deterministic = true;
  auto e = cuda::make_cuda_engine(plan, o);
  e->set_parameters(initial_parameters(plan, 5));
  e->set_state("momentum", std::vector<float>(plan.parameter_count, 0.0f));
  e->set_step_table({StepHyper{0.1f, 1.0f, 1.0f}});
  e->set_train_data(set);
  e->set_eval_data(set);
  std::vector<int32_t> order(size_t(set.count));
  std::iota(order.begin(), order.end(), 0);
  e->set_order(order, 0);
  return e;
}

}  // namespace

TEST_CASE("the gradient hook's device work is part of every step, graph replays included",
          "[gpu]") {
  const ModelPlan plan = small_plan();
  const int batch = 16;
  const ImageSet set = images(plan, 4 * batch);
  const std::vector<float> start = initial_parameters(plan, 5);

  // Without a hook the steps move the parameters (the control).
  auto plain = engine_for(plan, batch, set);
  for (int s = 0; s < 4; ++s) {
    plain->forward_backward(int64_t(s) * batch, batch, float(batch));
    plain->apply_optimizer();
  }
  CHECK(plain->parameters() != start);

  // A hook that zeroes the gradients on the engine's stream: with zero momentum state and no
  // weight decay the parameters must never move — also in the replays, where the host-side hook
  // is not called again and only the captured memset can do it.
  auto hooked = engine_for(plan, batch, set);
  int calls = 0;
  FlatBuffer seen;
  hooked->set_gradient_hook([&](const FlatBuffer& g) {
    ++calls;
    seen = g;
    REQUIRE(cudaMemsetAsync(g.data, 0, g.count * sizeof(float),
                            static_cast<cudaStream_t>(g.stream)) == cudaSuccess);
  });
  for (int s = 0; s < 4; ++s) {
    hooked->forward_backward(int64_t(s) * batch, batch, float(batch));
    hooked->apply_optimizer();
  }
  INFO(hooked->describe());
  CHECK(hooked->graph_active());
  CHECK(hooked->graph_captures() == 1);
  CHECK(hooked->graph_replays() == 3);  // step 1 eager (warm-up), 2 captures and replays, 3, 4
  CHECK(calls == 2);                    // eager step + capture; replays run the recorded memset
  CHECK(seen.on_device);
  CHECK(seen.stream != nullptr);
  CHECK(seen.device == 0);
  CHECK(seen.count == plan.parameter_count);
  CHECK(seen.data == hooked->gradients().data);
  CHECK(hooked->parameters() == start);
}
