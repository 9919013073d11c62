// gputrain's command line: a thin layer over the library. Parses flags (CLI11), sets up logging
// (spdlog: progress and results on stdout, warnings and errors on stderr), turns the library's
// typed exceptions into one line on stderr and an exit code:
//   0 success · 2 bad usage, config, data, weights or output folder · 1 other failures ·
//   130 SIGINT, 143 SIGTERM (training stopped after writing a checkpoint)
#include <signal.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "core/json.hpp"
#include "core/message.hpp"
#include "core/run_outputs.hpp"
#include "gputrain/config.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/safetensors.hpp"
#include "gputrain/trainer.hpp"

namespace {

using namespace gputrain;

constexpr int kExitOk = 0, kExitFailure = 1, kExitUsage = 2;

std::atomic<bool> g_stop_requested{false};
volatile std::sig_atomic_t g_stop_signal = SIGINT;

extern "C" void on_stop_signal(int sig) {
  // First Ctrl-C (or SIGTERM from a job scheduler): ask the trainer to checkpoint and stop.
  // A second one kills the process.
  g_stop_signal = sig;
  g_stop_requested.store(true);
  signal(sig, SIG_DFL);
}

// Info to stdout, warnings and errors to stderr, so scripts can separate results from problems.
class SplitSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t text;
    formatter_->format(msg, text);
    std::FILE* out = msg.level >= spdlog::level::warn ? stderr : stdout;
    std::fwrite(text.data(), 1, text.size(), out);
    if (out == stdout) std::fflush(stdout);
  }
  void flush_() override { std::fflush(stdout); }
};

void setup_logging(bool quiet) {
  auto logger = std::make_shared<spdlog::logger>("gputrain", std::make_shared<SplitSink>());
  logger->set_pattern("[%H:%M:%S] %v");
  logger->set_level(quiet ? spdlog::level::warn : spdlog::level::info);
  spdlog::set_default_logger(logger);
}

