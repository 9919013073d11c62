// The CUDA engine against the CPU engine (whose ops are checked by finite differences in
// tests/unit): same parameters, same data, same steps; and the CUDA engine against itself (graph
// replay vs eager steps).
//
// Skipping: where no CUDA device is usable, every test case of this binary exits with code 4, which
// tests/CMakeLists.txt registers as SKIP_RETURN_CODE, so ctest reports "Skipped" (not passed, not
// failed). The exit happens in a Catch2 listener's testRunStarting, which Catch2 (v2) only calls
// when running tests: `--list-test-names-only` (what catch_discover_tests runs at build time)
// returns before any reporter or listener exists, so discovery works on a machine without a GPU.
// Set GPUTRAIN_REQUIRE_GPU=1 (scripts/gpu_check.sh does) to make a missing device a failure
// instead.
//
// Tolerances: |got - ref| <= atol + rtol·|ref| elementwise, with atol a fraction of the tensor's
// largest |ref| (FP32 sums in different orders: cuDNN/cuBLAS vs im2col+OpenBLAS; relative errors
// are ~1e-6, a real bug is O(1)). TF32 is off on the CUDA side, so these hold on Ampere and newer.
// Parameter tensors upstream of a ReLU or max-pool on computed values compare by relative L2 norm
// instead (see Net::before_branch: a near-tie can legitimately route gradient terms elsewhere).
// Gradients are read exactly: with momentum μ > 0 and v = 0, the first SGD step leaves v = g.
#include <algorithm>
// Catch2 v2 declares its reporter/listener bases only with this (for the device check below).
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
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
using gputrain::testing::check_close;
using gputrain::testing::check_close_l2;
using gputrain::testing::conv;
using gputrain::testing::flatten;
using gputrain::testing::linear;
using gputrain::testing::maxpool;
using gputrain::testing::random_images;
using gputrain::testing::relu;

// ---- skip when there is no device --------------------------------------------------------------

struct RequireDevice : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunStarting(Catch::TestRunInfo const& info) override {
    TestEventListenerBase::testRunStarting(info);
    std::string why;
    if (!cuda::list_devices(&why).empty()) return;
    const char* require = std::getenv("GPUTRAIN_REQUIRE_GPU");
    const bool required = require && std::string(require) == "1";
    std::fprintf(stderr, "%s: no CUDA device (%s)\n", required ? "FAILED" : "SKIPPED", why.c_str());
    std::fflush(stderr);
    std::exit(required ? 1 : 4);  // 4 = SKIP_RETURN_CODE in tests/CMakeLists.txt
  }
};
CATCH_REGISTER_LISTENER(RequireDevice)

// ---- nets --------------------------------------------------------------------------------------

struct Net {
  std::string name;
  ModelPlan plan;
  // Branch points: a ReLU or a max-pool whose input was computed (a conv2d/linear before it). A
  // pre-activation within FP32 rounding of 0, or a near-tie in a pool window, may take the other
  // branch on the GPU than on the CPU; that routes a whole gradient term elsewhere and moves the
  // gradient of every layer *before* the branch point by about one term of its sum (on the CPU,
  // with parameters perturbed by 1e-6 relative to mimic other summation orders, one flipped ReLU
  // in the tutorial CNN at batch 33 moved conv1/conv2 weight gradients by up to 1e-2 of their
  // largest element, in 5 of 20 trials). Those tensors compare by relative L2 norm; the layers
  // after the last branch point (never affected) element by element.
  std::vector<bool> before_branch;  // per ModelPlan::parameters index
  bool has_branch = false;
};

