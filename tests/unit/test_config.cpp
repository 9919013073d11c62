#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gputrain/config.hpp"
#include "gputrain/errors.hpp"
#include "support/expect_error.hpp"

using namespace gputrain;
namespace fs = std::filesystem;

namespace {

// Tests may run from any working directory; the shipped configs are found from this file's path.
std::string repo_path(const std::string& relative) {
  return (fs::path(__FILE__).parent_path().parent_path().parent_path() / relative).string();
}

// A valid config; tests change one thing at a time. Line numbers matter: see the comments.
const std::string kBase =
    "model:\n"                                                                     // 1
    "  input: [1, 28, 28]\n"                                                       // 2
    "  layers:\n"                                                                  // 3
    "    - {type: conv2d, name: conv1, out_channels: 4, kernel: 3, padding: 1}\n"  // 4
    "    - {type: relu}\n"                                                         // 5
    "    - type: maxpool2d\n"                                                      // 6
    "      kernel: 2\n"                                                            // 7
    "    - {type: flatten}\n"                                                      // 8
    "    - {type: linear, name: fc, out_features: 10}\n"                           // 9
    "data:\n"                                                                      // 10
    "  dir: some/data\n"                                                           // 11
    "optimizer:\n"                                                                 // 12
    "  lr: 0.1\n"                                                                  // 13
    "train:\n"                                                                     // 14
    "  epochs: 2\n"                                                                // 15
    "  batch_size: 32\n";                                                          // 16

// kBase with the line holding `from` replaced by `to` (which may span lines, or be empty).
std::string with(const std::string& from, const std::string& to) {
  std::string text = kBase;
  size_t at = text.find(from);
  REQUIRE(at != std::string::npos);
  text.replace(at, from.size(), to);
  return text;
}

std::string parse_error(const std::string& text, const std::vector<std::string>& parts,
                        const std::vector<std::string>& overrides = {}) {
  INFO("config:\n" << text);
  return testing::expect_error<ConfigError>([&] { parse_config(text, "cfg.yaml", overrides); },
                                            parts);
}

void check_equal(const Config& a, const Config& b) {
  CHECK(a.model.input_channels == b.model.input_channels);
  CHECK(a.model.input_height == b.model.input_height);
  CHECK(a.model.input_width == b.model.input_width);
  REQUIRE(a.model.layers.size() == b.model.layers.size());
  for (size_t i = 0; i < a.model.layers.size(); ++i) {
    const LayerConfig& x = a.model.layers[i];
    const LayerConfig& y = b.model.layers[i];
    INFO("layer " << i);
    CHECK(x.kind == y.kind);
    CHECK(x.name == y.name);
    CHECK(x.out_channels == y.out_channels);
    CHECK(x.kernel == y.kernel);
    CHECK(x.stride == y.stride);
    CHECK(x.padding == y.padding);
    CHECK(x.out_features == y.out_features);
  }
  CHECK(a.data.format == b.data.format);
  CHECK(a.data.dir == b.data.dir);
  CHECK(a.data.train_limit == b.data.train_limit);
  CHECK(a.data.test_limit == b.data.test_limit);
  CHECK(a.data.mean == b.data.mean);
  CHECK(a.data.std == b.data.std);
  CHECK(a.optimizer.type == b.optimizer.type);
  CHECK(a.optimizer.lr == b.optimizer.lr);
  CHECK(a.optimizer.momentum == b.optimizer.momentum);
  CHECK(a.optimizer.weight_decay == b.optimizer.weight_decay);
  CHECK(a.optimizer.nesterov == b.optimizer.nesterov);
  CHECK(a.optimizer.beta1 == b.optimizer.beta1);
  CHECK(a.optimizer.beta2 == b.optimizer.beta2);
  CHECK(a.optimizer.eps == b.optimizer.eps);
  CHECK(a.optimizer.grad_clip == b.optimizer.grad_clip);
  CHECK(a.schedule.type == b.schedule.type);
  CHECK(a.schedule.step_size == b.schedule.step_size);
  CHECK(a.schedule.gamma == b.schedule.gamma);
  CHECK(a.schedule.milestones == b.schedule.milestones);
  CHECK(a.schedule.eta_min == b.schedule.eta_min);
  CHECK(a.schedule.warmup_epochs == b.schedule.warmup_epochs);
  CHECK(a.schedule.warmup_start_factor == b.schedule.warmup_start_factor);
  CHECK(a.loss.label_smoothing == b.loss.label_smoothing);
  CHECK(a.data.val_split == b.data.val_split);
  CHECK(a.train.early_stopping.patience == b.train.early_stopping.patience);
  CHECK(a.train.early_stopping.min_delta == b.train.early_stopping.min_delta);
  CHECK(a.train.early_stopping.monitor == b.train.early_stopping.monitor);
  CHECK(a.train.epochs == b.train.epochs);
  CHECK(a.train.batch_size == b.train.batch_size);
  CHECK(a.train.seed == b.train.seed);
  CHECK(a.train.shuffle == b.train.shuffle);
  CHECK(a.train.deterministic == b.train.deterministic);
  CHECK(a.train.log_interval == b.train.log_interval);
  CHECK(a.train.threads == b.train.threads);
  CHECK(a.train.precision == b.train.precision);
  CHECK(a.output_dir == b.output_dir);
  CHECK(a.device == b.device);
}

}  // namespace

