// `gputrain train`: setup (config → plan → data → engine, or a checkpoint's state), then the loop
// of epochs and steps, each step the engine's three phases with the communicator between them.
#include "gputrain/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "backend/engine_choice.hpp"
#include "core/data_parallel.hpp"
#include "core/json.hpp"
#include "core/run_charts.hpp"
#include "core/run_outputs.hpp"
#include "core/run_setup.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/optimizer.hpp"
#include "gputrain/preview.hpp"
#include "gputrain/rng.hpp"

namespace gputrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

TrainCounters plus(const TrainCounters& a, const TrainCounters& b) {
  return TrainCounters{a.loss_sum + b.loss_sum, a.correct + b.correct, a.samples + b.samples,
                       a.grad_norm_sum + b.grad_norm_sum, a.grad_norm_steps + b.grad_norm_steps};
}

std::string metrics_line(const EpochMetrics& m, int64_t global_step, const std::string& run_id) {
  JsonValue o = JsonValue::object();
  o.set("epoch", m.epoch);
  o.set("train_loss", m.train_loss);
  o.set("train_acc", m.train_acc);
  o.set("test_loss", m.test_loss);
  o.set("test_acc", m.test_acc);
  o.set("images_per_s", m.images_per_s);
  o.set("seconds", m.seconds);
  o.set("eval_seconds", m.eval_seconds);
  o.set("lr", m.lr);
  o.set("steps", m.steps);
  if (m.grad_norm >= 0) o.set("grad_norm", m.grad_norm);
  if (m.has_val) {
    o.set("val_loss", m.val_loss);
    o.set("val_acc", m.val_acc);
  }
  if (m.stopped_early) o.set("stopped_early", true);
  if (m.gpu_busy_percent >= 0) o.set("gpu_busy_percent", m.gpu_busy_percent);
  o.set("global_step", global_step);
  o.set("time", utc_timestamp());
  o.set("run_id", run_id);
  return o.dump();
}

// Everything a run holds between its setup and its last epoch.
struct Run {
  const TrainRequest& request;
  TrainObserver& observer;
  LocalCommunicator local;
  Communicator& communicator;  // request.communicator, or this process alone
  // Reduces the gradients (NCCL for a GPU's); the engine's gradient hook calls it every step.
  Communicator* gradient_communicator = nullptr;
  Config config;  // as resolved: output.dir = the folder actually written
  ModelPlan plan;
  std::vector<OptimizerStateInfo> optimizer_buffers;
  Normalization normalization;
  // What weights files carry besides the weights: the class names and the resolved config.
  std::map<std::string, std::string> weights_metadata;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<RunOutputs> outputs;
  std::unique_ptr<RunCharts> charts;  // an exception (an interrupt) abandons its drawing at once
  ImageSet test_set, val_set;         // the engine's eval data is the test set between evaluations
  TrainingState state;
  int64_t train_count = 0, batch = 0, steps_per_epoch = 0;
  std::vector<StepHyper> step_table;
  ScheduleSpec schedule;
  int64_t total_steps = 0;
  bool eval_sharded = false;

  Run(const TrainRequest& r, TrainObserver& o)
      : request(r),
        observer(o),
        communicator(r.communicator ? *r.communicator : local),
        config(r.config) {}

