// gputrain's config keys, one row each: where the key lives, how it is read from the YAML tree
// (type, range and messages), how it is written back (config.yaml, checkpoints), whether --set may
// index it as a list, and whether --resume may change it. Validation, --set path checks, to_yaml
// and the resume check all walk this table; adding a key is one row here plus its use.
// Defaults are the member initializers in include/gputrain/config.hpp: an absent key leaves them.
#include <algorithm>
#include <climits>
#include <functional>
#include <sstream>

#include "core/config/key_readers.hpp"
#include "core/config/layers.hpp"
#include "core/config/yaml_tree.hpp"
#include "core/json.hpp"
#include "gputrain/config.hpp"
#include "gputrain/errors.hpp"

namespace gputrain {

namespace {

using namespace config_tree;
using namespace config_rows;

struct KeyRow {
  std::string section;  // "model", "data", …; empty for a top-level key (device)
  std::string key;
  bool list = false;  // a list: --set may address its entries by index (model.layers.2.kernel)
  // --resume: kMustMatch, or may_change_on_resume(n) (n orders the keys in the mismatch message).
  int resume_may_change = 0;
  std::function<void(const Slot&, Config&)> read;
  std::function<std::string(const Config&)> write;  // the YAML value; "\n…" for a block
  // A mapping-valued key: its keys, which --set may address (train.early_stopping.patience,
  // data.augment.crop_padding).
  std::vector<std::string> sub_keys = {};

