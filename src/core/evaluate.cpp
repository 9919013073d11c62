// `gputrain eval`: the test set scored with a weights file.
#include "backend/engine_choice.hpp"
#include "core/run_outputs.hpp"
#include "core/run_setup.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/trainer.hpp"

namespace gputrain {

EvalReport evaluate(const EvalRequest& request, TrainObserver& observer) {
  Config config = request.config;
  config.data.dir = expand_home(config.data.dir);
  const std::string weights_path = expand_home(request.weights_path);
  const ModelPlan plan = plan_model(config.model, config.source);
  const LoadedWeights weights = load_weights(weights_path, plan);
  const Dataset data = load_checked_data(config, plan, &observer);
  EvalReport report;
  report.normalization = resolve_normalization(
      config, plan, weights.has_normalization ? &weights.normalization : nullptr, weights_path,
      data.train, &report.normalization_source);
  EngineChoice choice = choose_engine(
      config.device, plan, engine_options(config, report.normalization, request.use_graph));
  if (!choice.info.empty()) observer.on_info(choice.info);
  if (!choice.warning.empty()) observer.on_warning(choice.warning);
  auto engine = std::move(choice.engine);
  report.engine = engine->describe();
  for (const std::string& w : engine->take_warnings()) observer.on_warning(w);
  if (const std::string detail = engine->details(); !detail.empty()) observer.on_detail(detail);
  engine->set_parameters(weights.parameters);
  engine->set_buffers(weights.buffers);
  engine->set_eval_data(data.test);
  report.result = engine->evaluate(request.want_logits ? &report.logits : nullptr);
  report.labels = data.test.labels;
  report.class_names = weights.class_names.empty() ? data.class_names : weights.class_names;
  return report;
}

}  // namespace gputrain
