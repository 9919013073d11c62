// gputrain eval: weights evaluated on the test set; a report, or one JSON object with --json.
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "cli/commands.hpp"
#include "cli/progress.hpp"
#include "cli/weights_config.hpp"
#include "core/json.hpp"
#include "core/run_outputs.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/safetensors.hpp"
#include "gputrain/trainer.hpp"

namespace gputrain::cli {

CLI::App* add_eval_command(CLI::App& app, EvalArgs& a) {
  CLI::App* cmd = app.add_subcommand("eval", "evaluate weights on the test set");
  add_common_options(cmd, a.common, false);
  cmd->add_option("--data", a.data_dir,
                  "data folder to score (default: the config's data.dir; without --config, the "
                  "one the weights record)")
      ->type_name("DIR");
  cmd->add_option("--weights", a.weights, "weights file (safetensors)")
      ->required()
      ->type_name("FILE");
  cmd->add_flag("--json", a.json, "print one JSON object");
  cmd->add_option("--dump-logits", a.dump_logits,
                  "also write the logits and labels to this safetensors file")
      ->type_name("FILE");
  set_help_footer(cmd,
                  "gputrain eval --weights runs/fm/model.safetensors --json   (the config the "
                  "weights record; or --config FILE)",
                  false);
  return cmd;
}

int run_eval(const EvalArgs& a) {
  const CommonOptions& common = a.common;
  const std::string& weights = a.weights;
  const std::string dump_logits = expand_home(a.dump_logits);
  const bool json = a.json;
  setup_logging(json, common.verbose);  // --json: stdout carries the JSON object alone
  // Checked before the evaluation, not after it: a missing folder is known now.
  if (!dump_logits.empty()) {
    struct stat st;
    const std::string folder = parent_folder(dump_logits);
    if (::stat(folder.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      throw IoError("--dump-logits " + a.dump_logits + ": folder '" + folder +
                    "' does not exist (create it first)");
  }
  EvalRequest request;
  request.config = config_for_weights(common, weights, expand_home(a.data_dir));
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
    JsonValue classes = JsonValue::array();
    for (const std::string& n : report.class_names) classes.push_back(n);
    o.set("classes", classes);
    std::printf("%s\n", o.dump().c_str());
    return kExitOk;
  }
  std::printf("%s on %s (%s; normalization from the %s)\n", weights.c_str(),
              request.config.data.dir.c_str(), report.engine.c_str(),
              report.normalization_source.c_str());
  std::printf("accuracy %.4f (%lld of %lld), loss %.4f\n\n", accuracy, (long long)r.correct,
              (long long)r.samples, loss);
  const std::vector<std::string>& names = report.class_names;
  size_t name_width = 4;
  for (const std::string& n : names) name_width = std::max(name_width, n.size());
  std::printf("class  %-*s  accuracy   confusion (row: true class, column: predicted)\n",
              int(name_width), "name");
  for (int t = 0; t < K; ++t) {
    std::printf("%5d  %-*s  %8.4f  ", t, int(name_width),
                size_t(t) < names.size() ? names[size_t(t)].c_str() : "", per_class[size_t(t)]);
    for (int p = 0; p < K; ++p) std::printf(" %6lld", (long long)r.confusion[size_t(t * K + p)]);
    std::printf("\n");
  }
  return kExitOk;
}

}  // namespace gputrain::cli