  void setup();
  void write_checkpoint(const TrainingState& s);
  [[noreturn]] void interrupt(int epoch, int64_t step, const TrainCounters& partial);
  NonFiniteLoss non_finite(int64_t from_step, int epoch) const;
  bool stop_requested() const { return request.stop && request.stop->load(); }
  // Whether any rank saw a stop request: all ranks then stop at the same step.
  bool stop_agreed() { return communicator.any(stop_requested()); }
  bool writes_outputs() const { return communicator.rank() == 0; }
  // Trains one epoch from `first_step`; returns its counters (with `carried` added).
  TrainCounters train_epoch(int epoch, int64_t first_step, const TrainCounters& carried,
                            double* seconds);
  void finish_epoch(EpochMetrics& m, TrainSummary& summary);
  // What the engine noticed on its own (a graph capture that failed): to the user's stderr.
  void forward_warnings() {
    for (const std::string& w : engine->take_warnings()) observer.on_warning(w);
  }
  // Several ranks: each one's batchnorm2d running statistics followed its own part of the
  // batches; as DDP's broadcast_buffers, every rank takes rank 0's (those it saves) before they
  // are used for evaluation. Exact: rank 0's values plus zeros.
  void broadcast_buffers();
  // Scores the validation split (the engine evaluates it, then the test set again).
  EvalResult evaluate_validation();
  // train.early_stopping: records epoch `m` and says whether the run stops after it.
  bool early_stop_after(const EpochMetrics& m);
};

void Run::setup() {
  const bool resuming = !request.resume_path.empty();
  const std::string resume_path = expand_home(request.resume_path);
  const std::string init_path = expand_home(request.init_path);
  config.data.dir = expand_home(config.data.dir);
  std::string out = expand_home(!request.out_dir.empty() ? request.out_dir
                                : resuming               ? parent_folder(resume_path)
                                                         : config.output_dir);
  plan = plan_model(config.model, config.source);
  const OptimizerSpec optimizer = optimizer_spec(config.optimizer);
  optimizer_buffers = optimizer_state(optimizer);

  // Everything the user gave is checked before anything is written or created.
  LoadedCheckpoint resumed;
  if (resuming) {
    resumed = load_checkpoint(resume_path, plan, optimizer_buffers);
    check_resume_compatible(config, resumed.state.config_yaml, resume_path);
  }
  const bool resuming_here = resuming && parent_folder(resume_path) == out;
  // Every rank checks the folder (same answer everywhere); rank 0 alone writes into it.
  outputs = std::make_unique<RunOutputs>(out, request.overwrite, resuming_here, writes_outputs());
  LoadedWeights init;
  if (!init_path.empty()) init = load_weights(init_path, plan);
  const Dataset data = load_checked_data(config, plan, &observer);
  normalization = resolve_normalization(config, plan, resuming ? &resumed.normalization : nullptr,
                                        resume_path, data.train);

  EngineChoice choice =
      choose_engine(config.device, plan, engine_options(config, normalization, request.use_graph),
                    communicator.local_rank());
  // Under a launcher the log's first line (data sets aside that report their loading).
  if (request.communicator) observer.on_info(describe_rank(communicator, *choice.engine));
  if (!choice.info.empty()) observer.on_info(choice.info);
  if (!choice.warning.empty()) observer.on_warning(choice.warning);
  engine = std::move(choice.engine);
  observer.on_info("training on " + engine->describe() + ": " + std::to_string(data.train.count) +
                   " training and " + std::to_string(data.test.count) + " test images, " +
                   std::to_string(weights_in(plan)) + " parameters");
  forward_warnings();  // e.g. the CPU engine computing fp32 when train.precision asks otherwise
  if (const std::string detail = engine->details(); !detail.empty()) observer.on_detail(detail);

  if (resuming) {
    state = resumed.state;
    if (state.run_id.empty()) state.run_id = new_run_id();  // a checkpoint from before run ids
    engine->set_parameters(resumed.parameters);
    engine->set_buffers(resumed.buffers);
    for (const OptimizerStateBuffer& b : resumed.optimizer_state)
      engine->set_state(b.info.name, b.values);
    observer.on_info("resuming " + resume_path + " at epoch " + std::to_string(state.epoch + 1) +
                     ", step " + std::to_string(state.step_in_epoch));
  } else {
    state.run_id = new_run_id();
    engine->set_parameters(init_path.empty() ? initial_parameters(plan, config.train.seed)
                                             : init.parameters);
    engine->set_buffers(init_path.empty() ? initial_buffers(plan) : init.buffers);
    for (const OptimizerStateInfo& b : optimizer_buffers)
      engine->set_state(b.name, std::vector<float>(plan.parameter_count, 0.0f));
    if (!init_path.empty()) observer.on_info("initial weights from " + init_path);
  }
  config.output_dir = outputs->dir();
  state.config_yaml = to_yaml(config);
  weights_metadata = describing_metadata(state.config_yaml, data.class_names);
  engine->set_train_data(data.train);
  // Each rank scores its contiguous part of the test set; the counters are summed.
  ImageSet eval_test = data.test;
  if (communicator.size() > 1 && data.test.count >= communicator.size()) {
    const Shard part = shard_of(data.test.count, communicator.rank(), communicator.size());
    const int64_t size = data.test.image_size();
    eval_test.count = part.count;
    eval_test.pixels.assign(data.test.pixels.begin() + part.offset * size,
                            data.test.pixels.begin() + (part.offset + part.count) * size);
    eval_test.labels.assign(data.test.labels.begin() + part.offset,
                            data.test.labels.begin() + part.offset + part.count);
    eval_sharded = true;
  }
  engine->set_eval_data(eval_test);
  if (data.val.count > 0) {
    test_set = eval_test;
    val_set = data.val;  // every rank scores the whole split: no counters to sum
    observer.on_info("validation: " + std::to_string(data.val.count) +
                     " training images held out (data.val_split, chosen by train.seed)");
  }
  if (resuming && state.stopped_early) {
    // A run that stopped early and is resumed trains on: its patience starts over.
    state.stopped_early = false;
    state.early_stopping_bad_epochs = 0;
  }

  train_count = data.train.count;
  batch = config.train.batch_size;
  steps_per_epoch = (train_count + batch - 1) / batch;
  // The learning rate of every step of the run, computed once; the engine reads it by global step.
  schedule = schedule_spec(config.schedule, config.optimizer.lr, steps_per_epoch);
  total_steps = int64_t(config.train.epochs) * steps_per_epoch;
  step_table = gputrain::step_table(optimizer, schedule, total_steps);
  engine->set_step_table(step_table);
  engine->set_global_step(state.global_step);
  gradient_communicator = &connect_gradients(communicator, *engine, train_count, batch);

  communicator.any(false);  // every rank has checked the output folder before rank 0 writes
  outputs->prepare(state.run_id, state.epoch);
  outputs->write_config("# gputrain run " + state.run_id + "\n" + state.config_yaml);
  charts = std::make_unique<RunCharts>(config, *outputs, writes_outputs(),
                                       [this](const std::string& w) { observer.on_warning(w); });
  // What the model is fed this epoch (augmented, before normalization), for a person to look at.
  write_image_grid_png(outputs->path("train_batch.png"),
                       preview_images(config, data.train, 64, state.epoch + 1));
}

