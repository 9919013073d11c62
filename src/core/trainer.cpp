#include "gputrain/trainer.hpp"

#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#include "backend/engine_choice.hpp"
#include "core/atomic_file.hpp"
#include "core/json.hpp"
#include "gputrain/dataset.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"
#include "gputrain/rng.hpp"

namespace gputrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

Dataset load_data(const Config& config, int num_classes) {
  const DataConfig& d = config.data;
  Dataset data = d.format == DataFormat::Idx
                     ? load_idx_dataset(d.dir, d.train_limit, d.test_limit, num_classes)
                     : load_cifar10_dataset(d.dir, d.train_limit, d.test_limit, num_classes);
  const ModelConfig& m = config.model;
  for (const ImageSet* set : {&data.train, &data.test}) {
    if (set->channels != m.input_channels || set->height != m.input_height ||
        set->width != m.input_width)
      throw ConfigError(config.source + ": model.input is [" + std::to_string(m.input_channels) +
                        ", " + std::to_string(m.input_height) + ", " +
                        std::to_string(m.input_width) + "] but the images in '" + d.dir + "' are " +
                        std::to_string(set->channels) + "x" + std::to_string(set->height) + "x" +
                        std::to_string(set->width));
  }
  if (data.train.count == 0) throw DataError(d.dir + ": the training set is empty");
  if (data.test.count == 0) throw DataError(d.dir + ": the test set is empty");
  return data;
}

EngineOptions engine_options(const Config& config, const Normalization& n, bool use_graph) {
  EngineOptions o;
  o.batch_size = config.train.batch_size;
  o.mean = n.mean;
  o.std = n.std;
  o.threads = config.train.threads;
  o.deterministic = config.train.deterministic;
  o.use_graph = use_graph;
  return o;
}

cpu::SgdParams sgd_params(const OptimizerConfig& o) {
  cpu::SgdParams p;
  p.lr = float(o.lr);
  p.momentum = float(o.momentum);
  p.weight_decay = float(o.weight_decay);
  p.nesterov = o.nesterov;
  return p;
}

// Parameters the model has (the flat buffer also holds alignment gaps).
size_t weights_in(const ModelPlan& plan) {
  size_t n = 0;
  for (const ParameterInfo& p : plan.parameters) n += p.count;
  return n;
}

// A channel that is constant over the training images has std 0: leave its scale alone (std 1),
// as dividing by zero would make every input infinite.
void guard_constant_channels(Normalization& n) {
  for (float& s : n.std)
    if (!(s > 0)) s = 1.0f;
}

std::string metrics_line(const EpochMetrics& m) {
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
  if (m.gpu_busy_percent >= 0) o.set("gpu_busy_percent", m.gpu_busy_percent);
  return o.dump();
}

// Lines of an earlier metrics.jsonl for epochs <= `completed` (resume into the same folder).
std::vector<std::string> earlier_metrics(const std::string& path, int completed) {
  std::vector<std::string> kept;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    try {
      const JsonValue v = parse_json(line);
      const JsonValue* e = v.find("epoch");
      if (e && e->is_number() && e->as_number() <= completed) kept.push_back(line);
    } catch (const std::exception&) {
      // A line that does not parse is not ours to keep.
    }
  }
  return kept;
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& l : lines) text += l + "\n";
  write_file_atomic(path, text);
}

}  // namespace