std::string format_duration(double seconds) {
  const int s = int(std::lround(seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%d:%02d", s / 60, s % 60);
  return buf;
}

// Console reporting of a run: a progress bar on a terminal, plain log lines otherwise.
class ConsoleObserver final : public TrainObserver {
 public:
  explicit ConsoleObserver(bool quiet) : quiet_(quiet), tty_(!quiet && isatty(STDOUT_FILENO)) {}

  void on_info(const std::string& message) override { spdlog::info("{}", message); }

  void on_step(int epoch, int64_t step, int64_t steps, int64_t) override {
    if (step == 1 || epoch != epoch_) {
      epoch_ = epoch;
      // Rates are measured from this step on: it has just finished, so it is the reference point.
      epoch_start_ = std::chrono::steady_clock::now();
      first_step_ = step;
    }
    if (!tty_) return;
    const auto now = std::chrono::steady_clock::now();
    if (step != steps && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const double elapsed = std::chrono::duration<double>(now - epoch_start_).count();
    const double rate = elapsed > 0 ? double(step - first_step_) / elapsed : 0;
    const double eta = rate > 0 ? double(steps - step) / rate : 0;
    const int width = 30, filled = int(width * step / std::max<int64_t>(steps, 1));
    std::string bar(size_t(filled), '#');
    bar.resize(size_t(width), '.');
    const std::string speed =
        rate > 0 ? fmt::format("{:.0f} images/s", rate * batch_) : "-- images/s";
    const std::string eta_text = rate > 0 ? format_duration(eta) : "--:--";
    std::printf("\r  epoch %d [%s] %lld/%lld  %s  ETA %s   ", epoch, bar.c_str(), (long long)step,
                (long long)steps, speed.c_str(), eta_text.c_str());
    std::fflush(stdout);
    if (step == steps) std::printf("\r%*s\r", 100, "");
  }

  void on_log(int epoch, int64_t step, int64_t steps, double loss, double acc) override {
    if (tty_ || quiet_) return;  // the bar shows progress on a terminal
    spdlog::info("epoch {} step {}/{}: loss {:.4f}, accuracy {:.4f}", epoch, step, steps, loss,
                 acc);
  }

  void on_epoch(const EpochMetrics& m) override {
    std::string busy =
        m.gpu_busy_percent >= 0 ? fmt::format(", GPU busy {:.1f}%", m.gpu_busy_percent) : "";
    spdlog::info(
        "epoch {}: train loss {:.4f} acc {:.4f} | test loss {:.4f} acc {:.4f} | {:.1f} s, "
        "{:.0f} images/s{}",
        m.epoch, m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.seconds, m.images_per_s,
        busy);
  }

  void set_batch(int batch) { batch_ = batch; }

 private:
  bool quiet_, tty_;
  int epoch_ = 0, batch_ = 1;
  int64_t first_step_ = 0;
  std::chrono::steady_clock::time_point epoch_start_, last_draw_;
};

struct CommonOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string device;
  bool no_graph = false;
};

Config load(const CommonOptions& o) {
  Config c = load_config(expand_home(o.config_path), o.overrides);
  if (!o.device.empty()) c.device = o.device;
  return c;
}

int run_train(const CommonOptions& common, const std::string& out, const std::string& resume,
              const std::string& init, bool overwrite, bool quiet) {
  setup_logging(quiet);
  TrainRequest request;
  if (common.config_path.empty() && resume.empty())
    throw UserError("train needs --config FILE (or --resume CHECKPOINT to continue a run)");
  if (common.config_path.empty()) {
    // The checkpoint's own config, with the --set overrides on top.
    request.config = config_of_checkpoint(resume, common.overrides);
    if (!common.device.empty()) request.config.device = common.device;
  } else {
    request.config = load(common);
  }
  request.out_dir = out;
  request.overwrite = overwrite;
  request.resume_path = resume;
  request.init_path = init;
  request.use_graph = !common.no_graph;
  request.stop = &g_stop_requested;
  if (!resume.empty() && !init.empty())
    throw UserError("--resume and --init exclude each other: a checkpoint already holds weights");
  ConsoleObserver observer(quiet);
  observer.set_batch(request.config.train.batch_size);
  signal(SIGINT, on_stop_signal);
  signal(SIGTERM, on_stop_signal);
  const TrainSummary s = train(request, observer);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  spdlog::info(
      "done: {} epoch(s) in {:.1f} s of training, {:.0f} images/s on {}{}; final test accuracy "
      "{:.4f}, best {:.4f} (epoch {}); outputs in {}",
      s.epochs.size(), s.train_seconds, s.images_per_s, s.engine,
      s.gpu_busy_percent >= 0 ? fmt::format(", GPU busy {:.1f}%", s.gpu_busy_percent) : "",
      s.final_test_acc, s.best_test_acc, s.best_epoch, s.out_dir);
  return kExitOk;
}

int run_eval(const CommonOptions& common, const std::string& weights, bool json,
             const std::string& dump_logits) {
  setup_logging(json);  // --json: stdout carries the JSON object alone
  EvalRequest request;
  request.config = load(common);
  request.weights_path = weights;
  request.use_graph = !common.no_graph;
  request.want_logits = !dump_logits.empty();
  ConsoleObserver observer(json);
  const EvalReport report = evaluate(request, observer);
  const EvalResult& r = report.result;
  const int K = r.classes;
  std::vector<double> per_class(size_t(K), 0.0);
  for (int t = 0; t < K; ++t) {
    int64_t total = 0;
    for (int p = 0; p < K; ++p) total += r.confusion[size_t(t * K + p)];
    per_class[size_t(t)] = total ? double(r.confusion[size_t(t * K + t)]) / double(total) : 0.0;
  }
  const double accuracy = double(r.correct) / double(r.samples);
  const double loss = r.loss_sum / double(r.samples);
  if (!dump_logits.empty()) {
    TensorFile file;
    file.tensors.push_back({"logits", {r.samples, K}, report.logits});
    file.tensors.push_back(
        {"labels", {r.samples}, std::vector<float>(report.labels.begin(), report.labels.end())});
    write_safetensors(dump_logits, file);
  }
  if (json) {
    JsonValue o = JsonValue::object();
    o.set("samples", r.samples);
    o.set("loss", loss);
    o.set("accuracy", accuracy);
    JsonValue pc = JsonValue::array();
    for (double a : per_class) pc.push_back(a);
    o.set("per_class_accuracy", pc);
    JsonValue confusion = JsonValue::array();
    for (int t = 0; t < K; ++t) {
      JsonValue row = JsonValue::array();
      for (int p = 0; p < K; ++p) row.push_back(r.confusion[size_t(t * K + p)]);
      confusion.push_back(row);
    }
    o.set("confusion", confusion);
    std::printf("%s\n", o.dump().c_str());
    return kExitOk;
  }
  std::printf("%s on %s (%s; normalization from the %s)\n", weights.c_str(),
              request.config.data.dir.c_str(), report.engine.c_str(),
              report.normalization_source.c_str());
  std::printf("accuracy %.4f (%lld of %lld), loss %.4f\n\n", accuracy, (long long)r.correct,
              (long long)r.samples, loss);
  std::printf("class  accuracy   confusion (row: true class, column: predicted)\n");
  for (int t = 0; t < K; ++t) {
    std::printf("%5d  %8.4f  ", t, per_class[size_t(t)]);
    for (int p = 0; p < K; ++p) std::printf(" %6lld", (long long)r.confusion[size_t(t * K + p)]);
    std::printf("\n");
  }
  return kExitOk;
}

int run_info() {
  std::printf("gputrain %s — %s\n", GPUTRAIN_VERSION, cuda_build_versions().c_str());
  std::string why;
  const auto devices = cuda_devices(&why);
  if (devices.empty()) {
    std::printf("no CUDA device found: %s (training runs on the CPU)\n", why.c_str());
    return kExitOk;
  }
  for (const DeviceInfo& d : devices)
    std::printf("cuda:%d  %s  %.1f GiB  compute capability %d.%d\n", d.index, d.name.c_str(),
                double(d.memory_bytes) / (1 << 30), d.cc_major, d.cc_minor);
  return kExitOk;
}

int run(int argc, char** argv) {
  CLI::App app{
      "gputrain: trains convolutional image classifiers from a YAML config, on the GPU "
      "(CUDA) or the CPU"};
  app.set_version_flag("--version", std::string("gputrain ") + GPUTRAIN_VERSION + " (" +
                                        cuda_build_versions() + ")");
  app.require_subcommand(1);

  CommonOptions train_common, eval_common;
  std::string out, resume, init, weights, dump_logits;
  bool quiet = false, json = false, overwrite = false;
  auto add_common = [](CLI::App* cmd, CommonOptions& o, bool config_required) {
    CLI::Option* config = cmd->add_option("--config", o.config_path, "YAML config file");
    if (config_required) config->required();
    cmd->add_option("--set", o.overrides, "override a config key: key.path=value (repeatable)")
        ->take_all()
        ->allow_extra_args(false);
    cmd->add_option("--device", o.device, "auto | cpu | cuda (overrides the config's device)")
        ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
    cmd->add_flag("--no-graph", o.no_graph, "CUDA: run each step eagerly instead of a CUDA graph");
  };
  CLI::App* train_cmd = app.add_subcommand("train", "train a model");
  add_common(train_cmd, train_common, false);
  train_cmd->add_option("--out", out,
                        "output folder (default: the config's output.dir; with --resume, the "
                        "checkpoint's folder)");
  train_cmd->add_flag("--overwrite", overwrite,
                      "replace the outputs of an earlier run in the folder");
  train_cmd->add_option("--resume", resume,
                        "continue from a checkpoint.safetensors (--config is then optional)");
  train_cmd->add_option("--init", init, "start from these weights (safetensors)");
  train_cmd->add_flag("--quiet", quiet, "only warnings and errors");

  CLI::App* eval_cmd = app.add_subcommand("eval", "evaluate weights on the test set");
  add_common(eval_cmd, eval_common, true);
  eval_cmd->add_option("--weights", weights, "weights file (safetensors)")->required();
  eval_cmd->add_flag("--json", json, "print one JSON object");
  eval_cmd->add_option("--dump-logits", dump_logits,
                       "also write the logits and labels to this safetensors file");

  app.add_subcommand("info", "list the CUDA devices found");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    if (app.get_subcommands().empty()) {
      if (argc > 1 && argv[1][0] != '-')
        what = std::string("unknown subcommand '") + argv[1] + "': expected train, eval or info";
      else if (what.find("subcommand") != std::string::npos)
        what = "no subcommand given: expected train, eval or info";
    }
    std::fprintf(stderr, "gputrain: error: %s (see gputrain --help)\n", one_line(what).c_str());
    return kExitUsage;
  }

  if (train_cmd->parsed()) return run_train(train_common, out, resume, init, overwrite, quiet);
  if (eval_cmd->parsed()) return run_eval(eval_common, weights, json, dump_logits);
  return run_info();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const gputrain::Interrupted& e) {
    std::fprintf(stderr, "gputrain: %s\n", one_line(e.what()).c_str());
    return 128 + int(g_stop_signal);  // the shell's convention: 130 for SIGINT, 143 for SIGTERM
  } catch (const gputrain::UserError& e) {
    std::fprintf(stderr, "gputrain: error: %s\n", one_line(e.what()).c_str());
    return kExitUsage;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "gputrain: error: out of memory\n");
    return kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gputrain: error: %s\n", one_line(e.what()).c_str());
    return kExitFailure;
  }
}
