// `gputrain predict`: image files → the model's input (as the image-folder reader converts them)
// → the engine's evaluation pass with its logits kept → softmax.
#include "gputrain/predict.hpp"

#include <algorithm>
#include <cmath>

#include "backend/engine_choice.hpp"
#include "core/run_outputs.hpp"
#include "core/run_setup.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/images.hpp"

namespace gputrain {

PredictReport predict(const PredictRequest& request, TrainObserver& observer) {
  const Config& config = request.config;
  const std::string weights_path = expand_home(request.weights_path);
  const ModelPlan plan = plan_model(config.model, config.source);
  const LoadedWeights weights = load_weights(weights_path, plan);
  const int C = plan.input.channels, H = plan.input.height, W = plan.input.width;
  if (C != 1 && C != 3)
    throw ConfigError(config.source + ": model.input has " + std::to_string(C) +
                      " channels; image files give 1 (grey) or 3 (RGB)");

  ImageSet set;
  set.channels = C;
  set.height = H;
  set.width = W;
  set.count = int64_t(request.images.size());
  set.pixels.resize(size_t(set.count) * set.image_size());
  set.labels.assign(size_t(set.count), 0);  // unknown: the loss the engine reports is meaningless
  for (size_t i = 0; i < request.images.size(); ++i) {
    const std::string path = expand_home(request.images[i]);
    image_to_input(decode_image_file(path), path, C, H, W, config.data.resize,
                   set.pixels.data() + i * size_t(set.image_size()));
  }

  if (config.data.mean.empty() && !weights.has_normalization)
    throw WeightsError(weights_path +
                       ": records no normalize_mean / normalize_std, and the config gives no "
                       "data.mean / data.std; expected one of them");
  const Normalization normalization = resolve_normalization(
      config, plan, weights.has_normalization ? &weights.normalization : nullptr, weights_path,
      set);
  EngineChoice choice =
      choose_engine(config.device, plan, engine_options(config, normalization, request.use_graph));
  if (!choice.info.empty()) observer.on_info(choice.info);
  if (!choice.warning.empty()) observer.on_warning(choice.warning);
  std::unique_ptr<Engine> engine = std::move(choice.engine);
  engine->set_parameters(weights.parameters);
  engine->set_buffers(weights.buffers);
  engine->set_eval_data(set);

  PredictReport report;
  report.engine = engine->describe();
  report.classes = plan.num_classes;
  engine->evaluate(&report.logits);
  report.class_names = weights.class_names;
  if (report.class_names.empty())
    for (int k = 0; k < plan.num_classes; ++k) report.class_names.push_back(std::to_string(k));
  const size_t K = size_t(plan.num_classes);
  report.probabilities.resize(report.logits.size());
  for (size_t i = 0; i < size_t(set.count); ++i) {
    const float* z = &report.logits[i * K];
    const double top = *std::max_element(z, z + K);
    double sum = 0;
    for (size_t k = 0; k < K; ++k) sum += std::exp(double(z[k]) - top);
    for (size_t k = 0; k < K; ++k)
      report.probabilities[i * K + k] = std::exp(double(z[k]) - top) / sum;
  }
  return report;
}

}  // namespace gputrain