Net make_net(const std::string& name, int c, int h, int w, std::vector<LayerConfig> layers) {
  ModelConfig m;
  m.input_channels = c;
  m.input_height = h;
  m.input_width = w;
  m.layers = std::move(layers);
  Net net{name, plan_model(m, name), {}, false};
  net.before_branch.assign(net.plan.parameters.size(), false);
  bool computed = false;
  size_t last_branch = 0;
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const LayerKind kind = m.layers[i].kind;
    if ((kind == LayerKind::Relu || kind == LayerKind::MaxPool2d) && computed) {
      net.has_branch = true;
      last_branch = i;
    }
    if (kind == LayerKind::Conv2d || kind == LayerKind::Linear) computed = true;
  }
  for (size_t i = 0; i < last_branch; ++i) {
    const LayerPlan& l = net.plan.layers[i];
    if (l.weight_index >= 0) net.before_branch[size_t(l.weight_index)] = true;
    if (l.bias_index >= 0) net.before_branch[size_t(l.bias_index)] = true;
  }
  return net;
}

// The PyTorch tutorial's CNN (configs/*.yaml).
Net tutorial(int c, int hw) {
  return make_net(
      "tutorial " + std::to_string(c) + "x" + std::to_string(hw) + "x" + std::to_string(hw), c, hw,
      hw,
      {conv("conv1", 16, 3, 1, 1), relu(), conv("conv2", 32, 3, 1, 1), relu(), flatten(),
       linear("fc1", 256), relu(), linear("fc2", 10)});
}

std::vector<Net> parity_nets() {
  std::vector<Net> nets;
  nets.push_back(tutorial(1, 28));
  nets.push_back(tutorial(3, 32));
  // Strided, padded conv; pooling with and without overlap; odd sizes; conv backward-data.
  nets.push_back(make_net("strided conv + maxpool", 3, 23, 19,
                          {conv("c1", 8, 5, 2, 2), relu(), maxpool(2, 2), conv("c2", 12, 3, 1, 1),
                           relu(), maxpool(3, 2), flatten(), linear("fc", 10)}));
  // Linear layers only (cuBLAS paths, linear backward-data, a ReLU folded into a linear).
  nets.push_back(
      make_net("linear only", 1, 7, 9, {flatten(), linear("fc1", 37), relu(), linear("fc2", 10)}));
  // Stand-alone ReLUs (on the input, after a pool, after a flatten), overlapping pool windows
  // (stride < kernel), a first conv whose input is a ReLU'd input batch.
  nets.push_back(make_net(
      "standalone relu + overlapping pool", 2, 10, 11,
      {relu(), conv("c1", 4, 3, 1, 1), maxpool(3, 1), relu(), flatten(), relu(), linear("fc", 6)}));
  return nets;
}

// ---- data, engines, comparisons ----------------------------------------------------------------

EngineOptions options_for(const ModelPlan& plan, int batch, bool use_graph, bool deterministic,
                          float momentum = 0.9f) {
  EngineOptions o;
  o.optimizer.momentum = momentum;
  o.batch_size = batch;
  o.mean.assign(size_t(plan.input.channels), 0.45f);
  o.std.assign(size_t(plan.input.channels), 0.27f);
  o.threads = 2;
  o.use_graph = use_graph;
  o.deterministic = deterministic;
  return o;
}

std::vector<int32_t> identity_order(int64_t n) {
  std::vector<int32_t> o(static_cast<size_t>(n));
  std::iota(o.begin(), o.end(), 0);
  return o;
}

std::vector<int32_t> shuffled_order(int64_t n, uint32_t seed) {
  std::vector<int32_t> o = identity_order(n);
  std::shuffle(o.begin(), o.end(), std::mt19937(seed));
  return o;
}

// A step table of constant lr (entries past the end repeat the last one).
std::vector<StepHyper> constant_lr(float lr) {
  return {StepHyper{lr, 1.0f, 1.0f}};
}

void prepare(Engine& e, const std::vector<float>& params, const ImageSet& train,
             const ImageSet& eval, const std::vector<StepHyper>& table = constant_lr(0.01f)) {
  e.set_parameters(params);
  e.set_state("momentum", std::vector<float>(params.size(), 0.0f));
  e.set_step_table(table);
  e.set_global_step(0);
  e.set_train_data(train);
  e.set_eval_data(eval);
}

