// The run itself: config → data → engine → epochs of steps → evaluation, metrics, checkpoints.
// Reports progress through an observer (the CLI prints; the library does not).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "gputrain/checkpoint.hpp"
#include "gputrain/communicator.hpp"
#include "gputrain/config.hpp"
#include "gputrain/engine.hpp"

namespace gputrain {

struct EpochMetrics {
  int epoch = 0;  // 1-based
  double train_loss = 0, train_acc = 0, test_loss = 0, test_acc = 0;
  double images_per_s = 0, seconds = 0, eval_seconds = 0, lr = 0;
  int64_t steps = 0;
  double gpu_busy_percent = -1;  // negative: not measured
  double grad_norm = -1;         // mean global gradient norm (optimizer.grad_clip > 0); else -1
  bool has_val = false;          // data.val_split > 0: val_loss / val_acc below are set
  double val_loss = 0, val_acc = 0;
  bool stopped_early = false;  // train.early_stopping ended the run after this epoch
};

class TrainObserver {
 public:
  virtual ~TrainObserver() = default;
  virtual void on_info(const std::string& /*message*/) {}
  // Something the user must see even when asking for quiet (the CLI prints it on stderr): e.g. a
  // GPU that is present but unusable, so the run falls back to the far slower CPU.
  virtual void on_warning(const std::string& /*message*/) {}
  // Backend detail worth showing only when asked (--verbose; the CLI logs it at debug level): the
  // engine's details(), e.g. the cuDNN algorithm of each conv pass.
  virtual void on_detail(const std::string& /*message*/) {}
  // Every step (cheap: no device sync behind it).
  virtual void on_step(int /*epoch*/, int64_t /*step_in_epoch*/, int64_t /*steps_per_epoch*/,
                       int64_t /*samples_done*/) {}
  // Every train.log_interval steps: running mean loss and accuracy of the epoch so far.
  virtual void on_log(int /*epoch*/, int64_t /*step_in_epoch*/, int64_t /*steps_per_epoch*/,
                      double /*loss*/, double /*accuracy*/) {}
  virtual void on_epoch(const EpochMetrics& /*metrics*/) {}
};

struct TrainRequest {
  Config config;
  // Where outputs go; empty: the checkpoint's folder when resuming, else config.output_dir. A
  // folder holding another run's outputs is refused unless `overwrite`. "~/" expands to $HOME.
  std::string out_dir;
  bool overwrite = false;
  std::string resume_path;  // checkpoint to continue, or empty
  std::string init_path;    // weights to start from, or empty
  bool use_graph = true;
  const std::atomic<bool>* stop = nullptr;  // set asynchronously (SIGINT): checkpoint and stop
  // The ranks of a launcher's job (data parallelism: the trainer sums gradients and counters
  // through it, and logs the world first); null: this process alone.
  Communicator* communicator = nullptr;
};

struct TrainSummary {
  std::string run_id;
  std::vector<EpochMetrics> epochs;  // the epochs run by this invocation
  double best_test_acc = 0, final_test_acc = 0;
  int best_epoch = 0;
  bool stopped_early = false;  // train.early_stopping ended the run
  double train_seconds = 0, images_per_s = 0;
  double gpu_busy_percent = -1;  // mean over the epochs (weighted by their time); < 0: not measured
  std::string engine;
  std::string out_dir;
};

// Throws UserError subclasses for bad input, RuntimeFailure for a non-finite loss (naming the
// step), Interrupted after writing a checkpoint when *stop became true.
TrainSummary train(const TrainRequest& request, TrainObserver& observer);

// The config a checkpoint's run used, with `overrides` ("key.path=value") applied: what
// `train --resume CHECKPOINT` runs with when no --config is given.
Config config_of_checkpoint(const std::string& checkpoint_path,
                            const std::vector<std::string>& overrides = {});

struct EvalRequest {
  Config config;
  std::string weights_path;
  bool use_graph = true;
  bool want_logits = false;
};

struct EvalReport {
  EvalResult result;
  std::vector<float> logits;  // samples × classes, when asked for
  std::vector<int32_t> labels;
  Normalization normalization;
  std::string normalization_source;  // "config", "weights file", "training images"
  std::string engine;
  std::vector<std::string> class_names;  // the weights' recorded names, else the data set's
};

EvalReport evaluate(const EvalRequest& request, TrainObserver& observer);

}  // namespace gputrain