void Run::write_checkpoint(const TrainingState& s) {
  if (!writes_outputs()) return;
  std::vector<OptimizerStateBuffer> buffers;
  for (const OptimizerStateInfo& b : optimizer_buffers)
    buffers.push_back({b, engine->state(b.name)});
  save_checkpoint(outputs->path(RunOutputs::kCheckpoint), plan, engine->parameters(),
                  engine->buffers(), buffers, normalization, s);
}

// Ctrl-C: a checkpoint at the step about to run (steps_per_epoch = trained, not yet evaluated),
// then stop. The epoch's counters so far go into it, so a resumed epoch reports them whole.
void Run::interrupt(int epoch, int64_t step, const TrainCounters& partial) {
  TrainingState s = state;
  s.epoch = epoch;
  s.step_in_epoch = step;
  s.partial = partial;
  write_checkpoint(s);
  throw Interrupted("interrupted at epoch " + std::to_string(epoch + 1) + ", step " +
                    std::to_string(step) + " of " + std::to_string(steps_per_epoch) +
                    "; checkpoint written to " + outputs->path(RunOutputs::kCheckpoint) +
                    " (continue with --resume)");
}

NonFiniteLoss Run::non_finite(int64_t from_step, int epoch) const {
  return NonFiniteLoss("the training loss became non-finite between global steps " +
                       std::to_string(from_step) + " and " + std::to_string(state.global_step) +
                       " (epoch " + std::to_string(epoch + 1) + ") — try a smaller optimizer.lr");
}