// One training step: the three phases, the batch mean loss.
void train_step(Engine& e, int64_t first, int count) {
  e.forward_backward(first, count, float(count));
  e.apply_optimizer();
}

// Per parameter tensor, so a failure names "conv2.weight": element-wise, or by relative L2 norm
// `l2_rel` where a branch flip can move it (see Net::before_branch): after one step the tensors
// before the last branch point; after several steps every tensor of a net with a branch point (a
// flip in one step changes the inputs of every layer in the later ones).
void check_params_close(const std::string& what, const Net& net, const std::vector<float>& got,
                        const std::vector<float>& ref, double rtol, double atol_frac, double l2_rel,
                        bool one_step) {
  const ModelPlan& plan = net.plan;
  REQUIRE(got.size() == plan.parameter_count);
  REQUIRE(ref.size() == plan.parameter_count);
  for (size_t i = 0; i < plan.parameters.size(); ++i) {
    const ParameterInfo& p = plan.parameters[i];
    if (one_step ? net.before_branch[i] : net.has_branch)
      check_close_l2(what + " " + p.name, got.data() + p.offset, ref.data() + p.offset, p.count,
                     l2_rel);
    else
      check_close(what + " " + p.name, got.data() + p.offset, ref.data() + p.offset, p.count, rtol,
                  atol_frac);
  }
}

void check_scalar(const std::string& what, double got, double ref, double rel) {
  INFO(what << ": got " << got << ", ref " << ref);
  CHECK(std::isfinite(got));
  CHECK(std::abs(got - ref) <= rel * std::abs(ref) + 1e-9);
}

int argmax(const float* row, int k) {
  return int(std::max_element(row, row + k) - row);
}

// Rows whose predicted class differs between the two must be near-ties in the reference.
void check_predictions(const std::vector<float>& got, const std::vector<float>& ref, int k) {
  size_t flips = 0, bad = 0;
  for (size_t r = 0; r * size_t(k) < ref.size(); ++r) {
    const float* a = got.data() + r * size_t(k);
    const float* b = ref.data() + r * size_t(k);
    const int ia = argmax(a, k), ib = argmax(b, k);
    if (ia == ib) continue;
    ++flips;
    if (std::abs(b[ia] - b[ib]) > 1e-4f * (1.0f + std::abs(b[ib]))) ++bad;
  }
  INFO(flips << " predictions differ, " << bad << " of them not near-ties");
  CHECK(bad == 0);
}

// An engine's own counts agree with its logits; the confusion matrix adds up.
void check_eval_consistent(const EvalResult& r, const std::vector<float>& logits,
                           const ImageSet& eval) {
  const int k = r.classes;
  REQUIRE(r.samples == eval.count);
  REQUIRE(logits.size() == size_t(eval.count) * size_t(k));
  int64_t correct = 0, total = 0;
  std::vector<int64_t> row_sum(size_t(k), 0), expect_row(size_t(k), 0);
  for (int64_t i = 0; i < eval.count; ++i) {
    correct += argmax(logits.data() + i * k, k) == eval.labels[size_t(i)];
    ++expect_row[size_t(eval.labels[size_t(i)])];
  }
  for (int t = 0; t < k; ++t)
    for (int p = 0; p < k; ++p) {
      row_sum[size_t(t)] += r.confusion[size_t(t * k + p)];
      total += r.confusion[size_t(t * k + p)];
    }
  CHECK(r.correct == correct);
  CHECK(total == eval.count);
  CHECK(row_sum == expect_row);
}

}  // namespace

// ---- test cases --------------------------------------------------------------------------------

