// Config loading: YAML text → a small tree of our own (every node remembers its line, or the --set
// that produced it) → overrides applied to that tree → one validation pass into Config. Converting
// first keeps yaml-cpp's reference-semantics nodes out of the mutation code and lets every message
// say where a value came from.
#include "gputrain/config.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/json.hpp"
#include "core/message.hpp"
#include "gputrain/errors.hpp"

namespace gputrain {

namespace {

constexpr int kMaxDepth = 32;

struct MapEntry;

struct Node {
  enum class Kind { Null, Scalar, Seq, Map };
  Kind kind = Kind::Null;
  std::string scalar;
  bool quoted = false;  // "…" or '…': a string, never a number or a boolean
  std::vector<Node> seq;
  std::vector<MapEntry> map;
  int line = 0;       // 1-based line in the file; 0 = none
  int key_line = 0;   // the line of the key whose value this is ("model:"), 0 = none
  int from_set = -1;  // index of the --set override that produced this node; -1 = the file
};

struct MapEntry {
  std::string key;
  int key_line = 0;
  Node value;
};

const MapEntry* find_entry(const Node& map, const std::string& key) {
  for (const auto& e : map.map)
    if (e.key == key) return &e;
  return nullptr;
}

MapEntry* find_entry(Node& map, const std::string& key) {
  for (auto& e : map.map)
    if (e.key == key) return &e;
  return nullptr;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

bool is_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string index_path(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

// ---- the schema ----

const std::vector<std::string> kSections = {"model", "data",   "optimizer",
                                            "train", "output", "device"};
const std::vector<std::string> kModelKeys = {"input", "layers"};
const std::vector<std::string> kDataKeys = {"format",     "dir",  "train_limit",
                                            "test_limit", "mean", "std"};
const std::vector<std::string> kOptimizerKeys = {"type", "lr", "momentum", "weight_decay",
                                                 "nesterov"};
const std::vector<std::string> kTrainKeys = {"epochs",        "batch_size",   "seed",   "shuffle",
                                             "deterministic", "log_interval", "threads"};
const std::vector<std::string> kOutputKeys = {"dir"};
const std::vector<std::string> kLayerTypes = {"conv2d", "relu", "maxpool2d", "flatten", "linear"};
const std::vector<std::string> kAllLayerKeys = {"type",   "name",    "out_channels", "kernel",
                                                "stride", "padding", "out_features"};

const std::vector<std::string>* section_keys(const std::string& section) {
  if (section == "model") return &kModelKeys;
  if (section == "data") return &kDataKeys;
  if (section == "optimizer") return &kOptimizerKeys;
  if (section == "train") return &kTrainKeys;
  if (section == "output") return &kOutputKeys;
  return nullptr;
}

std::vector<std::string> layer_keys(LayerKind kind) {
  switch (kind) {
    case LayerKind::Conv2d:
      return {"type", "name", "out_channels", "kernel", "stride", "padding"};
    case LayerKind::MaxPool2d:
      return {"type", "kernel", "stride"};
    case LayerKind::Linear:
      return {"type", "name", "out_features"};
    case LayerKind::Relu:
    case LayerKind::Flatten:
      return {"type"};
  }
  return {"type"};
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// ---- locations and messages ----

class Context {
 public:
  Context(std::string source, const std::vector<std::string>& overrides)
      : source_(std::move(source)), overrides_(overrides) {}

  const std::string& source() const { return source_; }
  const std::string& override_text(int i) const { return overrides_[size_t(i)]; }

  std::string where(const Node& n) const {
    if (n.from_set >= 0) return "--set " + overrides_[size_t(n.from_set)];
    if (n.line > 0) return source_ + ":" + std::to_string(n.line);
    return source_;
  }
  std::string where_key(const MapEntry& e) const {
    if (e.value.from_set >= 0) return where(e.value);
    if (e.key_line > 0) return source_ + ":" + std::to_string(e.key_line);
    return source_;
  }
  // A key that is absent has no line of its own: point at its mapping ("model:", or the layer's
  // entry) when that is in the file.
  std::string where_missing(const Node& parent) const {
    if (parent.from_set >= 0) return source_;
    int line = parent.key_line > 0 ? parent.key_line : parent.line;
    return line > 0 ? source_ + ":" + std::to_string(line) : source_;
  }

  [[noreturn]] void fail(const std::string& where, const std::string& msg) const {
    throw ConfigError(one_line(where + ": " + msg));
  }
  [[noreturn]] void fail(const Node& n, const std::string& msg) const { fail(where(n), msg); }

 private:
  std::string source_;
  const std::vector<std::string>& overrides_;
};

// ---- YAML → Node ----

int mark_line(const YAML::Mark& m) {
  return m.line >= 0 ? m.line + 1 : 0;
}

Node convert(const YAML::Node& y, const Context& ctx, const std::string& path, int from_set,
             int depth) {
  Node n;
  n.from_set = from_set;
  if (from_set < 0) n.line = mark_line(y.Mark());
  if (depth > kMaxDepth)
    ctx.fail(ctx.where(n), "nesting deeper than " + std::to_string(kMaxDepth) + " levels");
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      n.kind = Node::Kind::Null;
      break;
    case YAML::NodeType::Scalar:
      n.kind = Node::Kind::Scalar;
      n.scalar = y.Scalar();
      n.quoted = y.Tag() == "!";
      break;
    case YAML::NodeType::Sequence: {
      n.kind = Node::Kind::Seq;
      size_t i = 0;
      for (const auto& item : y) {
        n.seq.push_back(convert(item, ctx, index_path(path, i), from_set, depth + 1));
        ++i;
      }
      break;
    }
    case YAML::NodeType::Map:
      n.kind = Node::Kind::Map;
      for (const auto& kv : y) {
        MapEntry e;
        if (from_set < 0) e.key_line = mark_line(kv.first.Mark());
        if (!kv.first.IsScalar()) {
          std::string at = from_set >= 0 ? "--set " + ctx.override_text(from_set)
                                         : ctx.source() + ":" + std::to_string(e.key_line);
          ctx.fail(at, (path.empty() ? std::string("a") : path + ": a") +
                           " key must be a plain name, not a list or mapping");
        }
        e.key = kv.first.Scalar();
        std::string key_path = path.empty() ? e.key : path + "." + e.key;
        if (const MapEntry* first = find_entry(n, e.key)) {
          std::string at = from_set >= 0 ? "--set " + ctx.override_text(from_set)
                                         : ctx.source() + ":" + std::to_string(e.key_line);
          ctx.fail(at, "duplicate key '" + key_path + "'" +
                           (first->key_line > 0
                                ? " (first at line " + std::to_string(first->key_line) + ")"
                                : ""));
        }
        e.value = convert(kv.second, ctx, key_path, from_set, depth + 1);
        // An empty value ("epochs:") is marked where the next token starts; its key is the place.
        if (e.value.line == 0 || e.value.kind == Node::Kind::Null) e.value.line = e.key_line;
        e.value.key_line = e.key_line;
        n.map.push_back(std::move(e));
      }
      break;
  }
  return n;
}

YAML::Node load_yaml(const std::string& text, const std::string& where_prefix) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    std::string at = where_prefix;
    if (!e.mark.is_null() && where_prefix.rfind("--set ", 0) != 0)
      at += ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1);
    throw ConfigError(one_line(at + ": YAML syntax error: " + e.msg));
  }
}

// ---- scalar readers ----

std::string got(const Node& n) {
  switch (n.kind) {
    case Node::Kind::Null:
      return "nothing";
    case Node::Kind::Seq:
      return "a list";
    case Node::Kind::Map:
      return "a mapping";
    case Node::Kind::Scalar:
      break;
  }
  std::string s = n.scalar;
  if (s.size() > 40) {
    size_t cut = 40;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // whole UTF-8
    s = s.substr(0, cut) + "...";
  }
  return "'" + s + "'" + (n.quoted ? " (a quoted string)" : "");
}

bool plain_scalar(const Node& n) {
  return n.kind == Node::Kind::Scalar && !n.quoted;
}

// YAML 1.2 core schema integers, decimal only: [-+]?[0-9]+.
// `overflow`: more than 64 bits of magnitude.
bool parse_integer_text(const std::string& s, bool& negative, uint64_t& magnitude, bool& overflow) {
  size_t i = 0;
  negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  if (!is_digits(s.substr(i))) return false;
  auto r = std::from_chars(s.data() + i, s.data() + s.size(), magnitude);
  overflow = r.ec == std::errc::result_out_of_range;
  if (overflow) magnitude = UINT64_MAX;
  return true;
}

// YAML 1.2 core schema floats without .inf/.nan:
// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
template <typename T>
bool parse_number_text(const std::string& s, T& out) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  size_t digits = 0;
  size_t j = i;
  while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j, ++digits;
  if (j < s.size() && s[j] == '.') {
    ++j;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j, ++digits;
  }
  if (digits == 0) return false;
  if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
    ++j;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    size_t exp_digits = 0;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  if (j != s.size()) return false;
  // from_chars takes no '+', and is locale independent (strtod is not).
  size_t start = s[0] == '+' ? 1 : 0;
  auto r = std::from_chars(s.data() + start, s.data() + s.size(), out);
  if (r.ec == std::errc::result_out_of_range) {
    // Underflow rounds to zero harmlessly; overflow is an infinity, which no key accepts.
    size_t e = s.find_first_of("eE");
    if (e != std::string::npos && e + 1 < s.size() && s[e + 1] == '-') {
      out = 0;
      return true;
    }
    out = std::numeric_limits<T>::infinity();
    return true;
  }
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

int64_t read_int(const Context& ctx, const Node& n, const std::string& path, int64_t min,
                 int64_t max) {
  std::string expected = "expected an integer ≥ " + std::to_string(min);
  bool negative, overflow;
  uint64_t magnitude;
  if (!plain_scalar(n) || !parse_integer_text(n.scalar, negative, magnitude, overflow))
    ctx.fail(n, path + ": " + expected + ", got " + got(n));
  if (negative && magnitude > 0) {
    if (min >= 0 || overflow || magnitude > uint64_t(-(min + 1)) + 1)
      ctx.fail(n, path + ": " + expected + ", got " + got(n));
    return -static_cast<int64_t>(magnitude - 1) - 1;
  }
  if (overflow || magnitude > static_cast<uint64_t>(max))
    ctx.fail(n, path + ": " + expected + " and ≤ " + std::to_string(max) + ", got " + got(n));
  int64_t v = static_cast<int64_t>(magnitude);
  if (v < min) ctx.fail(n, path + ": " + expected + ", got " + got(n));
  return v;
}

uint64_t read_uint64(const Context& ctx, const Node& n, const std::string& path) {
  bool negative, overflow;
  uint64_t magnitude;
  if (!plain_scalar(n) || !parse_integer_text(n.scalar, negative, magnitude, overflow) ||
      (negative && magnitude != 0))
    ctx.fail(n, path + ": expected an integer ≥ 0, got " + got(n));
  if (overflow)
    ctx.fail(n, path + ": expected an integer ≥ 0 and ≤ " + std::to_string(UINT64_MAX) + ", got " +
                    got(n));
  return magnitude;
}

// `expected` describes the accepted range ("a number > 0"); `ok` checks it.
template <typename T, typename Check>
T read_number(const Context& ctx, const Node& n, const std::string& path,
              const std::string& expected, Check ok) {
  T v = 0;
  if (!plain_scalar(n) || !parse_number_text(n.scalar, v) || !std::isfinite(v) || !ok(v))
    ctx.fail(n, path + ": expected " + expected + ", got " + got(n));
  return v;
}

bool read_bool(const Context& ctx, const Node& n, const std::string& path) {
  if (plain_scalar(n)) {
    const std::string& s = n.scalar;
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  ctx.fail(n, path + ": expected true or false, got " + got(n));
}

std::string read_string(const Context& ctx, const Node& n, const std::string& path,
                        const std::string& expected) {
  if (n.kind != Node::Kind::Scalar || n.scalar.empty())
    ctx.fail(n, path + ": expected " + expected + ", got " + got(n));
  return n.scalar;
}

std::string read_choice(const Context& ctx, const Node& n, const std::string& path,
                        const std::vector<std::string>& choices) {
  std::string expected = "one of " + join(choices);
  if (n.kind != Node::Kind::Scalar || !contains(choices, n.scalar))
    ctx.fail(n, path + ": expected " + expected + ", got " + got(n));
  return n.scalar;
}

// ---- mappings ----

// Rejects keys outside `known`; a null section counts as an empty one.
void check_keys(const Context& ctx, const Node& map, const std::string& path,
                const std::vector<std::string>& known, const std::string& known_label = "known") {
  for (const MapEntry& e : map.map)
    if (!contains(known, e.key))
      ctx.fail(ctx.where_key(e), "unknown key '" + (path.empty() ? e.key : path + "." + e.key) +
                                     "' (" + known_label + ": " + join(known) + ")");
}

const Node* section(const Context& ctx, const Node& root, const std::string& name) {
  const MapEntry* e = find_entry(root, name);
  if (!e || e->value.kind == Node::Kind::Null) return nullptr;
  if (e->value.kind != Node::Kind::Map)
    ctx.fail(e->value, name + ": expected a mapping of keys (" + join(*section_keys(name)) +
                           "), got " + got(e->value));
  check_keys(ctx, e->value, name, *section_keys(name));
  return &e->value;
}

const Node* optional_value(const Node* map, const std::string& key) {
  if (!map) return nullptr;
  const MapEntry* e = find_entry(*map, key);
  return e ? &e->value : nullptr;
}

// ---- the model ----

void read_layer(const Context& ctx, const Node& n, const std::string& path, LayerConfig& layer) {
  if (n.kind != Node::Kind::Map)
    ctx.fail(n, path + ": expected a mapping like {type: relu}, got " + got(n));
  layer.source_line = n.from_set < 0 ? n.line : 0;
  const MapEntry* type = find_entry(n, "type");
  if (!type)
    ctx.fail(ctx.where_missing(n),
             "missing required key '" + path + ".type' (one of " + join(kLayerTypes) + ")");
  std::string t = read_choice(ctx, type->value, path + ".type", kLayerTypes);
  layer.kind = t == "conv2d"      ? LayerKind::Conv2d
               : t == "relu"      ? LayerKind::Relu
               : t == "maxpool2d" ? LayerKind::MaxPool2d
               : t == "flatten"   ? LayerKind::Flatten
                                  : LayerKind::Linear;
  std::vector<std::string> allowed = layer_keys(layer.kind);
  check_keys(ctx, n, path, allowed, "known for " + t);

  auto required = [&](const std::string& key) -> const Node& {
    const MapEntry* e = find_entry(n, key);
    if (!e) {
      std::vector<std::string> needed;
      for (const auto& k : allowed)
        if (k != "type" && k != "stride" && k != "padding") needed.push_back(k);
      ctx.fail(ctx.where_missing(n), "missing required key '" + path + "." + key + "' (" + t +
                                         " needs " + join(needed) + ")");
    }
    return e->value;
  };
  auto positive = [&](const std::string& key, int64_t min) {
    return static_cast<int>(read_int(ctx, required(key), path + "." + key, min, INT_MAX));
  };
  auto optional_int = [&](const std::string& key, int64_t min, int fallback) {
    const MapEntry* e = find_entry(n, key);
    return e ? static_cast<int>(read_int(ctx, e->value, path + "." + key, min, INT_MAX)) : fallback;
  };
  auto read_name = [&]() {
    const Node& v = required("name");
    std::string name = read_string(ctx, v, path + ".name", "a name (letters, digits, _)");
    bool ok = !std::isdigit(static_cast<unsigned char>(name[0]));
    for (char c : name)
      ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_') &&
           static_cast<unsigned char>(c) < 0x80;
    if (!ok)
      ctx.fail(v, path +
                      ".name: expected an identifier (letters, digits and _, not starting with "
                      "a digit), got " +
                      got(v));
    return name;
  };

  switch (layer.kind) {
    case LayerKind::Conv2d:
      layer.name = read_name();
      layer.out_channels = positive("out_channels", 1);
      layer.kernel = positive("kernel", 1);
      layer.stride = optional_int("stride", 1, 1);
      layer.padding = optional_int("padding", 0, 0);
      break;
    case LayerKind::MaxPool2d:
      layer.kernel = positive("kernel", 1);
      layer.stride = optional_int("stride", 1, layer.kernel);
      break;
    case LayerKind::Linear:
      layer.name = read_name();
      layer.out_features = positive("out_features", 1);
      break;
    case LayerKind::Relu:
    case LayerKind::Flatten:
      break;
  }
}

void read_model(const Context& ctx, const Node& root, ModelConfig& model) {
  const Node* m = section(ctx, root, "model");
  const Node* input = optional_value(m, "input");
  if (!input || input->kind == Node::Kind::Null)
    ctx.fail(m ? ctx.where_missing(*m) : ctx.source(),
             "missing required key 'model.input' ([C, H, W], the input image shape)");
  if (input->kind != Node::Kind::Seq || input->seq.size() != 3)
    ctx.fail(*input,
             "model.input: expected [C, H, W] (3 integers ≥ 1), got " +
                 (input->kind == Node::Kind::Seq ? "a list of " + std::to_string(input->seq.size())
                                                 : got(*input)));
  int dims[3];
  for (size_t i = 0; i < 3; ++i)
    dims[i] =
        static_cast<int>(read_int(ctx, input->seq[i], index_path("model.input", i), 1, INT_MAX));
  model.input_channels = dims[0];
  model.input_height = dims[1];
  model.input_width = dims[2];

  const Node* layers = optional_value(m, "layers");
  if (!layers || layers->kind == Node::Kind::Null)
    ctx.fail(ctx.where_missing(*m), "missing required key 'model.layers' (the list of layers)");
  if (layers->kind != Node::Kind::Seq || layers->seq.empty())
    ctx.fail(*layers,
             "model.layers: expected a non-empty list of layers, got " +
                 (layers->kind == Node::Kind::Seq ? std::string("an empty list") : got(*layers)));
  model.layers.clear();
  std::vector<std::pair<std::string, size_t>> names;
  for (size_t i = 0; i < layers->seq.size(); ++i) {
    std::string path = index_path("model.layers", i);
    LayerConfig layer;
    read_layer(ctx, layers->seq[i], path, layer);
    if (!layer.name.empty()) {
      for (const auto& [other, j] : names)
        if (other == layer.name)
          ctx.fail(find_entry(layers->seq[i], "name")->value, path + ".name: '" + layer.name +
                                                                  "' is already the name of " +
                                                                  index_path("model.layers", j));
      names.emplace_back(layer.name, i);
    }
    model.layers.push_back(layer);
  }
}

// ---- data ----

void read_normalization(const Context& ctx, const Node* n, const std::string& path, int channels,
                        bool positive, std::vector<float>& out) {
  out.clear();
  if (!n) return;
  std::string expected = std::string("auto or a list of ") + std::to_string(channels) +
                         (positive ? " numbers > 0" : " numbers") +
                         " (one per channel of model.input)";
  if (n->kind == Node::Kind::Scalar && n->scalar == "auto") return;
  if (n->kind != Node::Kind::Seq)
    ctx.fail(*n, path + ": expected " + expected + ", got " + got(*n));
  if (n->seq.size() != size_t(channels))
    ctx.fail(*n,
             path + ": expected " + expected + ", got a list of " + std::to_string(n->seq.size()));
  for (size_t i = 0; i < n->seq.size(); ++i)
    out.push_back(read_number<float>(ctx, n->seq[i], index_path(path, i),
                                     positive ? "a number > 0" : "a number",
                                     [&](float v) { return !positive || v > 0; }));
}

void read_data(const Context& ctx, const Node& root, int channels, DataConfig& data) {
  const Node* d = section(ctx, root, "data");
  if (const Node* f = optional_value(d, "format"))
    data.format = read_choice(ctx, *f, "data.format", {"idx", "cifar10"}) == "idx"
                      ? DataFormat::Idx
                      : DataFormat::Cifar10;
  const Node* dir = optional_value(d, "dir");
  if (!dir)
    ctx.fail(d ? ctx.where_missing(*d) : ctx.source(),
             "missing required key 'data.dir' (the folder with the data files)");
  data.dir = read_string(ctx, *dir, "data.dir", "a folder path");
  if (const Node* v = optional_value(d, "train_limit"))
    data.train_limit = read_int(ctx, *v, "data.train_limit", 0, INT64_MAX);
  if (const Node* v = optional_value(d, "test_limit"))
    data.test_limit = read_int(ctx, *v, "data.test_limit", 0, INT64_MAX);
  read_normalization(ctx, optional_value(d, "mean"), "data.mean", channels, false, data.mean);
  read_normalization(ctx, optional_value(d, "std"), "data.std", channels, true, data.std);
}

// ---- optimizer, train, output, device ----

void read_optimizer(const Context& ctx, const Node& root, OptimizerConfig& opt) {
  const Node* o = section(ctx, root, "optimizer");
  if (const Node* v = optional_value(o, "type"))
    opt.type = read_choice(ctx, *v, "optimizer.type", {"sgd"});
  if (const Node* v = optional_value(o, "lr"))
    opt.lr = read_number<double>(ctx, *v, "optimizer.lr", "a number > 0",
                                 [](double x) { return x > 0; });
  if (const Node* v = optional_value(o, "momentum"))
    opt.momentum = read_number<double>(ctx, *v, "optimizer.momentum", "a number in [0, 1)",
                                       [](double x) { return x >= 0 && x < 1; });
  if (const Node* v = optional_value(o, "weight_decay"))
    opt.weight_decay = read_number<double>(ctx, *v, "optimizer.weight_decay", "a number ≥ 0",
                                           [](double x) { return x >= 0; });
  if (const Node* v = optional_value(o, "nesterov")) {
    opt.nesterov = read_bool(ctx, *v, "optimizer.nesterov");
    // torch.optim.SGD refuses this too: Nesterov momentum without momentum is meaningless.
    if (opt.nesterov && !(opt.momentum > 0))
      ctx.fail(*v, "optimizer.nesterov: true needs optimizer.momentum > 0 (momentum is " +
                       json_number(opt.momentum) + ")");
  }
}

void read_train(const Context& ctx, const Node& root, TrainConfig& train) {
  const Node* t = section(ctx, root, "train");
  if (const Node* v = optional_value(t, "epochs"))
    train.epochs = static_cast<int>(read_int(ctx, *v, "train.epochs", 1, INT_MAX));
  if (const Node* v = optional_value(t, "batch_size"))
    train.batch_size = static_cast<int>(read_int(ctx, *v, "train.batch_size", 1, INT_MAX));
  if (const Node* v = optional_value(t, "seed")) train.seed = read_uint64(ctx, *v, "train.seed");
  if (const Node* v = optional_value(t, "shuffle"))
    train.shuffle = read_bool(ctx, *v, "train.shuffle");
  if (const Node* v = optional_value(t, "deterministic"))
    train.deterministic = read_bool(ctx, *v, "train.deterministic");
  if (const Node* v = optional_value(t, "log_interval"))
    train.log_interval = static_cast<int>(read_int(ctx, *v, "train.log_interval", 1, INT_MAX));
  if (const Node* v = optional_value(t, "threads"))
    train.threads = static_cast<int>(read_int(ctx, *v, "train.threads", 0, INT_MAX));
}

Config validate(const Context& ctx, const Node& root) {
  Config c;
  c.source = ctx.source();
  check_keys(ctx, root, "", kSections);
  read_model(ctx, root, c.model);
  read_data(ctx, root, c.model.input_channels, c.data);
  read_optimizer(ctx, root, c.optimizer);
  read_train(ctx, root, c.train);
  if (const Node* v = optional_value(section(ctx, root, "output"), "dir"))
    c.output_dir = read_string(ctx, *v, "output.dir", "a folder path");
  if (const MapEntry* e = find_entry(root, "device"))
    c.device = read_choice(ctx, e->value, "device", {"auto", "cpu", "cuda"});
  return c;
}

// ---- --set overrides ----

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
  if (!contains(kSections, parts[0])) unknown(0, kSections);
  if (parts.size() == 1) return;
  const std::vector<std::string>* keys = section_keys(parts[0]);
  if (!keys) unknown(1, {});  // device has no sub-keys
  if (!contains(*keys, parts[1])) unknown(1, *keys);
  if (parts.size() == 2) return;
  std::string list = parts[0] + "." + parts[1];
  bool is_list =
      list == "model.input" || list == "model.layers" || list == "data.mean" || list == "data.std";
  if (!is_list || !is_digits(parts[2])) unknown(2, {});
  if (parts.size() == 3) return;
  if (list != "model.layers") unknown(3, {});
  if (!contains(kAllLayerKeys, parts[3])) unknown(3, kAllLayerKeys);
  if (parts.size() > 4) unknown(4, {});
}

void apply_override(const Context& ctx, Node& root, int index) {
  const std::string& text = ctx.override_text(index);
  const std::string where = "--set " + text;
  size_t eq = text.find('=');
  if (eq == std::string::npos) ctx.fail(where, "expected key.path=value (e.g. train.epochs=5)");
  std::string key = text.substr(0, eq);
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.front()))) key.erase(0, 1);
  // Messages write list entries as model.layers[2].kernel; accept that spelling here too.
  for (size_t open = key.find('['); open != std::string::npos; open = key.find('[', open)) {
    size_t close = key.find(']', open);
    if (close == std::string::npos || !is_digits(key.substr(open + 1, close - open - 1))) break;
    key =
        key.substr(0, open) + "." + key.substr(open + 1, close - open - 1) + key.substr(close + 1);
  }
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const auto& p : parts)
    if (p.empty()) ctx.fail(where, "malformed key path '" + key + "' (expected e.g. train.epochs)");
  check_override_path(ctx, where, parts);

  Node value = convert(load_yaml(text.substr(eq + 1), where), ctx, key, index, 0);

  Node* cur = &root;
  std::string path;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    const bool last = i + 1 == parts.size();
    const bool want_index = is_digits(part) && !path.empty() &&
                            (path == "model.input" || path == "model.layers" ||
                             path == "data.mean" || path == "data.std");
    Node* next = nullptr;
    if (want_index) {
      if (cur->kind != Node::Kind::Seq)
        ctx.fail(where, "'" + path + "' is not a list here (set it whole: " + path + "=[...])");
      uint64_t idx = 0;
      auto r = std::from_chars(part.data(), part.data() + part.size(), idx);
      if (r.ec != std::errc() || idx > cur->seq.size())
        ctx.fail(where, "index " + part + " is out of range: '" + path + "' has " +
                            std::to_string(cur->seq.size()) + " entries");
      if (idx == cur->seq.size()) {
        Node fresh;
        fresh.from_set = index;
        cur->seq.push_back(fresh);
      }
      next = &cur->seq[size_t(idx)];
      path += "[" + part + "]";
    } else {
      if (cur->kind == Node::Kind::Null) {
        cur->kind = Node::Kind::Map;
      } else if (cur->kind != Node::Kind::Map) {
        ctx.fail(where, "'" + path + "' is " + got(*cur) + ", not a mapping");
      }
      MapEntry* e = find_entry(*cur, part);
      if (!e) {
        MapEntry fresh;
        fresh.key = part;
        fresh.value.from_set = index;
        cur->map.push_back(std::move(fresh));
        e = &cur->map.back();
      }
      next = &e->value;
      path += (path.empty() ? "" : ".") + part;
    }
    if (last) {
      *next = std::move(value);
    } else {
      cur = next;
    }
  }
}

