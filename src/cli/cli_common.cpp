#include "cli/cli_common.hpp"

#include <signal.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <mutex>

#include "core/run_outputs.hpp"

namespace gputrain::cli {

std::atomic<bool> g_stop_requested{false};

namespace {

volatile std::sig_atomic_t g_stop_signal = SIGINT;
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP};

extern "C" void on_stop_signal(int sig) {
  // First signal: ask the trainer to checkpoint and stop. A second one kills the process.
  g_stop_signal = sig;
  g_stop_requested.store(true);
  signal(sig, SIG_DFL);
}

// Writes `text` to `out` unless that stream has failed before (its reader is gone: EPIPE with
// SIGPIPE ignored, EIO after a hangup); then it is left alone for the rest of the run.
void write_unless_gone(std::FILE* out, bool& gone, const char* text, size_t size) {
  if (gone) return;
  if (std::fwrite(text, 1, size, out) != size || std::fflush(out) != 0) {
    gone = true;
    std::clearerr(out);
  }
}

class SplitSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t text;
    formatter_->format(msg, text);
    if (msg.level >= spdlog::level::warn)
      write_unless_gone(stderr, stderr_gone_, text.data(), text.size());
    else
      write_unless_gone(stdout, stdout_gone_, text.data(), text.size());
  }
  void flush_() override {
    if (!stdout_gone_) std::fflush(stdout);
  }

 private:
  bool stdout_gone_ = false, stderr_gone_ = false;
};

}  // namespace

int stop_signal() {
  return int(g_stop_signal);
}

void ignore_sigpipe() {
  signal(SIGPIPE, SIG_IGN);
}

StopSignals::StopSignals() {
  for (int sig : kStopSignals) signal(sig, on_stop_signal);
}

StopSignals::~StopSignals() {
  for (int sig : kStopSignals) signal(sig, SIG_DFL);
}

gputrain::dist::World* g_world = nullptr;

int world_rank() {
  return g_world ? g_world->rank() : 0;
}

void setup_logging(bool quiet, bool verbose) {
  auto logger = std::make_shared<spdlog::logger>("gputrain", std::make_shared<SplitSink>());
  const int rank = world_rank();
  if (rank != 0) quiet = true;
  logger->set_pattern(rank != 0 ? "[%H:%M:%S] rank " + std::to_string(rank) + ": %v"
                                : std::string("[%H:%M:%S] %v"));
  logger->set_level(quiet     ? spdlog::level::warn
                    : verbose ? spdlog::level::debug
                              : spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void add_common_options(CLI::App* cmd, CommonOptions& o, bool config_required) {
  CLI::Option* config = cmd->add_option("--config", o.config_path, "YAML config file");
  config->type_name("FILE");
  if (config_required) config->required();
  cmd->add_option("--set", o.overrides, "override a config key: key.path=value (repeatable)")
      ->take_all()
      ->allow_extra_args(false)
      ->type_name("KEY=VALUE");
  cmd->add_option("--device", o.device,
                  "auto | cpu | cuda | cuda:N (overrides the config's device; N counts the GPUs "
                  "CUDA_VISIBLE_DEVICES leaves visible)")
      ->type_name("DEVICE")
      ->check(CLI::Validator(
          [](std::string& s) {
            return valid_device(s) ? std::string()
                                   : "expected auto, cpu, cuda or cuda:N, got '" + s + "'";
          },
          "", "device"));
  cmd->add_flag("--no-graph", o.no_graph, "CUDA: run each step eagerly instead of a CUDA graph");
  cmd->add_flag("--verbose", o.verbose,
                "also log the engine's details (CUDA: the cuDNN algorithm of each conv pass)");
}

Config load(const CommonOptions& o) {
  Config c = load_config(expand_home(o.config_path), o.overrides);
  if (!o.device.empty()) c.device = o.device;
  return c;
}

void set_help_footer(CLI::App* cmd, const std::string& example, bool stops_on_signals) {
  std::string footer = "\nExample:\n  " + example +
                       "\n\nExit codes:\n  0    success\n"
                       "  1    failure (out of memory, a non-finite loss, an I/O error)\n"
                       "  2    bad usage, config, data, weights or output folder\n";
  if (stops_on_signals)
    footer +=
        "  129  SIGHUP, 130 SIGINT (Ctrl-C), 143 SIGTERM: stopped after writing a checkpoint\n";
  cmd->footer(footer);
}

}  // namespace gputrain::cli
