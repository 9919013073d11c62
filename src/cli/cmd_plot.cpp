// gputrain plot: several runs' metrics.jsonl overlaid in one picture (scripts/plot_curves.py).
#include <cstdio>

#include "cli/commands.hpp"
#include "core/curves.hpp"
#include "core/message.hpp"
#include "core/run_outputs.hpp"
#include "gputrain/errors.hpp"

namespace gputrain::cli {

CLI::App* add_plot_command(CLI::App& app, PlotArgs& a) {
  CLI::App* cmd =
      app.add_subcommand("plot", "draw loss, accuracy and learning rate of runs against epoch");
  cmd->add_option("metrics", a.metrics, "metrics.jsonl files (each labelled by its folder)")
      ->required()
      ->type_name("METRICS");
  cmd->add_option("--out", a.out, "the PNG file to write")->required()->type_name("FILE.png");
  set_help_footer(cmd, "gputrain plot runs/a/metrics.jsonl runs/b/metrics.jsonl --out ab.png",
                  false);
  return cmd;
}

int run_plot(const PlotArgs& a) {
  std::vector<std::string> metrics;
  for (const std::string& m : a.metrics) metrics.push_back(expand_home(m));
  const std::string out = expand_home(a.out);
  std::string errors;
  const int code = plot_curves(metrics, out, &errors);
  const std::string why = one_line(errors);
  if (code == 2) throw DataError(why);
  if (code == 3) throw RuntimeFailure("plot: " + why);
  if (code != 0)
    throw RuntimeFailure("plot: " + plot_script_path() + " failed (status " + std::to_string(code) +
                         ")" + (why.empty() ? "" : ": " + why));
  std::printf("wrote %s\n", out.c_str());
  return kExitOk;
}

}  // namespace gputrain::cli
