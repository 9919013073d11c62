// gputrain's subcommands: each adds its flags to the app and runs once parsed.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "cli/cli_common.hpp"

namespace gputrain::cli {

struct TrainArgs {
  CommonOptions common;
  std::string out, resume, init;
  bool quiet = false, overwrite = false;
};
CLI::App* add_train_command(CLI::App& app, TrainArgs& args);
int run_train(const TrainArgs& args);

struct EvalArgs {
  CommonOptions common;
  std::string weights, dump_logits, data_dir;
  bool json = false;
};
CLI::App* add_eval_command(CLI::App& app, EvalArgs& args);
int run_eval(const EvalArgs& args);

struct PredictArgs {
  CommonOptions common;
  std::string weights;
  std::vector<std::string> images;
  int top = 3;
  bool json = false;
};
CLI::App* add_predict_command(CLI::App& app, PredictArgs& args);
int run_predict(const PredictArgs& args);

struct ExportArgs {
  CommonOptions common;  // --config and --set only
  std::string weights, onnx;
  bool raw_input = false;
};
CLI::App* add_export_command(CLI::App& app, ExportArgs& args);
int run_export(const ExportArgs& args);

struct PlotArgs {
  std::vector<std::string> metrics;
  std::string out;
};
CLI::App* add_plot_command(CLI::App& app, PlotArgs& args);
int run_plot(const PlotArgs& args);
struct PreviewArgs {
  std::string config_path, out, tensors;
  std::vector<std::string> overrides;
  int count = 64, epoch = 1;
};
CLI::App* add_preview_command(CLI::App& app, PreviewArgs& args);
int run_preview(const PreviewArgs& args);

struct InfoArgs {
  bool json = false;
};
CLI::App* add_info_command(CLI::App& app, InfoArgs& args);
int run_info(const InfoArgs& args);

}  // namespace gputrain::cli
