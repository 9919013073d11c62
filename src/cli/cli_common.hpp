// What gputrain's commands share: exit codes, signal handling, logging, the flags every
// command that reads a config takes, and the shape of each command's --help.
#pragma once

#include <CLI/CLI.hpp>
#include <atomic>
#include <string>
#include <vector>

#include "dist/world.hpp"
#include "gputrain/config.hpp"

namespace gputrain::cli {

constexpr int kExitOk = 0, kExitFailure = 1, kExitUsage = 2;

// ---- signals ----

// Set by SIGINT, SIGTERM or SIGHUP while StopSignals is alive: the trainer checkpoints and stops.
extern std::atomic<bool> g_stop_requested;
// The signal that asked to stop (SIGINT when none did); the exit code is 128 + it.
int stop_signal();

// SIGPIPE is ignored for the whole process: a reader of stdout or stderr going away (`| head`)
// makes writes fail instead of killing a run; logging then stops and the run finishes.
void ignore_sigpipe();

// While alive: the first SIGINT (Ctrl-C), SIGTERM (job schedulers) or SIGHUP (a closed ssh
// session) sets g_stop_requested; a second one kills the process. Restores the defaults after.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
};

// ---- the processes of the run ----

// Joined in main before any command runs: one process, or the ranks of an MPI launcher.
extern gputrain::dist::World* g_world;
// This process's rank (0 without a launcher): ranks other than 0 log warnings and errors only.
int world_rank();

// ---- logging ----

// Info to stdout, warnings and errors to stderr (scripts can separate results from problems);
// `quiet`: warnings and errors only (always on ranks other than 0, whose lines start with their
// rank); `verbose` (unless quiet): debug lines too (TrainObserver::on_detail, e.g. the cuDNN
// algorithm choices). A stream whose reader went away is no longer written.
void setup_logging(bool quiet, bool verbose = false);

// ---- shared flags ----

struct CommonOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string device;
  bool no_graph = false;
  bool verbose = false;
};

// --config FILE, --set KEY=VALUE…, --device DEVICE, --no-graph, --verbose.
// --config is required unless a command has another source for the config (train --resume).
void add_common_options(CLI::App* cmd, CommonOptions& options, bool config_required = true);

// The config with --set applied and --device over the config's device.
Config load(const CommonOptions& options);

// Ends a command's --help with an example and the exit codes.
void set_help_footer(CLI::App* cmd, const std::string& example, bool stops_on_signals);

}  // namespace gputrain::cli