std::string read_text_file(const std::string& path) {
  auto fail = [&](int err) {
    throw ConfigError(one_line("cannot read config '" + path + "': " + std::strerror(err)));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(errno);
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      fail(err);
    }
    if (n == 0) break;
    text.append(buf, size_t(n));
    // A config is a few kB; refusing huge inputs keeps a wrong path (a data file, /dev/zero) cheap.
    if (text.size() > (16u << 20)) {
      ::close(fd);
      throw ConfigError(
          one_line("cannot read config '" + path + "': larger than 16 MiB, not a config?"));
    }
  }
  ::close(fd);
  return text;
}

// ---- writing ----

std::string yaml_string(const std::string& s) {
  return json_quote(s);
}

std::string float_list(const std::vector<float>& v) {
  if (v.empty()) return "auto";
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + json_number(v[i]);
  return out + "]";
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  Context ctx(source_name, overrides);
  Node root = convert(load_yaml(yaml_text, source_name), ctx, "", -1, 0);
  if (root.kind == Node::Kind::Null) {
    root.kind = Node::Kind::Map;
  } else if (root.kind != Node::Kind::Map) {
    ctx.fail(root, "expected a mapping of sections (" + join(kSections) +
                       ") at the top level, got " + got(root));
  }
  for (size_t i = 0; i < overrides.size(); ++i) apply_override(ctx, root, int(i));
  return validate(ctx, root);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_config(read_text_file(path), path, overrides);
}

