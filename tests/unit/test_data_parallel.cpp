// Data parallelism without a launcher or a GPU: which GPU a rank takes, each rank's part of a
// batch, counters summed over ranks, and the gradient all-reduce that connect_gradients wires into
// the engine's step (issue 12). MPI and NCCL themselves are exercised by tests/cli/test_mpi.py and
// tests/cli/test_nccl.py.
#include <catch2/catch.hpp>
#include <numeric>

#include "backend/engine_choice.hpp"
#include "core/data_parallel.hpp"
#include "gputrain/communicator.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"
#include "support/data_files.hpp"
#include "support/expect_error.hpp"
#include "support/layers.hpp"

using namespace gputrain;
using gputrain::testing::expect_error;

namespace {

std::vector<DeviceInfo> gpus(int n) {
  std::vector<DeviceInfo> v;
  for (int i = 0; i < n; ++i) v.push_back(DeviceInfo{i, "GPU " + std::to_string(i), 1 << 30, 9, 0});
  return v;
}

// A world of `ranks` identical processes seen from one of them: a sum is `ranks` times the value,
// `any` answers what the test says the other ranks hold.
class MirrorCommunicator final : public Communicator {
 public:
  MirrorCommunicator(int ranks, int rank) : ranks_(ranks), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return ranks_; }
  std::string describe() const override { return "mirror, " + std::to_string(ranks_) + " ranks"; }
  void all_reduce_sum(const FlatBuffer& b) override {
    ++buffer_reductions;
    if (b.on_device) return;  // a fake engine's device buffer: nothing to touch
    for (size_t i = 0; i < b.count; ++i) b.data[i] *= float(ranks_);
  }
  void all_reduce_sum(double* values, size_t count) override {
    for (size_t i = 0; i < count; ++i) values[i] *= ranks_;
  }
  bool any(bool flag) override {
    const bool others = flag ? others_when_true : others_when_false;
    return flag || others;
  }
  Communicator& for_gradients(const FlatBuffer& g) override {
    gradients_bound = true;
    return g.on_device && device_reducer ? *device_reducer : *this;
  }

  int buffer_reductions = 0;
  bool gradients_bound = false;
  bool others_when_true = false, others_when_false = false;  // `any` of the other ranks
  Communicator* device_reducer = nullptr;

 private:
  int ranks_, rank_;
};

ModelConfig small_net() {
  using namespace gputrain::testing;
  ModelConfig m;
  m.input_channels = 2;
  m.input_height = 9;
  m.input_width = 8;
  m.layers = {conv("c1", 3, 3, 2, 1), relu(), flatten(), linear("f1", 5)};
  return m;
}

struct CpuRun {
  ModelPlan plan = plan_model(small_net());
  std::unique_ptr<Engine> engine;
  explicit CpuRun(int batch) {
    EngineOptions options;
    options.batch_size = batch;
    options.mean = {0.5f, 0.4f};
    options.std = {0.3f, 0.2f};
    options.threads = 1;
    engine = make_cpu_engine(plan, options);
    const ImageSet set = gputrain::testing::make_image_set(batch, 2, 9, 8, 5, 11);
    engine->set_train_data(set);
    std::vector<int32_t> order(static_cast<size_t>(batch));
    std::iota(order.begin(), order.end(), 0);
    engine->set_order(order, 0);
    engine->set_parameters(initial_parameters(plan, 3));
    engine->set_step_table({StepHyper{0.1f, 1.0f, 1.0f}});
  }
  std::vector<float> gradients_of_one_step() {
    engine->forward_backward(0, 4, 4.0f);
    const FlatBuffer g = engine->gradients();
    return std::vector<float>(g.data, g.data + g.count);
  }
};

}  // namespace

TEST_CASE("ranks on one node take distinct GPUs by local rank unless cuda:N pins one", "[dist]") {
  for (const char* device : {"cuda", "auto"}) {
    CHECK(gpu_index_for(device, 0, gpus(4)) == 0);
    CHECK(gpu_index_for(device, 1, gpus(4)) == 1);
    CHECK(gpu_index_for(device, 3, gpus(4)) == 3);
  }
  // A launcher that gives each rank its own GPU (CUDA_VISIBLE_DEVICES per task): the one it sees.
  CHECK(gpu_index_for("cuda", 3, gpus(1)) == 0);
  // Pinned: the same GPU whatever the local rank.
  CHECK(gpu_index_for("cuda:2", 0, gpus(4)) == 2);
  CHECK(gpu_index_for("cuda:2", 3, gpus(4)) == 2);
  // More ranks on a node than GPUs: no two ranks silently share one.
  expect_error<DeviceError>(
      [] { gpu_index_for("cuda", 2, gpus(2)); },
      {"--device cuda", "cuda:2", "2 are visible", "at most 2 ranks per node", "--device cuda:N"});
  expect_error<DeviceError>([] { gpu_index_for("cuda:5", 0, gpus(2)); },
                            {"--device cuda:5: no such GPU: 2 visible (cuda:0 GPU 0, cuda:1 GPU 1;",
                             "CUDA_VISIBLE_DEVICES"});
  expect_error<ConfigError>([] { gpu_index_for("cuda:x", 0, gpus(2)); }, {"cuda:x"});
}

