// gputrain's command line: a thin layer over the library. Parses flags (CLI11), dispatches to one
// file per command (cmd_*.cpp), and turns the library's typed exceptions into one line on stderr
// and an exit code:
//   0 success · 2 bad usage, config, data, weights or output folder · 1 other failures ·
//   129 SIGHUP, 130 SIGINT, 143 SIGTERM (training stopped after writing a checkpoint)
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/progress.hpp"
#include "core/message.hpp"
#include "gputrain/config.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/errors.hpp"

namespace {

using namespace gputrain;
using namespace gputrain::cli;

const char* const kCommands = "train, eval, predict, export, plot, preview or info";

[[noreturn]] void usage_error(const std::string& what) {
  throw CLI::ParseError(what, CLI::ExitCodes::ExtrasError);
}

// `--epochs 1` where `--set train.epochs=1` was meant: the suggestion, or empty when no unknown
// flag of `cmd` names a config key. Matches the key's full path or its last part, with '-' for '_'.
std::string config_key_suggestion(CLI::App* cmd, const std::vector<std::string>& args) {
  const std::vector<std::string> keys = config_key_paths();
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) continue;
    const size_t eq = arg.find('=');
    const std::string flag = arg.substr(0, eq);
    if (cmd->get_option_no_throw(flag)) continue;
    std::string name = flag.substr(2);
    for (char& c : name)
      if (c == '-') c = '_';
    std::vector<std::string> matches;
    for (const std::string& key : keys) {
      const size_t dot = key.find('.');
      if (key == name || (dot != std::string::npos && key.substr(dot + 1) == name))
        matches.push_back(key);
    }
    if (matches.empty()) continue;
    std::string value = "VALUE";
    if (eq != std::string::npos)
      value = arg.substr(eq + 1);
    else if (i + 1 < args.size() && args[i + 1].compare(0, 2, "--") != 0)
      value = args[i + 1];
    std::string forms;
    for (size_t m = 0; m < matches.size(); ++m)
      forms += (m ? " or " : "") + std::string("--set ") + matches[m] + "=" + value;
    return "unknown option '" + flag + "': config keys are set with " + forms +
           " (see gputrain help " + cmd->get_name() + ")";
  }
  return "";
}

int print_help(CLI::App& app, const std::string& topic) {
  if (topic.empty()) {
    // Not app.help(): that shows the help of the subcommand parsed, which is `help` itself.
    std::fputs(
        app.get_formatter()->make_help(&app, app.get_name(), CLI::AppFormatMode::Normal).c_str(),
        stdout);
    return kExitOk;
  }
  for (CLI::App* sub : app.get_subcommands({}))
    if (sub->get_name() == topic && topic != "help") {
      std::fputs(sub->help(app.get_name()).c_str(), stdout);
      return kExitOk;
    }
  usage_error("unknown subcommand '" + topic + "': expected " + kCommands);
}

