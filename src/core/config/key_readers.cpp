// See key_readers.hpp.
#include "core/config/key_readers.hpp"

#include <climits>

#include "core/config/layers.hpp"
#include "core/json.hpp"

namespace gputrain::config_rows {

using namespace config_tree;

namespace {

// A list of numbers, each checked by `in_range` (described by `each`), of `size` entries when
// size > 0.
std::vector<double> read_number_list(const Slot& s, size_t size, const std::string& each,
                                     bool (*in_range)(double)) {
  const Node& n = *s.value;
  const std::string expected = size > 0
                                   ? "a list of " + std::to_string(size) + " numbers, each " + each
                                   : "a list of numbers, each " + each;
  if (n.kind != Node::Kind::Seq)
    s.ctx.fail(n, s.path + ": expected " + expected + ", got " + got(n));
  if (size > 0 && n.seq.size() != size)
    s.ctx.fail(
        n, s.path + ": expected " + expected + ", got a list of " + std::to_string(n.seq.size()));
  std::vector<double> out;
  for (size_t i = 0; i < n.seq.size(); ++i)
    out.push_back(read_double(s.ctx, n.seq[i], index_path(s.path, i), each, in_range));
  return out;
}

}  // namespace

void read_input(const Slot& s, Config& c) {
  const Node* input = s.value;
  if (!input || input->kind == Node::Kind::Null)
    s.ctx.fail(s.parent ? s.ctx.where_missing(*s.parent) : s.ctx.source(),
               "missing required key 'model.input' ([C, H, W], the input image shape)");
  if (input->kind != Node::Kind::Seq || input->seq.size() != 3)
    s.ctx.fail(*input, "model.input: expected [C, H, W] (3 integers ≥ 1), got " +
                           (input->kind == Node::Kind::Seq
                                ? "a list of " + std::to_string(input->seq.size())
                                : got(*input)));
  int dims[3];
  for (size_t i = 0; i < 3; ++i)
    dims[i] =
        static_cast<int>(read_int(s.ctx, input->seq[i], index_path("model.input", i), 1, INT_MAX));
  c.model.input_channels = dims[0];
  c.model.input_height = dims[1];
  c.model.input_width = dims[2];
}

void read_layers(const Slot& s, Config& c) {
  if (!s.value || s.value->kind == Node::Kind::Null)
    s.ctx.fail(s.ctx.where_missing(*s.parent),
               "missing required key 'model.layers' (the list of layers)");
  read_layer_list(s.ctx, *s.value, c.model.layers);
}

void read_betas(const Slot& s, Config& c) {
  if (!s.value) return;
  const std::vector<double> b =
      read_number_list(s, 2, "in [0, 1)", [](double x) { return x >= 0 && x < 1; });
  c.optimizer.beta1 = b[0];
  c.optimizer.beta2 = b[1];
}

// Absent: torch.optim's default for the optimizer (AdamW 0.01, SGD 0).
void read_weight_decay(const Slot& s, Config& c) {
  if (!s.value) {
    c.optimizer.weight_decay = c.optimizer.type == "adamw" ? 0.01 : 0.0;
    return;
  }
  c.optimizer.weight_decay =
      read_double(s.ctx, *s.value, s.path, "a number ≥ 0", [](double x) { return x >= 0; });
}

void read_val_split(const Slot& s, Config& c) {
  if (!s.value) return;
  c.data.val_split = read_int(s.ctx, *s.value, s.path, 0, INT64_MAX);
  // The data's own size is checked when it is loaded; a train_limit is known now.
  if (c.data.train_limit > 0 && c.data.val_split >= c.data.train_limit)
    s.ctx.fail(*s.value, s.path + ": " + std::to_string(c.data.val_split) +
                             " held-out images leave none of data.train_limit's " +
                             std::to_string(c.data.train_limit) +
                             " to train on (expected fewer than the training images)");
}

const std::vector<std::string> kEarlyStoppingKeys = {"patience", "min_delta", "monitor"};

// train.early_stopping: {patience: N ≥ 1, min_delta: d ≥ 0 [0], monitor [val_acc with a val
// split, else test_acc]}; absent or null: off.
void read_early_stopping(const Slot& s, Config& c) {
  EarlyStoppingConfig& e = c.train.early_stopping;
  if (!s.value || s.value->kind == Node::Kind::Null) return;
  const Node& n = *s.value;
  if (n.kind != Node::Kind::Map)
    s.ctx.fail(n, s.path + ": expected a mapping of keys (" + join(kEarlyStoppingKeys) + "), got " +
                      got(n));
  check_keys(s.ctx, n, s.path, kEarlyStoppingKeys);
  const Node* patience = optional_value(&n, "patience");
  if (!patience || patience->kind == Node::Kind::Null)
    s.ctx.fail(s.ctx.where_missing(n), "missing required key '" + s.path +
                                           ".patience' (epochs without improvement before "
                                           "stopping)");
  e.patience = int(read_int(s.ctx, *patience, s.path + ".patience", 1, INT_MAX));
  if (const Node* d = optional_value(&n, "min_delta"))
    e.min_delta = read_double(s.ctx, *d, s.path + ".min_delta", "a number ≥ 0",
                              [](double x) { return x >= 0; });
  const bool has_val = c.data.val_split > 0;
  e.monitor = has_val ? "val_acc" : "test_acc";
  if (const Node* m = optional_value(&n, "monitor")) {
    e.monitor = read_choice(s.ctx, *m, s.path + ".monitor", {"val_loss", "val_acc", "test_acc"});
    if (!has_val && e.monitor != "test_acc")
      s.ctx.fail(
          *m, s.path + ".monitor: " + e.monitor + " needs a validation split (data.val_split > 0)");
  }
}

std::string write_early_stopping(const Config& c) {
  const EarlyStoppingConfig& e = c.train.early_stopping;
  if (e.patience == 0) return "";  // null: off
  return "\n    patience: " + std::to_string(e.patience) +
         "\n    min_delta: " + json_number(e.min_delta) + "\n    monitor: " + e.monitor;
}

void read_schedule_type(const Slot& s, Config& c) {
  if (s.value)
    c.schedule.type =
        read_choice(s.ctx, *s.value, s.path, {"constant", "step", "multistep", "cosine"});
}

void read_step_size(const Slot& s, Config& c) {
  if (!s.value) {
    if (c.schedule.type == "step")
      s.ctx.fail(s.parent ? s.ctx.where_missing(*s.parent) : s.ctx.source(),
                 "missing required key 'schedule.step_size' (epochs between decays of "
                 "schedule.type: step)");
    return;
  }
  c.schedule.step_size = int(read_int(s.ctx, *s.value, s.path, 1, INT_MAX));
}

void read_milestones(const Slot& s, Config& c) {
  std::vector<int>& out = c.schedule.milestones;
  out.clear();
  const std::string expected = "a list of epochs ≥ 1, strictly increasing";
  if (!s.value || (s.value->kind == Node::Kind::Seq && s.value->seq.empty())) {
    if (c.schedule.type == "multistep")
      s.ctx.fail(s.value    ? s.ctx.where(*s.value)
                 : s.parent ? s.ctx.where_missing(*s.parent)
                            : s.ctx.source(),
                 "missing required key 'schedule.milestones' (" + expected +
                     ", for schedule.type: multistep)");
    return;
  }
  const Node& n = *s.value;
  if (n.kind != Node::Kind::Seq)
    s.ctx.fail(n, s.path + ": expected " + expected + ", got " + got(n));
  for (size_t i = 0; i < n.seq.size(); ++i) {
    const int m = int(read_int(s.ctx, n.seq[i], index_path(s.path, i), 1, INT_MAX));
    if (!out.empty() && m <= out.back())
      s.ctx.fail(n.seq[i], s.path + ": expected " + expected + ", got " + std::to_string(m) +
                               " after " + std::to_string(out.back()));
    out.push_back(m);
  }
}

std::string write_milestones(const Config& c) {
  std::string out = "[";
  for (size_t i = 0; i < c.schedule.milestones.size(); ++i)
    out += (i ? ", " : "") + std::to_string(c.schedule.milestones[i]);
  return out + "]";
}

void read_warmup_epochs(const Slot& s, Config& c) {
  if (!s.value) return;
  c.schedule.warmup_epochs = read_double(s.ctx, *s.value, s.path, "a number of epochs ≥ 0",
                                         [](double x) { return x >= 0; });
  if (c.schedule.warmup_epochs > double(c.train.epochs))
    s.ctx.fail(*s.value, s.path + ": " + json_number(c.schedule.warmup_epochs) +
                             " epochs of warmup is longer than the run (train.epochs: " +
                             std::to_string(c.train.epochs) + ")");
}

// data.augment: none, or a mapping {crop_padding: P ≥ 0, hflip: bool, hflip_probability: [0, 1]}.
const std::vector<std::string> kAugmentKeys = {"crop_padding", "hflip", "hflip_probability"};

void read_augment(const Slot& s, Config& c) {
  AugmentConfig& a = c.data.augment;
  a = AugmentConfig{};
  const Node* n = s.value;
  if (!n || n->kind == Node::Kind::Null) return;
  if (n->kind == Node::Kind::Scalar && n->scalar == "none") return;
  if (n->kind != Node::Kind::Map)
    s.ctx.fail(*n, s.path + ": expected none or a mapping of keys (" + join(kAugmentKeys) +
                       "), got " + got(*n));
  check_keys(s.ctx, *n, s.path, kAugmentKeys);
  if (const Node* v = optional_value(n, "crop_padding"))
    a.crop_padding = static_cast<int>(read_int(s.ctx, *v, s.path + ".crop_padding", 0, 1 << 20));
  if (const Node* v = optional_value(n, "hflip")) a.hflip = read_bool(s.ctx, *v, s.path + ".hflip");
  if (const Node* v = optional_value(n, "hflip_probability"))
    a.hflip_probability =
        read_double(s.ctx, *v, s.path + ".hflip_probability", "a number in [0, 1]",
                    [](double x) { return x >= 0 && x <= 1; });
}

std::string write_augment(const Config& c) {
  const AugmentConfig& a = c.data.augment;
  if (!a.enabled()) return "none";
  return "\n    crop_padding: " + std::to_string(a.crop_padding) +
         "\n    hflip: " + (a.hflip ? "true" : "false") +
         "\n    hflip_probability: " + json_number(a.hflip_probability);
}

void read_tensorboard(const Slot& s, Config& c) {
  if (!s.value) return;
  c.output_tensorboard = read_bool(s.ctx, *s.value, s.path);
#ifndef GPUTRAIN_WITH_TENSORBOARD
  if (c.output_tensorboard)
    s.ctx.fail(*s.value, s.path +
                             ": this gputrain was built without protobuf, expected false (install "
                             "libprotobuf-dev and protobuf-compiler, then rebuild)");
#endif
}

}  // namespace gputrain::config_rows