TEST_CASE("the shipped configs load", "[config]") {
  Config f = load_config(repo_path("configs/fashion_mnist.yaml"));
  CHECK(f.source == repo_path("configs/fashion_mnist.yaml"));
  CHECK(f.model.input_channels == 1);
  CHECK(f.model.input_height == 28);
  CHECK(f.model.input_width == 28);
  REQUIRE(f.model.layers.size() == 8);
  CHECK(f.model.layers[0].kind == LayerKind::Conv2d);
  CHECK(f.model.layers[0].name == "conv1");
  CHECK(f.model.layers[0].out_channels == 16);
  CHECK(f.model.layers[0].kernel == 3);
  CHECK(f.model.layers[0].stride == 1);
  CHECK(f.model.layers[0].padding == 1);
  CHECK(f.model.layers[0].source_line == 6);
  CHECK(f.model.layers[1].kind == LayerKind::Relu);
  CHECK(f.model.layers[4].kind == LayerKind::Flatten);
  CHECK(f.model.layers[7].kind == LayerKind::Linear);
  CHECK(f.model.layers[7].name == "fc2");
  CHECK(f.model.layers[7].out_features == 10);
  CHECK(f.model.layers[7].source_line == 13);
  CHECK(f.data.format == DataFormat::Idx);
  CHECK(f.data.dir == "/usr/share/datasets/fashion-mnist");
  CHECK(f.data.mean.empty());
  CHECK(f.data.std.empty());
  CHECK(f.optimizer.type == "sgd");
  CHECK(f.optimizer.lr == 0.01);
  CHECK(f.optimizer.momentum == 0.5);
  CHECK(f.train.epochs == 3);
  CHECK(f.train.batch_size == 64);
  CHECK(f.train.shuffle);
  CHECK(f.output_dir == "runs/fashion_mnist");
  CHECK(f.device == "auto");

  Config c = load_config(repo_path("configs/cifar10.yaml"));
  CHECK(c.model.input_channels == 3);
  CHECK(c.model.input_height == 32);
  CHECK(c.data.format == DataFormat::Cifar10);
  CHECK(c.data.dir == "data/cifar-10-batches-bin");  // relative paths stay as written
  CHECK(c.output_dir == "runs/cifar10");

  Config r = load_config(repo_path("configs/fashion_mnist_recipe.yaml"));
  CHECK(r.model.layers.size() == f.model.layers.size());
  CHECK(r.optimizer.type == "adamw");
  CHECK(r.schedule.type == "cosine");
  CHECK(r.schedule.warmup_epochs > 0);
  CHECK(r.loss.label_smoothing > 0);
  CHECK(r.data.val_split > 0);
  CHECK(r.train.epochs == f.train.epochs);  // the comparison with the default is per epoch
  CHECK(r.train.early_stopping.monitor == "val_acc");
  check_equal(parse_config(to_yaml(r), "resolved.yaml"), r);
}

TEST_CASE("defaults fill in what the file leaves out", "[config]") {
  Config c = parse_config(kBase, "cfg.yaml");
  CHECK(c.source == "cfg.yaml");
  REQUIRE(c.model.layers.size() == 5);
  CHECK(c.model.layers[0].stride == 1);
  CHECK(c.model.layers[0].padding == 1);
  CHECK(c.model.layers[0].source_line == 4);
  CHECK(c.model.layers[2].kind == LayerKind::MaxPool2d);
  CHECK(c.model.layers[2].kernel == 2);
  CHECK(c.model.layers[2].stride == 2);  // maxpool2d stride defaults to its kernel
  CHECK(c.model.layers[2].source_line == 6);
  CHECK(c.data.format == DataFormat::Idx);
  CHECK(c.data.train_limit == 0);
  CHECK(c.data.test_limit == 0);
  CHECK(c.optimizer.lr == 0.1);
  CHECK(c.optimizer.momentum == 0);
  CHECK(c.optimizer.weight_decay == 0);
  CHECK_FALSE(c.optimizer.nesterov);
  CHECK(c.train.epochs == 2);
  CHECK(c.train.seed == 0);
  CHECK(c.train.shuffle);
  CHECK_FALSE(c.train.deterministic);
  CHECK(c.train.log_interval == 100);
  CHECK(c.train.threads == 0);
  CHECK(c.train.precision == Precision::Fp32);
  CHECK(c.output_dir == "runs/default");
  CHECK(c.device == "auto");

  Config m = parse_config(with("      kernel: 2\n", "      kernel: 3\n      stride: 1\n"), "c");
  CHECK(m.model.layers[2].stride == 1);
  // Empty optional sections are allowed.
  CHECK_NOTHROW(parse_config(kBase + "output:\n", "c"));
}

TEST_CASE("unknown keys are named with their line and the known ones", "[config]") {
  parse_error(with("  epochs: 2\n", "  epohcs: 2\n"),
              {"cfg.yaml:15: unknown key 'train.epohcs' (known: epochs, batch_size, seed, shuffle, "
               "deterministic, log_interval, threads, early_stopping, precision)"});
  parse_error(kBase + "modle: 1\n", {"cfg.yaml:17: unknown key 'modle'", "known: model, data"});
  parse_error(with("  lr: 0.1\n", "  lr: 0.1\n  learning_rate: 1\n"),
              {"cfg.yaml:14: unknown key 'optimizer.learning_rate'"});
  parse_error(with("{type: relu}", "{type: relu, kernel: 3}"),
              {"cfg.yaml:5: unknown key 'model.layers[1].kernel' (known for relu: type)"});
  parse_error(with("      kernel: 2\n", "      kernel: 2\n      padding: 1\n"),
              {"cfg.yaml:8:", "unknown key 'model.layers[2].padding'",
               "maxpool2d: type, kernel, "
               "stride"});
  parse_error(with("name: fc,", "name: fc, out_channels: 3,"),
              {"cfg.yaml:9:", "'model.layers[4].out_channels'", "known for linear"});
  parse_error(kBase + "output:\n  folder: x\n", {"cfg.yaml:18: unknown key 'output.folder'"});
  parse_error(with("  epochs: 2\n", "  epochs: 2\n  epochs: 3\n"),
              {"cfg.yaml:16: duplicate key 'train.epochs' (first at line 15)"});
}

