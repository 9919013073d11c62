// Weights and checkpoints as safetensors files.
//   model.safetensors       the parameters and buffers (batchnorm2d running statistics: F32;
//                           num_batches_tracked: I64 scalars), named as the PyTorch model's
//                           state_dict, plus the input normalization in __metadata__
//                           (normalize_mean / normalize_std)
//   checkpoint.safetensors  the same + the optimizer's state buffers, each parameter's slice named
//                           "<checkpoint_prefix><name>" ("momentum.conv1.weight") + where training
//                           stands
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "gputrain/engine.hpp"
#include "gputrain/model.hpp"
#include "gputrain/optimizer.hpp"

namespace gputrain {

struct Normalization {
  std::vector<float> mean, std;  // per channel, applied to pixel/255
};

struct LoadedWeights {
  std::vector<float> parameters;  // flat, in plan order
  ModelBuffers buffers;           // the plan's buffers (empty when it has none)
  bool has_normalization = false;
  Normalization normalization;
  std::vector<std::string> class_names;  // __metadata__.classes; empty when not recorded
  std::string config_yaml;               // __metadata__.config (the resolved config); may be empty
};

// The __metadata__ entries that make a weights file describe itself: `classes` (a JSON array of
// the label names) and `config` (the resolved config YAML the weights were trained with).
std::map<std::string, std::string> describing_metadata(const std::string& config_yaml,
                                                       const std::vector<std::string>& classes);

// Writes the parameters (flat, plan order) and buffers with their state_dict names, atomically;
// `extra` metadata entries are added to __metadata__ (e.g. which epoch a best-weights file holds).
void save_weights(const std::string& path, const ModelPlan& plan,
                  const std::vector<float>& parameters, const ModelBuffers& buffers,
                  const Normalization& normalization,
                  const std::map<std::string, std::string>& extra = {});

// Reads a weights file (or a checkpoint) strictly, as PyTorch's load_state_dict(strict=True): every
// parameter and buffer of the plan present with its exact shape and dtype, no unexpected tensors.
// WeightsError otherwise.
LoadedWeights load_weights(const std::string& path, const ModelPlan& plan);

// Where a run stands: the next step to run is `step_in_epoch` of `epoch` (0-based).
struct TrainingState {
  int epoch = 0;
  int64_t step_in_epoch = 0;
  int64_t global_step = 0;
  TrainCounters partial;      // counters of the current epoch's steps already run
  double best_test_acc = -1;  // test accuracy of the best epoch
  int best_epoch = 0;         // 1-based, 0 = none yet
  // The best epoch's monitored value for model_best (val_acc with a val split, else test_acc).
  double best_score = -1;
  // train.early_stopping: the best monitored value so far (NaN = none yet), epochs since it
  // improved, and whether the run stopped for it.
  double early_stopping_best = std::numeric_limits<double>::quiet_NaN();
  int early_stopping_bad_epochs = 0;
  bool stopped_early = false;
  std::string config_yaml;  // the resolved config of the run
  std::string run_id;       // the run's identity (checkpoints before run ids: empty)
};

// One optimizer state buffer (flat, parameter layout) with its name.
struct OptimizerStateBuffer {
  OptimizerStateInfo info;
  std::vector<float> values;
};

void save_checkpoint(const std::string& path, const ModelPlan& plan,
                     const std::vector<float>& parameters, const ModelBuffers& buffers,
                     const std::vector<OptimizerStateBuffer>& optimizer_state,
                     const Normalization& normalization, const TrainingState& state);

struct LoadedCheckpoint {
  std::vector<float> parameters;
  ModelBuffers buffers;
  std::vector<OptimizerStateBuffer> optimizer_state;  // those asked for, in that order
  Normalization normalization;
  TrainingState state;
};
// Reads a checkpoint with the optimizer state buffers `expected` (each must be present whole).
LoadedCheckpoint load_checkpoint(const std::string& path, const ModelPlan& plan,
                                 const std::vector<OptimizerStateInfo>& expected);

// The resolved config YAML a checkpoint was trained with (before its plan is known).
std::string checkpoint_config_yaml(const std::string& path);

}  // namespace gputrain