std::string to_yaml(const Config& c) {
  std::string y;
  auto line = [&](const std::string& s) { y += s + "\n"; };
  line("model:");
  line("  input: [" + std::to_string(c.model.input_channels) + ", " +
       std::to_string(c.model.input_height) + ", " + std::to_string(c.model.input_width) + "]");
  line("  layers:");
  for (const LayerConfig& l : c.model.layers) {
    switch (l.kind) {
      case LayerKind::Conv2d:
        line("    - {type: conv2d, name: " + yaml_string(l.name) +
             ", out_channels: " + std::to_string(l.out_channels) +
             ", kernel: " + std::to_string(l.kernel) + ", stride: " + std::to_string(l.stride) +
             ", padding: " + std::to_string(l.padding) + "}");
        break;
      case LayerKind::Relu:
        line("    - {type: relu}");
        break;
      case LayerKind::MaxPool2d:
        line("    - {type: maxpool2d, kernel: " + std::to_string(l.kernel) +
             ", stride: " + std::to_string(l.stride) + "}");
        break;
      case LayerKind::Flatten:
        line("    - {type: flatten}");
        break;
      case LayerKind::Linear:
        line("    - {type: linear, name: " + yaml_string(l.name) +
             ", out_features: " + std::to_string(l.out_features) + "}");
        break;
    }
  }
  line("data:");
  line(std::string("  format: ") + (c.data.format == DataFormat::Idx ? "idx" : "cifar10"));
  line("  dir: " + yaml_string(c.data.dir));
  line("  train_limit: " + std::to_string(c.data.train_limit));
  line("  test_limit: " + std::to_string(c.data.test_limit));
  line("  mean: " + float_list(c.data.mean));
  line("  std: " + float_list(c.data.std));
  line("optimizer:");
  line("  type: " + c.optimizer.type);
  line("  lr: " + json_number(c.optimizer.lr));
  line("  momentum: " + json_number(c.optimizer.momentum));
  line("  weight_decay: " + json_number(c.optimizer.weight_decay));
  line(std::string("  nesterov: ") + (c.optimizer.nesterov ? "true" : "false"));
  line("train:");
  line("  epochs: " + std::to_string(c.train.epochs));
  line("  batch_size: " + std::to_string(c.train.batch_size));
  line("  seed: " + std::to_string(c.train.seed));
  line(std::string("  shuffle: ") + (c.train.shuffle ? "true" : "false"));
  line(std::string("  deterministic: ") + (c.train.deterministic ? "true" : "false"));
  line("  log_interval: " + std::to_string(c.train.log_interval));
  line("  threads: " + std::to_string(c.train.threads));
  line("output:");
  line("  dir: " + yaml_string(c.output_dir));
  line("device: " + c.device);
  return y;
}

}  // namespace gputrain