TEST_CASE("wrong types and out-of-range values name the key, line and value", "[config]") {
  parse_error(with("batch_size: 32", "batch_size: abc"),
              {"cfg.yaml:16: train.batch_size: expected an integer ≥ 1, got 'abc'"});
  parse_error(with("batch_size: 32", "batch_size: 0"),
              {"cfg.yaml:16: train.batch_size: expected an integer ≥ 1, got '0'"});
  parse_error(with("epochs: 2", "epochs: 1.5"), {"train.epochs: expected an integer", "'1.5'"});
  parse_error(with("epochs: 2", "epochs: 1e3"), {"train.epochs", "'1e3'"});
  parse_error(with("epochs: 2", "epochs: \"2\""), {"train.epochs", "quoted"});
  parse_error(with("epochs: 2", "epochs: 99999999999"), {"train.epochs", "≤ 2147483647"});
  parse_error(with("epochs: 2", "epochs:"), {"cfg.yaml:15: train.epochs", "got nothing"});
  parse_error(with("epochs: 2", "epochs: [2]"), {"train.epochs", "got a list"});
  // Messages stay on one line whatever the value holds.
  parse_error(with("epochs: 2", "epochs: \"a\\nb\""), {"train.epochs", "'a\\nb'"});
  parse_error(with("lr: 0.1", "lr: -1"),
              {"cfg.yaml:13: optimizer.lr: expected a number > 0, got '-1'"});
  parse_error(with("lr: 0.1", "lr: 0"), {"optimizer.lr: expected a number > 0"});
  parse_error(with("lr: 0.1", "lr: .nan"), {"optimizer.lr"});
  parse_error(with("lr: 0.1", "lr: 1e999"), {"optimizer.lr"});
  parse_error(with("lr: 0.1", "lr: fast"), {"optimizer.lr", "'fast'"});
  parse_error(with("lr: 0.1", "lr: 0.1\n  momentum: 1"),
              {"cfg.yaml:14: optimizer.momentum: expected a number in [0, 1), got '1'"});
  parse_error(with("lr: 0.1", "lr: 0.1\n  momentum: -0.1"), {"optimizer.momentum"});
  parse_error(with("lr: 0.1", "lr: 0.1\n  weight_decay: -1"), {"optimizer.weight_decay"});
  parse_error(with("lr: 0.1", "lr: 0.1\n  type: adam"),
              {"optimizer.type: expected one of sgd, adamw, got 'adam'"});
  parse_error(with("lr: 0.1", "lr: 0.1\n  nesterov: true"),
              {"cfg.yaml:14: optimizer.nesterov: true needs optimizer.momentum > 0"});
  parse_error(with("lr: 0.1", "lr: 0.1\n  nesterov: yes\n  momentum: 0.9"),
              {"optimizer.nesterov: expected true or false, got 'yes'"});
  parse_error(with("batch_size: 32", "batch_size: 32\n  shuffle: 1"), {"train.shuffle"});
  parse_error(with("batch_size: 32", "batch_size: 32\n  seed: -1"),
              {"cfg.yaml:17: train.seed: expected an integer ≥ 0, got '-1'"});
  parse_error(with("batch_size: 32", "batch_size: 32\n  seed: 18446744073709551616"),
              {"train.seed"});
  parse_error(with("batch_size: 32", "batch_size: 32\n  threads: -2"), {"train.threads"});
  parse_error(with("batch_size: 32", "batch_size: 32\n  log_interval: 0"), {"train.log_interval"});
  parse_error(kBase + "device: gpu\n", {"cfg.yaml:17: device: expected one of auto, cpu, cuda"});
  parse_error(with("  dir: some/data\n", "  dir: some/data\n  format: png\n"),
              {"cfg.yaml:12: data.format: expected one of idx, cifar10, folder, got 'png'"});
  parse_error(with("  dir: some/data\n", "  dir: some/data\n  train_limit: -5\n"),
              {"data.train_limit: expected an integer ≥ 0"});
  parse_error(with("  dir: some/data\n", "  dir: [a]\n"), {"cfg.yaml:11: data.dir"});
  parse_error(with("input: [1, 28, 28]", "input: [1, 28]"),
              {"cfg.yaml:2: model.input", "[C, H, W]"});
  parse_error(with("input: [1, 28, 28]", "input: [1, 0, 28]"),
              {"cfg.yaml:2: model.input[1]: expected an integer ≥ 1, got '0'"});
  parse_error(with("out_channels: 4", "out_channels: 0"),
              {"cfg.yaml:4: model.layers[0].out_channels: expected an integer ≥ 1, got '0'"});
  parse_error(with("padding: 1", "padding: -1"),
              {"model.layers[0].padding: expected an integer ≥ 0"});
  parse_error(
      with("{type: relu}", "{type: sigmoid}"),
      {"cfg.yaml:5: model.layers[1].type: expected one of conv2d, relu, maxpool2d, flatten, "
       "linear, batchnorm2d, avgpool2d, global_avgpool, dropout, got 'sigmoid'"});
  parse_error(with("    - {type: relu}\n", "    - relu\n"), {"cfg.yaml:5: model.layers[1]"});
  parse_error(with("optimizer:\n  lr: 0.1\n", "optimizer: sgd\n"), {"cfg.yaml:12: optimizer"});
  parse_error("- a\n- b\n", {"cfg.yaml:1:", "top level"});
}