TEST_CASE("shards of a batch are contiguous, cover it, and differ by at most one", "[dist]") {
  for (int64_t count : {1, 2, 7, 32, 37, 1999}) {
    for (int ranks : {1, 2, 3, 8}) {
      int64_t next = 0, smallest = count, largest = 0;
      for (int r = 0; r < ranks; ++r) {
        const Shard s = shard_of(count, r, ranks);
        CHECK(s.offset == next);
        next += s.count;
        smallest = std::min(smallest, s.count);
        largest = std::max(largest, s.count);
      }
      CHECK(next == count);
      CHECK(largest - smallest <= 1);
    }
  }
}

TEST_CASE("counters are summed over ranks; gradient norms (already global) are kept", "[dist]") {
  MirrorCommunicator world(3, 0);
  const TrainCounters c = reduced(world, TrainCounters{1.5, 4, 10, 2.25, 5});
  CHECK(c.loss_sum == 4.5);
  CHECK(c.correct == 12);
  CHECK(c.samples == 30);
  CHECK(c.grad_norm_sum == 2.25);
  CHECK(c.grad_norm_steps == 5);
}

TEST_CASE("connect_gradients: the engine's step ends with the all-reduce", "[dist]") {
  CpuRun alone(4);
  const std::vector<float> single = alone.gradients_of_one_step();

  CpuRun ranked(4);
  MirrorCommunicator world(2, 0);
  Communicator& reducer = connect_gradients(world, *ranked.engine, 100, 4);
  CHECK(&reducer == &world);
  CHECK(world.gradients_bound);
  const std::vector<float> summed = ranked.gradients_of_one_step();
  CHECK(world.buffer_reductions == 1);  // inside forward_backward, once
  REQUIRE(summed.size() == single.size());
  for (size_t i = 0; i < single.size(); ++i) REQUIRE(summed[i] == 2.0f * single[i]);

  // One process with a host buffer: no hook, the step is as without a communicator.
  CpuRun solo(4);
  MirrorCommunicator one(1, 0);
  connect_gradients(one, *solo.engine, 100, 4);
  CHECK(solo.gradients_of_one_step() == single);
  CHECK(one.buffer_reductions == 0);
}

TEST_CASE("connect_gradients refuses what would hang a GPU run", "[dist]") {
  CpuRun run(4);
  MirrorCommunicator world(2, 1);
  world.others_when_false = true;  // another rank's engine is on a GPU, this one on the CPU
  expect_error<DeviceError>([&] { connect_gradients(world, *run.engine, 100, 4); },
                            {"different backends", "--device"});
  CHECK_FALSE(world.gradients_bound);
}

namespace {

// An engine whose gradients live "on a device" (nothing is ever read from them).
class DeviceGradientsEngine final : public Engine {
 public:
  std::string describe() const override { return "cuda:1 fake"; }
  void set_parameters(const std::vector<float>&) override {}
  std::vector<float> parameters() override { return {}; }
  void set_state(const std::string&, const std::vector<float>&) override {}
  std::vector<float> state(const std::string&) override { return {}; }
  void set_step_table(const std::vector<StepHyper>&) override {}
  void set_global_step(int64_t) override {}
  int64_t global_step() const override { return 0; }
  void set_train_data(const ImageSet&) override {}
  void set_eval_data(const ImageSet&) override {}
  void set_order(const std::vector<int32_t>&, int) override {}
  void forward_backward(int64_t, int, float) override {
    if (hook) hook(gradients());
  }
  FlatBuffer gradients() override { return FlatBuffer{nullptr, 8, true, &stream, 1}; }
  void set_gradient_hook(GradientHook h) override { hook = std::move(h); }
  void apply_optimizer() override {}
  TrainCounters read_counters(bool) override { return {}; }
  EvalResult evaluate(std::vector<float>*, const std::atomic<bool>*) override { return {}; }

  GradientHook hook;
  int stream = 0;
};

}  // namespace

TEST_CASE("connect_gradients: device gradients go to the device's communicator", "[dist]") {
  DeviceGradientsEngine engine;
  MirrorCommunicator world(2, 0), device_library(2, 0);
  world.others_when_true = true;
  world.device_reducer = &device_library;
  // 10 training images, batch 4: the last batch has 2, one per rank.
  Communicator& reducer = connect_gradients(world, engine, 10, 4);
  CHECK(&reducer == &device_library);
  engine.forward_backward(0, 2, 4.0f);
  CHECK(device_library.buffer_reductions == 1);
  CHECK(world.buffer_reductions == 0);
  CHECK(describe_rank(world, engine) ==
        "data-parallel run: rank 0 of mirror, 2 ranks; this rank on cuda:1 fake");

  // A 1-rank run still reduces through the device's library when it has one (the path of a
  // multi-GPU run, tested on one GPU).
  DeviceGradientsEngine single;
  MirrorCommunicator one(1, 0), one_device(1, 0);
  one.device_reducer = &one_device;
  CHECK(&connect_gradients(one, single, 10, 4) == &one_device);
  single.forward_backward(0, 2, 4.0f);
  CHECK(one_device.buffer_reductions == 1);

  // 9 images, batch 4: the last batch has 1 image for 2 GPU ranks; found before any step.
  DeviceGradientsEngine short_last;
  expect_error<ConfigError>([&] { connect_gradients(world, short_last, 9, 4); },
                            {"train.batch_size", "1 image(s)", "2 GPU ranks"});
}