TrainCounters Run::train_epoch(int epoch, int64_t first_step, const TrainCounters& carried,
                               double* seconds) {
  const int log_interval = std::max(1, config.train.log_interval);
  engine->set_order(epoch_order(train_count, config.train.seed, epoch, config.train.shuffle),
                    epoch);
  engine->read_counters(true);
  const auto start = Clock::now();
  int64_t last_checked_step = state.global_step;
  for (int64_t step = first_step; step < steps_per_epoch; ++step) {
    if (stop_agreed())
      interrupt(epoch, step, plus(carried, reduced(communicator, engine->read_counters(false))));
    const int64_t first = step * batch;
    const int count = int(std::min(batch, train_count - first));
    // This rank's part of the global batch; the gradient of its loss sum over the global count,
    // so that the all-reduced sum is the batch mean.
    const Shard part = shard_of(count, communicator.rank(), communicator.size());
    try {
      if (part.count > 0) {
        // Ends with the gradients' all-reduce (the engine's gradient hook).
        engine->forward_backward(first + part.offset, int(part.count), float(count));
      } else {
        // A partial batch smaller than the world: no images here, zeros to the sum. Host memory
        // only (connect_gradients refuses such a batch on GPUs).
        const FlatBuffer g = engine->gradients();
        std::fill(g.data, g.data + g.count, 0.0f);
        gradient_communicator->all_reduce_sum(g);
      }
    } catch (const NonFiniteLoss& e) {
      throw NonFiniteLoss("epoch " + std::to_string(epoch + 1) + ", step " +
                          std::to_string(step + 1) + " (global step " +
                          std::to_string(state.global_step + 1) + "): " + e.what() +
                          " — try a smaller optimizer.lr");
    }
    engine->apply_optimizer();
    ++state.global_step;
    observer.on_step(epoch + 1, step + 1, steps_per_epoch, (step + 1) * batch);
    if ((step + 1) % log_interval == 0 && step + 1 < steps_per_epoch) {
      forward_warnings();
      const TrainCounters c = plus(carried, reduced(communicator, engine->read_counters(false)));
      if (!std::isfinite(c.loss_sum)) throw non_finite(last_checked_step + 1, epoch);
      last_checked_step = state.global_step;
      const double loss = c.loss_sum / double(c.samples);
      const double acc = double(c.correct) / double(c.samples);
      observer.on_log(epoch + 1, step + 1, steps_per_epoch, loss, acc);
      charts->log(state.global_step, loss, acc,
                  scheduled_lr(schedule, state.global_step - 1, total_steps));
    }
  }
  // Waits for the epoch's last step.
  const TrainCounters c = reduced(communicator, engine->read_counters(true));
  *seconds = seconds_since(start);
  if (!std::isfinite(c.loss_sum)) throw non_finite(last_checked_step + 1, epoch);
  return c;
}

void Run::broadcast_buffers() {
  if (communicator.size() == 1 || plan.buffers.empty()) return;
  ModelBuffers b = engine->buffers();
  std::vector<double> values(b.values.size(), 0.0);
  if (communicator.rank() == 0) std::copy(b.values.begin(), b.values.end(), values.begin());
  communicator.all_reduce_sum(values.data(), values.size());
  std::copy(values.begin(), values.end(), b.values.begin());
  engine->set_buffers(b);
}