TEST_CASE("the device and build are described", "[gpu]") {
  std::string why;
  const auto devices = cuda::list_devices(&why);
  REQUIRE(!devices.empty());
  CHECK(devices[0].memory_bytes > 0);
  CHECK(devices[0].cc_major >= 3);
  CHECK(cuda::build_versions().find("cuDNN 9") != std::string::npos);

  const Net net = tutorial(1, 28);
  auto e = cuda::make_cuda_engine(net.plan, options_for(net.plan, 8, true, false));
  CHECK(e->describe().rfind("cuda:0 " + devices[0].name + " (sm_", 0) == 0);
  const double busy = e->take_busy_percent();
  CHECK(busy >= -1.0);
  CHECK(busy <= 100.0);
}

TEST_CASE("parameters and momentum round-trip exactly", "[gpu]") {
  const Net net = tutorial(3, 32);
  auto e = cuda::make_cuda_engine(net.plan, options_for(net.plan, 4, true, false));
  const std::vector<float> p = initial_parameters(net.plan, 7);
  std::vector<float> m(p.size());
  for (size_t i = 0; i < m.size(); ++i) m[i] = float(i % 1000) * 1e-3f - 0.5f;
  e->set_parameters(p);
  e->set_state("momentum", m);
  CHECK(e->parameters() == p);
  CHECK(e->state("momentum") == m);
  CHECK_THROWS_AS(e->state("exp_avg"), RuntimeFailure);
  CHECK_THROWS_AS(e->set_parameters(std::vector<float>(3)), RuntimeFailure);
}

TEST_CASE("forward, loss and gradients match the CPU engine", "[gpu]") {
  for (const Net& net : parity_nets()) {
    for (int batch : {1, 33}) {
      DYNAMIC_SECTION(net.name << ", batch " << batch) {
        const ModelPlan& plan = net.plan;
        const int k = plan.num_classes;
        const std::vector<float> params = initial_parameters(plan, 1234);
        const ImageSet train = random_images(plan, batch, 11);
        // Several chunks with a partial last one (and, at batch 1, one image per chunk).
        const ImageSet eval = random_images(plan, 2 * batch + (batch > 1 ? 5 : 1), 12);
        auto cpu_e = make_cpu_engine(plan, options_for(plan, batch, false, false));
        auto gpu_e = cuda::make_cuda_engine(plan, options_for(plan, batch, false, false));
        prepare(*cpu_e, params, train, eval, constant_lr(0.05f));
        prepare(*gpu_e, params, train, eval, constant_lr(0.05f));

        // Forward: logits and loss over the eval set.
        std::vector<float> cpu_logits, gpu_logits;
        const EvalResult cr = cpu_e->evaluate(&cpu_logits);
        const EvalResult gr = gpu_e->evaluate(&gpu_logits);
        check_close("logits", gpu_logits, cpu_logits, 1e-4, 1e-4);
        check_scalar("eval loss sum", gr.loss_sum, cr.loss_sum, 1e-5);
        check_predictions(gpu_logits, cpu_logits, k);
        check_eval_consistent(gr, gpu_logits, eval);

        // One step. With momentum μ > 0 and v = 0, SGD leaves v = μ·0 + g = g exactly: the
        // momentum buffer after the first step IS the gradient, no subtraction needed.
        for (Engine* e : std::initializer_list<Engine*>{cpu_e.get(), gpu_e.get()}) {
          e->set_order(identity_order(batch), 0);
          train_step(*e, 0, batch);
          CHECK(e->global_step() == 1);
        }
        const TrainCounters cc = cpu_e->read_counters(true);
        const TrainCounters gc = gpu_e->read_counters(true);
        check_scalar("train loss sum", gc.loss_sum, cc.loss_sum, 1e-5);
        CHECK(gc.samples == batch);
        CHECK(std::abs(gc.correct - cc.correct) <= 1);  // a near-tie may flip
        check_params_close("gradient", net, gpu_e->state("momentum"), cpu_e->state("momentum"),
                           1e-3, 2e-4, 2e-2, true);
        check_params_close("parameters after a step", net, gpu_e->parameters(), cpu_e->parameters(),
                           1e-4, 1e-5, 1e-3, true);
        // The counters were reset.
        CHECK(gpu_e->read_counters(false).samples == 0);
        CHECK(gpu_e->read_counters(false).loss_sum == 0.0);
      }
    }
  }
}

