// gputrain train: a run from a config, into an output folder; checkpoints and stops on signals.
#include <spdlog/spdlog.h>

#include "cli/commands.hpp"
#include "cli/progress.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/trainer.hpp"

namespace gputrain::cli {

CLI::App* add_train_command(CLI::App& app, TrainArgs& a) {
  CLI::App* cmd = app.add_subcommand("train", "train a model");
  add_common_options(cmd, a.common, false);
  cmd->add_option("--out", a.out,
                  "output folder (default: the config's output.dir; with --resume the "
                  "checkpoint's folder)")
      ->type_name("DIR");
  cmd->add_flag("--overwrite", a.overwrite, "replace the outputs of an earlier run in the folder");
  cmd->add_option("--resume", a.resume,
                  "continue from a checkpoint.safetensors (its config is used: --config optional)")
      ->type_name("FILE");
  cmd->add_option("--init", a.init, "start from these weights (safetensors)")->type_name("FILE");
  cmd->add_flag("--quiet", a.quiet, "only warnings and errors");
  set_help_footer(cmd,
                  "gputrain train --config configs/fashion_mnist.yaml --out runs/fm "
                  "--set train.epochs=5",
                  true);
  return cmd;
}

int run_train(const TrainArgs& a) {
  setup_logging(a.quiet, a.common.verbose);
  TrainRequest request;
  if (a.common.config_path.empty() && a.resume.empty())
    throw UserError("train needs --config FILE (or --resume CHECKPOINT to continue a run)");
  if (a.common.config_path.empty()) {
    // The checkpoint's own config, with the --set overrides on top.
    request.config = config_of_checkpoint(a.resume, a.common.overrides);
    if (!a.common.device.empty()) request.config.device = a.common.device;
  } else {
    request.config = load(a.common);
  }
  request.out_dir = a.out;  // empty: the library's rule (checkpoint folder or output.dir)
  request.overwrite = a.overwrite;
  request.resume_path = a.resume;
  request.init_path = a.init;
  request.use_graph = !a.common.no_graph;
  request.stop = &g_stop_requested;
  if (g_world && g_world->launched()) request.communicator = &g_world->communicator();
  if (!a.resume.empty() && !a.init.empty())
    throw UserError("--resume and --init exclude each other: a checkpoint already holds weights");
  ConsoleObserver observer(a.quiet || world_rank() != 0);
  observer.set_batch(request.config.train.batch_size);
  TrainSummary s;
  {
    StopSignals stop_signals;
    s = train(request, observer);
  }
  spdlog::info(
      "done: {} epoch(s) in {:.1f} s of training, {:.0f} images/s on {}{}; final test accuracy "
      "{:.4f}, best {:.4f} (epoch {}){}; outputs in {}",
      s.epochs.size(), s.train_seconds, s.images_per_s, s.engine,
      s.gpu_busy_percent >= 0 ? fmt::format(", GPU busy {:.1f}%", s.gpu_busy_percent) : "",
      s.final_test_acc, s.best_test_acc, s.best_epoch, s.stopped_early ? "; stopped early" : "",
      s.out_dir);
  return kExitOk;
}

}  // namespace gputrain::cli
