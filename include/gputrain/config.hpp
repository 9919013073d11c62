// The run configuration: a YAML file plus `--set key.path=value` overrides, validated once.
// Every key is known; anything else is a ConfigError naming the key (and file:line where it has
// one).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gputrain/precision.hpp"

namespace gputrain {

enum class LayerKind {
  Conv2d,
  Relu,
  MaxPool2d,
  Flatten,
  Linear,
  BatchNorm2d,    // nn.BatchNorm2d(C, eps, momentum): batch statistics in training, running in eval
  AvgPool2d,      // nn.AvgPool2d(kernel, stride): no padding, floor mode
  GlobalAvgPool,  // nn.AdaptiveAvgPool2d(1): C×H×W → C×1×1
  Dropout         // nn.Dropout(p): identity in evaluation
};

// One entry of model.layers. Fields that do not apply to the kind stay at their defaults.
struct LayerConfig {
  LayerKind kind = LayerKind::Relu;
  // conv2d, linear, batchnorm2d: parameter prefix ("conv1" -> conv1.weight, conv1.bias)
  std::string name;
  int out_channels = 0;   // conv2d
  int kernel = 0;         // conv2d, maxpool2d, avgpool2d (square)
  int stride = 1;         // conv2d (default 1), maxpool2d and avgpool2d (default = kernel)
  int padding = 0;        // conv2d
  int out_features = 0;   // linear
  double momentum = 0.1;  // batchnorm2d: running = (1 − momentum)·running + momentum·batch
  double eps = 1e-5;      // batchnorm2d: added to the variance
  double p = 0.0;         // dropout: probability of zeroing a unit, in [0, 1)
  int source_line = 0;    // 1-based line in the config file, 0 when unknown (for later errors)
};

struct ModelConfig {
  int input_channels = 0, input_height = 0, input_width = 0;  // model.input: [C, H, W]
  std::vector<LayerConfig> layers;
};

enum class DataFormat { Idx, Cifar10, Folder };

// data.augment: training images only, per sample and epoch (include/gputrain/augment.hpp).
struct AugmentConfig {
  int crop_padding = 0;            // pad P zero pixels each side, then a random H×W crop
  bool hflip = false;              // flip left-right with probability hflip_probability
  double hflip_probability = 0.5;  // a test switch (1: always flip); only with hflip
  bool enabled() const { return crop_padding > 0 || hflip; }
};

struct DataConfig {
  DataFormat format = DataFormat::Idx;
  std::string dir;
  int64_t train_limit = 0;  // 0: all training images; else the first N
  int64_t test_limit = 0;   // 0: all test images; else the first N
  // Input normalization applied to pixel/255, one value per channel; empty = "auto" (computed on
  // the training images actually used, population statistics).
  std::vector<float> mean;
  std::vector<float> std;
  bool resize = false;  // folder: resample images of another size to model.input
  bool skip_bad_images =
      false;  // folder: leave out unreadable images (a warning) instead of failing
  // data.val_split: this many training images held out (chosen by train.seed, fixed for the run),
  // never trained on, scored every epoch; 0 = none.
  int64_t val_split = 0;
  AugmentConfig augment;  // none by default
};

struct OptimizerConfig {
  std::string type = "sgd";  // sgd | adamw
  double lr = 0.01;
  double momentum = 0.0;
  // Absent from the file: 0.01 for adamw, 0 for sgd (as torch.optim's defaults); the reader
  // resolves it, so config.yaml always records the value used.
  double weight_decay = 0.0;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999;  // adamw: optimizer.betas
  double eps = 1e-8;                  // adamw
  double grad_clip = 0.0;             // max global L2 norm of the gradients; 0 = off
  // false: no weight decay on batchnorm2d weights and biases nor on any layer's bias (the usual
  // PyTorch parameter groups); true: weight_decay applies to every parameter (torch's default).
  bool decay_norm_and_bias = true;
};

// The `schedule` section: see ScheduleSpec (optimizer.hpp) for the formula.
struct ScheduleConfig {
  std::string type = "constant";  // constant | step | multistep | cosine
  int step_size = 1;              // epochs; required (no default) for type step
  double gamma = 0.1;             // step, multistep
  std::vector<int> milestones;    // epochs, strictly increasing; required for multistep
  double eta_min = 0.0;           // cosine
  double warmup_epochs = 0.0;     // may be fractional; at most train.epochs
  double warmup_start_factor = 0.1;
};

struct LossConfig {
  double label_smoothing = 0.0;  // as F.cross_entropy(label_smoothing=…)
};

// train.early_stopping: stop after `patience` epochs without an improvement of `monitor` larger
// than `min_delta`. patience 0 = off.
struct EarlyStoppingConfig {
  int patience = 0;
  double min_delta = 0.0;
  std::string monitor;  // val_loss | val_acc | test_acc; default val_acc with a val split
};

struct TrainConfig {
  int epochs = 1;
  int batch_size = 64;
  uint64_t seed = 0;
  bool shuffle = true;
  bool deterministic = false;  // CUDA: deterministic cuDNN algorithms only
  int log_interval = 100;      // steps between progress log lines / device stat reads
  int threads = 0;             // CPU backend threads; 0 = all cores
  EarlyStoppingConfig early_stopping;
  // Conv/GEMM arithmetic (CUDA; the CPU engine computes in FP32 and warns). Must match on resume.
  Precision precision = Precision::Fp32;
};

struct Config {
  std::string source;  // path of the config file (for messages)
  ModelConfig model;
  DataConfig data;
  OptimizerConfig optimizer;
  TrainConfig train;
  ScheduleConfig schedule;
  LossConfig loss;
  std::string output_dir = "runs/default";
  // curves.png in the run folder, redrawn after every epoch (scripts/plot_curves.py, matplotlib).
  bool output_curves = true;
  // TensorBoard event files in the run folder: scalars per log interval and per epoch.
  bool output_tensorboard = false;
  std::string device = "auto";  // auto | cpu | cuda | cuda:N (the N-th visible GPU)
};

// Loads `path`, applies overrides ("a.b.c=value", value parsed as YAML), validates everything.
// Throws ConfigError ("<file>:<line>: <key>: <what was expected>") on any problem.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Same, from YAML text (tests); `source_name` stands in for the file name in messages.
Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides = {});

// The resolved config as YAML (written to the output folder as config.yaml; loads back the same).
std::string to_yaml(const Config& config);

// --resume: throws ConfigError naming the first differing key unless `now` matches the checkpoint's
// config in every key that must not change on resume (the schema says which may: train.epochs,
// output.dir, device, …).
void check_resume_compatible(const Config& now, const std::string& checkpoint_config_yaml,
                             const std::string& checkpoint_path);

// auto, cpu, cuda or cuda:N (N decimal, up to 9 digits).
bool valid_device(const std::string& device);

// Every config key as its dotted path ("train.epochs", "device"), in the schema's order.
std::vector<std::string> config_key_paths();

}  // namespace gputrain
