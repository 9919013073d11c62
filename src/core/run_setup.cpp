#include "core/run_setup.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "gputrain/errors.hpp"
#include "gputrain/images.hpp"
#include "gputrain/optimizer.hpp"
#include "gputrain/rng.hpp"

namespace gputrain {
namespace {

// A channel that is constant over the training images has std 0: leave its scale alone (std 1),
// as dividing by zero would make every input infinite.
void guard_constant_channels(Normalization& n) {
  for (float& s : n.std)
    if (!(s > 0)) s = 1.0f;
}

// The images of `set` at `indices` (ascending), in that order.
ImageSet subset(const ImageSet& set, const std::vector<int64_t>& indices) {
  ImageSet out;
  out.count = int64_t(indices.size());
  out.channels = set.channels;
  out.height = set.height;
  out.width = set.width;
  const int64_t size = set.image_size();
  out.pixels.resize(size_t(out.count * size));
  out.labels.resize(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    std::memcpy(out.pixels.data() + int64_t(i) * size, set.image(indices[i]), size_t(size));
    out.labels[i] = set.labels[size_t(indices[i])];
  }
  return out;
}

}  // namespace

void hold_out_validation(Dataset& data, int64_t count, uint64_t seed) {
  if (count <= 0) return;
  const int64_t n = data.train.count;
  // A partial Fisher–Yates shuffle on a stream of its own (not the epoch orders'): the first
  // `count` entries are the held-out images. Depends on the seed and the set's size only.
  Rng rng(seed ^ 0x76616c5f73706c74ull);  // "val_splt"
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t(0));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = i + int64_t(rng.below(uint64_t(n - i)));
    std::swap(perm[size_t(i)], perm[size_t(j)]);
  }
  std::vector<int64_t> val(perm.begin(), perm.begin() + count);
  std::sort(val.begin(), val.end());
  std::vector<int64_t> train;
  train.reserve(size_t(n - count));
  size_t next_val = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (next_val < val.size() && val[next_val] == i) {
      ++next_val;
      continue;
    }
    train.push_back(i);
  }
  data.val = subset(data.train, val);
  data.train = subset(data.train, train);
}

Dataset load_checked_data(const Config& config, const ModelPlan& plan, TrainObserver* observer) {
  const DataConfig& d = config.data;
  Dataset data;
  if (d.format == DataFormat::Folder) {
    ImageFolderOptions o;
    o.channels = plan.input.channels;
    o.height = plan.input.height;
    o.width = plan.input.width;
    o.resize = d.resize;
    o.skip_bad_images = d.skip_bad_images;
    o.num_classes = plan.num_classes;
    o.train_limit = d.train_limit;
    o.test_limit = d.test_limit;
    if (observer) {
      o.info = [observer](const std::string& m) { observer->on_info(m); };
      o.warning = [observer](const std::string& m) { observer->on_warning(m); };
    }
    data = load_image_folder_dataset(d.dir, o);
  } else {
    data = d.format == DataFormat::Idx
               ? load_idx_dataset(d.dir, d.train_limit, d.test_limit, plan.num_classes)
               : load_cifar10_dataset(d.dir, d.train_limit, d.test_limit, plan.num_classes);
  }
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
  if (data.class_names.empty())
    data.class_names = builtin_class_names(d.format == DataFormat::Idx ? "idx" : "cifar10", d.dir,
                                           plan.num_classes);
  if (data.train.count == 0) throw DataError(d.dir + ": the training set is empty");
  if (data.test.count == 0) throw DataError(d.dir + ": the test set is empty");
  if (d.val_split >= data.train.count)
    throw ConfigError(config.source + ": data.val_split: " + std::to_string(d.val_split) +
                      " held-out images leave none of the " + std::to_string(data.train.count) +
                      " training images in '" + d.dir +
                      "' to train on (expected fewer than the training images)");
  hold_out_validation(data, d.val_split, config.train.seed);
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
  o.label_smoothing = float(config.loss.label_smoothing);
  o.precision = config.train.precision;
  o.augment = augment_spec(config);
  o.seed = config.train.seed;
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
