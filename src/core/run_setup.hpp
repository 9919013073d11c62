// What train, eval (and later predict) share before the first step: the data checked once against
// the plan, the input normalization resolved by one rule, and the engine options from the config.
#pragma once

#include <string>

#include "gputrain/checkpoint.hpp"
#include "gputrain/config.hpp"
#include "gputrain/dataset.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/model.hpp"
#include "gputrain/trainer.hpp"

namespace gputrain {

// Reads the configured data set and checks it against the plan (image shape, non-empty sets; the
// readers check labels against plan.num_classes). Engines receive only data that passed here.
// data.val_split > 0: that many training images move to Dataset::val (hold_out_validation).
// `observer` (may be null) hears image-folder loading progress and warnings.
Dataset load_checked_data(const Config& config, const ModelPlan& plan,
                          TrainObserver* observer = nullptr);

// Moves `count` training images, chosen by `seed` alone (the same on every resume), into
// data.val; both keep the images' original order. count ≤ 0: nothing.
void hold_out_validation(Dataset& data, int64_t count, uint64_t seed);

// The input normalization, first that applies: the config's data.mean/std; the one recorded with
// the weights or checkpoint (`recorded`, may be null); the training images' channel statistics.
// `recorded_path` names the file in errors; *source says which rule applied.
Normalization resolve_normalization(const Config& config, const ModelPlan& plan,
                                    const Normalization* recorded, const std::string& recorded_path,
                                    const ImageSet& train, std::string* source = nullptr);

EngineOptions engine_options(const Config& config, const Normalization& normalization,
                             bool use_graph);

// data.augment as the engines and `gputrain preview` apply it, keyed by train.seed.
AugmentSpec augment_spec(const Config& config);

// Parameters the model has (the flat buffer also holds alignment gaps).
size_t weights_in(const ModelPlan& plan);

}  // namespace gputrain
