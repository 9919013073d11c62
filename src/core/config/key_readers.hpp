// The readers and writers of the config keys that have more to check than a type and a range
// (model.input/layers, optimizer.betas/weight_decay, schedule.*, data.val_split/augment,
// train.early_stopping, output.tensorboard):
// functions the schema's rows in schema.cpp name. Slot is what a row's reader is given.
#pragma once

#include <string>
#include <vector>

#include "core/config/yaml_tree.hpp"
#include "gputrain/config.hpp"

namespace gputrain::config_rows {

using config_tree::Context;
using config_tree::Node;

// What a row's reader sees: the key's value (nullptr when absent) and its mapping (nullptr when
// the section is absent), for messages that point at a missing key.
struct Slot {
  const Context& ctx;
  const Node* value;
  const Node* parent;
  std::string path;
};

// model.input: [C, H, W]; model.layers: the list (core/config/layers.cpp reads each layer).
void read_input(const Slot& s, Config& c);
void read_layers(const Slot& s, Config& c);
void read_betas(const Slot& s, Config& c);
// Absent: torch.optim's default for the optimizer (AdamW 0.01, SGD 0).
void read_weight_decay(const Slot& s, Config& c);
void read_val_split(const Slot& s, Config& c);
extern const std::vector<std::string> kEarlyStoppingKeys;
void read_early_stopping(const Slot& s, Config& c);
std::string write_early_stopping(const Config& c);
void read_schedule_type(const Slot& s, Config& c);
void read_step_size(const Slot& s, Config& c);
void read_milestones(const Slot& s, Config& c);
std::string write_milestones(const Config& c);
void read_warmup_epochs(const Slot& s, Config& c);
extern const std::vector<std::string> kAugmentKeys;
void read_augment(const Slot& s, Config& c);
std::string write_augment(const Config& c);
// output.tensorboard: true only in a build with protobuf (GPUTRAIN_WITH_TENSORBOARD).
void read_tensorboard(const Slot& s, Config& c);

}  // namespace gputrain::config_rows