TEST_CASE("graph replay gives the same bits as eager steps, and follows `first`", "[gpu]") {
  const Net net = make_net("small cnn", 3, 16, 16,
                           {conv("c1", 8, 3, 1, 1), relu(), maxpool(2, 2), conv("c2", 16, 3, 1, 1),
                            relu(), flatten(), linear("fc1", 32), relu(), linear("fc2", 10)});
  const ModelPlan& plan = net.plan;
  const int batch = 32;
  const ImageSet train = random_images(plan, 4 * batch + 5, 21);  // 4 full batches + 5
  const ImageSet eval = random_images(plan, 50, 22);
  const std::vector<float> params = initial_parameters(plan, 99);

  // deterministic: only deterministic cuDNN algorithms, so equal inputs give equal bits.
  // Nesterov with weight decay: every term of the update is exercised.
  auto options = [&](bool graph, bool deterministic) {
    EngineOptions o = options_for(plan, batch, graph, deterministic);
    o.optimizer.weight_decay = 1e-3f;
    o.optimizer.nesterov = true;
    return o;
  };
  auto graph_e = cuda::make_cuda_engine(plan, options(true, true));
  auto eager_e = cuda::make_cuda_engine(plan, options(false, true));
  auto cpu_e = make_cpu_engine(plan, options(false, false));
  std::vector<Engine*> engines = {graph_e.get(), eager_e.get(), cpu_e.get()};
  // A learning rate that changes every step (the graph reads it from the device's step table by
  // the device's step count: each replay must see its own step's value).
  std::vector<StepHyper> table;
  for (int s = 0; s < 12; ++s) table.push_back(StepHyper{0.02f - 0.001f * float(s), 1.0f, 1.0f});
  for (Engine* e : engines) prepare(*e, params, train, eval, table);

  std::vector<TrainCounters> counters[3];
  auto run = [&](int64_t first, int count) {
    for (Engine* e : engines) train_step(*e, first, count);
  };
  auto epoch = [&](const std::vector<int32_t>& order) {
    for (Engine* e : engines) e->set_order(order, 0);
    const int64_t n = int64_t(order.size());
    for (int64_t first = 0; first < n; first += batch)
      run(first, int(std::min<int64_t>(batch, n - first)));
    for (size_t i = 0; i < engines.size(); ++i)
      counters[i].push_back(engines[i]->read_counters(true));
  };

  // Epoch 1 in file order: warm-up (eager), capture + replay, replays, the eager partial batch.
  epoch(identity_order(train.count));
  // Epoch 2 shuffled; a resume-like jump of the global step half-way (the device's step count
  // must follow it: the replays after it read the table from there).
  {
    const auto order = shuffled_order(train.count, 5);
    for (Engine* e : engines) e->set_order(order, 0);
    run(0, batch);
    run(batch, batch);
    for (Engine* e : engines) e->set_global_step(e->global_step() + 3);
    run(2 * batch, batch);
    run(3 * batch, batch);
    run(4 * batch, 5);
    for (size_t i = 0; i < engines.size(); ++i)
      counters[i].push_back(engines[i]->read_counters(true));
  }
  // Epoch 3: a resumed epoch that starts mid-way (first = 2·batch), then jumps back to 0: the
  // device-side position must follow `first` exactly, not just count steps.
  {
    const auto order = shuffled_order(train.count, 6);
    for (Engine* e : engines) e->set_order(order, 0);
    run(2 * batch, batch);
    run(3 * batch, batch);
    run(0, batch);
    run(0, batch);  // the same batch twice in a row
    run(batch, batch);
    for (size_t i = 0; i < engines.size(); ++i)
      counters[i].push_back(engines[i]->read_counters(true));
  }

  // The graph engine really replayed a graph: 13 full steps, the first of them the eager warm-up,
  // the other 12 replays (the second one captures). Were the capture refused, this comparison
  // would be between two eager engines: describe() says why.
  INFO(graph_e->describe());
  CHECK(graph_e->graph_active());
  CHECK(graph_e->graph_replays() == 12);
  // One graph served every full step: the eager partial batches (another grad_scale) and the
  // jumps of `first` and of the global step did not make it capture again.
  CHECK(graph_e->graph_captures() == 1);
  CHECK(graph_e->take_warnings().empty());
  CHECK(!eager_e->graph_active());
  CHECK(eager_e->graph_replays() == 0);

  const std::vector<float> gp = graph_e->parameters(), ep = eager_e->parameters();
  const std::vector<float> gm = graph_e->state("momentum"), em = eager_e->state("momentum");
  CHECK(graph_e->global_step() == 18);  // 15 steps + the jump of 3
  CHECK(cpu_e->global_step() == 18);
  CHECK(gp == ep);  // bitwise
  CHECK(gm == em);
  for (size_t ep_i = 0; ep_i < counters[0].size(); ++ep_i) {
    INFO("epoch " << ep_i + 1);
    CHECK(counters[0][ep_i].loss_sum == counters[1][ep_i].loss_sum);
    CHECK(counters[0][ep_i].correct == counters[1][ep_i].correct);
    CHECK(counters[0][ep_i].samples == counters[1][ep_i].samples);
    // And the same training as the CPU engine (15 steps: FP32 differences grow a little).
    check_scalar("train loss vs CPU", counters[0][ep_i].loss_sum, counters[2][ep_i].loss_sum, 1e-3);
    CHECK(counters[0][ep_i].samples == counters[2][ep_i].samples);
  }
  check_params_close("parameters vs CPU after 15 steps", net, gp, cpu_e->parameters(), 1e-3, 1e-4,
                     1e-3, false);

  // Evaluation in between steps does not disturb the captured step.
  std::vector<float> l1, l2;
  graph_e->evaluate(&l1);
  eager_e->evaluate(&l2);
  CHECK(l1 == l2);
  run(0, batch);
  CHECK(graph_e->parameters() == eager_e->parameters());
  CHECK(graph_e->graph_replays() == 13);
  CHECK(graph_e->graph_captures() == 1);
}