TEST_CASE("recipe keys: optimizer, schedule, loss, val split, early stopping", "[config]") {
  // Defaults: torch's, weight decay by optimizer.
  const Config base = parse_config(kBase, "cfg.yaml");
  CHECK(base.optimizer.type == "sgd");
  CHECK(base.optimizer.weight_decay == 0.0);
  CHECK(base.optimizer.beta1 == 0.9);
  CHECK(base.optimizer.beta2 == 0.999);
  CHECK(base.optimizer.eps == 1e-8);
  CHECK(base.optimizer.grad_clip == 0.0);
  CHECK(base.schedule.type == "constant");
  CHECK(base.schedule.warmup_epochs == 0.0);
  CHECK(base.schedule.warmup_start_factor == 0.1);
  CHECK(base.schedule.gamma == 0.1);
  CHECK(base.loss.label_smoothing == 0.0);
  CHECK(base.data.val_split == 0);
  CHECK(base.train.early_stopping.patience == 0);
  const Config adamw = parse_config(kBase, "cfg.yaml", {"optimizer.type=adamw"});
  CHECK(adamw.optimizer.weight_decay == 0.01);
  CHECK(parse_config(kBase, "cfg.yaml", {"optimizer.type=adamw", "optimizer.weight_decay=0"})
            .optimizer.weight_decay == 0.0);

  const Config r = parse_config(
      kBase, "cfg.yaml",
      {"optimizer.type=adamw", "optimizer.betas=[0.8, 0.99]", "optimizer.eps=1e-6",
       "optimizer.grad_clip=1.5", "schedule={type: multistep, milestones: [1, 2], gamma: 0.5}",
       "schedule.warmup_epochs=0.5", "schedule.warmup_start_factor=0.2", "loss.label_smoothing=0.1",
       "data.val_split=100", "train.early_stopping.patience=3",
       "train.early_stopping.min_delta=0.001", "train.early_stopping.monitor=val_loss"});
  CHECK(r.optimizer.beta1 == 0.8);
  CHECK(r.optimizer.beta2 == 0.99);
  CHECK(r.optimizer.eps == 1e-6);
  CHECK(r.optimizer.grad_clip == 1.5);
  CHECK(r.schedule.type == "multistep");
  CHECK(r.schedule.milestones == std::vector<int>{1, 2});
  CHECK(r.schedule.gamma == 0.5);
  CHECK(r.schedule.warmup_epochs == 0.5);
  CHECK(r.schedule.warmup_start_factor == 0.2);
  CHECK(r.loss.label_smoothing == 0.1);
  CHECK(r.data.val_split == 100);
  CHECK(r.train.early_stopping.patience == 3);
  CHECK(r.train.early_stopping.min_delta == 0.001);
  CHECK(r.train.early_stopping.monitor == "val_loss");
  // config.yaml round trip, every new key included.
  const std::string y = to_yaml(r);
  INFO(y);
  check_equal(parse_config(y, "resolved.yaml"), r);
  CHECK(to_yaml(parse_config(y, "resolved.yaml")) == y);
  // The monitor follows the validation split when there is one.
  CHECK(parse_config(kBase, "cfg.yaml", {"data.val_split=10", "train.early_stopping={patience: 2}"})
            .train.early_stopping.monitor == "val_acc");
  CHECK(parse_config(kBase, "cfg.yaml", {"train.early_stopping={patience: 2}"})
            .train.early_stopping.monitor == "test_acc");
  const Config cos = parse_config(kBase, "cfg.yaml",
                                  {"schedule.type=cosine", "schedule.eta_min=0.001",
                                   "schedule.warmup_epochs=2"});  // warmup = the whole run: ok
  CHECK(cos.schedule.eta_min == 0.001);
  CHECK(
      parse_config(kBase, "cfg.yaml", {"schedule={type: step, step_size: 3}"}).schedule.step_size ==
      3);
}