EvalResult Run::evaluate_validation() {
  engine->set_eval_data(val_set);
  const EvalResult r = engine->evaluate(nullptr, request.stop);
  engine->set_eval_data(test_set);
  return r;
}

bool Run::early_stop_after(const EpochMetrics& m) {
  const EarlyStoppingConfig& es = config.train.early_stopping;
  if (es.patience <= 0) return false;
  const double value = es.monitor == "val_loss"  ? m.val_loss
                       : es.monitor == "val_acc" ? m.val_acc
                                                 : m.test_acc;
  const bool lower_is_better = es.monitor == "val_loss";
  const double best = state.early_stopping_best;
  const bool improved = std::isnan(best) || (lower_is_better ? value < best - es.min_delta
                                                             : value > best + es.min_delta);
  if (improved) {
    state.early_stopping_best = value;
    state.early_stopping_bad_epochs = 0;
  } else {
    ++state.early_stopping_bad_epochs;
  }
  return state.early_stopping_bad_epochs >= es.patience;
}

// The epoch's outputs: weights, best weights when the monitored accuracy (validation when there is
// a split, else test) improved, the checkpoint and the metrics line (in that order: a line never
// names weights that were not written).
void Run::finish_epoch(EpochMetrics& m, TrainSummary& summary) {
  const std::vector<float> params = engine->parameters();
  const ModelBuffers model_buffers = engine->buffers();
  if (writes_outputs())
    save_weights(outputs->path(RunOutputs::kModel), plan, params, model_buffers, normalization,
                 weights_metadata);
  const double score = m.has_val ? m.val_acc : m.test_acc;
  if (score > state.best_score) {
    state.best_score = score;
    state.best_test_acc = m.test_acc;
    state.best_epoch = m.epoch;
    std::map<std::string, std::string> meta = weights_metadata;
    meta["best_epoch"] = std::to_string(m.epoch);
    meta["best_monitor"] = m.has_val ? "val_acc" : "test_acc";
    meta["best_test_acc"] = json_number(m.test_acc);
    if (m.has_val) meta["best_val_acc"] = json_number(m.val_acc);
    meta["run_id"] = state.run_id;
    if (writes_outputs())
      save_weights(outputs->path(RunOutputs::kBestModel), plan, params, model_buffers,
                   normalization, meta);
  }
  m.stopped_early = early_stop_after(m);
  state.stopped_early = m.stopped_early;
  state.epoch = m.epoch;
  state.step_in_epoch = 0;
  state.partial = {};
  write_checkpoint(state);
  outputs->append_metrics(metrics_line(m, state.global_step, state.run_id));
  charts->epoch_done(m);
  forward_warnings();
  summary.epochs.push_back(m);
  observer.on_epoch(m);
}

}  // namespace