TrainSummary train(const TrainRequest& request, TrainObserver& observer) {
  const Config& config = request.config;
  const ModelPlan plan = plan_model(config.model, config.source);
  const std::string out = request.out_dir;
  ensure_directory(out);
  const std::string model_path = join_path(out, "model.safetensors");
  const std::string checkpoint_path = join_path(out, "checkpoint.safetensors");
  const std::string metrics_path = join_path(out, "metrics.jsonl");

  // Everything the user gave is checked before anything is written.
  LoadedCheckpoint resumed;
  const bool resuming = !request.resume_path.empty();
  if (resuming) {
    resumed = load_checkpoint(request.resume_path, plan);
    check_resume_compatible(config, resumed.state.config_yaml, request.resume_path);
  }
  LoadedWeights init;
  if (!request.init_path.empty()) init = load_weights(request.init_path, plan);

  const Dataset data = load_data(config, plan.num_classes);
  Normalization norm;
  if (resuming) {
    norm = resumed.normalization;
  } else if (!config.data.mean.empty()) {
    norm.mean = config.data.mean;
    norm.std = config.data.std;
  } else {
    channel_statistics(data.train, norm.mean, norm.std);
    guard_constant_channels(norm);
  }
  if (int(norm.mean.size()) != plan.input.channels)
    throw WeightsError(request.resume_path + ": normalization has " +
                       std::to_string(norm.mean.size()) + " channels, the model " +
                       std::to_string(plan.input.channels));

  EngineChoice choice =
      choose_engine(config.device, plan, engine_options(config, norm, request.use_graph));
  if (!choice.info.empty()) observer.on_info(choice.info);
  if (!choice.warning.empty()) observer.on_warning(choice.warning);
  auto engine = std::move(choice.engine);
  observer.on_info("training on " + engine->describe() + ": " + std::to_string(data.train.count) +
                   " training and " + std::to_string(data.test.count) + " test images, " +
                   std::to_string(weights_in(plan)) + " parameters");

  TrainingState state;
  if (resuming) {
    state = resumed.state;
    engine->set_parameters(resumed.parameters);
    engine->set_momentum(resumed.momentum);
    observer.on_info("resuming " + request.resume_path + " at epoch " +
                     std::to_string(state.epoch + 1) + ", step " +
                     std::to_string(state.step_in_epoch));
  } else {
    engine->set_parameters(request.init_path.empty() ? initial_parameters(plan, config.train.seed)
                                                     : init.parameters);
    engine->set_momentum(std::vector<float>(plan.parameter_count, 0.0f));
    if (!request.init_path.empty()) observer.on_info("initial weights from " + request.init_path);
  }
  state.config_yaml = to_yaml(config);
  engine->set_train_data(data.train);
  engine->set_eval_data(data.test);

  write_file_atomic(join_path(out, "config.yaml"), state.config_yaml);
  std::vector<std::string> metrics_lines =
      resuming ? earlier_metrics(metrics_path, state.epoch) : std::vector<std::string>{};

  const int64_t n = data.train.count, batch = config.train.batch_size;
  const int64_t steps_per_epoch = (n + batch - 1) / batch;
  const cpu::SgdParams sgd = sgd_params(config.optimizer);
  const int log_interval = std::max(1, config.train.log_interval);
  TrainSummary summary;
  summary.engine = engine->describe();
  summary.out_dir = out;
  int64_t samples_trained = 0;
  double train_seconds = 0;
  engine->take_busy_percent();  // start the utilization window here

  auto write_checkpoint = [&](const TrainingState& s) {
    save_checkpoint(checkpoint_path, plan, engine->parameters(), engine->momentum(), norm, s);
  };
  // Ctrl-C: a checkpoint at the step about to run (steps_per_epoch = trained, not yet evaluated),
  // then stop. The epoch's counters so far go into it, so a resumed epoch reports them whole.
  auto interrupt = [&](int epoch, int64_t step, const TrainCounters& partial) {
    TrainingState s = state;
    s.epoch = epoch;
    s.step_in_epoch = step;
    s.partial = partial;
    write_checkpoint(s);
    throw Interrupted("interrupted at epoch " + std::to_string(epoch + 1) + ", step " +
                      std::to_string(step) + " of " + std::to_string(steps_per_epoch) +
                      "; checkpoint written to " + checkpoint_path + " (continue with --resume)");
  };
  auto non_finite = [&](int64_t from_step, int epoch) {
    return NonFiniteLoss("the training loss became non-finite between global steps " +
                         std::to_string(from_step) + " and " + std::to_string(state.global_step) +
                         " (epoch " + std::to_string(epoch + 1) + ") — try a smaller optimizer.lr");
  };
  auto plus = [](const TrainCounters& a, const TrainCounters& b) {
    return TrainCounters{a.loss_sum + b.loss_sum, a.correct + b.correct, a.samples + b.samples};
  };
  auto stop_requested = [&] { return request.stop && request.stop->load(); };

  for (int epoch = state.epoch; epoch < config.train.epochs; ++epoch) {
    engine->set_order(epoch_order(n, config.train.seed, epoch, config.train.shuffle));
    const int64_t first_step = epoch == state.epoch ? state.step_in_epoch : 0;
    TrainCounters carried = epoch == state.epoch ? state.partial : TrainCounters{};
    engine->read_counters(true);
    const auto epoch_start = Clock::now();
    int64_t last_checked_step = state.global_step;
    for (int64_t step = first_step; step < steps_per_epoch; ++step) {
      if (stop_requested()) interrupt(epoch, step, plus(carried, engine->read_counters(false)));
      const int64_t first = step * batch;
      const int count = int(std::min(batch, n - first));
      try {
        engine->train_step(first, count, sgd);
      } catch (const NonFiniteLoss& e) {
        throw NonFiniteLoss("epoch " + std::to_string(epoch + 1) + ", step " +
                            std::to_string(step + 1) + " (global step " +
                            std::to_string(state.global_step + 1) + "): " + e.what() +
                            " — try a smaller optimizer.lr");
      }
      ++state.global_step;
      samples_trained += count;
      observer.on_step(epoch + 1, step + 1, steps_per_epoch, (step + 1) * batch);
      if ((step + 1) % log_interval == 0 && step + 1 < steps_per_epoch) {
        const TrainCounters c = engine->read_counters(false);
        if (!std::isfinite(c.loss_sum)) throw non_finite(last_checked_step + 1, epoch);
        last_checked_step = state.global_step;
        const double seen = double(carried.samples + c.samples);
        observer.on_log(epoch + 1, step + 1, steps_per_epoch,
                        (carried.loss_sum + c.loss_sum) / seen,
                        double(carried.correct + c.correct) / seen);
      }
    }
    const TrainCounters c = engine->read_counters(true);  // waits for the epoch's last step
    const double epoch_seconds = seconds_since(epoch_start);
    if (!std::isfinite(c.loss_sum)) throw non_finite(last_checked_step + 1, epoch);
    train_seconds += epoch_seconds;
    if (stop_requested()) interrupt(epoch, steps_per_epoch, plus(carried, c));
    const double busy = engine->take_busy_percent();
    const auto eval_start = Clock::now();
    const EvalResult eval = engine->evaluate(nullptr, request.stop);
    if (eval.interrupted) interrupt(epoch, steps_per_epoch, plus(carried, c));
    EpochMetrics m;
    m.epoch = epoch + 1;
    const double samples = double(carried.samples + c.samples);
    m.train_loss = (carried.loss_sum + c.loss_sum) / samples;
    m.train_acc = double(carried.correct + c.correct) / samples;
    m.test_loss = eval.loss_sum / double(eval.samples);
    m.test_acc = double(eval.correct) / double(eval.samples);
    m.seconds = epoch_seconds;
    m.eval_seconds = seconds_since(eval_start);
    m.images_per_s = double(c.samples) / epoch_seconds;
    m.lr = config.optimizer.lr;
    m.steps = steps_per_epoch - first_step;
    m.gpu_busy_percent = busy;
    if (m.test_acc > state.best_test_acc) {
      state.best_test_acc = m.test_acc;
      state.best_epoch = m.epoch;
    }
    state.epoch = epoch + 1;
    state.step_in_epoch = 0;
    state.partial = {};
    const std::vector<float> params = engine->parameters();
    save_weights(model_path, plan, params, norm);
    write_checkpoint(state);
    metrics_lines.push_back(metrics_line(m));
    write_lines(metrics_path, metrics_lines);
    summary.epochs.push_back(m);
    observer.on_epoch(m);
  }
  if (summary.epochs.empty()) {
    observer.on_info("the checkpoint is already at epoch " + std::to_string(state.epoch) + " of " +
                     std::to_string(config.train.epochs) + "; nothing to train");
    save_weights(model_path, plan, engine->parameters(), norm);
  }
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

EvalReport evaluate(const EvalRequest& request, TrainObserver& observer) {
  const Config& config = request.config;
  const ModelPlan plan = plan_model(config.model, config.source);
  const LoadedWeights weights = load_weights(request.weights_path, plan);
  const Dataset data = load_data(config, plan.num_classes);
  EvalReport report;
  if (!config.data.mean.empty()) {
    report.normalization = {config.data.mean, config.data.std};
    report.normalization_source = "config";
  } else if (weights.has_normalization) {
    report.normalization = weights.normalization;
    report.normalization_source = "weights file";
  } else {
    channel_statistics(data.train, report.normalization.mean, report.normalization.std);
    guard_constant_channels(report.normalization);
    report.normalization_source = "training images";
  }
  if (int(report.normalization.mean.size()) != plan.input.channels)
    throw WeightsError(request.weights_path + ": normalize_mean has " +
                       std::to_string(report.normalization.mean.size()) +
                       " values, the model's input has " + std::to_string(plan.input.channels) +
                       " channels");
  EngineChoice choice = choose_engine(
      config.device, plan, engine_options(config, report.normalization, request.use_graph));
  if (!choice.info.empty()) observer.on_info(choice.info);
  if (!choice.warning.empty()) observer.on_warning(choice.warning);
  auto engine = std::move(choice.engine);
  report.engine = engine->describe();
  engine->set_parameters(weights.parameters);
  engine->set_eval_data(data.test);
  report.result = engine->evaluate(request.want_logits ? &report.logits : nullptr);
  report.labels = data.test.labels;
  return report;
}

}  // namespace gputrain