TEST_CASE("recipe keys: wrong types and out-of-range values", "[config]") {
  const std::string opt = "lr: 0.1\n  ";
  auto o = [&](const std::string& line) { return with("lr: 0.1", opt + line); };
  parse_error(o("betas: [0.9, 1]"),
              {"cfg.yaml:14: optimizer.betas[1]: expected in [0, 1), got '1'"});
  parse_error(o("betas: [-0.1, 0.9]"), {"optimizer.betas[0]", "'-0.1'"});
  parse_error(o("betas: [0.9]"),
              {"optimizer.betas: expected a list of 2 numbers, each in [0, 1), got a list of 1"});
  parse_error(o("betas: 0.9"), {"optimizer.betas: expected a list of 2 numbers", "'0.9'"});
  parse_error(o("betas: [a, 0.9]"), {"optimizer.betas[0]", "'a'"});
  parse_error(o("eps: 0"), {"cfg.yaml:14: optimizer.eps: expected a number > 0, got '0'"});
  parse_error(o("eps: -1e-8"), {"optimizer.eps"});
  parse_error(o("eps: tiny"), {"optimizer.eps", "'tiny'"});
  parse_error(o("grad_clip: -1"), {"optimizer.grad_clip: expected a number ≥ 0 (0: off)"});
  parse_error(o("grad_clip: [1]"), {"optimizer.grad_clip", "a list"});
  parse_error(o("weight_decay: -0.01\n  type: adamw"), {"optimizer.weight_decay"});
  parse_error(o("type: AdamW"), {"optimizer.type: expected one of sgd, adamw, got 'AdamW'"});

  parse_error(kBase + "schedule:\n  type: linear\n",
              {"cfg.yaml:18: schedule.type: expected one of constant, step, multistep, cosine, "
               "got 'linear'"});
  parse_error(kBase + "schedule: cosine\n", {"cfg.yaml:17: schedule: expected a mapping"});
  parse_error(kBase + "schedule:\n  type: step\n",
              {"cfg.yaml:17: missing required key 'schedule.step_size'"});
  parse_error(kBase + "schedule:\n  type: step\n  step_size: 0\n",
              {"cfg.yaml:19: schedule.step_size: expected an integer ≥ 1, got '0'"});
  parse_error(kBase + "schedule:\n  type: step\n  step_size: 1.5\n", {"schedule.step_size"});
  parse_error(kBase + "schedule:\n  gamma: 0\n", {"schedule.gamma: expected a number > 0"});
  parse_error(kBase + "schedule:\n  gamma: x\n", {"schedule.gamma", "'x'"});
  parse_error(kBase + "schedule:\n  type: multistep\n",
              {"missing required key 'schedule.milestones'"});
  parse_error(kBase + "schedule:\n  type: multistep\n  milestones: [2, 2]\n",
              {"cfg.yaml:19: schedule.milestones: expected a list of epochs ≥ 1, strictly "
               "increasing, got 2 after 2"});
  parse_error(kBase + "schedule:\n  type: multistep\n  milestones: [3, 1]\n",
              {"schedule.milestones", "got 1 after 3"});
  parse_error(kBase + "schedule:\n  type: multistep\n  milestones: [0]\n",
              {"schedule.milestones[0]: expected an integer ≥ 1"});
  parse_error(kBase + "schedule:\n  type: multistep\n  milestones: 3\n",
              {"schedule.milestones: expected a list of epochs"});
  parse_error(kBase + "schedule:\n  eta_min: -1\n", {"schedule.eta_min: expected a number ≥ 0"});
  parse_error(kBase + "schedule:\n  warmup_epochs: 2.5\n",
              {"cfg.yaml:18: schedule.warmup_epochs: 2.5 epochs of warmup is longer than the run "
               "(train.epochs: 2)"});
  parse_error(kBase + "schedule:\n  warmup_epochs: -1\n", {"schedule.warmup_epochs"});
  parse_error(kBase + "schedule:\n  warmup_start_factor: 0\n",
              {"schedule.warmup_start_factor: expected a number in (0, 1]"});
  parse_error(kBase + "schedule:\n  warmup_start_factor: 1.5\n", {"schedule.warmup_start_factor"});
  parse_error(kBase + "schedule:\n  period: 3\n", {"cfg.yaml:18: unknown key 'schedule.period'"});

  parse_error(kBase + "loss:\n  label_smoothing: 1\n",
              {"cfg.yaml:18: loss.label_smoothing: expected a number in [0, 1), got '1'"});
  parse_error(kBase + "loss:\n  label_smoothing: -0.1\n", {"loss.label_smoothing"});
  parse_error(kBase + "loss:\n  label_smoothing: yes\n", {"loss.label_smoothing", "'yes'"});

  parse_error(with("  dir: some/data\n", "  dir: d\n  val_split: -1\n"),
              {"cfg.yaml:12: data.val_split: expected an integer ≥ 0, got '-1'"});
  parse_error(with("  dir: some/data\n", "  dir: d\n  val_split: 0.1\n"), {"data.val_split"});
  parse_error(with("  dir: some/data\n", "  dir: d\n  train_limit: 100\n  val_split: 100\n"),
              {"cfg.yaml:13: data.val_split: 100 held-out images leave none of "
               "data.train_limit's 100 to train on"});

  const std::string es = "batch_size: 32\n  early_stopping: ";
  auto e = [&](const std::string& v) { return with("batch_size: 32", es + v); };
  parse_error(e("3"), {"cfg.yaml:17: train.early_stopping: expected a mapping of keys (patience, "
                       "min_delta, monitor), got '3'"});
  parse_error(e("{min_delta: 0.1}"), {"missing required key 'train.early_stopping.patience'"});
  parse_error(e("{patience: 0}"),
              {"train.early_stopping.patience: expected an integer ≥ 1, got '0'"});
  parse_error(e("{patience: 2, min_delta: -1}"), {"train.early_stopping.min_delta"});
  parse_error(e("{patience: 2, monitor: loss}"),
              {"train.early_stopping.monitor: expected one of val_loss, val_acc, test_acc, got "
               "'loss'"});
  parse_error(e("{patience: 2, monitor: val_acc}"),
              {"train.early_stopping.monitor: val_acc needs a validation split "
               "(data.val_split > 0)"});
  parse_error(e("{patience: 2, wait: 1}"), {"unknown key 'train.early_stopping.wait'"});
  parse_error(kBase,
              {"--set train.early_stopping.wait=1", "unknown key 'train.early_stopping.wait'"},
              {"train.early_stopping.wait=1"});
}

TEST_CASE("layer names must be identifiers and unique", "[config]") {
  parse_error(with("name: fc,", "name: conv1,"),
              {"cfg.yaml:9: model.layers[4].name: 'conv1' is already the name of model.layers[0]"});
  parse_error(with("name: fc,", "name: fc.1,"), {"cfg.yaml:9: model.layers[4].name", "'fc.1'"});
  parse_error(with("name: fc,", "name: 1fc,"), {"model.layers[4].name"});
  parse_error(with("name: fc,", "name: \"\","), {"model.layers[4].name"});
  parse_error(with("name: fc,", "name: f c,"), {"model.layers[4].name"});
  CHECK(parse_config(with("name: fc,", "name: _fc_2,"), "c").model.layers[4].name == "_fc_2");
}

TEST_CASE("missing required keys are named", "[config]") {
  parse_error(with("  input: [1, 28, 28]\n", ""),
              {"cfg.yaml:1: missing required key 'model.input'"});
  parse_error("data:\n  dir: x\n", {"cfg.yaml: missing required key 'model.input'"});
  parse_error("", {"missing required key 'model.input'"});
  std::string no_layers =
      kBase.substr(0, kBase.find("  layers:")) + kBase.substr(kBase.find("data:"));
  parse_error(no_layers, {"missing required key 'model.layers'"});
  parse_error(with("  dir: some/data\n", "  format: idx\n"),
              {"cfg.yaml:10: missing required key 'data.dir'"});
  parse_error(with("data:\n  dir: some/data\n", ""), {"missing required key 'data.dir'"});
  parse_error(with("name: conv1, ", ""),
              {"cfg.yaml:4: missing required key 'model.layers[0].name'"});
  parse_error(with("kernel: 3, ", ""), {"missing required key 'model.layers[0].kernel'"});
  parse_error(with("      kernel: 2\n", ""),
              {"cfg.yaml:6: missing required key 'model.layers[2].kernel'"});
  parse_error(with(", out_features: 10", ""),
              {"missing required key 'model.layers[4].out_features'"});
  parse_error(with("{type: relu}", "{}"), {"missing required key 'model.layers[1].type'"});
  parse_error("model: {input: [1, 2, 2], layers: []}\ndata: {dir: x}\n",
              {"cfg.yaml:1: model.layers: expected a non-empty list of layers, got an empty list"});
}

