// gputrain predict: class names and probabilities for image files; --json: one object per image.
#include <algorithm>
#include <cstdio>
#include <numeric>

#include "cli/commands.hpp"
#include "cli/progress.hpp"
#include "cli/weights_config.hpp"
#include "core/json.hpp"
#include "gputrain/predict.hpp"

namespace gputrain::cli {

CLI::App* add_predict_command(CLI::App& app, PredictArgs& a) {
  CLI::App* cmd = app.add_subcommand("predict", "classify image files (PNG, JPEG) with weights");
  add_common_options(cmd, a.common, false);
  cmd->add_option("--weights", a.weights, "weights file (safetensors) written by gputrain train")
      ->required()
      ->type_name("FILE");
  cmd->add_option("images", a.images, "image files")->required()->type_name("IMAGE");
  cmd->add_option("--top", a.top, "how many classes to show per image (default 3)")
      ->type_name("K")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--json", a.json, "one JSON object per image and line");
  set_help_footer(cmd, "gputrain predict --weights runs/fm/model.safetensors shoe.png --top 2",
                  false);
  return cmd;
}

int run_predict(const PredictArgs& a) {
  setup_logging(true);  // stdout carries the predictions alone
  PredictRequest request;
  request.config = config_for_weights(a.common, a.weights, "");
  request.weights_path = a.weights;
  request.images = a.images;
  request.use_graph = !a.common.no_graph;
  ConsoleObserver observer(true);
  const PredictReport r = predict(request, observer);
  const size_t K = size_t(r.classes);
  const size_t top = std::min(K, size_t(a.top));
  for (size_t i = 0; i < a.images.size(); ++i) {
    std::vector<size_t> order(K);
    std::iota(order.begin(), order.end(), size_t(0));
    const double* p = &r.probabilities[i * K];
    // Ties keep the lower index first, as argmax does.
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return p[x] > p[y]; });
    if (a.json) {
      JsonValue o = JsonValue::object();
      o.set("image", a.images[i]);
      JsonValue list = JsonValue::array();
      for (size_t t = 0; t < top; ++t) {
        JsonValue e = JsonValue::object();
        e.set("class", r.class_names[order[t]]);
        e.set("index", int64_t(order[t]));
        e.set("probability", p[order[t]]);
        list.push_back(e);
      }
      o.set("top", list);
      std::printf("%s\n", o.dump().c_str());
    } else {
      std::printf("%s:", a.images[i].c_str());
      for (size_t t = 0; t < top; ++t)
        std::printf("%s %s %.4f", t ? "," : "", r.class_names[order[t]].c_str(), p[order[t]]);
      std::printf("\n");
    }
  }
  return kExitOk;
}

}  // namespace gputrain::cli