int run(int argc, char** argv) {
  CLI::App app{
      "gputrain: trains convolutional image classifiers from a YAML config, on the GPU "
      "(CUDA) or the CPU",
      "gputrain"};
  app.set_version_flag("--version", std::string("gputrain ") + GPUTRAIN_VERSION + " (" +
                                        cuda_build_versions() + "; " +
                                        dist::collective_libraries() + ")");
  app.require_subcommand(1);
  app.footer(
      "\nExample:\n  gputrain train --config configs/fashion_mnist.yaml --out runs/fm\n\n"
      "See gputrain help SUBCOMMAND (or gputrain SUBCOMMAND --help) for its flags and exit "
      "codes.\n");

  TrainArgs train_args;
  EvalArgs eval_args;
  PreviewArgs preview_args;
  InfoArgs info_args;
  PredictArgs predict_args;
  ExportArgs export_args;
  PlotArgs plot_args;
  std::string help_topic;
  CLI::App* train_cmd = add_train_command(app, train_args);
  CLI::App* eval_cmd = add_eval_command(app, eval_args);
  CLI::App* predict_cmd = add_predict_command(app, predict_args);
  CLI::App* export_cmd = add_export_command(app, export_args);
  CLI::App* plot_cmd = add_plot_command(app, plot_args);
  CLI::App* preview_cmd = add_preview_command(app, preview_args);
  CLI::App* info_cmd = add_info_command(app, info_args);
  CLI::App* help_cmd = app.add_subcommand("help", "show the help of gputrain or a subcommand");
  help_cmd->add_option("subcommand", help_topic, kCommands)->type_name("SUBCOMMAND");

  try {
    app.parse(argc, argv);
    if (help_cmd->parsed()) return print_help(app, help_topic);
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
        what = std::string("unknown subcommand '") + argv[1] + "': expected " + kCommands;
      else if (what.find("subcommand") != std::string::npos)
        what = std::string("no subcommand given: expected ") + kCommands;
    } else {
      CLI::App* cmd = app.get_subcommands().front();
      const std::string suggestion =
          config_key_suggestion(cmd, std::vector<std::string>(argv + 2, argv + argc));
      if (!suggestion.empty()) {
        std::fprintf(stderr, "gputrain: error: %s\n", one_line(suggestion).c_str());
        return kExitUsage;
      }
    }
    std::fprintf(stderr, "gputrain: error: %s (see gputrain --help)\n", one_line(what).c_str());
    return kExitUsage;
  }

  if (train_cmd->parsed()) return run_train(train_args);
  if (eval_cmd->parsed()) return run_eval(eval_args);
  if (predict_cmd->parsed()) return run_predict(predict_args);
  if (export_cmd->parsed()) return run_export(export_args);
  if (plot_cmd->parsed()) return run_plot(plot_args);
  if (preview_cmd->parsed()) return run_preview(preview_args);
  if (info_cmd->parsed()) return run_info(info_args);
  return kExitUsage;
}

}  // namespace

// "gputrain: " alone, or "gputrain: rank 1: " on a data-parallel run's other ranks.
std::string message_prefix() {
  const int rank = world_rank();
  return rank == 0 ? "gputrain: " : "gputrain: rank " + std::to_string(rank) + ": ";
}

int main(int argc, char** argv) {
  ignore_sigpipe();
  std::unique_ptr<dist::World> world;
  try {
    world = dist::World::join(&argc, &argv);
    g_world = world.get();
    const int code = run(argc, argv);
    // On a failure the process leaves without MPI_Finalize: the launcher then ends the other
    // ranks at once rather than letting them wait in a collective for this one.
    if (code == kExitOk) world->finish();
    return code;
  } catch (const gputrain::Interrupted& e) {
    // Every rank stopped at the same step; rank 0 wrote the checkpoint and says so.
    try {
      if (world) world->wait_for_every_rank();
    } catch (const std::exception&) {
      // The stop stands; the launcher ends what is left.
    }
    end_progress_line();
    if (world_rank() == 0) std::fprintf(stderr, "gputrain: %s\n", one_line(e.what()).c_str());
    return 128 + stop_signal();  // the shell's convention: 129 SIGHUP, 130 SIGINT, 143 SIGTERM
  } catch (const gputrain::UserError& e) {
    // Every rank checks the same inputs and finds the same error: rank 0 alone reports it.
    end_progress_line();
    if (world_rank() == 0)
      std::fprintf(stderr, "gputrain: error: %s\n", one_line(e.what()).c_str());
    return kExitUsage;
  } catch (const std::bad_alloc&) {
    end_progress_line();
    std::fprintf(stderr, "%serror: out of memory\n", message_prefix().c_str());
    return kExitFailure;
  } catch (const std::exception& e) {
    end_progress_line();
    std::fprintf(stderr, "%serror: %s\n", message_prefix().c_str(), one_line(e.what()).c_str());
    return kExitFailure;
  }
}