TEST_CASE("mean and std are auto or one positive value per channel", "[config]") {
  Config c =
      parse_config(with("  dir: some/data\n", "  dir: d\n  mean: [0.286]\n  std: [0.353]\n"), "c");
  CHECK(c.data.mean == std::vector<float>{0.286f});
  CHECK(c.data.std == std::vector<float>{0.353f});
  Config a =
      parse_config(with("  dir: some/data\n", "  dir: d\n  mean: auto\n  std: \"auto\"\n"), "c");
  CHECK(a.data.mean.empty());
  CHECK(a.data.std.empty());
  parse_error(with("  dir: some/data\n", "  dir: d\n  mean: [0.1, 0.2, 0.3]\n"),
              {"cfg.yaml:12: data.mean", "1", "got a list of 3"});
  parse_error(with("  dir: some/data\n", "  dir: d\n  std: [0]\n"),
              {"cfg.yaml:12: data.std[0]: expected a number > 0, got '0'"});
  parse_error(with("  dir: some/data\n", "  dir: d\n  std: [-1]\n"), {"data.std[0]"});
  parse_error(with("  dir: some/data\n", "  dir: d\n  mean: automatic\n"), {"data.mean", "auto"});
  parse_error(with("  dir: some/data\n", "  dir: d\n  mean: [x]\n"), {"data.mean[0]"});
  Config rgb = parse_config(with("input: [1, 28, 28]", "input: [3, 28, 28]"), "c",
                            {"data.mean=[0.5, 0.25, 0.125]"});
  CHECK(rgb.data.mean == std::vector<float>{0.5f, 0.25f, 0.125f});
}

TEST_CASE("YAML syntax errors and unreadable files", "[config]") {
  parse_error("model: [1, 2\n", {"cfg.yaml:", "YAML syntax error"});
  std::string msg = parse_error(with("  lr: 0.1\n", "  lr: 0.1\n bad: [\n"), {"YAML syntax error"});
  CHECK(msg.rfind("cfg.yaml:", 0) == 0);
  // file:line:col
  std::string pos = msg.substr(9, msg.find(": YAML") - 9);
  CHECK(pos.find(':') != std::string::npos);
  testing::expect_error<ConfigError>(
      [] { load_config("/nonexistent/gputrain.yaml"); },
      {"cannot read config '/nonexistent/gputrain.yaml': No such file or directory"});
  testing::expect_error<ConfigError>([] { load_config("/"); },
                                     {"cannot read config '/'", "Is a directory"});
}

TEST_CASE("overrides (--set) apply before validation", "[config]") {
  Config c = parse_config(
      kBase, "cfg.yaml",
      {"train.epochs=7", "optimizer.lr=0.05", "train.shuffle=false", "data.train_limit=5000",
       "data.mean=[0.286]", "data.std=[0.353]", "model.layers.0.out_channels=8",
       "output.dir=out/here", "device=cpu", "train.seed=18446744073709551615",
       "optimizer.momentum=0.9", "optimizer.nesterov=true"});
  CHECK(c.train.epochs == 7);
  CHECK(c.optimizer.lr == 0.05);
  CHECK_FALSE(c.train.shuffle);
  CHECK(c.data.train_limit == 5000);
  CHECK(c.data.mean == std::vector<float>{0.286f});
  CHECK(c.data.std == std::vector<float>{0.353f});
  CHECK(c.model.layers[0].out_channels == 8);
  CHECK(c.model.layers[0].kernel == 3);
  CHECK(c.model.layers[0].source_line == 4);
  CHECK(c.output_dir == "out/here");
  CHECK(c.device == "cpu");
  CHECK(c.train.seed == 18446744073709551615ULL);
  CHECK(c.optimizer.nesterov);

  // Last one wins; a whole list or section; a new layer appended at the end; list elements.
  Config d = parse_config(
      kBase, "cfg.yaml",
      {"train.epochs=3", "train.epochs=4", "model.input=[1, 32, 32]", "model.input.2=30",
       "model.layers.5={type: relu}", "model.layers.2.stride=1", "train={epochs: 9}",
       "data.mean=[0.5]", "data.mean.0=0.25", " data.test_limit = 3", "model.layers[0].kernel=5"});
  CHECK(d.model.input_height == 32);
  CHECK(d.model.input_width == 30);
  REQUIRE(d.model.layers.size() == 6);
  CHECK(d.model.layers[5].kind == LayerKind::Relu);
  CHECK(d.model.layers[5].source_line == 0);
  CHECK(d.model.layers[2].stride == 1);
  CHECK(d.train.epochs == 9);
  CHECK(d.train.batch_size == 64);  // the whole section was replaced
  CHECK(d.data.mean == std::vector<float>{0.25f});
  CHECK(d.data.test_limit == 3);
  CHECK(d.model.layers[0].kernel == 5);  // the spelling messages use works too

  // Sections absent from the file are created.
  Config e = parse_config("model: {input: [1, 2, 2], layers: [{type: flatten}]}\n", "c",
                          {"data.dir=/x", "optimizer.weight_decay=0.001", "output.dir=o"});
  CHECK(e.data.dir == "/x");
  CHECK(e.optimizer.weight_decay == 0.001);
  CHECK(e.output_dir == "o");
}