TEST_CASE("a failed graph capture falls back to eager steps, once, and says why", "[gpu]") {
  const Net net = tutorial(1, 28);
  const ModelPlan& plan = net.plan;
  const int batch = 16;
  const ImageSet train = random_images(plan, 3 * batch, 41);
  const ImageSet eval = random_images(plan, 20, 42);
  const std::vector<float> params = initial_parameters(plan, 5);
  auto broken = cuda::make_cuda_engine(plan, options_for(plan, batch, true, true));
  auto eager = cuda::make_cuda_engine(plan, options_for(plan, batch, false, true));
  broken->break_next_capture_for_testing();  // the capture makes a call a capture refuses
  for (cuda::CudaEngine* e : {broken.get(), eager.get()}) {
    prepare(*e, params, train, eval);
    e->set_order(identity_order(train.count), 0);
    for (int64_t first = 0; first < train.count; first += batch) train_step(*e, first, batch);
  }
  // The second step tried to capture, failed with a CUDA status and ran eagerly; the third ran
  // eagerly without trying again. Training went on: the same bits as the eager engine.
  INFO(broken->describe());
  CHECK(broken->graph_replays() == 0);
  CHECK(broken->graph_captures() == 1);  // tried once, never again
  CHECK(!broken->graph_active());
  CHECK(broken->describe().find(", eager (graph capture failed: ") != std::string::npos);
  CHECK(broken->describe().find("cudaError") != std::string::npos);  // the CUDA status by name
  const std::vector<std::string> warnings = broken->take_warnings();
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("graph capture") != std::string::npos);
  CHECK(warnings[0].find("cudaError") != std::string::npos);
  CHECK(broken->take_warnings().empty());  // once
  CHECK(broken->global_step() == 3);
  CHECK(broken->parameters() == eager->parameters());
  CHECK(broken->read_counters(true).loss_sum == eager->read_counters(true).loss_sum);
}

