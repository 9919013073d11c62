// gputrain export: weights → an ONNX file (opset 13) for onnxruntime, TensorRT, OpenCV's dnn, ….
#include <cstdio>

#include "cli/commands.hpp"
#include "cli/weights_config.hpp"
#include "core/json.hpp"
#include "core/run_outputs.hpp"
#include "gputrain/checkpoint.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"
#ifdef GPUTRAIN_WITH_ONNX
#include "export/onnx.hpp"
#endif

namespace gputrain::cli {

CLI::App* add_export_command(CLI::App& app, ExportArgs& a) {
  CLI::App* cmd = app.add_subcommand("export", "write weights as an ONNX model");
  cmd->add_option("--config", a.common.config_path,
                  "YAML config file (default: the one the weights record)")
      ->type_name("FILE");
  cmd->add_option("--set", a.common.overrides, "override a config key: key.path=value")
      ->take_all()
      ->allow_extra_args(false)
      ->type_name("KEY=VALUE");
  cmd->add_option("--weights", a.weights, "weights file (safetensors) written by gputrain train")
      ->required()
      ->type_name("FILE");
  cmd->add_option("--onnx", a.onnx, "the ONNX file to write")->required()->type_name("FILE");
  cmd->add_flag("--raw-input", a.raw_input,
                "take uint8 pixels and normalize inside the graph (default: float32 input, "
                "normalized as the weights' metadata says)");
  set_help_footer(cmd, "gputrain export --weights runs/fm/model.safetensors --onnx fm.onnx", false);
  return cmd;
}

int run_export(const ExportArgs& a) {
#ifndef GPUTRAIN_WITH_ONNX
  (void)a;
  throw ConfigError(
      "export: this gputrain was built without ONNX support (install libonnx-dev and "
      "libprotobuf-dev, as scripts/setup.sh does, and rebuild)");
#else
  setup_logging(false);
  const Config config = config_for_weights(a.common, a.weights, "");
  const std::string weights_path = expand_home(a.weights);
  const std::string onnx_path = expand_home(a.onnx);
  const ModelPlan plan = plan_model(config.model, config.source);
  const LoadedWeights w = load_weights(weights_path, plan);
  Normalization n;
  if (!config.data.mean.empty())
    n = {config.data.mean, config.data.std};
  else if (w.has_normalization)
    n = w.normalization;
  else
    throw WeightsError(weights_path +
                       ": records no normalize_mean / normalize_std and the config gives no "
                       "data.mean / data.std; expected one of them");
  OnnxExportOptions o;
  o.raw_input = a.raw_input;
  JsonValue mean = JsonValue::array(), std_dev = JsonValue::array();
  for (float v : n.mean) mean.push_back(v);
  for (float v : n.std) std_dev.push_back(v);
  o.metadata["normalize_mean"] = mean.dump();
  o.metadata["normalize_std"] = std_dev.dump();
  o.metadata["input"] = a.raw_input ? "uint8 pixels, normalized inside the graph"
                                    : "float32 (pixel/255 - normalize_mean) / normalize_std";
  if (!w.class_names.empty()) {
    JsonValue classes = JsonValue::array();
    for (const std::string& c : w.class_names) classes.push_back(c);
    o.metadata["classes"] = classes.dump();
  }
  export_onnx(onnx_path, plan, w.parameters, w.buffers, n, o);
  std::printf("wrote %s (opset %d, input images %s [N, %d, %d, %d], output logits [N, %d])\n",
              onnx_path.c_str(), kOnnxOpset, a.raw_input ? "uint8" : "float32", plan.input.channels,
              plan.input.height, plan.input.width, plan.num_classes);
  return kExitOk;
#endif
}

}  // namespace gputrain::cli