TEST_CASE("override (--set) errors say they came from --set", "[config]") {
  parse_error(kBase,
              {"--set train.epohcs=1: unknown key 'train.epohcs' (known: epochs, batch_size"},
              {"train.epohcs=1"});
  parse_error(kBase, {"--set trian.epochs=1: unknown key 'trian'"}, {"trian.epochs=1"});
  parse_error(kBase, {"--set device.x=1: unknown key 'device.x'"}, {"device.x=1"});
  parse_error(kBase, {"--set model.layers.0.colour=1: unknown key 'model.layers.0.colour'"},
              {"model.layers.0.colour=1"});
  parse_error(kBase, {"--set model.layers.x.kernel=1: unknown key 'model.layers.x'"},
              {"model.layers.x.kernel=1"});
  parse_error(kBase, {"--set train.epochs.x=1: unknown key 'train.epochs.x'"},
              {"train.epochs.x=1"});
  parse_error(kBase, {"--set train.epochs: expected key.path=value"}, {"train.epochs"});
  parse_error(kBase, {"--set =3", "malformed key path"}, {"=3"});
  parse_error(kBase, {"--set model.layers[x].kernel=3", "unknown key"},
              {"model.layers[x].kernel=3"});
  parse_error(kBase, {"--set train..epochs=3", "malformed key path"}, {"train..epochs=3"});
  parse_error(kBase, {"--set train.epochs=abc: train.epochs: expected an integer ≥ 1, got 'abc'"},
              {"train.epochs=abc"});
  parse_error(kBase, {"--set train.epochs=1.5: train.epochs"}, {"train.epochs=1.5"});
  parse_error(kBase, {"--set optimizer.lr=-1: optimizer.lr: expected a number > 0, got '-1'"},
              {"optimizer.lr=-1"});
  parse_error(kBase, {"--set data.dir=: data.dir", "got nothing"}, {"data.dir="});
  parse_error(kBase, {"--set data.mean=[0.5, x]: data.mean"}, {"data.mean=[0.5, x]"});
  parse_error(kBase, {"--set data.std=[0]: data.std[0]: expected a number > 0"}, {"data.std=[0]"});
  parse_error(kBase, {"--set model.layers.0.out_channels=0: model.layers[0].out_channels"},
              {"model.layers.0.out_channels=0"});
  parse_error(kBase, {"--set model.layers.1.kernel=3: unknown key 'model.layers[1].kernel'"},
              {"model.layers.1.kernel=3"});
  parse_error(kBase, {"--set model.layers.9.type=relu", "out of range", "5 entries"},
              {"model.layers.9.type=relu"});
  parse_error(kBase, {"--set data.mean.0=0.5", "not a list"}, {"data.mean.0=0.5"});
  parse_error(kBase, {"--set train.epochs=[1: YAML syntax error"}, {"train.epochs=[1"});
  parse_error(kBase, {"--set optimizer={lr: 1, foo: 2}: unknown key 'optimizer.foo'"},
              {"optimizer={lr: 1, foo: 2}"});
  parse_error(kBase, {"--set optimizer.nesterov=true: optimizer.nesterov: true needs"},
              {"optimizer.nesterov=true"});
  // A required key the override removed is reported against the file.
  parse_error(kBase, {"cfg.yaml", "missing required key 'data.dir'"}, {"data={format: idx}"});
}

TEST_CASE("to_yaml writes the resolved config and parses back equal", "[config]") {
  Config c = load_config(repo_path("configs/fashion_mnist.yaml"));
  std::string y = to_yaml(c);
  check_equal(parse_config(y, "resolved.yaml"), c);
  CHECK(y.find("mean: auto") != std::string::npos);
  CHECK(y.find("log_interval: 100") != std::string::npos);
  CHECK(y.find("threads: 0") != std::string::npos);

  Config d = parse_config(
      with("input: [1, 28, 28]", "input: [3, 28, 28]"), "cfg.yaml",
      {"data.mean=[0.4914, 0.4822, 0.4465]", "data.std=[0.247, 0.2435, 0.2616]",
       "data.format=cifar10", "data.train_limit=123", "data.test_limit=45",
       "optimizer.lr=0.1234567890123", "optimizer.momentum=0.9", "optimizer.nesterov=true",
       "optimizer.weight_decay=5e-4", "train.seed=18446744073709551615", "train.shuffle=false",
       "train.deterministic=true", "train.log_interval=7", "train.threads=3", "device=cuda",
       "data.dir=\"data dir/with: colon # and \\\"quotes\\\" \\u00e9\"", "output.dir=\"true\""});
  CHECK(d.data.dir == "data dir/with: colon # and \"quotes\" \xC3\xA9");
  CHECK(d.output_dir == "true");
  std::string yd = to_yaml(d);
  INFO(yd);
  Config back = parse_config(yd, "resolved.yaml");
  check_equal(back, d);
  CHECK(back.model.layers[2].stride == 2);
  // Idempotent: writing the re-read config gives the same text.
  CHECK(to_yaml(back) == yd);
}

TEST_CASE("damaged config text gives a ConfigError or a config, nothing else", "[config]") {
  std::mt19937 rng(23);
  const std::string alphabet = "{}[]:,-#&*!|>'\"\n\t 0123456789.eE+_abcxyz~%@`\\";
  for (int i = 0; i < 3000; ++i) {
    std::string text = kBase;
    int edits = 1 + int(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      size_t at = rng() % text.size();
      char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          text[at] = c;
          break;
        case 1:
          text.insert(text.begin() + std::ptrdiff_t(at), c);
          break;
        default:
          text.erase(at, 1 + rng() % 3);
      }
    }
    try {
      parse_config(text, "fuzz.yaml");
    } catch (const ConfigError& e) {
      std::string msg = e.what();
      INFO(text << "\n" << msg);
      REQUIRE(msg.find('\n') == std::string::npos);
      REQUIRE(msg.rfind("fuzz.yaml", 0) == 0);
    }
  }
}