TEST_CASE("cuDNN algorithms are verified and reported per conv layer and batch size", "[gpu]") {
  const Net net = tutorial(3, 32);
  const ModelPlan& plan = net.plan;
  auto e = cuda::make_cuda_engine(plan, options_for(plan, 8, true, true));
  const std::vector<float> params = initial_parameters(plan, 6);
  prepare(*e, params, random_images(plan, 8 + 3, 51), random_images(plan, 8 + 5, 52));
  // Batch 8 (planned), 3 (the epoch's last batch), 5 (the eval set's last chunk): 2 convs each.
  const std::string report = e->algorithm_report();
  INFO(report);
  CHECK(std::count(report.begin(), report.end(), '\n') == 6);
  for (const char* part : {"conv1 (3x32x32 -> 16x32x32, batch 8, deterministic): forward ",
                           "conv2 (16x32x32 -> 32x32x32, batch 3, deterministic): forward ",
                           "; weight-gradient ", "; input-gradient none (its input is data)",
                           " (math ", ", deterministic, workspace ", ", rank "})
    CHECK(report.find(part) != std::string::npos);
  CHECK(report.find("non-deterministic") == std::string::npos);
  CHECK(report.find("TENSOR_OP") == std::string::npos);  // fp32: no TF32 tensor ops
}

TEST_CASE("a short training run matches the CPU's loss and accuracy", "[gpu]") {
  // Learnable data: class c has a brighter 4×4 patch at one of 10 places in noise. Hard enough that
  // the loss stays well away from 0 for 3 epochs (CPU: test loss 1.68, 0.20, 0.04; accuracy 0.66,
  // 0.99, 1.0), so relative loss comparisons stay meaningful.
  const Net net =
      make_net("patch classifier", 1, 16, 16,
               {conv("c1", 8, 3, 1, 1), relu(), maxpool(2, 2), flatten(), linear("fc", 10)});
  const ModelPlan& plan = net.plan;
  auto make_set = [&](int64_t n, uint32_t seed) {
    ImageSet s;
    s.count = n;
    s.channels = 1;
    s.height = s.width = 16;
    s.pixels.resize(size_t(n) * 256);
    s.labels.resize(size_t(n));
    std::mt19937 gen(seed);
    for (int64_t i = 0; i < n; ++i) {
      const int c = int(gen() % 10);
      s.labels[size_t(i)] = c;
      uint8_t* img = s.pixels.data() + i * 256;
      for (int p = 0; p < 256; ++p) img[p] = uint8_t(gen() % 200);
      const int y0 = (c / 5) * 8 + 2, x0 = (c % 5) * 3;
      for (int y = y0; y < y0 + 4; ++y)
        for (int x = x0; x < x0 + 4; ++x) img[y * 16 + x] = uint8_t(100 + gen() % 156);
    }
    return s;
  };
  const ImageSet train = make_set(1000, 31), eval = make_set(300, 32);
  const int batch = 64;  // 15 full batches + 40
  const std::vector<float> params = initial_parameters(plan, 3);
  auto cpu_e = make_cpu_engine(plan, options_for(plan, batch, false, false));
  auto gpu_e = cuda::make_cuda_engine(plan, options_for(plan, batch, true, false));  // a real run
  prepare(*cpu_e, params, train, eval);
  prepare(*gpu_e, params, train, eval);
  double last_acc = 0;
  for (int epoch = 0; epoch < 3; ++epoch) {
    const auto order = shuffled_order(train.count, uint32_t(100 + epoch));
    for (Engine* e : std::initializer_list<Engine*>{cpu_e.get(), gpu_e.get()}) {
      e->set_order(order, 0);
      for (int64_t first = 0; first < train.count; first += batch)
        train_step(*e, first, int(std::min<int64_t>(batch, train.count - first)));
    }
    const TrainCounters c = cpu_e->read_counters(true), g = gpu_e->read_counters(true);
    const EvalResult ce = cpu_e->evaluate(), ge = gpu_e->evaluate();
    INFO("epoch " << epoch + 1);
    REQUIRE(g.samples == train.count);
    check_scalar("train loss", g.loss_sum / double(g.samples), c.loss_sum / double(c.samples),
                 1e-2);
    CHECK(std::abs(double(g.correct - c.correct)) <= 0.02 * double(train.count));
    check_scalar("test loss", ge.loss_sum / double(ge.samples), ce.loss_sum / double(ce.samples),
                 1e-2);
    CHECK(std::abs(double(ge.correct - ce.correct)) <= 0.02 * double(eval.count));
    last_acc = double(ge.correct) / double(ge.samples);
  }
  CHECK(last_acc > 0.5);  // it learned: the comparison above is not between two failures
  const double busy = gpu_e->take_busy_percent();
  CHECK(busy >= -1.0);
  CHECK(busy <= 100.0);
}