TrainSummary train(const TrainRequest& request, TrainObserver& observer) {
  Run run(request, observer);
  run.setup();
  TrainingState& state = run.state;
  TrainSummary summary;
  summary.engine = run.engine->describe();
  summary.out_dir = run.outputs->dir();
  summary.run_id = state.run_id;
  int64_t samples_trained = 0;
  double train_seconds = 0;
  run.engine->take_busy_percent();  // start the utilization window here

  for (int epoch = state.epoch; epoch < run.config.train.epochs; ++epoch) {
    const int64_t first_step = epoch == state.epoch ? state.step_in_epoch : 0;
    const TrainCounters carried = epoch == state.epoch ? state.partial : TrainCounters{};
    double seconds = 0;
    const TrainCounters c = run.train_epoch(epoch, first_step, carried, &seconds);
    train_seconds += seconds;
    samples_trained += c.samples;
    const TrainCounters total = plus(carried, c);
    run.broadcast_buffers();
    if (run.stop_agreed()) run.interrupt(epoch, run.steps_per_epoch, total);
    const double busy = run.engine->take_busy_percent();
    const auto eval_start = Clock::now();
    const bool alone = run.communicator.size() == 1;
    // Several ranks: no rank leaves its part early on its own; they agree on stopping after it.
    EvalResult eval = run.engine->evaluate(nullptr, alone ? request.stop : nullptr);
    if (eval.interrupted || (!alone && run.stop_agreed()))
      run.interrupt(epoch, run.steps_per_epoch, total);
    if (run.eval_sharded) {
      double v[3] = {eval.loss_sum, double(eval.correct), double(eval.samples)};
      run.communicator.all_reduce_sum(v, 3);
      eval.loss_sum = v[0];
      eval.correct = int64_t(v[1]);
      eval.samples = int64_t(v[2]);
    }
    EpochMetrics m;
    if (run.val_set.count > 0) {
      const EvalResult val = run.evaluate_validation();
      if (val.interrupted) run.interrupt(epoch, run.steps_per_epoch, total);
      m.has_val = true;
      m.val_loss = val.loss_sum / double(val.samples);
      m.val_acc = double(val.correct) / double(val.samples);
    }
    m.epoch = epoch + 1;
    m.train_loss = total.loss_sum / double(total.samples);
    m.train_acc = double(total.correct) / double(total.samples);
    m.test_loss = eval.loss_sum / double(eval.samples);
    m.test_acc = double(eval.correct) / double(eval.samples);
    m.seconds = seconds;
    m.eval_seconds = seconds_since(eval_start);
    m.images_per_s = double(c.samples) / seconds;
    // The learning rate of the epoch's last step.
    m.lr = scheduled_lr(run.schedule, std::max<int64_t>(state.global_step - 1, 0), run.total_steps);
    m.steps = run.steps_per_epoch - first_step;
    if (total.grad_norm_steps > 0)
      m.grad_norm = total.grad_norm_sum / double(total.grad_norm_steps);
    m.gpu_busy_percent = busy;
    run.finish_epoch(m, summary);
    if (m.stopped_early) {
      summary.stopped_early = true;
      observer.on_info("early stopping: " + run.config.train.early_stopping.monitor +
                       " has not improved by more than " +
                       json_number(run.config.train.early_stopping.min_delta) + " for " +
                       std::to_string(run.config.train.early_stopping.patience) +
                       " epoch(s); stopping after epoch " + std::to_string(m.epoch));
      break;
    }
  }
  if (summary.epochs.empty()) {
    observer.on_info("the checkpoint is already at epoch " + std::to_string(state.epoch) + " of " +
                     std::to_string(run.config.train.epochs) + "; nothing to train");
    if (run.writes_outputs())
      save_weights(run.outputs->path(RunOutputs::kModel), run.plan, run.engine->parameters(),
                   run.engine->buffers(), run.normalization, run.weights_metadata);
  }
  run.charts->finish(request.stop);
  // Read last: the description says so when the engine had to fall back to eager steps.
  summary.engine = run.engine->describe();
  summary.best_test_acc = state.best_test_acc;
  summary.best_epoch = state.best_epoch;
  summary.final_test_acc =
      summary.epochs.empty() ? state.best_test_acc : summary.epochs.back().test_acc;
  summary.train_seconds = train_seconds;
  double busy_seconds = 0, busy_weighted = 0;
  for (const EpochMetrics& m : summary.epochs)
    if (m.gpu_busy_percent >= 0) {
      busy_weighted += m.gpu_busy_percent * m.seconds;
      busy_seconds += m.seconds;
    }
  if (busy_seconds > 0) summary.gpu_busy_percent = busy_weighted / busy_seconds;
  summary.images_per_s = train_seconds > 0 ? double(samples_trained) / train_seconds : 0;
  return summary;
}

Config config_of_checkpoint(const std::string& checkpoint_path,
                            const std::vector<std::string>& overrides) {
  const std::string path = expand_home(checkpoint_path);
  return parse_config(checkpoint_config_yaml(path), path + " (its config)", overrides);
}

}  // namespace gputrain
