#include "core/run_setup.hpp"

#include "gputrain/errors.hpp"
#include "gputrain/optimizer.hpp"

namespace gputrain {
namespace {

// A channel that is constant over the training images has std 0: leave its scale alone (std 1),
// as dividing by zero would make every input infinite.
void guard_constant_channels(Normalization& n) {
  for (float& s : n.std)
    if (!(s > 0)) s = 1.0f;
}

}  // namespace

Dataset load_checked_data(const Config& config, const ModelPlan& plan) {
  const DataConfig& d = config.data;
  Dataset data = d.format == DataFormat::Idx
                     ? load_idx_dataset(d.dir, d.train_limit, d.test_limit, plan.num_classes)
                     : load_cifar10_dataset(d.dir, d.train_limit, d.test_limit, plan.num_classes);
  const ModelConfig& m = config.model;
  for (const ImageSet* set : {&data.train, &data.test}) {
    if (set->channels != plan.input.channels || set->height != plan.input.height ||
        set->width != plan.input.width)
      throw ConfigError(config.source + ": model.input is [" + std::to_string(m.input_channels) +
                        ", " + std::to_string(m.input_height) + ", " +
                        std::to_string(m.input_width) + "] but the images in '" + d.dir + "' are " +
                        std::to_string(set->channels) + "x" + std::to_string(set->height) + "x" +
                        std::to_string(set->width));
  }
  if (data.train.count == 0) throw DataError(d.dir + ": the training set is empty");
  if (data.test.count == 0) throw DataError(d.dir + ": the test set is empty");
  return data;
}

Normalization resolve_normalization(const Config& config, const ModelPlan& plan,
                                    const Normalization* recorded, const std::string& recorded_path,
                                    const ImageSet& train, std::string* source) {
  Normalization n;
  std::string from;
  if (!config.data.mean.empty()) {
    n = {config.data.mean, config.data.std};
    from = "config";
  } else if (recorded) {
    n = *recorded;
    from = "weights file";
  } else {
    channel_statistics(train, n.mean, n.std);
    guard_constant_channels(n);
    from = "training images";
  }
  if (int(n.mean.size()) != plan.input.channels)
    throw WeightsError(recorded_path + ": normalize_mean has " + std::to_string(n.mean.size()) +
                       " values, the model's input has " + std::to_string(plan.input.channels) +
                       " channels");
  if (source) *source = from;
  return n;
}

EngineOptions engine_options(const Config& config, const Normalization& n, bool use_graph) {
  EngineOptions o;
  o.optimizer = optimizer_spec(config.optimizer);
  o.batch_size = config.train.batch_size;
  o.mean = n.mean;
  o.std = n.std;
  o.threads = config.train.threads;
  o.deterministic = config.train.deterministic;
  o.use_graph = use_graph;
  o.augment = augment_spec(config);
  return o;
}

AugmentSpec augment_spec(const Config& config) {
  const AugmentConfig& a = config.data.augment;
  AugmentSpec spec;
  spec.crop_padding = a.crop_padding;
  spec.flip_threshold = a.hflip ? augment_flip_threshold(a.hflip_probability) : 0;
  spec.seed = config.train.seed;
  return spec;
}

size_t weights_in(const ModelPlan& plan) {
  size_t n = 0;
  for (const ParameterInfo& p : plan.parameters) n += p.count;
  return n;
}

}  // namespace gputrain