TEST_CASE("resume: only the schema's resume-free keys may differ from the checkpoint", "[config]") {
  const Config then = parse_config(kBase, "ckpt.yaml");
  const std::string then_yaml = to_yaml(then);
  // Each of these may change on resume: no error.
  for (const std::string& may_change : std::vector<std::string>{
           "train.epochs=9", "output.dir=elsewhere", "device=cpu", "device=cuda:1",
           "train.threads=3", "train.log_interval=5", "train.deterministic=true",
           "data.dir=moved/data", "output.curves=false"}) {
    INFO(may_change);
    CHECK_NOTHROW(
        check_resume_compatible(parse_config(kBase, "cfg.yaml", {may_change}), then_yaml, "c.st"));
  }
  // Anything else must match; the message names the first differing line and is what it was
  // before the schema table existed, byte for byte.
  std::string msg;
  try {
    check_resume_compatible(parse_config(kBase, "cfg.yaml", {"optimizer.lr=0.5"}), then_yaml,
                            "runs/a/checkpoint.safetensors");
  } catch (const ConfigError& e) {
    msg = e.what();
  }
  CHECK(msg ==
        "cfg.yaml: does not match the checkpoint 'runs/a/checkpoint.safetensors': the checkpoint "
        "has 'lr: 0.1', the config 'lr: 0.5' (only train.epochs, output.dir, device, "
        "train.threads, train.log_interval, train.deterministic, data.dir, output.curves and "
        "output.tensorboard may change on resume)");
  for (const std::string& fixed : std::vector<std::string>{
           "train.seed=1", "train.batch_size=8", "data.train_limit=10",
           "model.layers.0.out_channels=5", "data.mean=[0.5]", "train.precision=bf16"}) {
    INFO(fixed);
    CHECK_THROWS_AS(
        check_resume_compatible(parse_config(kBase, "cfg.yaml", {fixed}), then_yaml, "c.st"),
        ConfigError);
  }
  // The recipe keys must all match.
  for (const std::string& fixed :
       {"optimizer.type=adamw", "optimizer.betas=[0.8, 0.9]", "optimizer.eps=1e-6",
        "optimizer.grad_clip=1", "schedule.type=cosine", "schedule.warmup_epochs=1",
        "loss.label_smoothing=0.1", "data.val_split=5", "train.early_stopping.patience=2"}) {
    INFO(fixed);
    CHECK_THROWS_AS(
        check_resume_compatible(parse_config(kBase, "cfg.yaml", {fixed}), then_yaml, "c.st"),
        ConfigError);
  }
  // A cosine schedule's length is the run's: train.epochs cannot change under it.
  const std::string cosine_yaml =
      to_yaml(parse_config(kBase, "ckpt.yaml", {"schedule.type=cosine"}));
  testing::expect_error<ConfigError>(
      [&] {
        check_resume_compatible(
            parse_config(kBase, "cfg.yaml", {"schedule.type=cosine", "train.epochs=4"}),
            cosine_yaml, "runs/a/checkpoint.safetensors");
      },
      {"cfg.yaml: train.epochs: cannot change from 2 to 4 when resuming "
       "'runs/a/checkpoint.safetensors': schedule.type is cosine",
       "the schedule's length would change"});
  CHECK_NOTHROW(check_resume_compatible(
      parse_config(kBase, "cfg.yaml", {"schedule={type: step, step_size: 1}", "train.epochs=4"}),
      to_yaml(parse_config(kBase, "ckpt.yaml", {"schedule={type: step, step_size: 1}"})), "c.st"));
}

TEST_CASE("device: cuda:N picks a GPU by index; other spellings are rejected", "[config]") {
  CHECK(parse_config(kBase, "cfg.yaml", {"device=cuda:0"}).device == "cuda:0");
  CHECK(parse_config(kBase, "cfg.yaml", {"device=cuda:12"}).device == "cuda:12");
  CHECK(to_yaml(parse_config(kBase, "cfg.yaml", {"device=cuda:3"})).find("device: cuda:3\n") !=
        std::string::npos);
  for (const std::string& bad :
       std::vector<std::string>{"cuda:", "cuda:-1", "cuda:x", "cuda:1:2", "cuda:1234567890"}) {
    INFO(bad);
    parse_error(kBase, {"--set device=" + bad, "device: expected one of auto, cpu, cuda, cuda:N"},
                {"device=" + bad});
    CHECK_FALSE(valid_device(bad));
  }
}

TEST_CASE("config_key_paths lists every key once, in config.yaml's order", "[config]") {
  const std::vector<std::string> keys = config_key_paths();
  CHECK(keys.front() == "model.input");
  CHECK(keys.back() == "device");
  const std::string yaml = to_yaml(parse_config(kBase, "cfg.yaml"));
  size_t previous = 0;
  for (const std::string& k : keys) {
    INFO(k);
    CHECK(std::count(keys.begin(), keys.end(), k) == 1);
    // config.yaml writes every key, in this order.
    const std::string leaf = k.substr(k.find('.') == std::string::npos ? 0 : k.find('.') + 1);
    const size_t at = yaml.find(leaf + ":", previous);
    REQUIRE(at != std::string::npos);
    previous = at;
  }
}

TEST_CASE("train.precision: fp32, tf32 or bf16, fp32 by default, written back", "[config]") {
  CHECK(parse_config(kBase, "cfg.yaml", {"train.precision=tf32"}).train.precision ==
        Precision::Tf32);
  const Config bf16 = parse_config(kBase, "cfg.yaml", {"train.precision=bf16"});
  CHECK(bf16.train.precision == Precision::Bf16);
  CHECK(to_yaml(bf16).find("precision: bf16\n") != std::string::npos);
  CHECK(parse_config(to_yaml(bf16), "again.yaml").train.precision == Precision::Bf16);
  CHECK(to_yaml(parse_config(kBase, "cfg.yaml")).find("precision: fp32\n") != std::string::npos);
  parse_error(kBase, {"train.precision: expected one of fp32, tf32, bf16, got 'fp16'"},
              {"train.precision=fp16"});
}