  std::string path() const { return section.empty() ? key : section + "." + key; }
};

constexpr int kMustMatch = 0;
constexpr int may_change_on_resume(int message_order) {
  return message_order;
}

// Rows name their field once, through an accessor used for reading and writing alike.
template <typename T>
using Field = T& (*)(Config&);
template <typename T>
const T& get(Field<T> f, const Config& c) {
  return f(const_cast<Config&>(c));  // read only: the accessor is shared with the reader
}

KeyRow int_row(std::string section, std::string key, Field<int> f, int64_t min,
               int resume = kMustMatch) {
  return {section,
          key,
          false,
          resume,
          [f, min](const Slot& s, Config& c) {
            if (s.value) f(c) = static_cast<int>(read_int(s.ctx, *s.value, s.path, min, INT_MAX));
          },
          [f](const Config& c) { return std::to_string(get(f, c)); }};
}

KeyRow int64_row(std::string section, std::string key, Field<int64_t> f, int64_t min) {
  return {section,
          key,
          false,
          kMustMatch,
          [f, min](const Slot& s, Config& c) {
            if (s.value) f(c) = read_int(s.ctx, *s.value, s.path, min, INT64_MAX);
          },
          [f](const Config& c) { return std::to_string(get(f, c)); }};
}

KeyRow uint64_row(std::string section, std::string key, Field<uint64_t> f) {
  return {section,
          key,
          false,
          kMustMatch,
          [f](const Slot& s, Config& c) {
            if (s.value) f(c) = read_uint64(s.ctx, *s.value, s.path);
          },
          [f](const Config& c) { return std::to_string(get(f, c)); }};
}

KeyRow number_row(std::string section, std::string key, Field<double> f, std::string expected,
                  bool (*in_range)(double)) {
  return {section,
          key,
          false,
          kMustMatch,
          [f, expected, in_range](const Slot& s, Config& c) {
            if (s.value) f(c) = read_double(s.ctx, *s.value, s.path, expected, in_range);
          },
          [f](const Config& c) { return json_number(get(f, c)); }};
}

KeyRow bool_row(std::string section, std::string key, Field<bool> f, int resume = kMustMatch) {
  return {section,
          key,
          false,
          resume,
          [f](const Slot& s, Config& c) {
            if (s.value) f(c) = read_bool(s.ctx, *s.value, s.path);
          },
          [f](const Config& c) { return std::string(get(f, c) ? "true" : "false"); }};
}

// A non-empty string; `required_why` set: the key must be present.
KeyRow string_row(std::string section, std::string key, Field<std::string> f, std::string expected,
                  std::string required_why, int resume) {
  return {section,
          key,
          false,
          resume,
          [f, expected, required_why](const Slot& s, Config& c) {
            if (!s.value && !required_why.empty())
              s.ctx.fail(s.parent ? s.ctx.where_missing(*s.parent) : s.ctx.source(),
                         "missing required key '" + s.path + "' (" + required_why + ")");
            if (s.value) f(c) = read_string(s.ctx, *s.value, s.path, expected);
          },
          [f](const Config& c) { return json_quote(get(f, c)); }};
}

// data.mean / data.std: "auto" or one number per channel of model.input (read before).
KeyRow normalization_row(std::string key, Field<std::vector<float>> f, bool positive) {
  return {"data",
          key,
          true,
          kMustMatch,
          [f, positive](const Slot& s, Config& c) {
            std::vector<float>& out = f(c);
            out.clear();
            const Node* n = s.value;
            if (!n) return;
            const int channels = c.model.input_channels;
            std::string expected = std::string("auto or a list of ") + std::to_string(channels) +
                                   (positive ? " numbers > 0" : " numbers") +
                                   " (one per channel of model.input)";
            if (n->kind == Node::Kind::Scalar && n->scalar == "auto") return;
            if (n->kind != Node::Kind::Seq)
              s.ctx.fail(*n, s.path + ": expected " + expected + ", got " + got(*n));
            if (n->seq.size() != size_t(channels))
              s.ctx.fail(*n, s.path + ": expected " + expected + ", got a list of " +
                                 std::to_string(n->seq.size()));
            for (size_t i = 0; i < n->seq.size(); ++i)
              out.push_back(read_float(s.ctx, n->seq[i], index_path(s.path, i),
                                       positive ? "a number > 0" : "a number",
                                       [&](float v) { return !positive || v > 0; }));
          },
          [f](const Config& c) {
            const std::vector<float>& v = get(f, c);
            if (v.empty()) return std::string("auto");
            std::string out = "[";
            for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + json_number(v[i]);
            return out + "]";
          }};
}

bool is_cuda_index(const std::string& s) {
  return s.size() > 5 && s.size() <= 5 + 9 && s.compare(0, 5, "cuda:") == 0 &&
         is_digits(s.substr(5));
}

// The table. Order matters: it is the order of validation (data.mean needs model.input; nesterov
// needs momentum), of messages listing keys, and of config.yaml.
const std::vector<KeyRow>& rows() {
  static const std::vector<KeyRow> table = {
      {"model", "input", true, kMustMatch, read_input,
       [](const Config& c) {
         return "[" + std::to_string(c.model.input_channels) + ", " +
                std::to_string(c.model.input_height) + ", " + std::to_string(c.model.input_width) +
                "]";
       }},
      {"model", "layers", true, kMustMatch, read_layers,
       [](const Config& c) {
         std::string out;
         for (const LayerConfig& l : c.model.layers) out += "\n    - " + write_layer(l);
         return out;
       }},
      {"data", "format", false, kMustMatch,
       [](const Slot& s, Config& c) {
         if (!s.value) return;
         const std::string f = read_choice(s.ctx, *s.value, s.path, {"idx", "cifar10", "folder"});
         c.data.format = f == "idx"       ? DataFormat::Idx
                         : f == "cifar10" ? DataFormat::Cifar10
                                          : DataFormat::Folder;
       },
       [](const Config& c) {
         return std::string(c.data.format == DataFormat::Idx       ? "idx"
                            : c.data.format == DataFormat::Cifar10 ? "cifar10"
                                                                   : "folder");
       }},
      string_row(
          "data", "dir", [](Config& c) -> std::string& { return c.data.dir; }, "a folder path",
          "the folder with the data files", may_change_on_resume(7)),
      int64_row(
          "data", "train_limit", [](Config& c) -> int64_t& { return c.data.train_limit; }, 0),
      int64_row(
          "data", "test_limit", [](Config& c) -> int64_t& { return c.data.test_limit; }, 0),
      normalization_row(
          "mean", [](Config& c) -> std::vector<float>& { return c.data.mean; }, false),
      normalization_row(
          "std", [](Config& c) -> std::vector<float>& { return c.data.std; }, true),
      bool_row("data", "resize", [](Config& c) -> bool& { return c.data.resize; }),
      bool_row("data", "skip_bad_images",
               [](Config& c) -> bool& { return c.data.skip_bad_images; }),
      {"data", "val_split", false, kMustMatch, read_val_split,
       [](const Config& c) { return std::to_string(c.data.val_split); }},
      {"data", "augment", false, kMustMatch, read_augment, write_augment, kAugmentKeys},
      {"optimizer", "type", false, kMustMatch,
       [](const Slot& s, Config& c) {
         if (s.value) c.optimizer.type = read_choice(s.ctx, *s.value, s.path, {"sgd", "adamw"});
       },
       [](const Config& c) { return c.optimizer.type; }},
      number_row(
          "optimizer", "lr", [](Config& c) -> double& { return c.optimizer.lr; }, "a number > 0",
          [](double x) { return x > 0; }),
      number_row(
          "optimizer", "momentum", [](Config& c) -> double& { return c.optimizer.momentum; },
          "a number in [0, 1)", [](double x) { return x >= 0 && x < 1; }),
      {"optimizer", "weight_decay", false, kMustMatch, read_weight_decay,
       [](const Config& c) { return json_number(c.optimizer.weight_decay); }},
      {"optimizer", "nesterov", false, kMustMatch,
       [](const Slot& s, Config& c) {
         if (!s.value) return;
         c.optimizer.nesterov = read_bool(s.ctx, *s.value, s.path);
         // torch.optim.SGD refuses this too: Nesterov momentum without momentum is meaningless.
         if (c.optimizer.nesterov && !(c.optimizer.momentum > 0))
           s.ctx.fail(*s.value,
                      "optimizer.nesterov: true needs optimizer.momentum > 0 (momentum is " +
                          json_number(c.optimizer.momentum) + ")");
       },
       [](const Config& c) { return std::string(c.optimizer.nesterov ? "true" : "false"); }},
      {"optimizer", "betas", true, kMustMatch, read_betas,
       [](const Config& c) {
         return "[" + json_number(c.optimizer.beta1) + ", " + json_number(c.optimizer.beta2) + "]";
       }},
      number_row(
          "optimizer", "eps", [](Config& c) -> double& { return c.optimizer.eps; }, "a number > 0",
          [](double x) { return x > 0; }),
      number_row(
          "optimizer", "grad_clip", [](Config& c) -> double& { return c.optimizer.grad_clip; },
          "a number ≥ 0 (0: off)", [](double x) { return x >= 0; }),
      bool_row("optimizer", "decay_norm_and_bias",
               [](Config& c) -> bool& { return c.optimizer.decay_norm_and_bias; }),
      int_row(
          "train", "epochs", [](Config& c) -> int& { return c.train.epochs; }, 1,
          may_change_on_resume(1)),
      int_row(
          "train", "batch_size", [](Config& c) -> int& { return c.train.batch_size; }, 1),
      uint64_row("train", "seed", [](Config& c) -> uint64_t& { return c.train.seed; }),
      bool_row("train", "shuffle", [](Config& c) -> bool& { return c.train.shuffle; }),
      bool_row(
          "train", "deterministic", [](Config& c) -> bool& { return c.train.deterministic; },
          may_change_on_resume(6)),
      int_row(
          "train", "log_interval", [](Config& c) -> int& { return c.train.log_interval; }, 1,
          may_change_on_resume(5)),
      int_row(
          "train", "threads", [](Config& c) -> int& { return c.train.threads; }, 0,
          may_change_on_resume(4)),
      {"train", "early_stopping", false, kMustMatch, read_early_stopping, write_early_stopping,
       kEarlyStoppingKeys},
      // Must match on resume: it changes the numerics of every step, so a run resumed in another
      // mode would be neither run's numbers (start a new run from the weights with --init).
      {"train", "precision", false, kMustMatch,
       [](const Slot& s, Config& c) {
         if (!s.value) return;
         const std::string p = read_choice(s.ctx, *s.value, s.path, {"fp32", "tf32", "bf16"});
         c.train.precision = p == "tf32"   ? Precision::Tf32
                             : p == "bf16" ? Precision::Bf16
                                           : Precision::Fp32;
       },
       [](const Config& c) { return std::string(precision_key(c.train.precision)); }},
      {"schedule", "type", false, kMustMatch, read_schedule_type,
       [](const Config& c) { return c.schedule.type; }},
      {"schedule", "step_size", false, kMustMatch, read_step_size,
       [](const Config& c) { return std::to_string(c.schedule.step_size); }},
      number_row(
          "schedule", "gamma", [](Config& c) -> double& { return c.schedule.gamma; },
          "a number > 0", [](double x) { return x > 0; }),
      {"schedule", "milestones", true, kMustMatch, read_milestones, write_milestones},
      number_row(
          "schedule", "eta_min", [](Config& c) -> double& { return c.schedule.eta_min; },
          "a number ≥ 0", [](double x) { return x >= 0; }),
      {"schedule", "warmup_epochs", false, kMustMatch, read_warmup_epochs,
       [](const Config& c) { return json_number(c.schedule.warmup_epochs); }},
      number_row(
          "schedule", "warmup_start_factor",
          [](Config& c) -> double& { return c.schedule.warmup_start_factor; }, "a number in (0, 1]",
          [](double x) { return x > 0 && x <= 1; }),
      number_row(
          "loss", "label_smoothing", [](Config& c) -> double& { return c.loss.label_smoothing; },
          "a number in [0, 1)", [](double x) { return x >= 0 && x < 1; }),
      string_row(
          "output", "dir", [](Config& c) -> std::string& { return c.output_dir; }, "a folder path",
          "", may_change_on_resume(2)),
      bool_row(
          "output", "curves", [](Config& c) -> bool& { return c.output_curves; },
          may_change_on_resume(8)),
      {"output", "tensorboard", false, may_change_on_resume(9), read_tensorboard,
       [](const Config& c) { return std::string(c.output_tensorboard ? "true" : "false"); }},
      {"", "device", false, may_change_on_resume(3),
       [](const Slot& s, Config& c) {
         if (!s.value) return;
         const Node& n = *s.value;
         if (n.kind != Node::Kind::Scalar || !valid_device(n.scalar))
           s.ctx.fail(n, s.path + ": expected one of auto, cpu, cuda, cuda:N, got " + got(n));
         c.device = n.scalar;
       },
       [](const Config& c) { return c.device; }},
  };
  return table;
}

// Top-level names in table order: the sections, then top-level keys, each once.
std::vector<std::string> top_level_names() {
  std::vector<std::string> names;
  for (const KeyRow& r : rows()) {
    const std::string& name = r.section.empty() ? r.key : r.section;
    if (!contains(names, name)) names.push_back(name);
  }
  return names;
}

bool is_section(const std::string& name) {
  for (const KeyRow& r : rows())
    if (r.section == name && !name.empty()) return true;
  return false;
}

std::vector<std::string> section_keys(const std::string& section) {
  std::vector<std::string> keys;
  for (const KeyRow& r : rows())
    if (r.section == section) keys.push_back(r.key);
  return keys;
}

const KeyRow* find_row(const std::string& section, const std::string& key) {
  for (const KeyRow& r : rows())
    if (r.section == section && r.key == key) return &r;
  return nullptr;
}

bool is_list_path(const std::string& path) {
  for (const KeyRow& r : rows())
    if (r.list && r.path() == path) return true;
  return false;
}

const Node* section_node(const Context& ctx, const Node& root, const std::string& name) {
  const MapEntry* e = find_entry(root, name);
  if (!e || e->value.kind == Node::Kind::Null) return nullptr;
  if (e->value.kind != Node::Kind::Map)
    ctx.fail(e->value, name + ": expected a mapping of keys (" + join(section_keys(name)) +
                           "), got " + got(e->value));
  check_keys(ctx, e->value, name, section_keys(name));
  return &e->value;
}

Config validate(const Context& ctx, const Node& root) {
  Config c;
  c.source = ctx.source();
  check_keys(ctx, root, "", top_level_names());
  std::string current;
  const Node* section = nullptr;
  for (const KeyRow& r : rows()) {
    if (!r.section.empty() && r.section != current) {
      current = r.section;
      section = section_node(ctx, root, current);
    }
    const Node* parent = r.section.empty() ? &root : section;
    r.read(Slot{ctx, optional_value(parent, r.key), parent, r.path()}, c);
  }
  return c;
}

// Checks `parts` against the schema before touching the tree, so that a typo is reported as an
// unknown key rather than silently creating one.
void check_override_path(const Context& ctx, const std::string& where,
                         const std::vector<std::string>& parts) {
  auto unknown = [&](size_t upto, const std::vector<std::string>& known) {
    std::string key;
    for (size_t i = 0; i <= upto; ++i) key += (i ? "." : "") + parts[i];
    ctx.fail(where, "unknown key '" + key + "'" +
                        (known.empty() ? std::string() : " (known: " + join(known) + ")"));
  };
  const std::vector<std::string> top = top_level_names();
  if (!contains(top, parts[0])) unknown(0, top);
  if (parts.size() == 1) return;
  if (!is_section(parts[0])) unknown(1, {});  // a top-level key (device) has no sub-keys
  const KeyRow* row = find_row(parts[0], parts[1]);
  if (!row) unknown(1, section_keys(parts[0]));
  if (parts.size() == 2) return;
  if (!row->sub_keys.empty()) {
    if (!contains(row->sub_keys, parts[2])) unknown(2, row->sub_keys);
    if (parts.size() > 3) unknown(3, {});
    return;
  }
  if (!row->list || !is_digits(parts[2])) unknown(2, {});
  if (parts.size() == 3) return;
  if (row->path() != "model.layers") unknown(3, {});
  const std::vector<std::string> layer_keys = all_layer_keys();
  if (!contains(layer_keys, parts[3])) unknown(3, layer_keys);
  if (parts.size() > 4) unknown(4, {});
}

// config.yaml; with `for_resume`, only the keys that must match on --resume.
std::string write_yaml(const Config& c, bool for_resume) {
  std::string y, current;
  for (const KeyRow& r : rows()) {
    if (for_resume && r.resume_may_change) continue;
    if (r.section != current) {
      current = r.section;
      if (!current.empty()) y += current + ":\n";
    }
    const std::string value = r.write(c);
    y += (r.section.empty() ? "" : "  ") + r.key + ":" +
         (value.empty() || value[0] == '\n' ? "" : " ") + value + "\n";
  }
  return y;
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  Context ctx(source_name, overrides);
  Node root = parse_tree(yaml_text, ctx);
  if (root.kind == Node::Kind::Null) {
    root.kind = Node::Kind::Map;
  } else if (root.kind != Node::Kind::Map) {
    ctx.fail(root, "expected a mapping of sections (" + join(top_level_names()) +
                       ") at the top level, got " + got(root));
  }
  for (size_t i = 0; i < overrides.size(); ++i) {
    const OverrideText o = split_override(ctx, int(i));
    check_override_path(ctx, "--set " + overrides[i], o.parts);
    apply_override(ctx, root, int(i), o, is_list_path);
  }
  return validate(ctx, root);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_config(read_text_file(path), path, overrides);
}

std::string to_yaml(const Config& config) {
  return write_yaml(config, false);
}

void check_resume_compatible(const Config& now, const std::string& checkpoint_config_yaml,
                             const std::string& checkpoint_path) {
  const Config then = parse_config(checkpoint_config_yaml, checkpoint_path + " (its config)");
  // train.epochs may change on resume, except under a cosine schedule: its length is the run's
  // total number of steps, so every learning rate still to come would change.
  if (now.schedule.type == "cosine" && then.schedule.type == "cosine" &&
      now.train.epochs != then.train.epochs)
    throw ConfigError(now.source + ": train.epochs: cannot change from " +
                      std::to_string(then.train.epochs) + " to " +
                      std::to_string(now.train.epochs) + " when resuming '" + checkpoint_path +
                      "': schedule.type is cosine, whose length is the run's total steps, so the "
                      "schedule's length would change (start a new run with --init instead)");
  const std::string a = write_yaml(then, true), b = write_yaml(now, true);
  if (a == b) return;
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  while (std::getline(sa, la) && std::getline(sb, lb))
    if (la != lb) break;
  auto trim = [](std::string s) { return s.erase(0, s.find_first_not_of(' ')); };
  std::vector<const KeyRow*> free;
  for (const KeyRow& r : rows())
    if (r.resume_may_change) free.push_back(&r);
  std::sort(free.begin(), free.end(), [](const KeyRow* x, const KeyRow* y) {
    return x->resume_may_change < y->resume_may_change;
  });
  std::string may_change;
  for (size_t i = 0; i < free.size(); ++i)
    may_change += (i == 0 ? "" : i + 1 == free.size() ? " and " : ", ") + free[i]->path();
  throw ConfigError(now.source + ": does not match the checkpoint '" + checkpoint_path +
                    "': the checkpoint has '" + trim(la) + "', the config '" + trim(lb) +
                    "' (only " + may_change + " may change on resume)");
}

bool valid_device(const std::string& device) {
  return device == "auto" || device == "cpu" || device == "cuda" || is_cuda_index(device);
}

std::vector<std::string> config_key_paths() {
  std::vector<std::string> paths;
  for (const KeyRow& r : rows()) paths.push_back(r.path());
  return paths;
}

}  // namespace gputrain