TEST_CASE("misuse and impossible requests throw typed errors", "[gpu]") {
  const Net net = tutorial(1, 28);
  const ModelPlan& plan = net.plan;
  auto e = cuda::make_cuda_engine(plan, options_for(plan, 8, true, false));
  const ImageSet train = random_images(plan, 20, 1);
  e->set_parameters(initial_parameters(plan, 1));
  CHECK_THROWS_AS(e->forward_backward(0, 8, 8.0f), RuntimeFailure);  // no data, no order
  CHECK_THROWS_AS(e->apply_optimizer(), RuntimeFailure);             // no step table
  e->set_step_table(constant_lr(0.01f));
  e->set_train_data(train);
  CHECK_THROWS_AS(e->set_order({0, 1, 20}, 0), RuntimeFailure);  // index out of range
  CHECK_THROWS_AS(e->set_order({-1}, 0), RuntimeFailure);
  e->set_order(identity_order(20), 0);
  CHECK_THROWS_AS(train_step(*e, 16, 8), RuntimeFailure);  // past the order's end
  CHECK_THROWS_AS(train_step(*e, 0, 9), RuntimeFailure);   // larger than the planned batch
  CHECK_NOTHROW(train_step(*e, 16, 4));

  ImageSet wrong = random_images(plan, 4, 2);
  wrong.channels = 3;
  wrong.pixels.resize(size_t(4) * 3 * 28 * 28);
  CHECK_THROWS_AS(e->set_eval_data(wrong), DataError);
  ImageSet bad_label = random_images(plan, 4, 3);
  bad_label.labels[2] = 10;
  CHECK_THROWS_AS(e->set_train_data(bad_label), DataError);

  EngineOptions o = options_for(plan, 8, true, false);
  o.device_index = 999;
  CHECK_THROWS_AS(cuda::make_cuda_engine(plan, o), DeviceError);

  // Far more memory than any GPU has: a DeviceError saying how much, not a crash.
  const Net huge = make_net("huge", 3, 1024, 1024, {flatten(), linear("fc", 10)});
  try {
    cuda::make_cuda_engine(huge.plan, options_for(huge.plan, 200000, true, false));
    FAIL("expected a DeviceError");
  } catch (const DeviceError& err) {
    INFO(err.what());
    CHECK(std::string(err.what()).find("MiB free") != std::string::npos);
  }
}
